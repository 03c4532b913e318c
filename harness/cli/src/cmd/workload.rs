//! `fuselab workload`: generate (or replay) a workload, summarise it, export it as JSONL.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use fuselab_core::{
    Arrivals, ConversationSpec, Error, LoraSpec, Popularity, PrefixSpec, RequestSpec, WorkloadSpec,
};
use fuselab_workloads::stats::Summary;
use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::config;

/// Arguments of `fuselab workload`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WorkloadArgs {
    /// Read any of the workload flags from a TOML file (keys are the flag
    /// names without `--`); flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// List the presets with their parameters and exit.
    #[arg(long)]
    pub list: bool,

    #[command(flatten)]
    pub opts: WorkloadOpts,
}

/// The flags that describe a workload, shared by `workload`, `bench`, `sweep`
/// and `run` (in their config files, under a `[workload]` table).
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkloadOpts {
    /// Workload preset to generate (`fuselab workload --list` shows them).
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,

    /// Number of requests [default: the preset's, 1000; 64 for h200-64].
    #[arg(long, value_name = "N")]
    pub n: Option<u64>,

    /// Random seed; the same seed gives byte-identical output [default: 42].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// Arrival process [default: the preset's, poisson at 1 req/s; burst for h200-64].
    #[arg(long, value_enum)]
    pub arrivals: Option<ArrivalKind>,

    /// Open-loop rate in requests/s (the start rate of a ramp). Alone, it keeps
    /// the preset's process (poisson unless the preset sends a burst).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub rate: Option<f64>,

    /// Rate at the last request of a ramp (implies --arrivals ramp).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub end_rate: Option<f64>,

    /// Gamma shape: 1 is Poisson, below 1 burstier (CV = 1/sqrt(B)). Implies --arrivals gamma.
    #[arg(long, value_name = "B", allow_negative_numbers = true)]
    pub burstiness: Option<f64>,

    /// Closed loop with this many concurrent clients (implies --arrivals closed-loop).
    /// `fuselab sweep` takes a list here: `--clients 1,2,4,8`.
    #[arg(long, value_name = "C", value_delimiter = ',')]
    #[serde(default, deserialize_with = "one_or_many")]
    pub clients: Vec<u32>,

    /// Spread requests round-robin over G groups sharing a prefix (needs --prefix-len).
    #[arg(long, value_name = "G")]
    pub prefix_groups: Option<u32>,

    /// Shared prefix length in tokens, capped at each prompt's length (needs --prefix-groups).
    #[arg(long, value_name = "L")]
    pub prefix_len: Option<u32>,

    /// Multi-turn conversations of K turns: each turn's prompt is the
    /// conversation so far plus a new user message (the prompt distribution),
    /// sent a think time after the previous turn completes. The arrival rate
    /// then counts conversations [default: 4 for multiturn-chat].
    #[arg(long, value_name = "K")]
    pub turns: Option<u32>,

    /// Mean think time between turns, seconds, exponentially distributed
    /// (needs --turns or a multi-turn preset) [default: 10 for multiturn-chat, else 0].
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub think_time: Option<f64>,

    /// Multi-LoRA: spread requests over N adapters (ids 0..N), drawn per
    /// request from the popularity law (--zipf) on their own seeded stream.
    #[arg(long, value_name = "N")]
    pub adapters: Option<u32>,

    /// Rank of every LoRA adapter (needs --adapters or a trace naming adapters) [default: 16].
    #[arg(long, value_name = "R")]
    pub lora_rank: Option<u32>,

    /// Adapter popularity: Zipf exponent s, adapter k drawn with weight
    /// (k+1)^-s; 0 is uniform (needs --adapters) [default: 0].
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub zipf: Option<f64>,

    /// Replay a JSONL trace: one `{"arrival_s", "prompt_len" | "prompt_tokens", "output_len", ...}` a line.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// Write the requests as JSONL, one a line (a sweep writes those of its first load).
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
}

/// Accepts `clients = 8` as well as `clients = [1, 2, 4]` in config files.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(v) => vec![v],
        OneOrMany::Many(v) => v,
    })
}

/// Arrival process names as `--arrivals` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArrivalKind {
    /// Exponential gaps with mean 1/rate.
    Poisson,
    /// Gamma gaps with shape --burstiness and mean 1/rate.
    Gamma,
    /// Evenly spaced, 1/rate apart.
    Constant,
    /// Poisson with the rate going linearly from --rate to --end-rate.
    Ramp,
    /// Everything at t = 0.
    Burst,
    /// --clients clients, each sending when its previous request finishes.
    ClosedLoop,
}

/// Runs `fuselab workload`.
pub fn run(args: WorkloadArgs) -> anyhow::Result<Outcome> {
    if args.list {
        emit(&list_presets())?;
        return Ok(Outcome::Success);
    }
    let args = config::merge(args.opts.clone(), args.config.as_deref())?;
    let (spec, requests) = args.resolve()?;
    let digest = fuselab_workloads::digest(&requests);
    emit(&render_summary(
        &spec,
        &requests,
        &digest,
        args.export.as_deref(),
    ))?;
    Ok(Outcome::Success)
}

/// Writes text to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("writing to standard output")
        }
        _ => Ok(()),
    }
}

fn conflict(flag: &str, with: &str, why: &str) -> Error {
    Error::invalid(flag, format!("cannot be combined with {with}"), why)
}

impl WorkloadOpts {
    /// Builds the workload: its spec and its requests, generated or replayed
    /// from the trace; writes the JSONL export when `--export` is given.
    ///
    /// # Errors
    /// Contradictory or invalid flags, an unreadable trace, a failed export.
    pub fn resolve(&self) -> anyhow::Result<(WorkloadSpec, Vec<RequestSpec>)> {
        let (spec, requests) = resolve(self)?;
        let requests = match requests {
            Some(replayed) => replayed,
            None => fuselab_workloads::generate(&spec)?,
        };
        if let Some(path) = &self.export {
            fuselab_workloads::export_to_file(&requests, path)
                .with_context(|| format!("exporting the workload to {}", path.display()))?;
        }
        Ok((spec, requests))
    }
}

/// Turns the (merged) flags into a spec, rejecting contradictory combinations.
/// A trace is read here, once, and its requests come back with the spec.
fn resolve(a: &WorkloadOpts) -> Result<(WorkloadSpec, Option<Vec<RequestSpec>>), Error> {
    if a.clients.len() > 1 {
        return Err(Error::invalid(
            "--clients",
            format!("{} client counts given", a.clients.len()),
            "give one count here; `fuselab sweep --clients 1,2,4,8` sweeps several",
        ));
    }
    if let Some(trace) = &a.trace {
        let given = [
            ("--preset", a.preset.is_some()),
            ("--seed", a.seed.is_some()),
            ("--arrivals", a.arrivals.is_some()),
            ("--rate", a.rate.is_some()),
            ("--end-rate", a.end_rate.is_some()),
            ("--burstiness", a.burstiness.is_some()),
            ("--clients", !a.clients.is_empty()),
            ("--prefix-groups", a.prefix_groups.is_some()),
            ("--prefix-len", a.prefix_len.is_some()),
            ("--turns", a.turns.is_some()),
            ("--think-time", a.think_time.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
            return Err(conflict(
                flag,
                "--trace",
                "a trace carries its own arrivals, lengths, prefixes and conversations; drop one of them",
            ));
        }
        for (flag, set) in [
            ("--adapters", a.adapters.is_some()),
            ("--zipf", a.zipf.is_some()),
        ] {
            if set {
                return Err(conflict(
                    flag,
                    "--trace",
                    "a trace names its requests' adapters itself (the `adapter` field); drop the flag",
                ));
            }
        }
        let (mut spec, requests) = fuselab_workloads::replay(trace, a.n)?;
        match (spec.lora.as_mut(), a.lora_rank) {
            (Some(l), Some(r)) => l.rank = r,
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "--lora-rank",
                    "given, but the trace names no adapters",
                    "drop --lora-rank, or add `adapter` fields to the trace",
                ));
            }
            _ => {}
        }
        fuselab_workloads::validate(&spec)?;
        return Ok((spec, Some(requests)));
    }
    let Some(name) = &a.preset else {
        return Err(Error::invalid(
            "--preset",
            "no workload given",
            format!(
                "give --preset NAME (one of {}) or --trace FILE; --list shows the presets",
                fuselab_workloads::preset_names().join(", ")
            ),
        ));
    };
    let mut spec = fuselab_workloads::preset(name)?;
    if let Some(n) = a.n {
        spec.n = n;
    }
    if let Some(seed) = a.seed {
        spec.seed = seed;
    }
    spec.arrivals = resolve_arrivals(a, &spec.arrivals)?;
    spec.prefix = match (a.prefix_groups, a.prefix_len) {
        (None, None) => None,
        (Some(groups), Some(len)) => Some(PrefixSpec { groups, len }),
        (Some(_), None) => {
            return Err(Error::invalid(
                "--prefix-groups",
                "given without --prefix-len",
                "give the shared prefix length with --prefix-len L",
            ));
        }
        (None, Some(_)) => {
            return Err(Error::invalid(
                "--prefix-len",
                "given without --prefix-groups",
                "give the number of groups with --prefix-groups G",
            ));
        }
    };
    match (a.turns, a.think_time, spec.conversation.as_mut()) {
        (None, None, _) => {}
        (turns, think, Some(c)) => {
            c.turns = turns.unwrap_or(c.turns);
            c.think_s = think.unwrap_or(c.think_s);
        }
        (Some(turns), think, None) => {
            spec.conversation = Some(ConversationSpec {
                turns,
                think_s: think.unwrap_or(0.0),
            });
        }
        (None, Some(_), None) => {
            return Err(Error::invalid(
                "--think-time",
                format!("given, but preset {name} has no conversations"),
                "add --turns K for multi-turn conversations, or use --preset multiturn-chat",
            ));
        }
    }
    spec.lora = match (a.adapters, a.lora_rank, a.zipf) {
        (None, None, None) => spec.lora,
        (Some(adapters), rank, zipf) => Some(LoraSpec {
            adapters,
            rank: rank.unwrap_or(fuselab_workloads::DEFAULT_TRACE_RANK),
            popularity: match zipf {
                None => Popularity::Uniform,
                Some(s) => Popularity::Zipf { s },
            },
        }),
        (None, rank, _) => {
            let flag = if rank.is_some() {
                "--lora-rank"
            } else {
                "--zipf"
            };
            return Err(Error::invalid(
                flag,
                "given without --adapters",
                "give the number of LoRA adapters with --adapters N",
            ));
        }
    };
    fuselab_workloads::validate(&spec)?;
    Ok((spec, None))
}

fn resolve_arrivals(a: &WorkloadOpts, preset: &Arrivals) -> Result<Arrivals, Error> {
    let clients = a.clients.first().copied();
    let preset_kind = match preset {
        Arrivals::Poisson { .. } => ArrivalKind::Poisson,
        Arrivals::Gamma { .. } => ArrivalKind::Gamma,
        Arrivals::Constant { .. } => ArrivalKind::Constant,
        Arrivals::Ramp { .. } => ArrivalKind::Ramp,
        // --rate alone turns a burst preset into Poisson traffic.
        Arrivals::Burst | Arrivals::Trace if a.rate.is_some() => ArrivalKind::Poisson,
        Arrivals::Burst | Arrivals::Trace => ArrivalKind::Burst,
        Arrivals::ClosedLoop { .. } => ArrivalKind::ClosedLoop,
    };
    let kind = a
        .arrivals
        .or(clients.map(|_| ArrivalKind::ClosedLoop))
        .or(a.end_rate.map(|_| ArrivalKind::Ramp))
        .or(a.burstiness.map(|_| ArrivalKind::Gamma))
        .unwrap_or(preset_kind);
    let only = |flag: &str, set: bool, kinds: &str| -> Result<(), Error> {
        if set {
            Err(Error::invalid(
                flag,
                format!("has no effect with --arrivals {}", kind_name(kind)),
                format!("it applies to {kinds} arrivals; drop it or change --arrivals"),
            ))
        } else {
            Ok(())
        }
    };
    let rated = matches!(
        kind,
        ArrivalKind::Poisson | ArrivalKind::Gamma | ArrivalKind::Constant | ArrivalKind::Ramp
    );
    only(
        "--rate",
        a.rate.is_some() && !rated,
        "poisson, gamma, constant and ramp",
    )?;
    only(
        "--end-rate",
        a.end_rate.is_some() && kind != ArrivalKind::Ramp,
        "ramp",
    )?;
    only(
        "--burstiness",
        a.burstiness.is_some() && kind != ArrivalKind::Gamma,
        "gamma",
    )?;
    only(
        "--clients",
        clients.is_some() && kind != ArrivalKind::ClosedLoop,
        "closed-loop",
    )?;

    let (mut preset_rate, mut preset_burstiness, mut preset_end, mut preset_clients) =
        (1.0, None, None, None);
    match *preset {
        Arrivals::Poisson { rate } | Arrivals::Constant { rate } => preset_rate = rate,
        Arrivals::Gamma { rate, burstiness } => {
            (preset_rate, preset_burstiness) = (rate, Some(burstiness))
        }
        Arrivals::Ramp {
            start_rate,
            end_rate,
        } => (preset_rate, preset_end) = (start_rate, Some(end_rate)),
        Arrivals::ClosedLoop { clients } => preset_clients = Some(clients),
        Arrivals::Burst | Arrivals::Trace => {}
    }
    let rate = a.rate.unwrap_or(preset_rate);
    Ok(match kind {
        ArrivalKind::Poisson => Arrivals::Poisson { rate },
        ArrivalKind::Constant => Arrivals::Constant { rate },
        ArrivalKind::Gamma => Arrivals::Gamma {
            rate,
            burstiness: a.burstiness.or(preset_burstiness).ok_or_else(|| {
                Error::invalid(
                    "--burstiness",
                    "missing for gamma arrivals",
                    "give the gamma shape, e.g. --burstiness 0.5 (1 is Poisson)",
                )
            })?,
        },
        ArrivalKind::Ramp => Arrivals::Ramp {
            start_rate: rate,
            end_rate: a.end_rate.or(preset_end).ok_or_else(|| {
                Error::invalid(
                    "--end-rate",
                    "missing for ramp arrivals",
                    "give the final rate, e.g. --rate 1 --end-rate 10",
                )
            })?,
        },
        ArrivalKind::Burst => Arrivals::Burst,
        ArrivalKind::ClosedLoop => Arrivals::ClosedLoop {
            clients: clients.or(preset_clients).ok_or_else(|| {
                Error::invalid(
                    "--clients",
                    "missing for closed-loop arrivals",
                    "give the number of concurrent clients, e.g. --clients 8",
                )
            })?,
        },
    })
}

fn kind_name(k: ArrivalKind) -> &'static str {
    match k {
        ArrivalKind::Poisson => "poisson",
        ArrivalKind::Gamma => "gamma",
        ArrivalKind::Constant => "constant",
        ArrivalKind::Ramp => "ramp",
        ArrivalKind::Burst => "burst",
        ArrivalKind::ClosedLoop => "closed-loop",
    }
}

fn list_presets() -> String {
    use fuselab_workloads::{describe_arrivals, describe_length};
    let mut s = String::new();
    for p in fuselab_workloads::presets() {
        let _ = writeln!(s, "{}", p.name);
        let _ = writeln!(s, "  {}", p.description);
        let _ = writeln!(s, "  prompt    {}", describe_length(&p.spec.prompt));
        let _ = writeln!(s, "  output    {}", describe_length(&p.spec.output));
        let _ = writeln!(
            s,
            "  arrivals  {} (default)",
            describe_arrivals(&p.spec.arrivals)
        );
        if let Some(c) = &p.spec.conversation {
            let _ = writeln!(
                s,
                "  turns     {} per conversation, think time exp(mean {} s) (default)",
                c.turns, c.think_s
            );
        }
        let _ = writeln!(
            s,
            "  n         {} (default), seed {} (default)",
            p.spec.n, p.spec.seed
        );
        s.push('\n');
    }
    s.push_str("Override with --n, --seed, --rate, --arrivals, --burstiness, --clients, --prefix-groups/--prefix-len, --turns/--think-time.\n");
    s
}

fn render_summary(
    spec: &WorkloadSpec,
    requests: &[RequestSpec],
    digest: &str,
    export: Option<&std::path::Path>,
) -> String {
    use fuselab_workloads::{describe_arrivals, describe_length};
    let sum = Summary::of(requests, &spec.arrivals);
    let mut s = String::new();
    let _ = match spec.arrivals {
        Arrivals::Trace => writeln!(
            s,
            "workload   trace {} ({} requests)",
            spec.trace.as_deref().unwrap_or("?"),
            sum.count
        ),
        _ => writeln!(
            s,
            "workload   {} (seed {}, {} requests)",
            spec.name, spec.seed, sum.count
        ),
    };
    if spec.arrivals != Arrivals::Trace {
        let _ = writeln!(s, "prompt     {}", describe_length(&spec.prompt));
        let _ = writeln!(s, "output     {}", describe_length(&spec.output));
    }
    let starts = if spec.conversation.is_some() {
        " (conversation starts)"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "arrivals   {}{starts}",
        describe_arrivals(&spec.arrivals)
    );
    if let Some(c) = &spec.conversation {
        let _ = writeln!(
            s,
            "turns      {} per conversation, think time exp(mean {} s)",
            c.turns, c.think_s
        );
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "{:<12}{:>10}{:>10}{:>8}{:>10}{:>10}{:>8}{:>14}",
        "", "mean", "std", "min", "p50", "p99", "max", "total"
    );
    for (name, l) in [("prompt_len", &sum.prompt), ("output_len", &sum.output)] {
        let _ = writeln!(
            s,
            "{:<12}{:>10.2}{:>10.2}{:>8}{:>10.1}{:>10.1}{:>8}{:>14}",
            name, l.mean, l.std, l.min, l.p50, l.p99, l.max, l.total
        );
    }
    s.push('\n');
    let row = |s: &mut String, k: &str, v: String| {
        let _ = writeln!(s, "{k:<16}{v}");
    };
    row(&mut s, "requests", sum.count.to_string());
    row(
        &mut s,
        "total tokens",
        format!(
            "{} (prompt {} + output {})",
            sum.prompt.total + sum.output.total,
            sum.prompt.total,
            sum.output.total
        ),
    );
    match spec.arrivals {
        Arrivals::ClosedLoop { clients } => row(
            &mut s,
            "arrival span",
            format!("closed loop: the harness sends as {clients} clients finish"),
        ),
        _ => {
            row(
                &mut s,
                "arrival span",
                format!("{:.6} s", sum.arrival_span_s),
            );
            if sum.count >= 2 && sum.arrival_span_s > 0.0 {
                row(
                    &mut s,
                    "inter-arrival",
                    format!(
                        "mean {:.6} s ({:.4} req/s), CV {:.4}",
                        sum.interarrival_mean_s,
                        1.0 / sum.interarrival_mean_s,
                        sum.interarrival_cv
                    ),
                );
            }
        }
    }
    if let Some(ks) = &sum.ks {
        row(
            &mut s,
            "KS vs Exp(rate)",
            format!(
                "D = {:.5}, critical {:.5} at alpha {}: {}",
                ks.statistic,
                ks.critical,
                ks.alpha,
                if ks.passes() { "pass" } else { "FAIL" }
            ),
        );
    }
    row(
        &mut s,
        "prefix groups",
        match &spec.prefix {
            Some(p) => format!(
                "{} groups sharing up to {} tokens",
                sum.prefix_groups, p.len
            ),
            None if sum.prefix_groups > 0 => format!("{} groups (from trace)", sum.prefix_groups),
            None => "none".into(),
        },
    );
    if sum.conversations > 0 {
        row(
            &mut s,
            "conversations",
            format!(
                "{} (up to {} turns), think time mean {:.3} s",
                sum.conversations, sum.max_turns, sum.think_mean_s
            ),
        );
        row(
            &mut s,
            "history tokens",
            format!(
                "{} of {} prompt tokens ({:.1} %) repeat the conversation so far",
                sum.history_tokens,
                sum.prompt.total,
                100.0 * sum.history_tokens as f64 / (sum.prompt.total.max(1)) as f64
            ),
        );
    }
    row(&mut s, "digest", format!("sha256:{digest}"));
    if let Some(path) = export {
        row(
            &mut s,
            "exported",
            format!("{} ({} lines)", path.display(), sum.count),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> WorkloadOpts {
        WorkloadOpts {
            preset: Some("fastgen-2600".into()),
            ..WorkloadOpts::default()
        }
    }

    #[test]
    fn flags_resolve_to_arrivals() {
        let r = |a: WorkloadOpts| resolve(&a).map(|(s, _)| s.arrivals);
        assert_eq!(r(args()).unwrap(), Arrivals::Poisson { rate: 1.0 });
        assert_eq!(
            r(WorkloadOpts {
                rate: Some(4.0),
                ..args()
            })
            .unwrap(),
            Arrivals::Poisson { rate: 4.0 }
        );
        assert_eq!(
            r(WorkloadOpts {
                burstiness: Some(0.5),
                rate: Some(2.0),
                ..args()
            })
            .unwrap(),
            Arrivals::Gamma {
                rate: 2.0,
                burstiness: 0.5
            }
        );
        assert_eq!(
            r(WorkloadOpts {
                clients: vec![8],
                ..args()
            })
            .unwrap(),
            Arrivals::ClosedLoop { clients: 8 }
        );
        assert_eq!(
            r(WorkloadOpts {
                end_rate: Some(9.0),
                ..args()
            })
            .unwrap(),
            Arrivals::Ramp {
                start_rate: 1.0,
                end_rate: 9.0
            }
        );
        let h200 = WorkloadOpts {
            preset: Some("h200-64".into()),
            ..WorkloadOpts::default()
        };
        assert_eq!(r(h200.clone()).unwrap(), Arrivals::Burst);
        assert_eq!(
            r(WorkloadOpts {
                rate: Some(3.0),
                ..h200
            })
            .unwrap(),
            Arrivals::Poisson { rate: 3.0 }
        );
    }

    #[test]
    fn contradictions_are_errors() {
        let e = |a: WorkloadOpts| resolve(&a).unwrap_err().to_string();
        assert!(
            e(WorkloadOpts {
                rate: Some(1.0),
                clients: vec![2],
                ..args()
            })
            .starts_with("invalid --rate")
        );
        assert!(
            e(WorkloadOpts {
                arrivals: Some(ArrivalKind::Burst),
                rate: Some(1.0),
                ..args()
            })
            .starts_with("invalid --rate")
        );
        assert!(
            e(WorkloadOpts {
                arrivals: Some(ArrivalKind::Gamma),
                ..args()
            })
            .starts_with("invalid --burstiness")
        );
        assert!(
            e(WorkloadOpts {
                prefix_groups: Some(2),
                ..args()
            })
            .starts_with("invalid --prefix-groups")
        );
        assert!(
            e(WorkloadOpts {
                trace: Some("t".into()),
                ..args()
            })
            .starts_with("invalid --preset: cannot be combined with --trace")
        );
        assert!(e(WorkloadOpts::default()).contains("fastgen-2600"));
        assert!(
            e(WorkloadOpts {
                rate: Some(-1.0),
                ..args()
            })
            .starts_with("invalid rate: -1 is not positive")
        );
    }
}
