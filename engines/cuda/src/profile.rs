//! Per-operator GPU time of the CUDA backend's steps (opt-in, [`crate::CudaOptions::profile`]).
//!
//! Every operator class of a step is bracketed by CUDA events on the backend's one
//! stream (one event per boundary, so the classes tile the step's GPU time); after
//! the step's synchronisation the gaps are added up per phase (prefill-only,
//! decode-only and mixed steps). Decode-only steps also keep their batch size,
//! context tokens and wall time, so a step can be set against the bytes it must read.
//!
//! The events themselves cost the GPU a little time: profile in a separate run,
//! not in the run whose end-to-end time is reported.

use std::fmt::Write as _;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};

use crate::CudaBackendError;

/// An operator class of the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Metadata upload and embedding gather.
    Embed,
    /// RMSNorm before attention and before the MLP.
    Norm,
    /// The fused q/k/v projection.
    Qkv,
    /// RoPE on q and k, and the paged K/V write.
    RopeKv,
    /// Paged decode attention (one query per sequence).
    DecodeAttention,
    /// Ragged prefill attention (prompt chunks).
    PrefillAttention,
    /// The output projection, added into the residual.
    OProj,
    /// The gate/up projection.
    GateUp,
    /// SiLU(gate) · up.
    SiluMul,
    /// The down projection, added into the residual.
    Down,
    /// LoRA (BGMV shrink and expand, MeteoRA's gate) after a projection.
    Lora,
    /// Gather of the sampled rows, final norm, `lm_head` and argmax.
    Head,
    /// A whole decode step replayed from a CUDA graph (its classes are not split).
    DecodeGraph,
}

impl Op {
    /// Every class, in forward order.
    pub const ALL: [Op; 13] = [
        Op::Embed,
        Op::Norm,
        Op::Qkv,
        Op::RopeKv,
        Op::DecodeAttention,
        Op::PrefillAttention,
        Op::OProj,
        Op::GateUp,
        Op::SiluMul,
        Op::Down,
        Op::Lora,
        Op::Head,
        Op::DecodeGraph,
    ];

    /// Short name used in the JSON and the table.
    pub fn name(self) -> &'static str {
        match self {
            Op::Embed => "embed",
            Op::Norm => "rms_norm",
            Op::Qkv => "gemm_qkv",
            Op::RopeKv => "rope_kv_write",
            Op::DecodeAttention => "decode_attention",
            Op::PrefillAttention => "prefill_attention",
            Op::OProj => "gemm_o_residual",
            Op::GateUp => "gemm_gate_up",
            Op::SiluMul => "silu_mul",
            Op::Down => "gemm_down_residual",
            Op::Lora => "lora",
            Op::Head => "head",
            Op::DecodeGraph => "decode_graph",
        }
    }

    fn index(self) -> usize {
        Op::ALL.iter().position(|&o| o == self).unwrap_or(0)
    }
}

/// Which work a step held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Prompt chunks only.
    Prefill,
    /// Decode tokens only.
    Decode,
    /// Both.
    Mixed,
}

impl Phase {
    /// Every phase.
    pub const ALL: [Phase; 3] = [Phase::Prefill, Phase::Decode, Phase::Mixed];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
            Phase::Mixed => "mixed",
        }
    }

    /// The phase of a step with `n_decode` decode entries and `n_prefill` chunks.
    pub fn of(n_decode: usize, n_prefill: usize) -> Self {
        match (n_decode > 0, n_prefill > 0) {
            (true, false) => Phase::Decode,
            (false, true) => Phase::Prefill,
            _ => Phase::Mixed,
        }
    }
}

/// Sums over the steps of one phase.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseTotals {
    /// Steps.
    pub steps: u64,
    /// Token rows computed (padding included).
    pub rows: u64,
    /// Wall time of the backend's forward calls (host planning, launches, synchronisation).
    pub wall_ms: f64,
    /// GPU time per [`Op`] class, in [`Op::ALL`] order.
    pub op_ms: [f64; 13],
}

impl PhaseTotals {
    /// GPU time of all classes.
    pub fn gpu_ms(&self) -> f64 {
        self.op_ms.iter().sum()
    }
}

/// One decode-only step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeStep {
    /// Sequences.
    pub batch: usize,
    /// Keys attended over all sequences (context tokens including the new one).
    pub context_tokens: u64,
    /// Wall time of the forward call.
    pub wall_ms: f64,
}

/// What a profiled run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpProfile {
    /// Per [`Phase::ALL`].
    pub phases: [PhaseTotals; 3],
    /// Every decode-only step, in order.
    pub decode_steps: Vec<DecodeStep>,
    /// Bytes of weights a decode step reads (every layer and `lm_head`).
    pub weight_bytes_per_step: u64,
    /// KV-cache bytes per context token (K and V, all layers).
    pub kv_bytes_per_token: u64,
}

impl OpProfile {
    /// Adds one step's measured class times.
    pub fn add_step(&mut self, phase: Phase, rows: usize, wall_ms: f64, ops: &[(Op, f64)]) {
        let t = &mut self.phases[Phase::ALL.iter().position(|&p| p == phase).unwrap_or(0)];
        t.steps += 1;
        t.rows += rows as u64;
        t.wall_ms += wall_ms;
        for &(op, ms) in ops {
            t.op_ms[op.index()] += ms;
        }
    }

    /// Decode-only steps of exactly `batch` sequences: (steps, mean wall ms, mean
    /// bytes read: weights plus K/V).
    pub fn decode_at(&self, batch: usize) -> Option<(usize, f64, f64)> {
        let steps: Vec<&DecodeStep> = self
            .decode_steps
            .iter()
            .filter(|s| s.batch == batch)
            .collect();
        if steps.is_empty() {
            return None;
        }
        let n = steps.len() as f64;
        let ms = steps.iter().map(|s| s.wall_ms).sum::<f64>() / n;
        let bytes = steps
            .iter()
            .map(|s| {
                (self.weight_bytes_per_step + s.context_tokens * self.kv_bytes_per_token) as f64
            })
            .sum::<f64>()
            / n;
        Some((steps.len(), ms, bytes))
    }

    /// The profile as JSON (no dependencies: the values are numbers and fixed names).
    pub fn to_json(&self) -> String {
        let mut s = String::from("{\n  \"phases\": {");
        for (i, (phase, t)) in Phase::ALL.iter().zip(&self.phases).enumerate() {
            let _ = write!(
                s,
                "{}\n    \"{}\": {{\"steps\": {}, \"rows\": {}, \"wall_ms\": {:.3}, \"gpu_ms\": {:.3}, \"ops_ms\": {{",
                if i > 0 { "," } else { "" },
                phase.name(),
                t.steps,
                t.rows,
                t.wall_ms,
                t.gpu_ms()
            );
            for (j, op) in Op::ALL.iter().enumerate() {
                let _ = write!(
                    s,
                    "{}\"{}\": {:.3}",
                    if j > 0 { ", " } else { "" },
                    op.name(),
                    t.op_ms[j]
                );
            }
            s.push_str("}}");
        }
        let _ = write!(
            s,
            "\n  }},\n  \"weight_bytes_per_step\": {},\n  \"kv_bytes_per_token\": {},\n  \"decode_steps\": [",
            self.weight_bytes_per_step, self.kv_bytes_per_token
        );
        for (i, d) in self.decode_steps.iter().enumerate() {
            let _ = write!(
                s,
                "{}\n    {{\"batch\": {}, \"context_tokens\": {}, \"wall_ms\": {:.4}}}",
                if i > 0 { "," } else { "" },
                d.batch,
                d.context_tokens,
                d.wall_ms
            );
        }
        s.push_str("\n  ]\n}\n");
        s
    }

    /// The profile as a markdown table: GPU ms and share per class and phase, then
    /// the wall time the classes leave unexplained (host work, gaps, events).
    pub fn markdown(&self) -> String {
        let mut s = String::from("| class |");
        for p in Phase::ALL {
            let _ = write!(s, " {} ms | share |", p.name());
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|---:|".repeat(Phase::ALL.len()));
        s.push('\n');
        let share = |v: f64, total: f64| {
            if total > 0.0 {
                format!("{:.1}%", 100.0 * v / total)
            } else {
                "-".into()
            }
        };
        for (j, op) in Op::ALL.iter().enumerate() {
            let _ = write!(s, "| {} |", op.name());
            for t in &self.phases {
                let _ = write!(s, " {:.1} | {} |", t.op_ms[j], share(t.op_ms[j], t.wall_ms));
            }
            s.push('\n');
        }
        let mut row = |name: &str, f: &dyn Fn(&PhaseTotals) -> f64| {
            let _ = write!(s, "| {name} |");
            for t in &self.phases {
                let _ = write!(s, " {:.1} | {} |", f(t), share(f(t), t.wall_ms));
            }
            s.push('\n');
        };
        row("**GPU, all classes**", &|t| t.gpu_ms());
        row("wall − GPU (host, gaps)", &|t| t.wall_ms - t.gpu_ms());
        row("**wall**", &|t| t.wall_ms);
        s.push('\n');
        for p in Phase::ALL.iter().zip(&self.phases) {
            let _ = writeln!(
                s,
                "- {}: {} steps, {} rows",
                p.0.name(),
                p.1.steps,
                p.1.rows
            );
        }
        let mut batches: Vec<usize> = self.decode_steps.iter().map(|d| d.batch).collect();
        batches.sort_unstable();
        batches.dedup();
        if let Some(&b) = batches.last()
            && let Some((n, ms, bytes)) = self.decode_at(b)
        {
            let _ = writeln!(
                s,
                "- decode-only steps at batch {b}: {n} steps, mean {ms:.3} ms, mean {:.2} GB read (weights + K/V), {:.2} TB/s",
                bytes / 1e9,
                bytes / (ms * 1e-3) / 1e12
            );
        }
        s
    }
}

/// Records one step's boundary events and turns them into class times.
pub(crate) struct Recorder {
    ctx: std::sync::Arc<CudaContext>,
    pool: Vec<CudaEvent>,
    marks: Vec<Op>,
}

impl Recorder {
    pub(crate) fn new(ctx: std::sync::Arc<CudaContext>) -> Self {
        Self {
            ctx,
            pool: Vec::new(),
            marks: Vec::new(),
        }
    }

    /// Records boundary event `i` (created on first use).
    fn record_at(&mut self, i: usize, stream: &CudaStream) -> Result<(), CudaBackendError> {
        if self.pool.len() <= i {
            let e = self
                .ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| CudaBackendError::driver("creating a profiling event", e))?;
            self.pool.push(e);
        }
        self.pool[i]
            .record(stream)
            .map_err(|e| CudaBackendError::driver("recording a profiling event", e))
    }

    /// Starts a step (the first boundary).
    pub(crate) fn begin(&mut self, stream: &CudaStream) -> Result<(), CudaBackendError> {
        self.marks.clear();
        self.record_at(0, stream)
    }

    /// Ends the span of `op` here (`marks[i]` names the span ending at event i + 1).
    pub(crate) fn mark(&mut self, stream: &CudaStream, op: Op) -> Result<(), CudaBackendError> {
        self.marks.push(op);
        self.record_at(self.marks.len(), stream)
    }

    /// The class times of the step (call after the stream is synchronised).
    pub(crate) fn spans(&self) -> Result<Vec<(Op, f64)>, CudaBackendError> {
        let mut out = Vec::with_capacity(self.marks.len());
        for (i, &op) in self.marks.iter().enumerate() {
            let ms = self.pool[i]
                .elapsed_ms(&self.pool[i + 1])
                .map_err(|e| CudaBackendError::driver("reading a profiling event", e))?;
            out.push((op, f64::from(ms)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_add_up_per_phase_and_decode_bytes_follow_the_context() {
        let mut p = OpProfile {
            weight_bytes_per_step: 1000,
            kv_bytes_per_token: 10,
            ..OpProfile::default()
        };
        p.add_step(
            Phase::Prefill,
            100,
            5.0,
            &[(Op::Qkv, 1.0), (Op::Down, 2.0), (Op::Qkv, 0.5)],
        );
        p.add_step(Phase::Decode, 4, 2.0, &[(Op::DecodeAttention, 1.5)]);
        p.decode_steps.push(DecodeStep {
            batch: 4,
            context_tokens: 100,
            wall_ms: 2.0,
        });
        p.decode_steps.push(DecodeStep {
            batch: 4,
            context_tokens: 300,
            wall_ms: 4.0,
        });
        let pre = &p.phases[0];
        assert_eq!((pre.steps, pre.rows), (1, 100));
        assert!((pre.op_ms[Op::Qkv.index()] - 1.5).abs() < 1e-12);
        assert!((pre.gpu_ms() - 3.5).abs() < 1e-12);
        assert_eq!(p.phases[1].steps, 1);
        assert_eq!(p.phases[2].steps, 0);
        let (n, ms, bytes) = p.decode_at(4).unwrap();
        assert_eq!(n, 2);
        assert!((ms - 3.0).abs() < 1e-12);
        assert!((bytes - 3000.0).abs() < 1e-9, "{bytes}");
        assert!(p.decode_at(8).is_none());
        assert_eq!(Phase::of(3, 0), Phase::Decode);
        assert_eq!(Phase::of(0, 1), Phase::Prefill);
        assert_eq!(Phase::of(2, 1), Phase::Mixed);
        let md = p.markdown();
        assert!(md.contains("| gemm_qkv | 1.5 | 30.0% |"), "{md}");
        assert!(
            md.contains("decode-only steps at batch 4: 2 steps, mean 3.000 ms"),
            "{md}"
        );
        let json = p.to_json();
        assert!(
            json.contains("\"prefill\": {\"steps\": 1, \"rows\": 100"),
            "{json}"
        );
        assert!(json.contains("{\"batch\": 4, \"context_tokens\": 300, \"wall_ms\": 4.0000}"));
    }
}
