//! The `null` engine: answers every request with exactly the requested number
//! of tokens, at once, so that a run measures the harness's own overhead and
//! timing precision, or after a fixed first-token delay and a fixed delay per
//! further token ([`NullDelay`]): a real-time engine whose every latency is
//! known, for measuring a client or checking the gate on a known slowdown.

use fuselab_core::{RequestStatus, TokenEvent};
use tokio::sync::mpsc;

use crate::{
    EngineChannels, EngineCommand, EngineEvent, EngineHandle, EventSink, HarnessError, RunClock,
};

/// How the null engine delivers output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NullMode {
    /// One event carrying all `output_len` tokens.
    #[default]
    OneChunk,
    /// One event per token.
    PerToken,
}

/// Fixed latencies of a delayed null engine, seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NullDelay {
    /// From the request's arrival at the engine to its first token.
    pub first_token_s: f64,
    /// Between consecutive tokens.
    pub per_token_s: f64,
}

/// An engine that computes nothing; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullEngine {
    /// Chunking of the answer (when there is no delay).
    pub mode: NullMode,
    /// With a delay, every token comes on its own, on an absolute schedule
    /// from the request's arrival: token `i` at `first + i · per_token`.
    pub delay: Option<NullDelay>,
    /// Keep the delayed schedule on a dedicated OS thread that sleeps to
    /// each deadline (tens of microseconds late) instead of tokio's
    /// millisecond timer; for measuring clients. Ignores tokio's paused clock.
    pub precise: bool,
}

impl NullEngine {
    /// A null engine answering at once in `mode`.
    pub fn new(mode: NullMode) -> Self {
        Self {
            mode,
            delay: None,
            precise: false,
        }
    }

    /// A null engine answering one token at a time after `delay`.
    pub fn delayed(delay: NullDelay) -> Self {
        Self {
            mode: NullMode::PerToken,
            delay: Some(delay),
            precise: false,
        }
    }

    /// The same engine on the precise clock (see [`Self::precise`]).
    pub fn on_precise_clock(mut self) -> Self {
        self.precise = true;
        self
    }
}

/// What the precise clock thread is told.
enum ClockMsg {
    Submit(fuselab_core::RequestSpec),
    Cancel(fuselab_core::RequestId),
}

/// The precise clock: one OS thread holding every pending token's deadline,
/// sleeping (on a channel wait with a timeout) until the earliest.
fn precise_clock(
    d: NullDelay,
    clock: RunClock,
    events: EventSink,
) -> std::sync::mpsc::Sender<ClockMsg> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::{Duration, Instant};
    let (tx, rx) = std::sync::mpsc::channel::<ClockMsg>();
    std::thread::Builder::new()
        .name("null-clock".into())
        .spawn(move || {
            let mut due: BinaryHeap<Reverse<(Instant, fuselab_core::RequestId, u32)>> =
                BinaryHeap::new();
            let mut pending: HashMap<fuselab_core::RequestId, (Instant, u32)> = HashMap::new();
            let at = |start: Instant, i: u32| {
                start + Duration::from_secs_f64(d.first_token_s + f64::from(i) * d.per_token_s)
            };
            loop {
                let msg = match due.peek() {
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(Reverse((t, _, _))) => {
                        rx.recv_timeout(t.saturating_duration_since(Instant::now()))
                    }
                };
                match msg {
                    Ok(ClockMsg::Submit(spec)) => {
                        let start = Instant::now();
                        if spec.output_len == 0 {
                            events.send(EngineEvent::Finished {
                                id: spec.id,
                                status: RequestStatus::Ok,
                                error: None,
                                t: clock.now_s(),
                            });
                            continue;
                        }
                        pending.insert(spec.id, (start, spec.output_len));
                        due.push(Reverse((at(start, 0), spec.id, 0)));
                    }
                    Ok(ClockMsg::Cancel(id)) => {
                        pending.remove(&id);
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {}
                }
                let now = Instant::now();
                while let Some(&Reverse((t, id, index))) = due.peek() {
                    if t > now {
                        break;
                    }
                    due.pop();
                    let Some(&(start, n)) = pending.get(&id) else {
                        continue;
                    };
                    let t = clock.now_s();
                    if !events.send(EngineEvent::Tokens(TokenEvent {
                        request: id,
                        index,
                        t,
                        n_tokens: 1,
                    })) {
                        return;
                    }
                    if index + 1 == n {
                        pending.remove(&id);
                        events.send(EngineEvent::Finished {
                            id,
                            status: RequestStatus::Ok,
                            error: None,
                            t,
                        });
                    } else {
                        due.push(Reverse((at(start, index + 1), id, index + 1)));
                    }
                }
            }
        })
        .expect("spawning the null engine's clock thread");
    tx
}

/// Sends `spec`'s tokens on the delayed schedule, then its finish.
async fn answer_after(
    spec: fuselab_core::RequestSpec,
    d: NullDelay,
    clock: RunClock,
    events: EventSink,
) {
    let start = tokio::time::Instant::now();
    let at = |i: u32| {
        start + std::time::Duration::from_secs_f64(d.first_token_s + f64::from(i) * d.per_token_s)
    };
    for index in 0..spec.output_len {
        tokio::time::sleep_until(at(index)).await;
        let sent = events.send(EngineEvent::Tokens(TokenEvent {
            request: spec.id,
            index,
            t: clock.now_s(),
            n_tokens: 1,
        }));
        if !sent {
            return;
        }
    }
    events.send(EngineEvent::Finished {
        id: spec.id,
        status: RequestStatus::Ok,
        error: None,
        t: clock.now_s(),
    });
}

impl EngineHandle for NullEngine {
    fn name(&self) -> &str {
        "null"
    }

    fn start(
        self: Box<Self>,
        clock: RunClock,
        events: EventSink,
    ) -> Result<EngineChannels, HarnessError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (mode, delay) = (self.mode, self.delay);
        if let (Some(d), true) = (delay, self.precise) {
            let clock_tx = precise_clock(d, clock, events);
            tokio::spawn(async move {
                while let Some(cmd) = rx.recv().await {
                    let msg = match cmd {
                        EngineCommand::Submit { spec, .. } => ClockMsg::Submit(spec),
                        EngineCommand::Cancel { id, .. } => ClockMsg::Cancel(id),
                        EngineCommand::Shutdown => break,
                    };
                    if clock_tx.send(msg).is_err() {
                        break;
                    }
                }
            });
            return Ok(EngineChannels {
                commands: tx,
                thread: None,
            });
        }
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                let EngineCommand::Submit { spec, .. } = cmd else {
                    if cmd == EngineCommand::Shutdown {
                        break;
                    }
                    continue;
                };
                if let Some(d) = delay {
                    tokio::spawn(answer_after(spec, d, clock, events.clone()));
                    continue;
                }
                let t = clock.now_s();
                let n = spec.output_len;
                let chunks: Vec<(u32, u32)> = match mode {
                    NullMode::OneChunk if n > 0 => vec![(0, n)],
                    NullMode::OneChunk => Vec::new(),
                    NullMode::PerToken => (0..n).map(|i| (i, 1)).collect(),
                };
                for (index, n_tokens) in chunks {
                    events.send(EngineEvent::Tokens(TokenEvent {
                        request: spec.id,
                        index,
                        t,
                        n_tokens,
                    }));
                }
                if !events.send(EngineEvent::Finished {
                    id: spec.id,
                    status: RequestStatus::Ok,
                    error: None,
                    t,
                }) {
                    break;
                }
            }
        });
        Ok(EngineChannels {
            commands: tx,
            thread: None,
        })
    }
}
