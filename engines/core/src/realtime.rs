//! Running a backend that predicts its step durations (the simulator) in
//! real time: each step takes as long on the wall clock as the backend says
//! it would take on the hardware it models. This is how `fuselab serve
//! --engine sim` answers clients on the simulated hardware's schedule.

use std::time::{Duration, Instant};

use crate::{Backend, BackendError, ForwardBatch, StepOutput};

/// Sleeps out each step's predicted duration and reports the step as
/// wall-timed (`duration_s: None`), so the engine stamps events with the
/// real clock. Backends that are wall-timed already pass through unchanged.
///
/// ```
/// use fuselab_engine::{Backend, ForwardBatch, RealTime, StepOutput};
/// # struct Fixed;
/// # impl Backend for Fixed {
/// #     fn name(&self) -> &str { "fixed" }
/// #     fn needs_tokens(&self) -> bool { false }
/// #     fn kv_bytes_per_token(&self) -> u64 { 1 }
/// #     fn kv_budget_bytes(&self) -> u64 { 1 << 20 }
/// #     fn init_kv(&mut self, _: fuselab_engine::KvGeometry) -> Result<(), fuselab_engine::BackendError> { Ok(()) }
/// #     fn forward(&mut self, _: &ForwardBatch) -> Result<StepOutput, fuselab_engine::BackendError> {
/// #         Ok(StepOutput { duration_s: Some(0.002), ..Default::default() })
/// #     }
/// # }
/// let mut rt = RealTime::new(Fixed);
/// let t = std::time::Instant::now();
/// let out = rt.forward(&ForwardBatch::default()).unwrap();
/// assert_eq!(out.duration_s, None);
/// assert!(t.elapsed().as_secs_f64() >= 0.002);
/// ```
///
/// Steps that follow each other without a pause are kept on the predicted
/// schedule: a step starting within a millisecond of the previous step's
/// due end is due its predicted duration after that end, so the engine's own
/// scheduling work between steps (free on the virtual clock) does not
/// accumulate as extra wall time.
#[derive(Debug)]
pub struct RealTime<B> {
    inner: B,
    last_due: Option<Instant>,
}

/// Steps starting this soon after the previous one's due end continue its schedule.
const BACK_TO_BACK: Duration = Duration::from_millis(1);

impl<B: Backend> RealTime<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            last_due: None,
        }
    }
}

impl<B: Backend> Backend for RealTime<B> {
    crate::forward_backend_to_inner!();

    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let started = Instant::now();
        let out = self.inner.forward(batch)?;
        Ok(self.pace(started, out))
    }

    fn draft_forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let started = Instant::now();
        let out = self.inner.draft_forward(batch)?;
        Ok(self.pace(started, out))
    }
}

impl<B: Backend> RealTime<B> {
    /// Sleeps out a pass's predicted duration, which the engine then measures.
    fn pace(&mut self, started: Instant, mut out: StepOutput) -> StepOutput {
        if let Some(d) = out.duration_s.take() {
            let from = match self.last_due {
                Some(due) if started <= due + BACK_TO_BACK => due,
                _ => started,
            };
            let until = from + Duration::from_secs_f64(d.max(0.0));
            self.last_due = Some(until);
            let now = Instant::now();
            if until > now {
                std::thread::sleep(until - now);
            }
        }
        out
    }
}
