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
}

impl NullEngine {
    /// A null engine answering at once in `mode`.
    pub fn new(mode: NullMode) -> Self {
        Self { mode, delay: None }
    }

    /// A null engine answering one token at a time after `delay`.
    pub fn delayed(delay: NullDelay) -> Self {
        Self {
            mode: NullMode::PerToken,
            delay: Some(delay),
        }
    }
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
