//! Invariance tests driving the backend directly with hand-built ragged
//! batches and block tables (no engine): each request's logits at every
//! sampled position must equal the dense oracle's within 1e-4 relative,
//! whether the prompt was prefilled whole, chunked at budgets 1, 7 and 64,
//! prepacked with the others, batched with decodes, or preempted and
//! recomputed. Every chunk samples, so every chunk end is checked, and the
//! greedy continuations must agree across all schedules.

mod common;

use std::collections::BTreeMap;

use common::{MakeBackend, OracleCache, UnderTestDyn, backends, check_against_oracle};
use fuselab_core::RequestId;
use fuselab_engine::{BatchEntry, BatchShape, ForwardBatch, KvGeometry};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Seq {
    id: RequestId,
    tokens: Vec<u32>,
    out_len: usize,
    generated: usize,
    computed: usize,
    table: Vec<u32>,
}

impl Seq {
    fn remaining(&self) -> usize {
        if self.generated == self.out_len {
            0
        } else {
            self.tokens.len() - self.computed
        }
    }
    fn is_decode(&self) -> bool {
        self.generated > 0 && self.remaining() == 1 && self.computed == self.tokens.len() - 1
    }
}

struct Driver {
    b: Box<dyn UnderTestDyn>,
    free: Vec<u32>,
    block_size: usize,
    steps: usize,
}

impl Driver {
    fn new(make: MakeBackend, block_size: usize, decode_splits: usize, seed: u64) -> Self {
        let mut b = make(64 << 20, decode_splits);
        let num_blocks = 4096 / block_size as u32;
        b.init_kv(KvGeometry {
            block_size: block_size as u32,
            num_blocks,
        })
        .unwrap();
        let mut free: Vec<u32> = (0..num_blocks).collect();
        free.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        Self {
            b,
            free,
            block_size,
            steps: 0,
        }
    }

    /// Runs one step over `(seq index, n_tokens)` chunks.
    fn step(&mut self, seqs: &mut [Seq], chunks: &[(usize, usize)], packed: bool) {
        let mut entries = Vec::new();
        for (row, &(i, n)) in chunks.iter().enumerate() {
            let s = &mut seqs[i];
            let start = s.computed;
            assert!(n >= 1 && start + n <= s.tokens.len());
            while s.table.len() * self.block_size < start + n {
                s.table
                    .push(self.free.pop().expect("test cache large enough"));
            }
            entries.push(BatchEntry {
                request: s.id,
                start_pos: start as u32,
                n_tokens: n as u32,
                sample: true,
                is_decode: s.is_decode(),
                tokens: s.tokens[start..start + n].to_vec(),
                block_table: s.table.clone(),
                row: packed.then_some(row as u32),
            });
        }
        let shape = if packed {
            BatchShape::Padded {
                rows: entries.len() as u32,
                row_len: entries.iter().map(|e| e.n_tokens).max().unwrap_or(0),
            }
        } else {
            BatchShape::Ragged
        };
        let out = self.b.forward(&ForwardBatch { entries, shape }).unwrap();
        assert_eq!(out.sampled.len(), chunks.len());
        for (&(i, n), &(id, tok)) in chunks.iter().zip(&out.sampled) {
            let s = &mut seqs[i];
            assert_eq!(s.id, id);
            s.computed += n;
            if s.computed == s.tokens.len() {
                s.tokens.push(tok);
                s.generated += 1;
            }
        }
        self.steps += 1;
    }

    fn preempt(&mut self, s: &mut Seq) {
        self.free.append(&mut s.table);
        s.computed = 0;
    }
}

fn prompts(seed: u64) -> Vec<Seq> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..6)
        .map(|i| {
            let len = rng.random_range(3..40);
            Seq {
                id: 100 + i,
                tokens: (0..len).map(|_| rng.random_range(0..4096)).collect(),
                out_len: rng.random_range(2..6),
                generated: 0,
                computed: 0,
                table: Vec::new(),
            }
        })
        .collect()
}

/// Decode-first chunked schedule: every pending decode, then prompt (or
/// recompute) chunks FCFS in the remaining budget. `preempt_at`: after that
/// many steps, the first sequence with generated tokens loses its KV and is
/// recomputed.
fn decode_first(d: &mut Driver, seqs: &mut [Seq], budget: usize, preempt_at: Option<usize>) {
    let mut preempted = false;
    while seqs.iter().any(|s| s.remaining() > 0) {
        if let Some(at) = preempt_at
            && !preempted
            && d.steps >= at
            && let Some(s) = seqs
                .iter_mut()
                .find(|s| s.generated > 0 && s.remaining() > 0)
        {
            d.preempt(s);
            preempted = true;
        }
        let mut left = budget;
        let mut chunks = Vec::new();
        for (i, s) in seqs.iter().enumerate() {
            if s.is_decode() && left > 0 {
                chunks.push((i, 1));
                left -= 1;
            }
        }
        for (i, s) in seqs.iter().enumerate() {
            if !s.is_decode() && s.remaining() > 0 && left > 0 {
                let n = s.remaining().min(left);
                chunks.push((i, n));
                left -= n;
            }
        }
        d.step(seqs, &chunks, false);
    }
    if let Some(at) = preempt_at {
        assert!(
            preempted,
            "the schedule finished before step {at}; nothing was preempted"
        );
    }
}

type Outcome = (BTreeMap<RequestId, Vec<u32>>, usize);

fn finish(d: &mut Driver, cache: &mut OracleCache, seqs: &[Seq], what: &str) -> Outcome {
    let logits = d.b.take_logits();
    let sequences: BTreeMap<RequestId, Vec<u32>> =
        seqs.iter().map(|s| (s.id, s.tokens.clone())).collect();
    let checked = check_against_oracle(d.b.as_ref(), cache, &logits, &sequences, what);
    (sequences, checked)
}

fn scenarios(make: MakeBackend, name: &str) {
    let seed = 42;
    let mut results: Vec<(String, Outcome)> = Vec::new();
    let mut cache = OracleCache::new();

    // whole prefill, one request at a time, then its decodes alone
    let mut d = Driver::new(make, 4, 4, 1);
    let mut seqs = prompts(seed);
    for i in 0..seqs.len() {
        while seqs[i].remaining() > 0 {
            let n = seqs[i].remaining();
            d.step(&mut seqs, &[(i, n)], false);
        }
    }
    results.push((
        "whole".into(),
        finish(&mut d, &mut cache, &seqs, &format!("{name} whole")),
    ));

    // chunked at budgets 1, 7 and 64, decode-first: chunks mixed with decodes
    for (budget, bs, splits) in [(1, 4, 4), (7, 4, 1), (64, 16, 0), (7, 1, 3)] {
        let mut d = Driver::new(make, bs, splits, budget as u64);
        let mut seqs = prompts(seed);
        decode_first(&mut d, &mut seqs, budget, None);
        let what = format!("{name} chunked budget {budget} block {bs} splits {splits}");
        results.push((what.clone(), finish(&mut d, &mut cache, &seqs, &what)));
    }

    // prepacked: every prompt in one step, then all decode together
    let mut d = Driver::new(make, 4, 2, 2);
    let mut seqs = prompts(seed);
    let all: Vec<(usize, usize)> = seqs
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.remaining()))
        .collect();
    d.step(&mut seqs, &all, true);
    while seqs.iter().any(|s| s.remaining() > 0) {
        let dec: Vec<(usize, usize)> = (0..seqs.len())
            .filter(|&i| seqs[i].remaining() > 0)
            .map(|i| (i, 1))
            .collect();
        d.step(&mut seqs, &dec, false);
    }
    results.push((
        "prepacked".into(),
        finish(&mut d, &mut cache, &seqs, &format!("{name} prepacked")),
    ));

    // preempted after a few steps and recomputed from scratch
    for budget in [7, 64] {
        let mut d = Driver::new(make, 4, 4, 3);
        let mut seqs = prompts(seed);
        decode_first(
            &mut d,
            &mut seqs,
            budget,
            Some(if budget == 7 { 12 } else { 2 }),
        );
        let what = format!("{name} preempted budget {budget}");
        results.push((what.clone(), finish(&mut d, &mut cache, &seqs, &what)));
    }

    let (ref_name, (ref_seqs, _)) = &results[0];
    for (what, (seqs, checked)) in &results {
        assert!(*checked >= 6, "{what}: only {checked} logits checked");
        assert_eq!(
            seqs, ref_seqs,
            "{what} generated other tokens than {ref_name}"
        );
    }
}

#[test]
fn logits_are_invariant_to_how_prompts_are_batched() {
    for (name, make) in backends() {
        scenarios(make, name);
    }
}
