//! The application's state: the browse list with its selection, marks and
//! filter, and a stack of screens above it. Nothing here does I/O; folders
//! are read by the app loop (or a test) and handed in as messages.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::catalog::Entry;
use crate::compare::CompareView;
use crate::form::Form;
use crate::live::{Content, CurveMetric, Opened};

/// Seconds since the Unix epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Something being read in the background.
#[derive(Clone, Debug, PartialEq)]
pub enum Loadable<T> {
    /// Not read yet.
    Loading,
    /// Read.
    Ready(T),
    /// Could not be read (the reason).
    Failed(String),
}

impl<T> Loadable<T> {
    /// The value when read.
    pub fn ready(&self) -> Option<&T> {
        match self {
            Self::Ready(t) => Some(t),
            _ => None,
        }
    }
}

/// An opened folder's screen.
#[derive(Clone, Debug, PartialEq)]
pub struct DetailScreen {
    /// The folder (followed while the screen is on top).
    pub path: PathBuf,
    /// Its content.
    pub content: Loadable<Opened>,
    /// Selected row of its table (sweep points, campaign trials).
    pub selected: usize,
    /// Show CDFs instead of histograms (runs).
    pub cdf: bool,
    /// Show the provenance panel (runs, small terminals).
    pub provenance: bool,
    /// The latency metric of the curves (sweeps).
    pub metric: CurveMetric,
}

impl DetailScreen {
    /// A screen for `path`, loading.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            content: Loadable::Loading,
            selected: 0,
            cdf: false,
            provenance: false,
            metric: CurveMetric::TtftP99,
        }
    }

    /// Rows of the screen's table.
    pub fn rows(&self) -> usize {
        match self.content.ready().map(|o| &o.content) {
            Some(Content::Sweep(s)) => s.summary.points.len(),
            Some(Content::Campaign(c)) => c.data.trials.len(),
            _ => 0,
        }
    }
}

/// The compare screen.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareScreen {
    /// The compared folders, baseline first.
    pub paths: Vec<PathBuf>,
    /// The comparison.
    pub content: Loadable<CompareView>,
    /// The latency metric of the curves.
    pub metric: CurveMetric,
    /// First metric row shown.
    pub scroll: usize,
}

/// A screen above the browse list.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // a few on the stack
pub enum Screen {
    /// A run, sweep, campaign or job.
    Detail(DetailScreen),
    /// Two or more folders compared.
    Compare(CompareScreen),
    /// The new-work form.
    Form(Form),
}

/// The browse list's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Browse {
    /// Every entry, newest first.
    pub entries: Vec<Entry>,
    /// Path of the selected entry (kept across rescans).
    pub selected: Option<PathBuf>,
    /// Marked folders, in marking order (the first is the baseline).
    pub marked: Vec<PathBuf>,
    /// The filter text.
    pub filter: String,
    /// Whether keys go to the filter.
    pub filtering: bool,
    /// Whether the roots were scanned at least once.
    pub scanned: bool,
}

impl Browse {
    /// Entries passing the filter.
    pub fn visible(&self) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.matches(&self.filter))
            .collect()
    }

    /// Index of the selected entry among the visible ones (0 when none is).
    pub fn selected_index(&self) -> usize {
        let v = self.visible();
        self.selected
            .as_ref()
            .and_then(|p| v.iter().position(|e| &e.path == p))
            .unwrap_or(0)
    }

    /// The selected visible entry.
    pub fn selected_entry(&self) -> Option<&Entry> {
        self.visible().get(self.selected_index()).copied()
    }

    /// Selects the visible entry at `index` (clamped).
    pub fn select(&mut self, index: usize) {
        let path = {
            let v = self.visible();
            if v.is_empty() {
                None
            } else {
                Some(v[index.min(v.len() - 1)].path.clone())
            }
        };
        self.selected = path;
    }

    /// Marking order of `path` (1-based), if marked.
    pub fn mark_of(&self, path: &Path) -> Option<usize> {
        self.marked.iter().position(|p| p == path).map(|i| i + 1)
    }
}

/// The whole application state.
#[derive(Clone, Debug, PartialEq)]
pub struct App {
    /// The folders browsed (the first is where new work goes, except tuning
    /// campaigns, which go to a root named `campaigns` when there is one).
    pub roots: Vec<PathBuf>,
    /// The browse list.
    pub browse: Browse,
    /// Screens above the browse list, top last.
    pub screens: Vec<Screen>,
    /// Whether the key help is shown.
    pub help: bool,
    /// A one-line message (errors, confirmations).
    pub message: Option<String>,
    /// The time ages are measured against (set on every tick).
    pub now: SystemTime,
    /// Set when the app should exit.
    pub quit: bool,
}

impl App {
    /// A fresh app over `roots`.
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots,
            browse: Browse::default(),
            screens: Vec::new(),
            help: false,
            message: None,
            now: SystemTime::UNIX_EPOCH,
            quit: false,
        }
    }

    /// The top screen, `None` on the browse list.
    pub fn top(&self) -> Option<&Screen> {
        self.screens.last()
    }

    /// The folder to follow: the top screen's, when it shows one.
    pub fn followed(&self) -> Option<&Path> {
        match self.top() {
            Some(Screen::Detail(d)) => Some(&d.path),
            _ => None,
        }
    }

    /// Where new work of `kind` goes.
    pub fn root_for(&self, kind: crate::job::WorkKind) -> PathBuf {
        if kind == crate::job::WorkKind::Tune
            && let Some(r) = self
                .roots
                .iter()
                .find(|r| r.file_name().is_some_and(|n| n == "campaigns"))
        {
            return r.clone();
        }
        self.roots
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from("runs"))
    }

    /// Whether keys are being typed into a text (the filter or a form's
    /// text field), so that `q` and the other letters are text.
    pub fn typing(&self) -> bool {
        match self.top() {
            None => self.browse.filtering,
            Some(Screen::Form(f)) => f.typing(),
            Some(_) => false,
        }
    }
}
