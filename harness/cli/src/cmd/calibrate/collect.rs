//! The GPU half of `fuselab calibrate --engine cuda`: every measurement the
//! fit and its validation need, in one command.
//!
//! 1. **Operators** ([`fuselab_kernels::cuda::sweep`]): GEMMs at the model's
//!    shapes over 1 … 16384 tokens, prefill attention over (chunk, prior
//!    context) up to 32k on the engine's tile, decode attention over (batch,
//!    context) on both of the engine's paths, element-wise kernels.
//! 2. **Grid steps** (set `grid`): a synthetic grid of batches run through the
//!    real [`CudaBackend`] ([`grid_batches`]: decode-only at batch 1 … 512,
//!    single and several prompt chunks over prior context, decodes mixed with
//!    chunks, padded prefill and padded decode), each once to warm up (buffer
//!    growth, graph capture) and then [`GRID_REPEATS`] times, on a cache of
//!    16-token blocks; the batches that read paged KV run again on 64-token
//!    blocks (splitfuse's), so the fit sees what the block size costs.
//! 3. **Policy runs** (sets `policy:NAME`): the engine serves `h200-64` (64
//!    requests at t = 0, prompts N(2600, 780) in [256, 4096], 128 output
//!    tokens) with each of the five policies at default knobs on the same
//!    backend; a recording wrapper keeps every step's batch and wall time.
//! 4. **Chunked prefill** (sets `chunked:BUDGET`): an 8191-token prompt
//!    prefilled by the chunked policy at budgets 512, 2048 and 8192 (one pass),
//!    [`CHUNKED_REPEATS`] prompts per budget served one after another, each
//!    alone (the run's `makespan_s / requests` is one prompt's time).
//!
//! **Held out.** The fit may use the operators and the `grid` steps only; every
//! `policy:` and `chunked:` step is held out for validation (batches the fit
//! never saw, composed by the real schedulers), as are the Poisson serving runs
//! the device script runs afterwards with `fuselab bench --engine cuda` at the
//! rates this command writes into `capacity.env`.
//!
//! The backend is built once (its weights are the slow part); each policy run
//! re-allocates the KV cache for its block size.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use fuselab_core::{RequestSpec, RequestStatus};
use fuselab_cuda::{CudaBackend, CudaOptions};
use fuselab_engine::{
    Backend, BackendError, BatchEntry, BatchShape, BlockManager, ForwardBatch, ModelShape,
    NativeEngine, PolicyConfig, PolicyKind, StepOutput, simulate,
};
use fuselab_kernels::cuda::sweep::{self, DecodePath, SweepOptions, SweepShape};
use fuselab_sim::raw::{
    self, OpSample, PolicyRun, RAW_SCHEMA, RawCalibration, RawDevice, StepSample, Timing,
};

/// Timed repeats of each grid step (after one warm-up).
pub const GRID_REPEATS: usize = 3;
/// Prompts per chunked-prefill budget (served one at a time).
pub const CHUNKED_REPEATS: usize = 3;
/// The chunked-prefill prompt (the model's 8192 context holds it and one output token).
pub const CHUNKED_PROMPT: u32 = 8191;
/// The chunked-prefill budgets.
pub const CHUNKED_BUDGETS: [u32; 3] = [512, 2048, 8192];
/// Block sizes of the grid steps' cache: the default policies' 16, then
/// splitfuse's 64 for the batches that read paged KV ([`reads_paged_kv`]).
pub const GRID_BLOCKS: [u32; 2] = [16, 64];
/// Most KV tokens one grid batch may hold (the cache holds about 0.8 M on an H200).
const GRID_MAX_KV: u32 = 1 << 19;
/// The file of the Poisson runs' rates.
pub const CAPACITY_FILE: &str = "capacity.env";

/// What to measure and where to put it.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Output folder.
    pub out: PathBuf,
    /// Model shape name.
    pub model: String,
    /// Coarse grids, 8 requests per policy run.
    pub quick: bool,
    /// Seed of weights and inputs.
    pub seed: u64,
    /// Launches per kernel sample.
    pub launches: usize,
    /// Samples per kernel shape.
    pub repeats: usize,
}

/// One sequence of a grid batch: `(new tokens, prior context, decode, sampled)`.
pub type GridEntry = (u32, u32, bool, bool);

/// A synthetic batch of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct GridBatch {
    /// Its sequences.
    pub entries: Vec<GridEntry>,
    /// `(rows, row_len)` of a padded batch.
    pub padded: Option<(u32, u32)>,
}

impl GridBatch {
    fn ragged(entries: Vec<GridEntry>) -> Self {
        Self {
            entries,
            padded: None,
        }
    }

    /// KV tokens the batch covers.
    pub fn kv_tokens(&self) -> u32 {
        self.entries.iter().map(|e| e.0 + e.1).sum()
    }
}

/// The synthetic grid of whole steps (every context within `context`).
pub fn grid_batches(quick: bool, context: u32) -> Vec<GridBatch> {
    let mut g = Vec::new();
    let dec =
        |b: u32, ctx: u32| -> Vec<GridEntry> { (0..b).map(|_| (1, ctx - 1, true, true)).collect() };
    // Padded prefill first: the largest buffers are grown before anything else is timed.
    let padded_prefill: &[(u32, u32)] = if quick {
        &[(4, 1024)]
    } else {
        &[(4, 1024), (4, 3072), (8, 1024), (8, 3072)]
    };
    for &(rows, len) in padded_prefill {
        // Prompts between half and all of the row, the longest filling it.
        let entries = (0..rows)
            .map(|i| (len - (len / 2) * i / rows.max(1), 0, false, true))
            .collect();
        g.push(GridBatch {
            entries,
            padded: Some((rows, len)),
        });
    }
    let (batches, ctxs): (&[u32], &[u32]) = if quick {
        (&[1, 64], &[2048])
    } else {
        (&[1, 4, 16, 32, 64, 128, 256], &[512, 2048, 4096])
    };
    for &b in batches {
        for &c in ctxs.iter().filter(|&&c| b * c <= GRID_MAX_KV) {
            g.push(GridBatch::ragged(dec(b, c)));
        }
    }
    if !quick {
        // Beyond the largest decode graph (eager).
        g.push(GridBatch::ragged(dec(320, 1024)));
        g.push(GridBatch::ragged(dec(512, 1024)));
    }
    let (chunks, priors): (&[u32], &[u32]) = if quick {
        (&[256, 2048], &[0, 2048])
    } else {
        (&[16, 64, 256, 1024, 2048, 4096, 8192], &[0, 2048, 6144])
    };
    for &c in chunks {
        for &k in priors {
            if c + k <= context {
                g.push(GridBatch::ragged(vec![(c, k, false, true)]));
            }
        }
    }
    if !quick {
        for (n, c, k) in [
            (4, 512, 0),
            (8, 256, 0),
            (2, 2048, 0),
            (3, 1024, 2048),
            (16, 128, 0),
        ] {
            g.push(GridBatch::ragged(vec![(c, k, false, true); n]));
        }
    }
    let (mixed_b, mixed_c, mixed_k): (&[u32], &[u32], &[u32]) = if quick {
        (&[32], &[512], &[0])
    } else {
        (&[8, 32, 128], &[128, 512, 2048], &[0, 3072])
    };
    for &b in mixed_b {
        for &c in mixed_c {
            for &k in mixed_k {
                let mut e = dec(b, 2048);
                // A chunk before its prompt's end samples nothing.
                e.push((c, k, false, k == 0));
                g.push(GridBatch::ragged(e));
            }
        }
    }
    if !quick {
        let mut e = dec(64, 1500);
        e.push((384, 0, false, true));
        e.push((384, 1024, false, false));
        g.push(GridBatch::ragged(e));
    }
    // Padded decode: every row, then half of them finished (rows still computed).
    let padded_dec: &[u32] = if quick { &[16] } else { &[16, 64] };
    for &rows in padded_dec {
        for active in [rows, rows / 2] {
            g.push(GridBatch {
                entries: (0..active).map(|_| (1, 2999, true, true)).collect(),
                padded: Some((rows, 1)),
            });
        }
    }
    g
}

/// Whether a grid batch reads KV from the paged cache (decodes, or chunks
/// after a prior context): the batches whose time can depend on the block size.
pub fn reads_paged_kv(g: &GridBatch) -> bool {
    g.entries.iter().any(|e| e.2 || e.1 > 0)
}

/// Hands out disjoint block ranges for one batch.
struct Blocks {
    next: u32,
    size: u32,
}

impl Blocks {
    fn take(&mut self, tokens: u32) -> Vec<u32> {
        let n = tokens.div_ceil(self.size);
        let v = (self.next..self.next + n).collect();
        self.next += n;
        v
    }
}

fn to_forward(g: &GridBatch, vocab: u32, block: u32) -> ForwardBatch {
    let mut blocks = Blocks {
        next: 0,
        size: block,
    };
    let entries = g
        .entries
        .iter()
        .enumerate()
        .map(|(i, &(n, start, decode, sample))| {
            let id = i as u64;
            BatchEntry {
                request: id,
                start_pos: start,
                n_tokens: n,
                sample,
                is_decode: decode,
                tokens: (0..n)
                    .map(|j| ((id * 7919 + u64::from(start + j) * 31) % u64::from(vocab)) as u32)
                    .collect(),
                block_table: blocks.take(start + n),
                row: g.padded.map(|_| i as u32),
            }
        })
        .collect();
    ForwardBatch {
        entries,
        shape: match g.padded {
            None => BatchShape::Ragged,
            Some((rows, row_len)) => BatchShape::Padded { rows, row_len },
        },
    }
}

/// Records every step's batch and forward wall time on the way to the backend.
struct StepLog<'a> {
    inner: &'a mut CudaBackend,
    set: String,
    block: u32,
    steps: Vec<StepSample>,
}

impl Backend for StepLog<'_> {
    fuselab_engine::forward_backend_to_inner!();

    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let replays = self.inner.graph_replays();
        let t0 = Instant::now();
        let out = self.inner.forward(batch)?;
        let us = t0.elapsed().as_secs_f64() * 1e6;
        let graph = self.inner.graph_replays() > replays;
        self.steps.push(StepSample::from_batch(
            &self.set,
            batch,
            self.block,
            graph,
            vec![us],
        ));
        Ok(out)
    }
}

fn timing(s: &fuselab_kernels::cuda::TimeStats) -> Timing {
    Timing {
        median_us: s.median_ms * 1e3,
        p10_us: s.p10_ms * 1e3,
        p90_us: s.p90_ms * 1e3,
        launches: s.launches as u32,
        repeats: s.repeats as u32,
        host_limited: s.host_limited as u32,
    }
}

fn op_sample(r: &sweep::SweepRow) -> OpSample {
    let time = timing(&r.stats);
    match &r.shape {
        SweepShape::Gemm {
            name,
            tokens,
            k,
            n,
            accumulate,
        } => OpSample::Gemm {
            name: (*name).into(),
            tokens: *tokens as u32,
            k: *k as u32,
            n: *n as u32,
            accumulate: *accumulate,
            time,
        },
        SweepShape::PrefillAttn { chunks, tile } => OpSample::PrefillAttn {
            chunks: chunks.iter().map(|&(c, k)| [c as u32, k as u32]).collect(),
            tile: (*tile).into(),
            time,
        },
        SweepShape::DecodeAttn {
            batch,
            kv_tokens,
            max_ctx,
            path,
            splits,
            contexts,
        } => OpSample::DecodeAttn {
            batch: *batch as u32,
            kv_tokens: *kv_tokens as u64,
            max_ctx: *max_ctx as u32,
            path: match path {
                DecodePath::Eager => raw::DecodePath::Eager,
                DecodePath::Graph => raw::DecodePath::Graph,
            },
            splits: *splits as u32,
            contexts: contexts.clone(),
            time,
        },
        SweepShape::Elementwise {
            name,
            tokens,
            bytes,
        } => OpSample::Elementwise {
            name: (*name).into(),
            tokens: *tokens as u32,
            bytes: *bytes,
            time,
        },
    }
}

/// Serves `specs` with `policy` on `backend`, recording every step under `set`.
fn serve(
    backend: &mut CudaBackend,
    set: &str,
    policy: PolicyConfig,
    workload: &str,
    specs: &[RequestSpec],
) -> anyhow::Result<(PolicyRun, Vec<StepSample>)> {
    let log = StepLog {
        inner: backend,
        set: set.to_string(),
        block: policy.block,
        steps: Vec::new(),
    };
    let kind = policy.kind;
    let mut engine = NativeEngine::new(log, policy)
        .with_context(|| format!("building the {kind} engine on the CUDA backend"))?;
    let run = simulate(specs, None, &mut engine)
        .with_context(|| format!("serving {workload} with {kind} on the CUDA backend"))?;
    let knobs = engine.knobs();
    let steps = std::mem::take(&mut engine.backend_mut().steps);
    let completed = run
        .records
        .iter()
        .filter(|r| r.status == RequestStatus::Ok)
        .count() as u32;
    Ok((
        PolicyRun {
            set: set.to_string(),
            policy: kind.name().into(),
            workload: workload.into(),
            requests: specs.len() as u32,
            completed,
            makespan_s: steps.iter().filter_map(StepSample::wall_s).sum(),
            steps: steps.len() as u32,
            knobs,
        },
        steps,
    ))
}

/// Runs every measurement of the module docs and writes `plan.out`.
///
/// # Errors
/// No CUDA driver (before anything is written), device errors, write errors.
pub fn measure(plan: &Plan) -> anyhow::Result<()> {
    fuselab_cuda::probe().context("calibrate --engine cuda needs a GPU")?;
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("creating --out {}", plan.out.display()))?;
    let t0 = Instant::now();
    let elapsed = || t0.elapsed().as_secs_f64();
    let mut notes = Vec::new();

    eprintln!("== calibrate: operator sweep on GPU 0");
    let sweep = sweep::run_sweep(
        &SweepOptions {
            quick: plan.quick,
            seed: plan.seed,
            launches: plan.launches,
            repeats: plan.repeats,
        },
        &mut |s| eprintln!("  [{:6.1} s] {s}", elapsed()),
    )?;
    let info = &sweep.device;
    let device = RawDevice {
        name: info.name.clone(),
        driver: info.driver_release.clone(),
        cuda_driver_api: format!(
            "{}.{}",
            info.driver_version / 1000,
            (info.driver_version % 1000) / 10
        ),
        arch: info.arch.clone(),
        sm_count: info.sm_count as u32,
        l2_bytes: info.l2_bytes as u64,
        memory_bytes: info.total_mem as u64,
        read_gbs: sweep.read_gbs,
        copy_gbs: sweep.copy_gbs,
        gemm_tflops: sweep.gemm_tflops,
    };
    let ops: Vec<OpSample> = sweep.rows.iter().map(op_sample).collect();
    let method = sweep.method.clone();
    eprintln!(
        "  [{:6.1} s] {} operator shapes; read {:.0} GB/s, copy {:.0} GB/s, GEMM 8192³ {:.0} TFLOP/s",
        elapsed(),
        ops.len(),
        device.read_gbs,
        device.copy_gbs,
        device.gemm_tflops
    );
    drop(sweep);

    eprintln!("== whole steps through the CUDA backend ({})", plan.model);
    let shape = ModelShape::preset(&plan.model)?;
    let mut backend = CudaBackend::random(shape.clone(), plan.seed, CudaOptions::default())
        .context("building the CUDA backend")?;
    eprintln!("  [{:6.1} s] backend ready", elapsed());
    let vocab = backend.vocab_size();
    let mut steps = Vec::new();
    let grid = grid_batches(plan.quick, shape.context_len);
    for block in GRID_BLOCKS {
        let geo = BlockManager::geometry_for_budget(
            backend.kv_budget_bytes(),
            backend.kv_bytes_per_token(),
            block,
        )?;
        backend.init_kv(geo)?;
        let capacity = geo.num_blocks.saturating_mul(block).min(GRID_MAX_KV);
        let first = block == GRID_BLOCKS[0];
        for g in grid.iter().filter(|g| first || reads_paged_kv(g)) {
            if g.kv_tokens() > capacity {
                notes.push(format!(
                    "grid batch of {} sequences skipped at block {block}: {} KV tokens exceed the {capacity} it may hold",
                    g.entries.len(),
                    g.kv_tokens()
                ));
                continue;
            }
            let batch = to_forward(g, vocab, block);
            backend.forward(&batch)?;
            let mut wall = Vec::with_capacity(GRID_REPEATS);
            let mut graph = false;
            for _ in 0..GRID_REPEATS {
                let replays = backend.graph_replays();
                let t = Instant::now();
                backend.forward(&batch)?;
                wall.push(t.elapsed().as_secs_f64() * 1e6);
                graph = backend.graph_replays() > replays;
            }
            steps.push(StepSample::from_batch("grid", &batch, block, graph, wall));
        }
    }
    eprintln!("  [{:6.1} s] {} grid steps", elapsed(), steps.len());

    let mut workload = fuselab_workloads::preset("h200-64")?;
    if plan.quick {
        workload.n = 8;
    }
    let specs = fuselab_workloads::generate(&workload)?;
    let wname = if plan.quick {
        "h200-64 (first 8)"
    } else {
        "h200-64"
    };
    let mut runs = Vec::new();
    for kind in [
        PolicyKind::Continuous,
        PolicyKind::Chunked,
        PolicyKind::SplitFuse,
        PolicyKind::Prepack,
        PolicyKind::Static,
    ] {
        let set = format!("policy:{}", kind.name());
        let (run, s) = serve(&mut backend, &set, PolicyConfig::new(kind), wname, &specs)?;
        eprintln!(
            "  [{:6.1} s] {set}: {} steps, {:.3} s, {}/{} completed",
            elapsed(),
            run.steps,
            run.makespan_s,
            run.completed,
            run.requests
        );
        runs.push(run);
        steps.extend(s);
    }

    // The prompts of one budget arrive far apart on the run's clock, so each is
    // prefilled alone (distinct ids: distinct tokens, no prefix-cache hits).
    let prompts: Vec<RequestSpec> = (0..CHUNKED_REPEATS as u64)
        .map(|id| RequestSpec {
            id,
            arrival_s: 1000.0 * id as f64,
            prompt_len: CHUNKED_PROMPT,
            output_len: 1,
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        })
        .collect();
    for budget in CHUNKED_BUDGETS {
        let set = format!("chunked:{budget}");
        let mut policy = PolicyConfig::new(PolicyKind::Chunked);
        policy.set_knob("budget", &budget.to_string())?;
        let what = format!("{CHUNKED_REPEATS} {CHUNKED_PROMPT}-token prompts, one at a time");
        let (run, s) = serve(&mut backend, &set, policy, &what, &prompts)?;
        eprintln!(
            "  [{:6.1} s] {set}: {CHUNKED_PROMPT}-token prompt in {:.1} ms ({} steps for {} prompts)",
            elapsed(),
            run.makespan_s / f64::from(run.requests.max(1)) * 1e3,
            run.steps,
            run.requests
        );
        runs.push(run);
        steps.extend(s);
    }
    drop(backend);

    let command = crate::exec::command_line();
    let raw = RawCalibration {
        schema: RAW_SCHEMA,
        command: command.clone(),
        date: fuselab_core::utc_now(),
        fuselab_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: fuselab_store::git_commit(),
        device,
        model: plan.model.clone(),
        method: format!(
            "operators: {method}; steps: wall time of CudaBackend::forward (it synchronises before \
             returning), grid steps once to warm up then {GRID_REPEATS} times, served steps once each \
             as the engine ran them"
        ),
        ops,
        steps,
        runs,
        notes,
    };
    let path = plan.out.join(raw::RAW_FILE);
    std::fs::write(&path, serde_json::to_vec(&raw)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let env = capacity_env(&raw.runs);
    let cap = plan.out.join(CAPACITY_FILE);
    std::fs::write(&cap, &env).with_context(|| format!("writing {}", cap.display()))?;
    println!("{}", summary(&raw));
    print!("{env}");
    eprintln!(
        "  [{:6.1} s] wrote {} and {}",
        elapsed(),
        path.display(),
        cap.display()
    );
    Ok(())
}

/// The Poisson runs' rates, as shell assignments: each serving policy's
/// capacity (requests / makespan of its `h200-64` run) and 50 % and 85 % of it.
pub fn capacity_env(runs: &[PolicyRun]) -> String {
    let mut s = String::from(
        "# fuselab calibrate --engine cuda: capacity of the serving policies on the CUDA engine\n\
         # (h200-64 served at t = 0: requests / makespan) and the Poisson validation rates.\n",
    );
    for p in ["splitfuse", "chunked"] {
        let set = format!("policy:{p}");
        if let Some(r) = runs.iter().find(|r| r.set == set && r.makespan_s > 0.0) {
            let cap = f64::from(r.completed) / r.makespan_s;
            let up = p.to_uppercase();
            let _ = writeln!(s, "CAP_{up}={cap:.3}");
            let _ = writeln!(s, "RATE50_{up}={:.3}", 0.5 * cap);
            let _ = writeln!(s, "RATE85_{up}={:.3}", 0.85 * cap);
        }
    }
    s
}

/// What was measured, as a short table.
fn summary(raw: &RawCalibration) -> String {
    let mut by_class = std::collections::BTreeMap::<&str, usize>::new();
    for o in &raw.ops {
        *by_class.entry(o.class()).or_default() += 1;
    }
    let mut s = format!(
        "calibration raw data: {} on {} ({}), {} operator shapes ({}), {} steps\n\n\
         | set | policy | requests | completed | steps | makespan s |\n|---|---|---:|---:|---:|---:|\n",
        raw.model,
        raw.device.name,
        raw.device.driver.as_deref().unwrap_or("driver unknown"),
        raw.ops.len(),
        by_class
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        raw.steps.len()
    );
    let _ = writeln!(
        s,
        "| grid | - | - | - | {} | {:.3} |",
        raw.steps_of("grid").count(),
        raw.steps_of("grid")
            .filter_map(StepSample::wall_s)
            .sum::<f64>()
    );
    for r in &raw.runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.3} |",
            r.set, r.policy, r.requests, r.completed, r.steps, r.makespan_s
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_fits_the_model_and_covers_every_kind_of_step() {
        for quick in [false, true] {
            let g = grid_batches(quick, 8192);
            assert!(g.len() >= if quick { 10 } else { 60 }, "{}", g.len());
            for b in &g {
                assert!(!b.entries.is_empty());
                assert!(b.kv_tokens() <= GRID_MAX_KV, "{b:?}");
                for &(n, start, decode, _) in &b.entries {
                    assert!(start + n <= 8192, "{b:?}");
                    assert!(!decode || n == 1);
                }
                if let Some((rows, len)) = b.padded {
                    assert!(b.entries.len() as u32 <= rows);
                    assert!(b.entries.iter().all(|e| e.0 <= len));
                }
                // Every batch samples something, so the backend copies ids back.
                assert!(b.entries.iter().any(|e| e.3));
            }
            let has = |f: &dyn Fn(&GridBatch) -> bool| g.iter().any(f);
            assert!(has(&|b| b.entries.iter().all(|e| e.2) && b.padded.is_none()));
            assert!(has(&|b| b.entries.iter().all(|e| !e.2 && e.1 > 0)));
            assert!(has(
                &|b| b.entries.iter().any(|e| e.2) && b.entries.iter().any(|e| !e.2)
            ));
            assert!(has(&|b| matches!(b.padded, Some((_, l)) if l > 1)));
            assert!(has(
                &|b| matches!(b.padded, Some((r, 1)) if (b.entries.len() as u32) < r)
            ));
        }
    }

    #[test]
    fn grid_batches_get_disjoint_blocks_and_valid_tokens() {
        let g = GridBatch::ragged(vec![(1, 40, true, true), (100, 0, false, true)]);
        let b = to_forward(&g, 1000, 16);
        assert_eq!(b.entries[0].block_table, vec![0, 1, 2]);
        assert_eq!(b.entries[1].block_table, (3..10).collect::<Vec<u32>>());
        let b64 = to_forward(&g, 1000, 64);
        assert_eq!(b64.entries[0].block_table, vec![0]);
        assert_eq!(b64.entries[1].block_table, vec![1, 2]);
        assert!(reads_paged_kv(&g));
        assert!(!reads_paged_kv(&GridBatch::ragged(vec![(
            64, 0, false, true
        )])));
        assert!(
            b.entries
                .iter()
                .all(|e| e.tokens.len() == e.n_tokens as usize)
        );
        assert!(b.entries.iter().flat_map(|e| &e.tokens).all(|&t| t < 1000));
        let p = to_forward(
            &GridBatch {
                entries: vec![(3, 0, false, true), (4, 0, false, true)],
                padded: Some((2, 4)),
            },
            10,
            16,
        );
        assert_eq!(
            p.shape,
            BatchShape::Padded {
                rows: 2,
                row_len: 4
            }
        );
        assert_eq!(p.entries[1].row, Some(1));
    }

    #[test]
    fn capacity_rates_follow_the_measured_runs() {
        let run = |set: &str, completed, makespan_s| PolicyRun {
            set: set.into(),
            policy: set.trim_start_matches("policy:").into(),
            workload: "h200-64".into(),
            requests: 64,
            completed,
            makespan_s,
            steps: 300,
            knobs: Default::default(),
        };
        let env = capacity_env(&[
            run("policy:splitfuse", 64, 6.4),
            run("policy:chunked", 64, 5.0),
            run("policy:static", 64, 9.0),
        ]);
        assert!(env.contains("CAP_SPLITFUSE=10.000\n"), "{env}");
        assert!(env.contains("RATE50_SPLITFUSE=5.000\n"), "{env}");
        assert!(env.contains("RATE85_SPLITFUSE=8.500\n"), "{env}");
        assert!(env.contains("RATE85_CHUNKED=10.880\n"), "{env}");
        assert!(!env.contains("STATIC"), "{env}");
        // Every non-comment line is a shell assignment.
        assert!(env.lines().filter(|l| !l.starts_with('#')).all(|l| {
            l.split_once('=')
                .is_some_and(|(k, v)| !k.is_empty() && v.parse::<f64>().is_ok())
        }));
    }

    #[test]
    fn without_a_gpu_nothing_is_written() {
        if fuselab_kernels::cuda::driver_present() {
            return;
        }
        let out = std::env::temp_dir().join(format!("fuselab-cal-nogpu-{}", std::process::id()));
        let e = measure(&Plan {
            out: out.clone(),
            model: "llama3-8b".into(),
            quick: true,
            seed: 1,
            launches: 32,
            repeats: 1,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("no CUDA driver"), "{e:#}");
        assert!(!out.exists());
    }
}
