//! The new-work form: a bench, sweep or tune with its engine, policy, knobs,
//! workload preset, load and SLO, turned into a `fuselab` command line. The
//! form checks only what it must to build the command; the child `fuselab`
//! checks the rest, and its error shows in the job's view.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::job::{JobRequest, WorkKind};

/// Engines offered.
pub const ENGINES: [&str; 4] = ["sim", "cpu", "null", "cuda"];
/// Policies offered.
pub const POLICIES: [&str; 5] = ["splitfuse", "chunked", "continuous", "static", "prepack"];
/// Workload presets offered (`fuselab workload --list`).
pub const PRESETS: [&str; 8] = [
    "fastgen-1200",
    "fastgen-2600",
    "sharegpt-like",
    "long-8k",
    "long-32k",
    "multiturn-chat",
    "h200-64",
    "cpu-small",
];
/// Load kinds offered.
pub const LOAD_KINDS: [&str; 2] = ["rate", "clients"];
/// Tuning objectives offered.
pub const OBJECTIVES: [&str; 7] = [
    "goodput",
    "throughput",
    "output-throughput",
    "effective-throughput",
    "p99-e2e",
    "p99-ttft",
    "p99-tpot",
];
/// Tuners offered.
pub const TUNERS: [&str; 3] = ["bo", "random", "grid"];

/// A form field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKey {
    /// bench, sweep or tune.
    Kind,
    /// Engine.
    Engine,
    /// Policy (bench, tune) or comma-separated policies (sweep).
    Policy,
    /// Knobs, `NAME=VALUE` separated by spaces.
    Knobs,
    /// Workload preset.
    Preset,
    /// Number of requests.
    Requests,
    /// Rate or clients.
    LoadKind,
    /// The load (a list for a sweep).
    Load,
    /// SLO, e.g. `ttft=2s,tpot=100ms`.
    Slo,
    /// Search space (tune).
    Space,
    /// Trials (tune).
    Budget,
    /// Objective (tune).
    Objective,
    /// Tuner (tune).
    Tuner,
    /// Output folder name under the root.
    Name,
    /// The start button.
    Start,
}

impl FieldKey {
    /// The label.
    pub fn label(self, kind: WorkKind) -> &'static str {
        match self {
            Self::Kind => "work",
            Self::Engine => "engine",
            Self::Policy if kind == WorkKind::Sweep => "policies",
            Self::Policy => "policy",
            Self::Knobs => "knobs",
            Self::Preset => "preset",
            Self::Requests => "requests",
            Self::LoadKind => "load kind",
            Self::Load if kind == WorkKind::Sweep => "loads",
            Self::Load => "load",
            Self::Slo => "SLO",
            Self::Space => "space",
            Self::Budget => "trials",
            Self::Objective => "objective",
            Self::Tuner => "tuner",
            Self::Name => "folder",
            Self::Start => "",
        }
    }

    /// A hint shown beside the field.
    pub fn hint(self, kind: WorkKind) -> &'static str {
        match self {
            Self::Kind | Self::Engine | Self::Preset | Self::LoadKind => "←/→ to change",
            Self::Objective | Self::Tuner => "←/→ to change",
            Self::Policy if kind == WorkKind::Sweep => "comma-separated, or all",
            Self::Policy => "←/→ to change",
            Self::Knobs => "NAME=VALUE, space-separated",
            Self::Requests => "number of requests",
            Self::Load if kind == WorkKind::Sweep => "comma-separated, e.g. 1,2,4",
            Self::Load => "req/s or clients",
            Self::Slo => "e.g. ttft=2s,tpot=100ms or fastgen:4",
            Self::Space => "e.g. budget=256..4096:log",
            Self::Budget => "number of trials",
            Self::Name => "new folder under the root",
            Self::Start => "Enter starts",
        }
    }
}

/// A field's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// One of fixed options.
    Choice {
        /// The options.
        options: &'static [&'static str],
        /// The chosen one.
        index: usize,
    },
    /// Free text.
    Text(String),
    /// The start button.
    Button,
}

impl Value {
    /// The value as text.
    pub fn text(&self) -> &str {
        match self {
            Self::Choice { options, index } => options[*index],
            Self::Text(s) => s,
            Self::Button => "[ start ]",
        }
    }
}

/// The form's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Form {
    /// `(field, value)` for every field, shown or not.
    pub fields: Vec<(FieldKey, Value)>,
    /// Index into [`Form::visible`] of the focused field.
    pub focus: usize,
    /// The last validation error.
    pub error: Option<String>,
}

fn choice(options: &'static [&'static str], value: &str) -> Value {
    Value::Choice {
        options,
        index: options.iter().position(|o| *o == value).unwrap_or(0),
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

impl Form {
    /// A form for `kind` with defaults that run in a second on the
    /// simulator; `name` is the suggested folder name.
    pub fn new(kind: WorkKind, name: &str) -> Self {
        let kinds: &'static [&'static str] = &["bench", "sweep", "tune"];
        Self {
            fields: vec![
                (FieldKey::Kind, choice(kinds, kind.name())),
                (FieldKey::Engine, choice(&ENGINES, "sim")),
                (FieldKey::Policy, choice(&POLICIES, "splitfuse")),
                (FieldKey::Knobs, text("")),
                (FieldKey::Preset, choice(&PRESETS, "fastgen-1200")),
                (FieldKey::Requests, text("100")),
                (FieldKey::LoadKind, choice(&LOAD_KINDS, "rate")),
                (FieldKey::Load, text("4")),
                (FieldKey::Slo, text("")),
                (FieldKey::Space, text("budget=256..4096:log")),
                (FieldKey::Budget, text("10")),
                (FieldKey::Objective, choice(&OBJECTIVES, "goodput")),
                (FieldKey::Tuner, choice(&TUNERS, "bo")),
                (FieldKey::Name, text(name)),
                (FieldKey::Start, Value::Button),
            ],
            focus: 0,
            error: None,
        }
        .with_kind_defaults()
    }

    /// The kind of work.
    pub fn kind(&self) -> WorkKind {
        match self.get(FieldKey::Kind) {
            "sweep" => WorkKind::Sweep,
            "tune" => WorkKind::Tune,
            _ => WorkKind::Bench,
        }
    }

    /// A field's value as text.
    pub fn get(&self, key: FieldKey) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("", |(_, v)| v.text())
    }

    fn value_mut(&mut self, key: FieldKey) -> Option<&mut Value> {
        self.fields
            .iter_mut()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// Sets a text field (no effect on choices).
    pub fn set_text(&mut self, key: FieldKey, s: &str) {
        if let Some(Value::Text(t)) = self.value_mut(key) {
            *t = s.into();
        }
    }

    /// The fields shown for the current kind, in order.
    pub fn visible(&self) -> Vec<FieldKey> {
        let tune_only = [
            FieldKey::Space,
            FieldKey::Budget,
            FieldKey::Objective,
            FieldKey::Tuner,
        ];
        let kind = self.kind();
        self.fields
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| kind == WorkKind::Tune || !tune_only.contains(k))
            .collect()
    }

    /// The focused field.
    pub fn focused(&self) -> FieldKey {
        let v = self.visible();
        v[self.focus.min(v.len() - 1)]
    }

    /// Whether the focused field takes typed text.
    pub fn typing(&self) -> bool {
        matches!(
            self.fields.iter().find(|(k, _)| *k == self.focused()),
            Some((_, Value::Text(_)))
        )
    }

    /// Moves the focus by `delta` fields, wrapping.
    pub fn move_focus(&mut self, delta: isize) {
        let n = self.visible().len() as isize;
        self.focus = ((self.focus as isize + delta).rem_euclid(n)) as usize;
    }

    /// Cycles the focused choice by `delta`.
    pub fn cycle(&mut self, delta: isize) {
        let key = self.focused();
        let old_kind = self.kind();
        if let Some(Value::Choice { options, index }) = self.value_mut(key) {
            let n = options.len() as isize;
            *index = ((*index as isize + delta).rem_euclid(n)) as usize;
        }
        if key == FieldKey::Kind && self.kind() != old_kind {
            *self = std::mem::replace(self, Form::new(WorkKind::Bench, "")).with_kind_defaults();
        }
    }

    /// Switches the policy and load fields to the kind's shape (a list for a
    /// sweep, one value otherwise) and the folder name's prefix.
    fn with_kind_defaults(mut self) -> Self {
        let kind = self.kind();
        let policy = self.get(FieldKey::Policy).to_string();
        let load = self.get(FieldKey::Load).to_string();
        let policy_value = if kind == WorkKind::Sweep {
            text(if policy.contains(',') {
                &policy
            } else {
                "splitfuse,chunked"
            })
        } else {
            choice(&POLICIES, policy.split(',').next().unwrap_or("splitfuse"))
        };
        if let Some(v) = self.value_mut(FieldKey::Policy) {
            *v = policy_value;
        }
        let load_text = if kind == WorkKind::Sweep {
            if load.contains(',') {
                load
            } else {
                "2,4,8".into()
            }
        } else {
            load.split(',').next().unwrap_or("4").to_string()
        };
        self.set_text(FieldKey::Load, &load_text);
        let name = self.get(FieldKey::Name).to_string();
        if let Some((_, rest)) = name.split_once('-')
            && ["bench", "sweep", "tune"]
                .iter()
                .any(|k| name.starts_with(k))
        {
            self.set_text(FieldKey::Name, &format!("{}-{rest}", kind.name()));
        }
        self
    }

    /// Types `c` into the focused text field.
    pub fn type_char(&mut self, c: char) {
        let key = self.focused();
        if let Some(Value::Text(t)) = self.value_mut(key) {
            t.push(c);
        }
    }

    /// Deletes the last character of the focused text field.
    pub fn backspace(&mut self) {
        let key = self.focused();
        if let Some(Value::Text(t)) = self.value_mut(key) {
            t.pop();
        }
    }

    /// The folder the work will write: `root/NAME`.
    pub fn out_dir(&self, root: &Path) -> PathBuf {
        root.join(self.get(FieldKey::Name).trim())
    }

    /// The job to start, or what is wrong with the form.
    pub fn request(&self) -> Result<JobRequest> {
        let kind = self.kind();
        let bad = |field, problem: String| Error::Form { field, problem };
        let name = self.get(FieldKey::Name).trim();
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(bad(
                "folder",
                format!("`{name}` is not a folder name; use letters, digits, - _ ."),
            ));
        }
        let mut args: Vec<String> = vec!["--engine".into(), self.get(FieldKey::Engine).into()];
        let policy = self.get(FieldKey::Policy).trim();
        let n_policies = if kind == WorkKind::Sweep {
            args.extend(["--policies".into(), policy.into()]);
            if policy == "all" {
                POLICIES.len()
            } else {
                policy.split(',').filter(|p| !p.trim().is_empty()).count()
            }
        } else {
            args.extend(["--policy".into(), policy.into()]);
            1
        };
        for knob in self.get(FieldKey::Knobs).split_whitespace() {
            if !knob.contains('=') {
                return Err(bad("knobs", format!("`{knob}` is not NAME=VALUE")));
            }
            args.extend(["--knob".into(), knob.into()]);
        }
        args.extend(["--preset".into(), self.get(FieldKey::Preset).into()]);
        let n = self.get(FieldKey::Requests).trim();
        if n.parse::<u64>().map_or(true, |n| n == 0) {
            return Err(bad("requests", format!("`{n}` is not a positive number")));
        }
        args.extend(["--n".into(), n.into()]);
        let load = self.get(FieldKey::Load).trim().to_string();
        let loads: Vec<&str> = load.split(',').map(str::trim).collect();
        if loads
            .iter()
            .any(|l| l.parse::<f64>().map_or(true, |v| v.is_nan() || v <= 0.0))
        {
            return Err(bad(
                "load",
                format!("`{load}` is not a positive number (or list)"),
            ));
        }
        let clients = self.get(FieldKey::LoadKind) == "clients";
        let flag = match (kind, clients) {
            (WorkKind::Sweep, false) => "--rates",
            (_, true) => "--clients",
            (_, false) => "--rate",
        };
        args.extend([flag.into(), load.clone()]);
        let slo = self.get(FieldKey::Slo).trim();
        if !slo.is_empty() {
            args.extend(["--slo".into(), slo.into()]);
        }
        let planned = match kind {
            WorkKind::Bench => None,
            WorkKind::Sweep => Some(n_policies * loads.len()),
            WorkKind::Tune => {
                let budget = self.get(FieldKey::Budget).trim();
                let b: usize =
                    budget.parse().ok().filter(|b| *b > 0).ok_or_else(|| {
                        bad("trials", format!("`{budget}` is not a positive number"))
                    })?;
                let space = self.get(FieldKey::Space).trim();
                if space.is_empty() {
                    return Err(bad(
                        "space",
                        "give the knobs to tune, e.g. budget=256..4096:log".into(),
                    ));
                }
                args.extend([
                    "--space".into(),
                    space.into(),
                    "--budget".into(),
                    budget.into(),
                    "--objective".into(),
                    self.get(FieldKey::Objective).into(),
                    "--tuner".into(),
                    self.get(FieldKey::Tuner).into(),
                ]);
                Some(b)
            }
        };
        Ok(JobRequest {
            kind,
            args,
            planned,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_form_builds_its_command() {
        let mut f = Form::new(WorkKind::Sweep, "sweep-1");
        f.set_text(FieldKey::Load, "1,2");
        f.set_text(FieldKey::Knobs, "budget=512");
        f.set_text(FieldKey::Slo, "ttft=2s");
        let r = f.request().unwrap();
        assert_eq!(r.kind, WorkKind::Sweep);
        assert_eq!(r.planned, Some(4));
        assert_eq!(
            r.args.join(" "),
            "--engine sim --policies splitfuse,chunked --knob budget=512 --preset fastgen-1200 --n 100 --rates 1,2 --slo ttft=2s"
        );
        assert_eq!(f.out_dir(Path::new("runs")), Path::new("runs/sweep-1"));
    }

    #[test]
    fn changing_the_kind_reshapes_policy_load_and_name() {
        let mut f = Form::new(WorkKind::Bench, "bench-7");
        assert_eq!(f.get(FieldKey::Load), "4");
        assert!(!f.visible().contains(&FieldKey::Space));
        f.cycle(1);
        assert_eq!(f.kind(), WorkKind::Sweep);
        assert_eq!(f.get(FieldKey::Load), "2,4,8");
        assert_eq!(f.get(FieldKey::Policy), "splitfuse,chunked");
        assert_eq!(f.get(FieldKey::Name), "sweep-7");
        f.cycle(1);
        assert_eq!(f.kind(), WorkKind::Tune);
        assert!(f.visible().contains(&FieldKey::Space));
        assert_eq!(f.get(FieldKey::Policy), "splitfuse");
        let r = f.request().unwrap();
        assert_eq!(r.planned, Some(10));
        assert!(r.args.join(" ").contains("--rate 2 "), "{:?}", r.args);
        f.cycle(1);
        assert_eq!(f.kind(), WorkKind::Bench);
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut f = Form::new(WorkKind::Bench, "x");
        f.set_text(FieldKey::Requests, "zero");
        assert!(
            f.request()
                .unwrap_err()
                .to_string()
                .starts_with("requests:")
        );
        f.set_text(FieldKey::Requests, "10");
        f.set_text(FieldKey::Load, "-1");
        assert!(f.request().unwrap_err().to_string().starts_with("load:"));
        f.set_text(FieldKey::Load, "1");
        f.set_text(FieldKey::Name, "../up");
        assert!(f.request().unwrap_err().to_string().starts_with("folder:"));
        f.set_text(FieldKey::Name, "ok");
        f.set_text(FieldKey::Knobs, "budget");
        assert!(f.request().unwrap_err().to_string().starts_with("knobs:"));
    }

    #[test]
    fn focus_wraps_and_typing_edits_text_fields_only() {
        let mut f = Form::new(WorkKind::Bench, "x");
        assert!(!f.typing());
        f.move_focus(-1);
        assert_eq!(f.focused(), FieldKey::Start);
        f.move_focus(1);
        assert_eq!(f.focused(), FieldKey::Kind);
        f.type_char('z');
        assert_eq!(f.kind(), WorkKind::Bench);
        while f.focused() != FieldKey::Requests {
            f.move_focus(1);
        }
        assert!(f.typing());
        f.backspace();
        f.type_char('5');
        assert_eq!(f.get(FieldKey::Requests), "105");
    }
}
