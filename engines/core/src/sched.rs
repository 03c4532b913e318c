//! The scheduler: request lifecycle, the five policies' step rules and
//! preemption by recompute. The same code runs for every backend.
//!
//! Every sequence has `num_tokens = prompt + generated` known tokens and
//! `computed` tokens whose KV is in the cache (vLLM v1's formulation). It is in
//! its prefill phase while `computed < target`, where `target` is the prompt
//! length, or prompt + generated after a preemption (the recompute). A chunk
//! that reaches `num_tokens` samples the next token.
//!
//! With the prefix cache on, a request leaving the waiting queue first reuses
//! the cached full blocks of its tokens (never the last token to compute), so
//! its prefill starts at `computed = cached tokens`; every block a step
//! completes is registered in the cache when the step commits.
//!
//! With adapters in play (see [`crate::AdapterSlots`]), waiting requests whose
//! adapter cannot get a slot in this step are set aside before the policy
//! runs and put back, in their places, after it.
//!
//! With speculative decoding (`spec_k > 0`) a decode computes `1 + k` verify
//! tokens (`k` shortened to fit the remaining output and the token budget),
//! so it costs `1 + k` budget tokens and KV for them; committing keeps the
//! accepted tokens plus one and truncates the block table back to the
//! computed positions. Each sequence also tracks `draft_computed`, the
//! positions whose draft-model KV is in the cache (it lags the target's and
//! catches up in the next draft pass); with speculation on, only blocks
//! complete in both models are registered in the prefix cache.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use fuselab_core::{RequestId, RequestSpec};

use crate::kv::{BlockHash, PrefixHit};
use crate::{
    AdapterSlots, AdapterStep, BatchEntry, BatchShape, BlockManager, EngineError, ForwardBatch,
    KvGeometry, PolicyConfig, PolicyKind, Result, best_fit_decreasing,
};

/// What the scheduler decided in one step, for tests, traces and the TUI.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepAudit {
    /// Requests admitted in this step in admission order, with `true` on a
    /// request's first admission (`false` when a preempted request is re-admitted).
    pub admitted: Vec<(RequestId, bool)>,
    /// Requests preempted (KV freed, to be recomputed) in this step.
    pub preempted: Vec<RequestId>,
    /// Running requests in their decode phase that the step left out (budget
    /// or sequence limits), excluding [`Self::blocked_decodes`].
    pub skipped_decodes: Vec<RequestId>,
    /// Decodes left out because no KV block was free for their next token
    /// (splitfuse skips them instead of preempting, as DeepSpeed-MII does).
    pub blocked_decodes: Vec<RequestId>,
    /// The token budget the step was scheduled under (`None` for static and prepack).
    pub token_budget: Option<u32>,
    /// Tokens of the requests admitted in this step that were looked up in the
    /// prefix cache (each admission's whole target: prompt, or prompt +
    /// generated for a recompute), counted with the cache off too.
    pub prefix_query_tokens: u32,
    /// Of those, tokens found in the prefix cache and not recomputed.
    pub prefix_hit_tokens: u32,
    /// Waiting requests set aside in this step because no adapter slot was
    /// free or evictable for their adapter.
    pub adapter_deferred: Vec<RequestId>,
    /// The step's adapters: per entry, and the loads and evictions before it.
    pub adapters: AdapterStep,
}

#[derive(Clone, Debug)]
pub(crate) struct Seq {
    pub spec: RequestSpec,
    pub prompt_len: u32,
    pub output_len: u32,
    pub generated: u32,
    pub computed: u32,
    pub target: u32,
    pub tokens: Vec<u32>,
    /// Hashes of the first full blocks of `tokens`, kept between lookups.
    pub chain: Vec<BlockHash>,
    pub done: bool,
    pub admitted_once: bool,
    /// Positions whose draft-model KV is computed (speculative decoding).
    pub draft_computed: u32,
    /// The sequence's current draft length (`spec_k`, or adapted).
    pub draft_k: u32,
}

impl Seq {
    fn num_tokens(&self) -> u32 {
        self.prompt_len + self.generated
    }

    fn in_prefill(&self) -> bool {
        self.computed < self.target
    }
}

/// The target's verdict on one sequence's draft tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Verified {
    /// Leading draft tokens accepted.
    pub accepted: u32,
    /// The accepted drafts and the target's next token (`accepted + 1` ids);
    /// empty for a backend without real tokens (synthetic ids are used).
    pub tokens: Vec<u32>,
}

/// What committing a step produced.
#[derive(Debug, Default)]
pub(crate) struct Commit {
    /// `(request, index of the first new token, new tokens)` in entry order.
    pub emitted: Vec<(RequestId, u32, u32)>,
    /// Requests that produced their last token.
    pub finished: Vec<RequestId>,
    /// Draft tokens accepted in the step.
    pub accepted: u32,
    /// The ids of the tokens generated, per request, in entry order.
    pub ids: Vec<(RequestId, Vec<u32>)>,
}

#[derive(Debug)]
pub(crate) struct Scheduler {
    pub cfg: PolicyConfig,
    budget: Option<u32>,
    pub kv: BlockManager,
    pub seqs: BTreeMap<RequestId, Seq>,
    pub waiting: VecDeque<RequestId>,
    /// Requests holding (or about to hold) KV, oldest admission first; the newest is last.
    pub running: Vec<RequestId>,
    /// The current static/prepack batch, row order; empty when none.
    rows: Vec<RequestId>,
    /// Vocabulary of the synthetic token ids.
    vocab: u32,
    /// LoRA adapter slots; used only when `lora` is on.
    pub slots: AdapterSlots,
    /// Whether the backend serves adapters.
    pub lora: bool,
}

impl Scheduler {
    pub fn new(cfg: PolicyConfig, geometry: KvGeometry, vocab: u32) -> Self {
        let kv = BlockManager::new(geometry, cfg.effective_watermark())
            .with_prefix_cache(cfg.prefix_caching());
        Self {
            vocab,
            budget: cfg.token_budget(),
            kv,
            seqs: BTreeMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            rows: Vec::new(),
            slots: AdapterSlots::new(cfg.max_loras),
            lora: false,
            cfg,
        }
    }

    /// Why `spec` can never be served, if it cannot.
    pub fn rejection(&self, spec: &RequestSpec) -> Option<String> {
        let (p, o) = (spec.prompt_len, spec.output_len);
        if self.seqs.contains_key(&spec.id) {
            return Some(format!("request id {} is already in the engine", spec.id));
        }
        if p == 0 {
            return Some("prompt_len is 0; a request needs at least one prompt token".into());
        }
        if o == 0 {
            return Some("output_len is 0; a request must ask for at least one token".into());
        }
        let total = u64::from(p) + u64::from(o);
        if total > u64::from(self.cfg.max_len()) {
            return Some(format!(
                "prompt ({p}) + output ({o}) = {total} tokens exceed max_len {}; use a model with a longer context or raise the max_len knob",
                self.cfg.max_len()
            ));
        }
        let need = self.kv.blocks_for(p + o);
        let usable = self.kv.num_blocks() - self.kv.watermark_blocks();
        if need > usable {
            return Some(format!(
                "prompt + output = {total} tokens need {need} KV blocks of {} tokens but the cache has only {usable} usable blocks",
                self.kv.block_size()
            ));
        }
        if self.cfg.kind == PolicyKind::Continuous {
            let budget = self.budget.unwrap_or(u32::MAX);
            if p + o - 1 > budget {
                return Some(format!(
                    "prompt + generated tokens (up to {}) can exceed the prefill token budget {budget}, so a recompute could never be scheduled; raise the budget knob",
                    p + o - 1
                ));
            }
        }
        None
    }

    pub fn add(&mut self, spec: &RequestSpec, tokens: Vec<u32>) {
        self.seqs.insert(
            spec.id,
            Seq {
                spec: spec.clone(),
                prompt_len: spec.prompt_len,
                output_len: spec.output_len,
                generated: 0,
                computed: 0,
                target: spec.prompt_len,
                tokens,
                chain: Vec::new(),
                done: false,
                admitted_once: false,
                draft_computed: 0,
                draft_k: self.cfg.spec_k,
            },
        );
        self.waiting.push_back(spec.id);
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    fn seq(&self, id: RequestId) -> &Seq {
        &self.seqs[&id]
    }

    /// Moves the front of the waiting queue to the end of the running set.
    fn admit_front(&mut self, audit: &mut StepAudit) {
        if let Some(id) = self.waiting.pop_front() {
            if let Some(s) = self.seqs.get_mut(&id) {
                audit.admitted.push((id, !s.admitted_once));
                s.admitted_once = true;
            }
            self.running.push(id);
        }
    }

    /// The cached prefix the waiting request `id` would reuse (empty with the
    /// cache off): whole blocks of its tokens, all but the last token to compute.
    fn prefix_hit(&mut self, id: RequestId) -> PrefixHit {
        let holds = self.kv.holds(id);
        let Some(s) = self.seqs.get_mut(&id) else {
            return PrefixHit::default();
        };
        if s.computed > 0 || holds || !self.kv.prefix_cache() {
            return PrefixHit::default();
        }
        let upto = (s.target.saturating_sub(1) as usize).min(s.tokens.len());
        self.kv.lookup_with(&s.tokens[..upto], &mut s.chain)
    }

    /// Blocks a waiting request takes from the free capacity to hold `tokens`
    /// tokens after reusing `hit`: new blocks plus the evictable cached ones.
    fn blocks_needed(&self, hit: &PrefixHit, tokens: u32) -> u32 {
        self.kv
            .blocks_for(tokens)
            .saturating_sub(hit.blocks().len() as u32)
            + hit.evictable()
    }

    /// Starts the waiting request `id` on its cached prefix and counts the
    /// lookup towards the hit rate.
    fn take_hit(&mut self, id: RequestId, hit: &PrefixHit, audit: &mut StepAudit) -> Result<()> {
        self.kv.adopt(id, hit)?;
        let s = self
            .seqs
            .get_mut(&id)
            .ok_or_else(|| EngineError::Stalled(format!("unknown request {id}")))?;
        s.computed = hit.tokens();
        s.draft_computed = hit.tokens();
        audit.prefix_query_tokens += s.target;
        audit.prefix_hit_tokens += hit.tokens();
        Ok(())
    }

    /// Preemption by recompute: frees the KV of `id`, which goes back to the
    /// front of the waiting queue to re-prefill prompt + generated tokens.
    fn preempt(&mut self, id: RequestId, audit: &mut StepAudit) {
        self.kv.free_seq(id);
        if let Some(s) = self.seqs.get_mut(&id) {
            s.computed = 0;
            s.draft_computed = 0;
            s.target = s.num_tokens();
        }
        self.running.retain(|&r| r != id);
        self.waiting.push_front(id);
        audit.preempted.push(id);
    }

    /// Verify tokens of `id`'s next decode with at most `room` tokens of
    /// budget left: 1, plus its draft length shortened so that the round
    /// cannot produce more than the output still due.
    fn decode_len(&self, id: RequestId, room: u32) -> u32 {
        let s = self.seq(id);
        let due = s.output_len.saturating_sub(s.generated);
        1 + s
            .draft_k
            .min(due.saturating_sub(1))
            .min(room.saturating_sub(1))
    }

    fn entry(&self, id: RequestId, n: u32, row: Option<u32>) -> BatchEntry {
        let s = self.seq(id);
        BatchEntry {
            request: id,
            start_pos: s.computed,
            n_tokens: n,
            sample: s.computed + n >= s.num_tokens(),
            is_decode: !s.in_prefill(),
            row,
            ..BatchEntry::default()
        }
    }

    /// Schedules one step.
    pub fn schedule(&mut self) -> Result<(ForwardBatch, StepAudit)> {
        let mut audit = StepAudit {
            token_budget: self.budget,
            ..StepAudit::default()
        };
        let deferred = if self.lora {
            self.defer_for_adapters()
        } else {
            (Vec::new(), BTreeSet::new())
        };
        audit.adapter_deferred = deferred.1.iter().copied().collect();
        let batch = match self.cfg.kind {
            PolicyKind::Static | PolicyKind::Prepack => self.schedule_static(&mut audit)?,
            PolicyKind::Continuous => self.schedule_continuous(&mut audit)?,
            PolicyKind::Chunked => self.schedule_chunked(&mut audit)?,
            PolicyKind::SplitFuse => self.schedule_splitfuse(&mut audit)?,
        };
        if self.lora {
            self.restore_deferred(deferred);
            audit.adapters = self.stage_adapters(&batch)?;
        }
        let in_batch: std::collections::BTreeSet<RequestId> =
            batch.entries.iter().map(|e| e.request).collect();
        audit.skipped_decodes = self
            .running
            .iter()
            .copied()
            .filter(|id| {
                let s = self.seq(*id);
                !s.done
                    && !s.in_prefill()
                    && !in_batch.contains(id)
                    && !audit.blocked_decodes.contains(id)
            })
            .collect();
        Ok((batch, audit))
    }

    /// The distinct adapters of the running requests.
    fn running_adapters(&self) -> BTreeSet<u32> {
        self.running
            .iter()
            .filter_map(|id| self.seqs.get(id).and_then(|s| s.spec.adapter))
            .collect()
    }

    /// Takes out of the waiting queue every request whose adapter could not
    /// get a slot in this step: walking the queue in order, an adapter is
    /// granted while the running requests' adapters plus those granted fit
    /// in the slots. Returns the queue as it was and the requests taken out.
    fn defer_for_adapters(&mut self) -> (Vec<RequestId>, BTreeSet<RequestId>) {
        let cap = self.slots.capacity() as usize;
        let mut active = self.running_adapters();
        let mut deferred = BTreeSet::new();
        for id in &self.waiting {
            let Some(a) = self.seqs.get(id).and_then(|s| s.spec.adapter) else {
                continue;
            };
            if active.contains(&a) {
                continue;
            }
            if active.len() < cap {
                active.insert(a);
            } else {
                deferred.insert(*id);
            }
        }
        if deferred.is_empty() {
            return (Vec::new(), deferred);
        }
        let before: Vec<RequestId> = self.waiting.iter().copied().collect();
        self.waiting.retain(|id| !deferred.contains(id));
        (before, deferred)
    }

    /// Puts the deferred requests back where they were: requests preempted
    /// in this step stay at the front, then the queue in its old order.
    fn restore_deferred(&mut self, (before, deferred): (Vec<RequestId>, BTreeSet<RequestId>)) {
        if deferred.is_empty() {
            return;
        }
        let old: BTreeSet<RequestId> = before.iter().copied().collect();
        let still: BTreeSet<RequestId> = self.waiting.iter().copied().collect();
        let mut queue: VecDeque<RequestId> = self
            .waiting
            .iter()
            .copied()
            .filter(|id| !old.contains(id))
            .collect();
        queue.extend(
            before
                .into_iter()
                .filter(|id| deferred.contains(id) || still.contains(id)),
        );
        self.waiting = queue;
    }

    /// Makes the batch's adapters resident; the running requests' adapters
    /// are pinned.
    fn stage_adapters(&mut self, batch: &ForwardBatch) -> Result<AdapterStep> {
        let entries: Vec<Option<u32>> = batch
            .entries
            .iter()
            .map(|e| self.seqs.get(&e.request).and_then(|s| s.spec.adapter))
            .collect();
        let needed: BTreeSet<u32> = entries.iter().flatten().copied().collect();
        let pinned = self.running_adapters();
        let (loads, evictions) = self.slots.make_resident(&needed, &pinned).ok_or_else(|| {
            EngineError::Stalled(format!(
                "{} adapters needed with {} running but only {} slots (max_loras)",
                needed.len(),
                pinned.len(),
                self.slots.capacity()
            ))
        })?;
        Ok(AdapterStep {
            entries,
            loads,
            evictions,
        })
    }

    /// Decodes of running sequences, oldest first, at most `limit` tokens
    /// (verify tokens included); a decode that cannot get a block preempts the
    /// newest running request (possibly itself, which ends the pass). Returns
    /// the tokens scheduled.
    fn decodes_with_preemption(
        &mut self,
        limit: u32,
        entries: &mut Vec<BatchEntry>,
        audit: &mut StepAudit,
    ) -> Result<u32> {
        let mut i = 0;
        let mut count = 0;
        while i < self.running.len() {
            let id = self.running[i];
            if self.seq(id).in_prefill() {
                i += 1;
                continue;
            }
            if count >= limit {
                break;
            }
            let n = self.decode_len(id, limit - count);
            let need_tokens = self.seq(id).computed + n;
            let mut self_preempted = false;
            while !self
                .kv
                .can_allocate(self.kv.extra_blocks(id, need_tokens), false)
            {
                let Some(&victim) = self.running.last() else {
                    break;
                };
                self.preempt(victim, audit);
                if victim == id {
                    self_preempted = true;
                    break;
                }
            }
            if self_preempted {
                break;
            }
            self.kv.ensure(id, need_tokens)?;
            entries.push(self.entry(id, n, None));
            count += n;
            i += 1;
        }
        Ok(count)
    }

    /// vLLM v0: an all-prefill step when any waiting prompt fits, else an all-decode step.
    fn schedule_continuous(&mut self, audit: &mut StepAudit) -> Result<ForwardBatch> {
        let budget = self.budget.unwrap_or(u32::MAX);
        let mut entries = Vec::new();
        let mut tokens = 0u32;
        while let Some(&id) = self.waiting.front() {
            let hit = self.prefix_hit(id);
            let target = self.seq(id).target;
            let n = target - hit.tokens();
            if tokens + n > budget || self.running.len() as u32 >= self.cfg.max_seqs {
                break;
            }
            if !self.kv.can_allocate(self.blocks_needed(&hit, target), true) {
                break;
            }
            self.take_hit(id, &hit, audit)?;
            self.kv.ensure(id, target)?;
            self.admit_front(audit);
            entries.push(self.entry(id, n, None));
            tokens += n;
        }
        if entries.is_empty() {
            self.decodes_with_preemption(budget, &mut entries, audit)?;
        }
        Ok(ragged(entries))
    }

    /// Sarathi-Serve stall-free batching: decodes, running partial prefills,
    /// then new prompts (whole-prompt KV reserved at admission), all FCFS.
    fn schedule_chunked(&mut self, audit: &mut StepAudit) -> Result<ForwardBatch> {
        let budget = self.budget.unwrap_or(u32::MAX);
        let mut entries = Vec::new();
        let mut left = budget - self.decodes_with_preemption(budget, &mut entries, audit)?;
        let partials: Vec<RequestId> = self
            .running
            .iter()
            .copied()
            .filter(|&id| self.seq(id).in_prefill())
            .collect();
        for id in partials {
            if left == 0 {
                break;
            }
            let s = self.seq(id);
            let n = (s.target - s.computed).min(left);
            let upto = s.computed + n;
            self.kv.ensure(id, upto)?;
            entries.push(self.entry(id, n, None));
            left -= n;
        }
        while left > 0 && (self.running.len() as u32) < self.cfg.max_seqs {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let hit = self.prefix_hit(id);
            let target = self.seq(id).target;
            if !self.kv.can_allocate(self.blocks_needed(&hit, target), true) {
                break;
            }
            self.take_hit(id, &hit, audit)?;
            self.kv.ensure(id, target)?;
            self.admit_front(audit);
            let n = (target - hit.tokens()).min(left);
            entries.push(self.entry(id, n, None));
            left -= n;
        }
        Ok(ragged(entries))
    }

    /// DeepSpeed-FastGen Dynamic SplitFuse (DeepSpeed-MII `schedule_requests`).
    fn schedule_splitfuse(&mut self, audit: &mut StepAudit) -> Result<ForwardBatch> {
        let budget = self.budget.unwrap_or(u32::MAX);
        let max_seqs = self.cfg.max_seqs as usize;
        // Each pass either schedules something or flushes one running request,
        // so this terminates within running.len() + 1 passes.
        for _ in 0..=self.running.len() {
            let mut entries = Vec::new();
            let mut tokens = 0u32;
            audit.blocked_decodes.clear();
            // 1) Decodes first; one that needs a block when none is free is skipped.
            let decoders: Vec<RequestId> = self
                .running
                .iter()
                .copied()
                .filter(|&id| !self.seq(id).in_prefill())
                .collect();
            for id in decoders {
                if tokens >= budget || entries.len() >= max_seqs {
                    break;
                }
                let n = self.decode_len(id, budget - tokens);
                let upto = self.seq(id).computed + n;
                if !self.kv.can_allocate(self.kv.extra_blocks(id, upto), false) {
                    audit.blocked_decodes.push(id);
                    continue;
                }
                self.kv.ensure(id, upto)?;
                entries.push(self.entry(id, n, None));
                tokens += n;
            }
            // 2) Prompts FCFS: running partial prefills (the split remainders sit
            // at the front of the queue), then waiting requests.
            let partials: Vec<RequestId> = self
                .running
                .iter()
                .copied()
                .filter(|&id| self.seq(id).in_prefill())
                .collect();
            let mut blocked = false;
            for id in partials {
                if !self.splitfuse_prompt(
                    id,
                    false,
                    budget,
                    max_seqs,
                    &mut tokens,
                    &mut entries,
                    audit,
                )? {
                    blocked = true;
                    break;
                }
            }
            if !blocked {
                while let Some(&id) = self.waiting.front() {
                    if !self.splitfuse_prompt(
                        id,
                        true,
                        budget,
                        max_seqs,
                        &mut tokens,
                        &mut entries,
                        audit,
                    )? {
                        break;
                    }
                }
            }
            if !entries.is_empty() {
                return Ok(ragged(entries));
            }
            // 3) Deadlock escape: flush the newest request holding KV and requeue it.
            let victim = self
                .running
                .iter()
                .rev()
                .copied()
                .find(|&id| self.kv.holds(id));
            match victim {
                Some(v) if !self.waiting.is_empty() || !self.running.is_empty() => {
                    self.preempt(v, audit)
                }
                _ => break,
            }
        }
        Ok(ForwardBatch::default())
    }

    /// Tries to schedule a chunk of `id`'s remaining prompt; false means stop admitting.
    #[allow(clippy::too_many_arguments)]
    fn splitfuse_prompt(
        &mut self,
        id: RequestId,
        from_waiting: bool,
        budget: u32,
        max_seqs: usize,
        tokens: &mut u32,
        entries: &mut Vec<BatchEntry>,
        audit: &mut StepAudit,
    ) -> Result<bool> {
        // MII also stops when no block is free; here the whole-remainder check
        // below covers that, so a partial prompt whose blocks are already
        // allocated can still advance in a full cache (MII would flush it in
        // its deadlock escape and livelock in that corner).
        if entries.len() >= max_seqs || *tokens >= budget {
            return Ok(false);
        }
        if from_waiting && self.running.len() as u32 >= self.cfg.max_tracked {
            return Ok(false);
        }
        let target = self.seq(id).target;
        let (hit, need) = if from_waiting {
            let hit = self.prefix_hit(id);
            let need = self.blocks_needed(&hit, target);
            (hit, need)
        } else {
            (PrefixHit::default(), self.kv.extra_blocks(id, target))
        };
        // Admit only when the cache can hold the whole remaining prompt.
        if !self.kv.can_allocate(need, false) {
            return Ok(false);
        }
        if from_waiting {
            self.take_hit(id, &hit, audit)?;
        }
        let computed = self.seq(id).computed;
        let n = (target - computed).min(budget - *tokens);
        self.kv.ensure(id, computed + n)?;
        if from_waiting {
            self.admit_front(audit);
        }
        entries.push(self.entry(id, n, None));
        *tokens += n;
        Ok(true)
    }

    /// Static batching and prepacking: a padded prefill of a batch, then
    /// padded decode steps until every row is done.
    fn schedule_static(&mut self, audit: &mut StepAudit) -> Result<ForwardBatch> {
        if self.rows.is_empty() {
            let mut reserve = 0u32;
            while (self.rows.len() as u32) < self.cfg.batch {
                let Some(&id) = self.waiting.front() else {
                    break;
                };
                let s = self.seq(id);
                let need = self.kv.blocks_for(s.prompt_len + s.output_len);
                if !self.kv.can_allocate(reserve + need, false) {
                    break;
                }
                reserve += need;
                audit.prefix_query_tokens += s.prompt_len;
                self.admit_front(audit);
                self.rows.push(id);
            }
            if self.rows.is_empty() {
                return Ok(ForwardBatch::default());
            }
            let lens: Vec<u32> = self
                .rows
                .iter()
                .map(|&id| self.seq(id).prompt_len)
                .collect();
            let row_len = lens.iter().copied().max().unwrap_or(0);
            for (&id, &len) in self.rows.clone().iter().zip(&lens) {
                self.kv.ensure(id, len)?;
            }
            let (entries, rows) = if self.cfg.kind == PolicyKind::Prepack {
                let bins = best_fit_decreasing(&lens, row_len);
                let mut entries = Vec::with_capacity(lens.len());
                for (b, bin) in bins.iter().enumerate() {
                    for &i in bin {
                        entries.push(self.entry(self.rows[i], lens[i], Some(b as u32)));
                    }
                }
                (entries, bins.len() as u32)
            } else {
                let entries = self
                    .rows
                    .iter()
                    .enumerate()
                    .map(|(i, &id)| self.entry(id, lens[i], Some(i as u32)))
                    .collect();
                (entries, self.rows.len() as u32)
            };
            return Ok(ForwardBatch {
                entries,
                shape: BatchShape::Padded { rows, row_len },
            });
        }
        let mut entries = Vec::new();
        let mut row_len = 1;
        for (i, id) in self.rows.clone().into_iter().enumerate() {
            if self.seq(id).done {
                continue;
            }
            let n = self.decode_len(id, u32::MAX);
            let upto = self.seq(id).computed + n;
            self.kv.ensure(id, upto)?;
            entries.push(self.entry(id, n, Some(i as u32)));
            row_len = row_len.max(n);
        }
        Ok(ForwardBatch {
            entries,
            shape: BatchShape::Padded {
                rows: self.rows.len() as u32,
                row_len,
            },
        })
    }

    /// Applies a computed step: advances positions, records sampled tokens
    /// (`sampled` gives token ids when the backend produced real ones) and
    /// retires finished requests.
    /// Requests missing from `sampled` (a backend without real sampling)
    /// continue with their synthetic continuation ([`RequestSpec::token_at`]).
    /// A verify entry keeps `verified`'s accepted drafts plus one token and
    /// rolls its KV back to them.
    pub fn commit(
        &mut self,
        batch: &ForwardBatch,
        sampled: &BTreeMap<RequestId, u32>,
        verified: &BTreeMap<RequestId, Verified>,
    ) -> Result<Commit> {
        let mut out = Commit::default();
        let (spec_k, adaptive) = (self.cfg.spec_k, self.cfg.spec_adaptive);
        for e in &batch.entries {
            let s = self.seqs.get_mut(&e.request).ok_or_else(|| {
                EngineError::Stalled(format!("batch names unknown request {}", e.request))
            })?;
            let drafts = if e.is_decode { e.n_tokens - 1 } else { 0 };
            if drafts > 0 {
                let first = s.num_tokens();
                let v = verified.get(&e.request);
                let accepted = v.map_or(0, |v| v.accepted).min(drafts);
                out.emitted.push((e.request, s.generated, accepted + 1));
                for i in 0..=accepted {
                    let token = match v.and_then(|v| v.tokens.get(i as usize)) {
                        Some(&t) => t,
                        None => s.spec.token_at(first + i, self.vocab),
                    };
                    s.tokens.push(token);
                }
                out.ids.push((
                    e.request,
                    s.tokens[s.tokens.len() - accepted as usize - 1..].to_vec(),
                ));
                s.generated += accepted + 1;
                s.computed += accepted + 1;
                // The draft computed KV up to its last proposal's input.
                s.draft_computed = (first + drafts - 1).min(first + accepted);
                if adaptive {
                    s.draft_k = crate::spec::adapt_k(drafts, spec_k, accepted);
                }
                out.accepted += accepted;
                self.kv.truncate(e.request, s.computed);
            } else {
                s.computed += e.n_tokens;
                if e.sample {
                    out.emitted.push((e.request, s.generated, 1));
                    s.generated += 1;
                    let pos = s.num_tokens() - 1;
                    let token = match sampled.get(&e.request) {
                        Some(&t) => t,
                        None => s.spec.token_at(pos, self.vocab),
                    };
                    s.tokens.push(token);
                    out.ids.push((e.request, vec![token]));
                }
            }
            if e.sample && s.generated >= s.output_len {
                s.done = true;
                out.finished.push(e.request);
            }
            let complete = if spec_k > 0 {
                s.computed.min(s.draft_computed)
            } else {
                s.computed
            };
            self.kv.register(e.request, &s.tokens, complete);
        }
        if self.rows.is_empty() {
            for &id in &out.finished {
                self.retire(id);
            }
        } else if self.rows.iter().all(|id| self.seq(*id).done) {
            for id in std::mem::take(&mut self.rows) {
                self.retire(id);
            }
        }
        Ok(out)
    }

    /// Frees a request's KV and forgets it.
    fn retire(&mut self, id: RequestId) {
        self.kv.free_seq(id);
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&r| r != id);
        self.rows.retain(|&r| r != id);
        self.seqs.remove(&id);
    }

    /// Removes requests that failed or were cancelled; returns those that were
    /// still unfinished. A static batch breaks as a whole when any row fails.
    pub fn abort(&mut self, ids: &[RequestId]) -> Vec<RequestId> {
        let mut victims: Vec<RequestId> = ids.to_vec();
        if ids.iter().any(|id| self.rows.contains(id)) {
            victims.extend(self.rows.iter().copied());
        }
        victims.sort_unstable();
        victims.dedup();
        let mut unfinished = Vec::new();
        for id in victims {
            if let Some(s) = self.seqs.get(&id) {
                if !s.done {
                    unfinished.push(id);
                }
                self.retire(id);
            }
        }
        unfinished
    }

    /// Marks a request cancelled; in a static batch its row stays as padding.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        if self.rows.contains(&id) {
            match self.seqs.get_mut(&id) {
                Some(s) if !s.done => {
                    s.done = true;
                    if self.rows.iter().all(|r| self.seqs[r].done) {
                        for r in std::mem::take(&mut self.rows) {
                            self.retire(r);
                        }
                    }
                    return true;
                }
                _ => return false,
            }
        }
        if self.seqs.contains_key(&id) {
            self.retire(id);
            return true;
        }
        false
    }

    /// Whether a static or prepacked batch is still running.
    pub(crate) fn in_padded_batch(&self) -> bool {
        !self.rows.is_empty()
    }

    /// The state of a request the engine still holds.
    pub fn tokens_of(&self, id: RequestId) -> Option<&Seq> {
        self.seqs.get(&id)
    }
}

fn ragged(entries: Vec<BatchEntry>) -> ForwardBatch {
    ForwardBatch {
        entries,
        shape: BatchShape::Ragged,
    }
}
