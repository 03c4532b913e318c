//! The link between HTTP handlers and the engine: one engine started for the
//! server's lifetime, requests submitted under fresh ids, and a dispatcher
//! task that routes the engine's events to the handler waiting for them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fuselab_core::{RequestId, RequestSpec, RequestStatus};
use fuselab_harness::{EngineCommand, EngineEvent, EngineHandle, EventSink, RunClock};
use tokio::sync::{Semaphore, mpsc};

use crate::stats::Stats;
use crate::{ServeConfig, ServeError};

/// What a handler hears about its request.
#[derive(Debug)]
pub(crate) enum Progress {
    /// `n` more tokens are out.
    Tokens(u32),
    /// The request ended.
    Done(RequestStatus, Option<String>),
}

/// Shared by all handlers.
pub(crate) struct Link {
    pub config: ServeConfig,
    pub clock: RunClock,
    pub stats: Stats,
    pub permits: Arc<Semaphore>,
    commands: mpsc::UnboundedSender<EngineCommand>,
    routes: Mutex<HashMap<RequestId, mpsc::UnboundedSender<Progress>>>,
    next_id: AtomicU64,
    fatal: Mutex<Option<String>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Link {
    pub fn start(
        engine: Box<dyn EngineHandle>,
        config: ServeConfig,
    ) -> Result<Arc<Self>, ServeError> {
        let clock = RunClock::start();
        let (sink, mut events) = EventSink::detached();
        let channels = engine.start(clock, sink)?;
        let permits = Arc::new(Semaphore::new(config.max_concurrency));
        let link = Arc::new(Self {
            config,
            clock,
            stats: Stats::default(),
            permits,
            commands: channels.commands,
            routes: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            fatal: Mutex::new(None),
            thread: Mutex::new(channels.thread),
        });
        let weak = Arc::downgrade(&link);
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let Some(link) = weak.upgrade() else { break };
                link.dispatch(ev);
            }
        });
        Ok(link)
    }

    fn dispatch(&self, ev: EngineEvent) {
        match ev {
            EngineEvent::Tokens(t) => {
                self.stats
                    .generation_tokens
                    .fetch_add(u64::from(t.n_tokens), Ordering::Relaxed);
                if let Some(tx) = self.routes().get(&t.request) {
                    let _ = tx.send(Progress::Tokens(t.n_tokens));
                }
            }
            EngineEvent::Finished {
                id, status, error, ..
            } => {
                if let Some(tx) = self.routes().remove(&id) {
                    let _ = tx.send(Progress::Done(status, error));
                }
            }
            EngineEvent::Step(s) => self.stats.step(s),
            EngineEvent::Server { .. } => {}
            EngineEvent::Fatal(msg) => {
                tracing::error!("engine failed: {msg}");
                *self.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
                for (_, tx) in self.routes().drain() {
                    let _ = tx.send(Progress::Done(RequestStatus::Failed, Some(msg.clone())));
                }
            }
        }
    }

    fn routes(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<RequestId, mpsc::UnboundedSender<Progress>>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the engine stopped, if it did.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Submits a request of `prompt_len` tokens asking for `output_len`;
    /// returns its spec and the channel its progress arrives on.
    pub fn submit(
        &self,
        prompt_len: u32,
        output_len: u32,
    ) -> (RequestSpec, mpsc::UnboundedReceiver<Progress>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let t_sent = self.clock.now_s();
        let spec = RequestSpec {
            id,
            arrival_s: t_sent,
            prompt_len,
            output_len,
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(msg) = self.fatal() {
            let _ = tx.send(Progress::Done(RequestStatus::Failed, Some(msg)));
            return (spec, rx);
        }
        self.routes().insert(id, tx);
        self.stats
            .prompt_tokens
            .fetch_add(u64::from(prompt_len), Ordering::Relaxed);
        if self
            .commands
            .send(EngineCommand::Submit {
                spec: spec.clone(),
                t_sent,
            })
            .is_err()
            && let Some(tx) = self.routes().remove(&id)
        {
            let _ = tx.send(Progress::Done(
                RequestStatus::Failed,
                Some("the engine has stopped".into()),
            ));
        }
        (spec, rx)
    }

    /// Drops a request whose client went away.
    pub fn cancel(&self, id: RequestId) {
        if self.routes().remove(&id).is_some() {
            let _ = self.commands.send(EngineCommand::Cancel {
                id,
                status: RequestStatus::Cancelled,
            });
        }
    }

    /// Stops the engine and waits for its thread.
    pub fn shutdown(&self) {
        let _ = self.commands.send(EngineCommand::Shutdown);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}
