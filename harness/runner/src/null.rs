//! The `null` engine: answers every request at once with exactly the requested
//! number of tokens, so that a run measures the harness's own overhead and
//! timing precision.

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

/// An engine that computes nothing; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullEngine {
    /// Chunking of the answer.
    pub mode: NullMode,
}

impl NullEngine {
    /// A null engine answering in `mode`.
    pub fn new(mode: NullMode) -> Self {
        Self { mode }
    }
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
        let mode = self.mode;
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                let EngineCommand::Submit { spec, .. } = cmd else {
                    if cmd == EngineCommand::Shutdown {
                        break;
                    }
                    continue;
                };
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
