//! A test knob: a backend wrapper that makes every step slower by a factor,
//! so that a known regression can be planted to check that the CI gate
//! catches it (`fuselab bench --slowdown 1.10`).

use std::time::{Duration, Instant};

use crate::{Backend, BackendError, ForwardBatch, StepOutput};

/// Runs the inner backend and stretches each step by `factor` (≥ 1).
///
/// A backend that predicts its step's duration (the simulator, on a virtual
/// clock) gets that duration multiplied by `factor`. A backend that is timed
/// by the engine's wall clock (CPU, CUDA) is followed by a sleep of
/// `(factor − 1) ×` the step's wall time, so the engine measures a step
/// `factor` times as long. Sleeping costs no CPU, so the planted slowdown does
/// not slow other work on the machine.
///
/// # Example
/// ```
/// use fuselab_engine::{Backend, ForwardBatch, Slowdown, StepOutput};
/// # struct Fixed;
/// # impl Backend for Fixed {
/// #     fn name(&self) -> &str { "fixed" }
/// #     fn needs_tokens(&self) -> bool { false }
/// #     fn kv_bytes_per_token(&self) -> u64 { 1 }
/// #     fn kv_budget_bytes(&self) -> u64 { 1 << 20 }
/// #     fn init_kv(&mut self, _: fuselab_engine::KvGeometry) -> Result<(), fuselab_engine::BackendError> { Ok(()) }
/// #     fn forward(&mut self, _: &ForwardBatch) -> Result<StepOutput, fuselab_engine::BackendError> {
/// #         Ok(StepOutput { duration_s: Some(0.02), ..Default::default() })
/// #     }
/// # }
/// let mut slow = Slowdown::new(Fixed, 1.5);
/// let out = slow.forward(&ForwardBatch::default()).unwrap();
/// assert!((out.duration_s.unwrap() - 0.03).abs() < 1e-12);
/// ```
#[derive(Debug)]
pub struct Slowdown<B> {
    inner: B,
    factor: f64,
}

impl<B: Backend> Slowdown<B> {
    /// Wraps `inner`; a `factor` below 1 or not finite is treated as 1.
    pub fn new(inner: B, factor: f64) -> Self {
        let factor = if factor.is_finite() && factor > 1.0 {
            factor
        } else {
            1.0
        };
        Self { inner, factor }
    }

    /// The factor in effect.
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

impl<B: Backend> Backend for Slowdown<B> {
    crate::forward_backend_to_inner!();

    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let started = Instant::now();
        let out = self.inner.forward(batch)?;
        Ok(self.stretch(started, out))
    }

    fn draft_forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let started = Instant::now();
        let out = self.inner.draft_forward(batch)?;
        Ok(self.stretch(started, out))
    }
}

impl<B: Backend> Slowdown<B> {
    /// Stretches a pass that started at `started` by the factor.
    fn stretch(&self, started: Instant, mut out: StepOutput) -> StepOutput {
        match &mut out.duration_s {
            Some(d) => *d *= self.factor,
            None => {
                let extra = started.elapsed().as_secs_f64() * (self.factor - 1.0);
                if extra > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(extra));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KvGeometry;

    struct Predicted(Option<f64>);

    impl Backend for Predicted {
        fn name(&self) -> &str {
            "predicted"
        }
        fn needs_tokens(&self) -> bool {
            false
        }
        fn kv_bytes_per_token(&self) -> u64 {
            1
        }
        fn kv_budget_bytes(&self) -> u64 {
            1
        }
        fn init_kv(&mut self, _: KvGeometry) -> Result<(), BackendError> {
            Ok(())
        }
        fn forward(&mut self, _: &ForwardBatch) -> Result<StepOutput, BackendError> {
            Ok(StepOutput {
                duration_s: self.0,
                ..Default::default()
            })
        }
    }

    #[test]
    fn predicted_durations_are_scaled_and_bad_factors_ignored() {
        let b = ForwardBatch::default();
        let mut s = Slowdown::new(Predicted(Some(0.5)), 1.1);
        assert!((s.forward(&b).unwrap().duration_s.unwrap() - 0.55).abs() < 1e-12);
        for bad in [0.5, f64::NAN, f64::INFINITY] {
            let mut s = Slowdown::new(Predicted(Some(0.5)), bad);
            assert_eq!(s.factor(), 1.0);
            assert_eq!(s.forward(&b).unwrap().duration_s, Some(0.5));
        }
        // A wall-timed backend keeps reporting no duration (the engine times it).
        let mut s = Slowdown::new(Predicted(None), 1.1);
        assert_eq!(s.forward(&b).unwrap().duration_s, None);
    }

    struct WithContext;

    impl Backend for WithContext {
        fn name(&self) -> &str {
            "ctx"
        }
        fn needs_tokens(&self) -> bool {
            true
        }
        fn kv_bytes_per_token(&self) -> u64 {
            7
        }
        fn vocab_size(&self) -> u32 {
            99
        }
        fn context_len(&self) -> Option<u32> {
            Some(131_072)
        }
        fn kv_budget_bytes(&self) -> u64 {
            5
        }
        fn init_kv(&mut self, _: KvGeometry) -> Result<(), BackendError> {
            Ok(())
        }
        fn forward(&mut self, _: &ForwardBatch) -> Result<StepOutput, BackendError> {
            Ok(StepOutput::default())
        }
    }

    #[test]
    fn wrappers_forward_every_property_of_the_backend() {
        fn props(b: &impl Backend) -> (String, bool, u64, u32, Option<u32>, u64) {
            (
                b.name().into(),
                b.needs_tokens(),
                b.kv_bytes_per_token(),
                b.vocab_size(),
                b.context_len(),
                b.kv_budget_bytes(),
            )
        }
        let want = props(&WithContext);
        assert_eq!(props(&Slowdown::new(WithContext, 2.0)), want);
        assert_eq!(props(&crate::RealTime::new(WithContext)), want);
    }
}
