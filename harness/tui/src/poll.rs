//! Following folders written by another process: a fixed-interval poller
//! with injected time, and a cheap fingerprint of the files that change when
//! a run, sweep or campaign makes progress.
//!
//! Polling rather than inotify keeps the crate portable and dependency-free,
//! and a `stat` of a handful of files every 250 ms costs nothing. The worst
//! case from a write to its detection is one [`FOLLOW_INTERVAL`]; loading the
//! folder and the next frame add a few milliseconds (see the crate docs for
//! the measured figure).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How often the followed folder is checked for changes.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

/// How often the browse roots are rescanned for new folders.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(1000);

/// The files whose size and modification time make up a folder's
/// [`Fingerprint`]: everything fuselab (and the TUI's job wrapper) writes as
/// work progresses.
pub const WATCHED_FILES: [&str; 9] = [
    fuselab_store::SUMMARY_FILE,
    fuselab_store::SWEEP_FILE,
    fuselab_store::REPEAT_FILE,
    "curve.txt",
    "trials.jsonl",
    "campaign.json",
    crate::job::JOB_FILE,
    crate::job::EXIT_FILE,
    crate::job::LOG_FILE,
];

/// Says when a periodic check is due, given the current time.
///
/// Time is passed in, never read, so that the schedule is unit-tested
/// without sleeping.
#[derive(Clone, Debug)]
pub struct Poller {
    interval: Duration,
    next: Option<Instant>,
}

impl Poller {
    /// A poller firing every `interval`, first at the first call of [`Poller::due`].
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            next: None,
        }
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether a check is due at `now`; if so, schedules the next one. A
    /// poller that fell behind (a slow frame) fires once and reschedules from
    /// `now`, never in a burst.
    pub fn due(&mut self, now: Instant) -> bool {
        match self.next {
            Some(t) if now < t => false,
            Some(t) => {
                let after = t + self.interval;
                self.next = Some(if now >= after {
                    now + self.interval
                } else {
                    after
                });
                true
            }
            None => {
                self.next = Some(now + self.interval);
                true
            }
        }
    }

    /// How long from `now` until the next check (zero when one is due).
    pub fn timeout(&self, now: Instant) -> Duration {
        self.next
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// Makes the next call of [`Poller::due`] fire.
    pub fn reset(&mut self) {
        self.next = None;
    }
}

/// Size and modification time of a folder's [`WATCHED_FILES`]: when it
/// changes, the folder is read again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<(u64, Option<SystemTime>)>);

impl Fingerprint {
    /// The fingerprint of `dir` now (missing files count as empty).
    pub fn of(dir: &Path) -> Self {
        Self(
            WATCHED_FILES
                .iter()
                .map(|name| match std::fs::metadata(dir.join(name)) {
                    Ok(m) => (m.len(), m.modified().ok()),
                    Err(_) => (0, None),
                })
                .collect(),
        )
    }
}

/// Follows one folder: every [`FOLLOW_INTERVAL`] it compares the folder's
/// [`Fingerprint`] with the last one seen and says whether to read it again.
#[derive(Clone, Debug)]
pub struct Follower {
    path: PathBuf,
    poller: Poller,
    seen: Option<Fingerprint>,
}

impl Follower {
    /// Follows `path`, checking every `interval`.
    pub fn new(path: impl Into<PathBuf>, interval: Duration) -> Self {
        Self {
            path: path.into(),
            poller: Poller::new(interval),
            seen: None,
        }
    }

    /// The followed folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `fingerprint` as read (call it with the fingerprint taken
    /// just before reading the folder).
    pub fn mark_read(&mut self, fingerprint: Fingerprint) {
        self.seen = Some(fingerprint);
    }

    /// At `now`: whether the folder changed since it was last read. Stats
    /// the files only when a check is due.
    pub fn changed(&mut self, now: Instant) -> Option<Fingerprint> {
        if !self.poller.due(now) {
            return None;
        }
        let fp = Fingerprint::of(&self.path);
        (self.seen.as_ref() != Some(&fp)).then_some(fp)
    }

    /// How long from `now` until the next check.
    pub fn timeout(&self, now: Instant) -> Duration {
        self.poller.timeout(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fires_first_then_every_interval() {
        let t0 = Instant::now();
        let mut p = Poller::new(250 * MS);
        assert!(p.due(t0));
        assert!(!p.due(t0 + 100 * MS));
        assert_eq!(p.timeout(t0 + 100 * MS), 150 * MS);
        assert!(p.due(t0 + 250 * MS));
        assert!(!p.due(t0 + 499 * MS));
        assert!(p.due(t0 + 500 * MS));
        // Fell behind by several intervals: fires once, then from now on.
        assert!(p.due(t0 + 2000 * MS));
        assert!(!p.due(t0 + 2100 * MS));
        assert!(p.due(t0 + 2250 * MS));
        p.reset();
        assert!(p.due(t0 + 2260 * MS));
    }

    /// The follow requirement (a new trial shows within 1 s) in injected
    /// time: an event loop that sleeps at most until the poller's next
    /// check detects a change made at any moment within one interval.
    #[test]
    fn detection_delay_is_at_most_one_interval() {
        let t0 = Instant::now();
        let mut worst = Duration::ZERO;
        for offset_ms in (0..2000).step_by(7) {
            let mut p = Poller::new(FOLLOW_INTERVAL);
            let written = t0 + offset_ms * MS;
            let mut now = t0;
            // Key presses and redraws wake the loop at arbitrary times too.
            let mut wakeups = (0..).map(|k| t0 + (k * 37) * MS);
            let detected = loop {
                if p.due(now) && now >= written {
                    break now;
                }
                let next_key = wakeups.find(|&w| w > now).expect("endless");
                now = (now + p.timeout(now)).min(next_key);
            };
            worst = worst.max(detected - written);
        }
        assert!(worst <= FOLLOW_INTERVAL, "worst {worst:?}");
        assert!(FOLLOW_INTERVAL < Duration::from_secs(1));
    }

    #[test]
    fn follower_reports_changes_once() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut f = Follower::new(dir.path(), 250 * MS);
        let fp = f.changed(t0).expect("never read: changed");
        f.mark_read(fp);
        assert_eq!(f.changed(t0 + 300 * MS), None);
        std::fs::write(dir.path().join("trials.jsonl"), "{}\n").unwrap();
        assert_eq!(f.changed(t0 + 400 * MS), None, "not due yet");
        let fp = f.changed(t0 + 600 * MS).expect("grew");
        f.mark_read(fp);
        assert_eq!(f.changed(t0 + 900 * MS), None);
    }
}
