//! The engine loop: submit requests, step, collect token events.
//!
//! [`NativeEngine`] is clock-agnostic: the caller passes `now` (seconds from
//! the run's start) to every call. The virtual-time driver ([`crate::simulate`])
//! advances `now` by each step's predicted duration; a real-time harness passes
//! its wall clock. Token events are stamped at the step's end.

use std::collections::BTreeMap;
use std::time::Instant;

use fuselab_core::{RequestId, RequestSpec, RequestStatus, StepRecord, TokenEvent};

use crate::sched::{Scheduler, Verified};
use crate::{
    AcceptanceModel, Backend, BackendError, BatchEntry, BatchShape, BlockManager, EngineError,
    ForwardBatch, KvGeometry, PolicyConfig, Result, StepAudit,
};

/// Token-id range used when the backend reports no vocabulary.
const SYNTHETIC_VOCAB: u32 = 1 << 20;

/// A request that left the engine, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedRequest {
    /// The request.
    pub id: RequestId,
    /// How it ended: `Ok`, `Rejected` (never admissible), `Failed` (backend
    /// error) or `Cancelled`.
    pub status: RequestStatus,
    /// Why, for anything but `Ok`.
    pub error: Option<String>,
    /// When it ended, seconds from the run's start.
    pub t: f64,
}

/// What one call to [`NativeEngine::step`] produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepReport {
    /// One event per sampled token, stamped at the step's end, in batch order.
    pub events: Vec<TokenEvent>,
    /// Requests that finished (or were rejected or failed) in this call.
    pub finished: Vec<FinishedRequest>,
    /// The step's engine-side figures; `None` when there was nothing to compute.
    pub record: Option<StepRecord>,
    /// What the scheduler decided (admissions, preemptions, skipped decodes).
    pub audit: StepAudit,
    /// The ids of the tokens generated in this step, per request in batch
    /// order, as soon as they are generated (streaming or not): the
    /// backend's tokens, or synthetic ids for a backend without them.
    pub token_ids: Vec<(RequestId, Vec<u32>)>,
}

impl StepReport {
    /// Seconds the step took (0 when nothing ran).
    pub fn duration_s(&self) -> f64 {
        self.record.as_ref().map_or(0.0, |r| r.duration_s)
    }
}

/// A request's progress as the scheduler sees it ([`NativeEngine::requests`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestState {
    /// The request.
    pub id: RequestId,
    /// Admitted (holds KV) rather than waiting.
    pub running: bool,
    /// Prompt tokens.
    pub prompt_len: u32,
    /// Output tokens asked for.
    pub output_len: u32,
    /// Output tokens generated so far.
    pub generated: u32,
    /// Positions whose KV is computed.
    pub computed: u32,
    /// Positions to prefill before decoding: the prompt, or prompt +
    /// generated after a preemption (recompute).
    pub target: u32,
    /// All output generated (a finished row of a static batch).
    pub done: bool,
}

impl RequestState {
    /// Prompt (or recompute) tokens still to prefill.
    pub fn prefill_left(&self) -> u32 {
        self.target.saturating_sub(self.computed)
    }

    /// Running, prefilled and still generating: due a decode step.
    pub fn decoding(&self) -> bool {
        self.running && !self.done && self.prefill_left() == 0
    }
}

/// The in-process engine: a scheduling policy over a paged KV cache, driving a [`Backend`].
///
/// # Example
/// ```
/// use fuselab_engine::{Backend, BackendError, ForwardBatch, KvGeometry, NativeEngine,
///                      PolicyConfig, PolicyKind, StepOutput};
/// struct Fixed;
/// impl Backend for Fixed {
///     fn name(&self) -> &str { "fixed" }
///     fn needs_tokens(&self) -> bool { false }
///     fn kv_bytes_per_token(&self) -> u64 { 1 }
///     fn kv_budget_bytes(&self) -> u64 { 1 << 16 }
///     fn init_kv(&mut self, _: KvGeometry) -> Result<(), BackendError> { Ok(()) }
///     fn forward(&mut self, b: &ForwardBatch) -> Result<StepOutput, BackendError> {
///         Ok(StepOutput { duration_s: Some(1e-3 * b.real_tokens() as f64), ..Default::default() })
///     }
/// }
/// let mut engine = NativeEngine::new(Fixed, PolicyConfig::new(PolicyKind::SplitFuse)).unwrap();
/// let spec = fuselab_core::RequestSpec { id: 0, arrival_s: 0.0, prompt_len: 1000, output_len: 3,
///                                        prefix_group: None, prefix_len: 0, conversation: None, adapter: None };
/// engine.submit(&spec, 0.0);
/// let (mut now, mut tokens) = (0.0, 0);
/// while engine.has_work() {
///     let r = engine.step(now).unwrap();
///     now += r.duration_s();
///     tokens += r.events.len();
/// }
/// assert_eq!(tokens, 3); // 768 + 232 prompt tokens, then two decodes
/// engine.check_drained().unwrap();
/// ```
pub struct NativeEngine<B: Backend> {
    backend: B,
    sched: Scheduler,
    needs_tokens: bool,
    vocab: u32,
    step_no: u64,
    prefix_query_tokens: u64,
    prefix_hit_tokens: u64,
    pending: Vec<FinishedRequest>,
    preemptions: u64,
    /// With streaming off: tokens generated but not yet returned, as
    /// (first index, count) per request, and the requests whose result waits
    /// for the rest of their batch.
    held: BTreeMap<RequestId, (u32, u32)>,
    held_finished: Vec<RequestId>,
    /// The modelled acceptance of a speculating backend without tokens.
    acceptance: Option<AcceptanceModel>,
}

/// What the draft passes of one step produced.
#[derive(Debug, Default)]
struct DraftRun {
    seconds: f64,
    proposals: BTreeMap<RequestId, Vec<u32>>,
}

impl<B: Backend> NativeEngine<B> {
    /// Builds the engine: sizes the KV cache from the backend's memory budget
    /// and the policy's block size, and asks the backend to allocate it.
    ///
    /// # Errors
    /// [`EngineError::KvTooSmall`] when not one block fits; backend errors from
    /// [`Backend::init_kv`]; an input error when the backend needs tokens but
    /// reports no vocabulary.
    pub fn new(backend: B, policy: PolicyConfig) -> Result<Self> {
        Self::with_spec(backend, policy, None)
    }

    /// [`Self::new`] for a policy that may speculate (`spec_k > 0`), with the
    /// acceptance model a backend without real tokens (the simulator) needs:
    /// its draft passes are priced, and `acceptance` decides which drafts the
    /// target keeps (recorded as *modelled*). A backend with real tokens
    /// measures acceptance with its draft model and takes no model here.
    ///
    /// # Errors
    /// As [`Self::new`]; an input error naming `--spec-k` when the backend has
    /// no draft model, or `--spec-alpha` when the acceptance model is missing
    /// (no tokens) or does not apply (real tokens).
    pub fn with_spec(
        mut backend: B,
        mut policy: PolicyConfig,
        acceptance: Option<AcceptanceModel>,
    ) -> Result<Self> {
        if policy.speculates() {
            if backend.draft_model().is_none() {
                return Err(fuselab_core::Error::invalid(
                    "--spec-k",
                    format!(
                        "speculative decoding is not supported on {} yet: the backend has no draft model",
                        backend.name()
                    ),
                    "use --engine sim or cpu with a draft (--draft), or set --spec-k 0",
                )
                .into());
            }
            match (backend.needs_tokens(), acceptance.is_some()) {
                (false, false) => {
                    return Err(fuselab_core::Error::invalid(
                        "--spec-alpha",
                        format!(
                            "backend `{}` computes no tokens, so draft acceptance must be modelled",
                            backend.name()
                        ),
                        "give the per-token acceptance probability, e.g. --spec-alpha 0.7",
                    )
                    .into());
                }
                (true, true) => {
                    return Err(fuselab_core::Error::invalid(
                        "--spec-alpha",
                        format!(
                            "backend `{}` measures acceptance with its draft model; an engine-side acceptance model does not apply",
                            backend.name()
                        ),
                        "configure the draft's acceptance coin on the backend instead",
                    )
                    .into());
                }
                _ => {}
            }
        }
        if let Some(context) = backend.context_len() {
            policy.default_max_len(context);
        }
        let geometry = BlockManager::geometry_for_budget(
            backend.kv_budget_bytes(),
            backend.kv_bytes_per_token(),
            policy.block,
        )?;
        let needs_tokens = backend.needs_tokens();
        let vocab = backend.vocab_size();
        if needs_tokens && vocab == 0 {
            return Err(fuselab_core::Error::invalid(
                "backend",
                format!(
                    "backend `{}` needs token ids but reports a vocabulary of 0",
                    backend.name()
                ),
                "implement Backend::vocab_size for it",
            )
            .into());
        }
        backend.init_kv(geometry)?;
        tracing::debug!(
            policy = policy.kind.name(),
            blocks = geometry.num_blocks,
            block_size = geometry.block_size,
            "engine ready"
        );
        // Without a vocabulary (a backend that only prices steps) token ids
        // still key the prefix cache; any fixed range will do.
        let vocab = if vocab == 0 { SYNTHETIC_VOCAB } else { vocab };
        let policy_speculates = policy.speculates();
        let mut sched = Scheduler::new(policy, geometry, vocab);
        sched.lora = backend.lora_adapters() > 0;
        Ok(Self {
            backend,
            sched,
            needs_tokens,
            vocab,
            step_no: 0,
            prefix_query_tokens: 0,
            prefix_hit_tokens: 0,
            pending: Vec::new(),
            preemptions: 0,
            held: BTreeMap::new(),
            held_finished: Vec::new(),
            acceptance: if policy_speculates { acceptance } else { None },
        })
    }

    /// The policy and its knobs.
    pub fn policy(&self) -> &PolicyConfig {
        &self.sched.cfg
    }

    /// Every knob in effect, defaults included (for provenance). A
    /// speculating engine adds `spec_draft` (the draft model) and
    /// `spec_acceptance`: `measured`, or `modelled` with `spec_alpha` (and
    /// `spec_seed` for an engine-side coin).
    pub fn knobs(&self) -> BTreeMap<String, serde_json::Value> {
        let mut knobs = self.sched.cfg.knobs();
        if self.sched.cfg.speculates()
            && let Some(draft) = self.backend.draft_model()
        {
            knobs.insert("spec_draft".into(), draft.name.into());
            let alpha = self.acceptance.map(|a| a.alpha).or(draft.modelled_alpha);
            knobs.insert(
                "spec_acceptance".into(),
                if alpha.is_some() {
                    "modelled"
                } else {
                    "measured"
                }
                .into(),
            );
            if let Some(a) = alpha {
                knobs.insert("spec_alpha".into(), a.into());
            }
            if let Some(m) = self.acceptance {
                knobs.insert("spec_seed".into(), m.seed.into());
            }
        }
        knobs
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The KV cache's geometry.
    pub fn kv_geometry(&self) -> KvGeometry {
        self.sched.kv.geometry()
    }

    /// The KV block manager (read-only), for inspection and tests.
    pub fn kv(&self) -> &BlockManager {
        &self.sched.kv
    }

    /// Every request the scheduler holds: the running ones in running order
    /// (oldest admission first), then the waiting queue front to back. For
    /// inspection and tests that recompute what a step could have run.
    pub fn requests(&self) -> Vec<RequestState> {
        let state = |id: &RequestId, running: bool| {
            self.sched.tokens_of(*id).map(|s| RequestState {
                id: *id,
                running,
                prompt_len: s.prompt_len,
                output_len: s.output_len,
                generated: s.generated,
                computed: s.computed,
                target: s.target,
                done: s.done,
            })
        };
        let running = self.sched.running.iter().filter_map(|id| state(id, true));
        let waiting = self.sched.waiting.iter().filter_map(|id| state(id, false));
        running.chain(waiting).collect()
    }

    /// Requests waiting for admission.
    pub fn waiting(&self) -> usize {
        self.sched.waiting.len()
    }

    /// Requests admitted and not finished.
    pub fn running(&self) -> usize {
        self.sched.running.len()
    }

    /// Preemptions so far.
    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    /// Tokens looked up in the prefix cache so far and how many of them hit
    /// (see [`crate::StepAudit::prefix_query_tokens`]).
    pub fn prefix_cache_tokens(&self) -> (u64, u64) {
        (self.prefix_query_tokens, self.prefix_hit_tokens)
    }

    /// Fraction of looked-up tokens served from the prefix cache so far (0
    /// before any lookup and with the cache off).
    pub fn prefix_cache_hit_rate(&self) -> f64 {
        if self.prefix_query_tokens == 0 {
            0.0
        } else {
            self.prefix_hit_tokens as f64 / self.prefix_query_tokens as f64
        }
    }

    /// Hands a request to the engine at time `now`. A request that can never
    /// be served (prompt + output beyond `max_len` or beyond the whole KV
    /// cache, zero lengths, a duplicate id) is reported as `Rejected` by the
    /// next [`Self::step`].
    pub fn submit(&mut self, spec: &RequestSpec, now: f64) {
        if let Some(why) = self
            .sched
            .rejection(spec)
            .or_else(|| self.adapter_rejection(spec))
        {
            tracing::debug!(id = spec.id, %why, "request rejected");
            self.pending.push(FinishedRequest {
                id: spec.id,
                status: fuselab_core::RequestStatus::Rejected,
                error: Some(why),
                t: now,
            });
            return;
        }
        self.sched.add(spec, spec.prompt_tokens(self.vocab));
    }

    /// Why the adapter `spec` names cannot be served, if it cannot.
    fn adapter_rejection(&self, spec: &RequestSpec) -> Option<String> {
        let a = spec.adapter?;
        let have = self.backend.lora_adapters();
        (a >= have).then(|| {
            if have == 0 {
                format!(
                    "request names LoRA adapter {a} but backend `{}` serves no adapters; give the workload's adapters to the backend or drop the request's adapter",
                    self.backend.name()
                )
            } else {
                format!(
                    "request names LoRA adapter {a} but backend `{}` serves only adapters 0..{have}",
                    self.backend.name()
                )
            }
        })
    }

    /// The LoRA adapter slots (read-only), for inspection and tests.
    pub fn adapter_slots(&self) -> &crate::AdapterSlots {
        &self.sched.slots
    }

    /// Cancels a request (client gone, timeout); `status` is what is reported
    /// for it. Returns `None` when the engine does not know it or it already
    /// finished.
    pub fn cancel(
        &mut self,
        id: RequestId,
        status: RequestStatus,
        now: f64,
    ) -> Option<FinishedRequest> {
        let known = self.sched.tokens_of(id).is_some_and(|s| !s.done);
        if known && self.sched.cancel(id) {
            self.held.remove(&id);
            Some(FinishedRequest {
                id,
                status,
                error: Some(format!("request {}", status.as_str())),
                t: now,
            })
        } else {
            None
        }
    }

    /// Whether anything is waiting, running or still to be reported.
    pub fn has_work(&self) -> bool {
        !self.pending.is_empty() || self.sched.has_work()
    }

    /// Schedules and runs one step starting at `now`.
    ///
    /// # Errors
    /// [`EngineError::Stalled`] when work is pending but nothing can be
    /// scheduled, or [`EngineError::KvInvariant`] on a KV bookkeeping bug. A
    /// backend error in `forward` is not an error of the step: the batch's
    /// requests are reported `Failed` with the message.
    pub fn step(&mut self, now: f64) -> Result<StepReport> {
        let mut report = StepReport {
            finished: std::mem::take(&mut self.pending),
            ..StepReport::default()
        };
        let waiting = self.sched.waiting.len() as u32;
        let running = self.sched.running.len() as u32;
        let (mut batch, audit) = self.sched.schedule()?;
        self.preemptions += audit.preempted.len() as u64;
        self.prefix_query_tokens += u64::from(audit.prefix_query_tokens);
        self.prefix_hit_tokens += u64::from(audit.prefix_hit_tokens);
        report.audit = audit;
        if batch.is_empty() {
            if self.sched.has_work() {
                return Err(EngineError::Stalled(format!(
                    "{} waiting and {} running requests but the {} policy scheduled nothing",
                    self.sched.waiting.len(),
                    self.sched.running.len(),
                    self.sched.cfg.kind
                )));
            }
            return Ok(report);
        }
        for e in &batch.entries {
            self.sched
                .kv
                .check_writable(e.request, e.start_pos, e.start_pos + e.n_tokens)?;
        }
        if self.needs_tokens {
            for e in &mut batch.entries {
                let s = self.sched.tokens_of(e.request).ok_or_else(|| {
                    EngineError::Stalled(format!("batch names unknown request {}", e.request))
                })?;
                // A verify entry's drafts are appended after the draft passes.
                let n = if is_verify(e) { 1 } else { e.n_tokens };
                let (a, b) = (e.start_pos as usize, (e.start_pos + n) as usize);
                e.tokens = s.tokens.get(a..b).map(<[u32]>::to_vec).unwrap_or_default();
                e.block_table = self.sched.kv.table(e.request).to_vec();
            }
        }
        let started = Instant::now();
        let drafted = self.draft(&batch)?;
        let staged = if self.sched.lora {
            self.backend.stage_adapters(&report.audit.adapters)
        } else {
            Ok(())
        };
        let output = staged.and(drafted).and_then(|d| {
            for e in batch.entries.iter_mut().filter(|e| is_verify(e)) {
                if let Some(p) = d.proposals.get(&e.request) {
                    e.tokens.extend_from_slice(p);
                }
            }
            let verify_started = Instant::now();
            self.backend.forward(&batch).map(|mut o| {
                let verify = o
                    .duration_s
                    .unwrap_or_else(|| verify_started.elapsed().as_secs_f64());
                o.duration_s = Some(d.seconds + verify);
                (o, d)
            })
        });
        let wall = started.elapsed().as_secs_f64();
        let (output, draft) = match output {
            Ok(o) => o,
            Err(err) => {
                let ids: Vec<RequestId> = batch.entries.iter().map(|e| e.request).collect();
                let msg = err.to_string();
                tracing::warn!(%msg, "step failed");
                // Results still held back fail with their batch.
                let mut failed = self.sched.abort(&ids);
                failed.append(&mut self.held_finished);
                self.held.clear();
                for id in failed {
                    report.finished.push(FinishedRequest {
                        id,
                        status: RequestStatus::Failed,
                        error: Some(msg.clone()),
                        t: now + wall,
                    });
                }
                report.record =
                    Some(self.record(&batch, now, wall, waiting, running, &report.audit, (0.0, 0)));
                self.step_no += 1;
                return Ok(report);
            }
        };
        let duration = output.duration_s.unwrap_or(wall).max(0.0);
        let t_end = now + duration;
        let sampled: BTreeMap<RequestId, u32> = if self.needs_tokens {
            let map: BTreeMap<RequestId, u32> = output.sampled.iter().copied().collect();
            let want = batch.entries.iter().filter(|e| e.sample).count();
            if map.len() != want {
                return Err(EngineError::Backend(crate::BackendError::Device(format!(
                    "backend `{}` returned {} sampled tokens for {want} sampling entries",
                    self.backend.name(),
                    map.len()
                ))));
            }
            map
        } else {
            BTreeMap::new()
        };
        let verified = self.verdicts(&batch, &draft, &output)?;
        let mut commit = self.sched.commit(&batch, &sampled, &verified)?;
        report.token_ids = std::mem::take(&mut commit.ids);
        let (emitted, finished) = if self.sched.cfg.streams() {
            (commit.emitted.clone(), commit.finished.clone())
        } else {
            self.hold(&commit)
        };
        report.events = emitted
            .into_iter()
            .map(|(request, index, n_tokens)| TokenEvent {
                request,
                index,
                t: t_end,
                n_tokens,
            })
            .collect();
        report
            .finished
            .extend(finished.into_iter().map(|id| FinishedRequest {
                id,
                status: RequestStatus::Ok,
                error: None,
                t: t_end,
            }));
        report.record = Some(self.record(
            &batch,
            now,
            duration,
            waiting,
            running,
            &report.audit,
            (draft.seconds, commit.accepted),
        ));
        self.step_no += 1;
        Ok(report)
    }

    /// Runs the draft passes of a step's verify entries: the first pass
    /// catches each sequence's draft KV up to its last token and proposes a
    /// token; each further pass feeds the previous proposal. The outer error
    /// is an engine error, the inner one the backend's.
    fn draft(
        &mut self,
        batch: &ForwardBatch,
    ) -> Result<std::result::Result<DraftRun, BackendError>> {
        let mut run = DraftRun::default();
        let verify: Vec<&BatchEntry> = batch.entries.iter().filter(|e| is_verify(e)).collect();
        let passes = verify.iter().map(|e| e.n_tokens - 1).max().unwrap_or(0);
        for j in 0..passes {
            let mut entries = Vec::new();
            for e in verify.iter().filter(|e| e.n_tokens - 1 > j) {
                let s = self.sched.tokens_of(e.request).ok_or_else(|| {
                    EngineError::Stalled(format!("batch names unknown request {}", e.request))
                })?;
                let last = e.start_pos;
                let (start, tokens) = if j == 0 {
                    let from = s.draft_computed.min(last);
                    let tokens = if self.needs_tokens {
                        s.tokens[from as usize..=last as usize].to_vec()
                    } else {
                        Vec::new()
                    };
                    (from, tokens)
                } else {
                    let tokens = match run.proposals.get(&e.request) {
                        Some(p) if self.needs_tokens => vec![p[j as usize - 1]],
                        _ => Vec::new(),
                    };
                    (last + j, tokens)
                };
                let n = last + j + 1 - start;
                self.sched.kv.check_writable(e.request, start, start + n)?;
                entries.push(BatchEntry {
                    request: e.request,
                    start_pos: start,
                    n_tokens: n,
                    sample: true,
                    is_decode: n == 1,
                    tokens,
                    block_table: if self.needs_tokens {
                        self.sched.kv.table(e.request).to_vec()
                    } else {
                        Vec::new()
                    },
                    row: None,
                });
            }
            let pass = ForwardBatch {
                entries,
                shape: BatchShape::Ragged,
            };
            let started = Instant::now();
            let out = match self.backend.draft_forward(&pass) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            };
            run.seconds += out
                .duration_s
                .unwrap_or_else(|| started.elapsed().as_secs_f64())
                .max(0.0);
            if self.needs_tokens {
                if out.sampled.len() != pass.entries.len() {
                    return Ok(Err(BackendError::Device(format!(
                        "backend `{}` returned {} draft tokens for {} draft entries",
                        self.backend.name(),
                        out.sampled.len(),
                        pass.entries.len()
                    ))));
                }
                for (id, t) in out.sampled {
                    run.proposals.entry(id).or_default().push(t);
                }
            }
        }
        Ok(Ok(run))
    }

    /// The target's verdict on each verify entry: the greedy match of the
    /// drafts against the target's tokens, or the acceptance model's coin for
    /// a backend without tokens.
    fn verdicts(
        &self,
        batch: &ForwardBatch,
        draft: &DraftRun,
        output: &crate::StepOutput,
    ) -> Result<BTreeMap<RequestId, Verified>> {
        let mut out = BTreeMap::new();
        let target: BTreeMap<RequestId, &Vec<u32>> =
            output.verified.iter().map(|(id, t)| (*id, t)).collect();
        for e in batch.entries.iter().filter(|e| is_verify(e)) {
            let drafts = e.n_tokens - 1;
            let v = if self.needs_tokens {
                let proposals = draft
                    .proposals
                    .get(&e.request)
                    .map_or(&[][..], Vec::as_slice);
                let Some(t) = target
                    .get(&e.request)
                    .filter(|t| t.len() == e.n_tokens as usize)
                else {
                    return Err(EngineError::Backend(BackendError::Device(format!(
                        "backend `{}` returned no {} verified tokens for request {}",
                        self.backend.name(),
                        e.n_tokens,
                        e.request
                    ))));
                };
                let accepted = crate::greedy_accepted(proposals, t).min(drafts);
                let mut tokens = proposals[..accepted as usize].to_vec();
                tokens.push(t[accepted as usize]);
                Verified { accepted, tokens }
            } else {
                let accepted = self
                    .acceptance
                    .map_or(0, |m| m.accepted_prefix(e.request, e.start_pos + 1, drafts));
                Verified {
                    accepted,
                    tokens: Vec::new(),
                }
            };
            out.insert(e.request, v);
        }
        Ok(out)
    }

    /// Streaming off: keeps a step's tokens back until each request's result
    /// is returned, which for a static or prepacked batch is when its last
    /// row ends and otherwise when the request ends. Returns what is returned
    /// now: `(request, first index, tokens)` and the finished requests.
    #[allow(clippy::type_complexity)]
    fn hold(
        &mut self,
        commit: &crate::sched::Commit,
    ) -> (Vec<(RequestId, u32, u32)>, Vec<RequestId>) {
        for &(request, index, n) in &commit.emitted {
            self.held.entry(request).or_insert((index, 0)).1 += n;
        }
        self.held_finished.extend(&commit.finished);
        if self.sched.in_padded_batch() {
            return (Vec::new(), Vec::new());
        }
        let finished = std::mem::take(&mut self.held_finished);
        let emitted = finished
            .iter()
            .filter_map(|id| self.held.remove(id).map(|(first, n)| (*id, first, n)))
            .collect();
        (emitted, finished)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        batch: &crate::ForwardBatch,
        now: f64,
        duration: f64,
        waiting: u32,
        running: u32,
        audit: &StepAudit,
        (draft_s, accepted): (f64, u32),
    ) -> StepRecord {
        let decodes = batch.entries.iter().filter(|e| e.is_decode);
        StepRecord {
            draft_s,
            decode_seqs: decodes.clone().count() as u32,
            spec_seqs: decodes.filter(|e| is_verify(e)).count() as u32,
            spec_proposed: batch.draft_tokens(),
            spec_accepted: accepted,
            step: self.step_no,
            t_start: now,
            duration_s: duration,
            n_seqs: batch.entries.len() as u32,
            prefill_tokens: batch.prefill_tokens(),
            decode_tokens: batch.decode_tokens(),
            padding_tokens: batch.padding_tokens(),
            kv_blocks_used: self.sched.kv.used_blocks(),
            kv_blocks_total: self.sched.kv.num_blocks(),
            preemptions: audit.preempted.len() as u32,
            waiting,
            running,
            prefix_query_tokens: audit.prefix_query_tokens,
            prefix_hit_tokens: audit.prefix_hit_tokens,
            adapter_loads: audit.adapters.loads.len() as u32,
            adapter_evictions: audit.adapters.evictions.len() as u32,
            adapters_in_batch: audit.adapters.distinct().len() as u32,
            adapter_slots_used: if self.sched.lora {
                self.sched.slots.used()
            } else {
                0
            },
            adapter_slots: if self.sched.lora {
                self.sched.slots.capacity()
            } else {
                0
            },
        }
    }

    /// Checks the KV cache's invariants (no block leaked or owned twice).
    ///
    /// # Errors
    /// [`EngineError::KvInvariant`] naming the violation.
    pub fn check_kv(&self) -> Result<()> {
        self.sched.kv.check()?;
        for id in self.sched.kv.owners() {
            if !self.sched.running.contains(&id) {
                return Err(EngineError::KvInvariant(format!(
                    "request {id} holds KV blocks but is not running"
                )));
            }
        }
        Ok(())
    }

    /// [`Self::check_kv`] plus: the engine is idle and every block is free.
    ///
    /// # Errors
    /// [`EngineError::KvInvariant`] naming the leaked block or request.
    pub fn check_drained(&self) -> Result<()> {
        self.check_kv()?;
        if self.sched.has_work() {
            return Err(EngineError::KvInvariant(format!(
                "{} waiting and {} running requests remain",
                self.sched.waiting.len(),
                self.sched.running.len()
            )));
        }
        self.sched.kv.check_drained()
    }
}

/// Whether `e` verifies draft tokens (a decode of more than one token).
fn is_verify(e: &BatchEntry) -> bool {
    e.is_decode && e.n_tokens > 1
}
