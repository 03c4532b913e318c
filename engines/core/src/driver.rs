//! The virtual-time driver: runs a whole workload through an engine on a
//! virtual clock advanced by each step's duration. Fully deterministic when the
//! backend reports durations (the simulator does).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fuselab_core::{RequestRecord, RequestSpec, RequestStatus, StepRecord, TokenChunk, TurnLinks};

use crate::{Backend, EngineError, NativeEngine, Result};

/// Everything a simulated run produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimRun {
    /// One record per request, in request-id order.
    pub records: Vec<RequestRecord>,
    /// One record per forward step, in order.
    pub steps: Vec<StepRecord>,
}

impl SimRun {
    /// Virtual time at which the last step ended (0 for an empty run).
    pub fn makespan_s(&self) -> f64 {
        self.steps.last().map_or(0.0, |s| s.t_start + s.duration_s)
    }
}

/// Runs `specs` through `engine` on a virtual clock.
///
/// Open loop (`closed_loop_clients == None`): each request is submitted once
/// the clock passes its `arrival_s` (`t_scheduled = t_sent = arrival_s`); an
/// idle engine jumps to the next arrival. Closed loop (`Some(n)`): `n` clients
/// each send the next request of `specs` (in order, `arrival_s` ignored) when
/// their previous one ends; the first `n` go at time 0.
///
/// A later turn of a conversation ([`fuselab_core::Turn`]) is submitted its
/// `think_s` after the previous turn ended (however it ended), and no earlier
/// than its `arrival_s`; `t_scheduled` is that instant.
///
/// # Errors
/// Engine errors ([`EngineError::Stalled`], KV invariant violations); an input
/// error for conversation turns under closed-loop clients.
pub fn simulate<B: Backend>(
    specs: &[RequestSpec],
    closed_loop_clients: Option<u32>,
    engine: &mut NativeEngine<B>,
) -> Result<SimRun> {
    let links = TurnLinks::of(specs);
    if closed_loop_clients.is_some() && links.any() {
        return Err(fuselab_core::Error::invalid(
            "clients",
            "a multi-turn workload under closed-loop clients",
            "each turn already waits for the previous one; run conversations open loop",
        )
        .into());
    }
    let index: HashMap<u64, usize> = specs.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    // Follow-up turns released by their predecessor: (send time bits, index).
    // Times are >= 0, so the bit patterns order like the values.
    let mut released: BTreeSet<(u64, usize)> = BTreeSet::new();
    let mut order: Vec<usize> = (0..specs.len()).filter(|&i| !links.waits[i]).collect();
    if closed_loop_clients.is_none() {
        order.sort_by(|&a, &b| {
            specs[a]
                .arrival_s
                .total_cmp(&specs[b].arrival_s)
                .then(a.cmp(&b))
        });
    }
    let mut next = 0usize;
    let mut records: BTreeMap<u64, RequestRecord> = BTreeMap::new();
    let mut steps = Vec::new();
    let mut now = 0.0f64;

    let submit = |spec: &RequestSpec,
                  t: f64,
                  engine: &mut NativeEngine<B>,
                  records: &mut BTreeMap<u64, RequestRecord>| {
        records.insert(
            spec.id,
            RequestRecord {
                id: spec.id,
                prompt_len: spec.prompt_len,
                output_len: spec.output_len,
                t_scheduled: t,
                t_sent: t,
                tokens: Vec::new(),
                t_done: None,
                status: RequestStatus::Cancelled,
                error: None,
                server: None,
            },
        );
        engine.submit(spec, t);
    };

    if let Some(clients) = closed_loop_clients {
        if clients == 0 {
            return Err(fuselab_core::Error::invalid(
                "clients",
                "0 closed-loop clients",
                "give at least one client",
            )
            .into());
        }
        while next < order.len() && next < clients as usize {
            submit(&specs[order[next]], 0.0, engine, &mut records);
            next += 1;
        }
    }

    let max_steps = 100_000_000u64;
    let mut n_steps = 0u64;
    loop {
        if closed_loop_clients.is_none() {
            while next < order.len() && specs[order[next]].arrival_s <= now {
                let spec = &specs[order[next]];
                submit(spec, spec.arrival_s.max(0.0), engine, &mut records);
                next += 1;
            }
        }
        while let Some(&(bits, i)) = released.first()
            && f64::from_bits(bits) <= now
        {
            released.pop_first();
            submit(&specs[i], f64::from_bits(bits), engine, &mut records);
        }
        if !engine.has_work() {
            let arrival = (closed_loop_clients.is_none() && next < order.len())
                .then(|| specs[order[next]].arrival_s);
            let follow_up = released.first().map(|&(bits, _)| f64::from_bits(bits));
            match (arrival, follow_up) {
                (None, None) => break,
                (a, f) => {
                    let t = a.unwrap_or(f64::INFINITY).min(f.unwrap_or(f64::INFINITY));
                    now = now.max(t);
                    continue;
                }
            }
        }
        let report = engine.step(now)?;
        now += report.duration_s();
        for ev in &report.events {
            if let Some(r) = records.get_mut(&ev.request) {
                r.tokens.push(TokenChunk {
                    index: ev.index,
                    t: ev.t,
                    n_tokens: ev.n_tokens,
                });
            }
        }
        for f in &report.finished {
            if let Some(r) = records.get_mut(&f.id) {
                r.status = f.status;
                r.error = f.error.clone();
                r.t_done = Some(f.t);
            }
            if let Some(j) = index.get(&f.id).and_then(|&i| links.next[i]) {
                let think = specs[j].conversation.as_ref().map_or(0.0, |c| c.think_s);
                let at = (f.t + think).max(specs[j].arrival_s).max(0.0);
                released.insert((at.to_bits(), j));
            }
            if closed_loop_clients.is_some() && next < order.len() {
                submit(&specs[order[next]], now.max(f.t), engine, &mut records);
                next += 1;
            }
        }
        if let Some(rec) = report.record {
            steps.push(rec);
        }
        n_steps += 1;
        if n_steps > max_steps {
            return Err(EngineError::Stalled(format!(
                "more than {max_steps} steps; the run does not converge"
            )));
        }
    }
    Ok(SimRun {
        records: records.into_values().collect(),
        steps,
    })
}
