//! The in-process engine on its own OS thread, with requests and events over channels.
//!
//! The thread owns the engine: it blocks for a command when idle, otherwise
//! drains pending commands and runs one step at a time, stamping everything
//! with the run clock. The engine is built (weights, KV cache, warm-up) in
//! [`EngineHandle::prepare`], before the run's clock starts, so that no request
//! of the schedule waits for it. Its events are the engine's own (one per sampled token,
//! stamped at the step's end) plus a [`fuselab_core::StepRecord`] per step.

use fuselab_core::{RequestId, RequestSpec, RequestStatus};
use fuselab_engine::{Backend, EngineError, FinishedRequest, NativeEngine, StepReport};
use tokio::sync::mpsc::{self, error::TryRecvError};

use crate::{
    EngineChannels, EngineCommand, EngineEvent, EngineHandle, EventSink, HarnessError, RunClock,
};

/// The stepping interface of an in-process engine, object-safe so that the
/// harness does not depend on the backend type.
pub trait StepEngine {
    /// Hands a request to the engine at `now`.
    fn submit(&mut self, spec: &RequestSpec, now: f64);
    /// Drops a request.
    fn cancel(&mut self, id: RequestId, status: RequestStatus, now: f64)
    -> Option<FinishedRequest>;
    /// Whether a step would do anything.
    fn has_work(&self) -> bool;
    /// Runs one step starting at `now`.
    ///
    /// # Errors
    /// The engine's errors (stall, KV invariant).
    fn step(&mut self, now: f64) -> Result<StepReport, EngineError>;
}

impl<B: Backend> StepEngine for NativeEngine<B> {
    fn submit(&mut self, spec: &RequestSpec, now: f64) {
        NativeEngine::submit(self, spec, now);
    }

    fn cancel(
        &mut self,
        id: RequestId,
        status: RequestStatus,
        now: f64,
    ) -> Option<FinishedRequest> {
        NativeEngine::cancel(self, id, status, now)
    }

    fn has_work(&self) -> bool {
        NativeEngine::has_work(self)
    }

    fn step(&mut self, now: f64) -> Result<StepReport, EngineError> {
        NativeEngine::step(self, now)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Factory = Box<dyn FnOnce() -> Result<Box<dyn StepEngine>, BoxError> + Send>;

/// Runs an in-process engine on a dedicated OS thread.
///
/// The engine is built on that thread by `factory`, so backends that must stay
/// on one thread (device contexts) work too; the thread then waits for
/// [`EngineHandle::start`] to hand it the run's clock.
///
/// ```
/// use fuselab_engine::{Backend, NativeEngine, PolicyConfig, PolicyKind};
/// use fuselab_harness::NativeEngineHandle;
///
/// fn handle<B: Backend + Send + 'static>(backend: B) -> NativeEngineHandle {
///     NativeEngineHandle::new("cpu", move || {
///         Ok(NativeEngine::new(backend, PolicyConfig::new(PolicyKind::Chunked))?)
///     })
/// }
/// ```
pub struct NativeEngineHandle {
    name: String,
    factory: Option<Factory>,
    built: Option<BuiltEngine>,
}

/// What the engine thread waits for once its engine is built.
type Go = (mpsc::UnboundedReceiver<EngineCommand>, RunClock, EventSink);

/// An engine built on its thread, waiting for the run to start.
struct BuiltEngine {
    go: std::sync::mpsc::Sender<Go>,
    thread: std::thread::JoinHandle<()>,
}

/// Spawns the engine thread, builds the engine there and waits until it is ready.
fn build(name: &str, factory: Factory) -> Result<BuiltEngine, HarnessError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (go, go_rx) = std::sync::mpsc::channel::<Go>();
    let thread = std::thread::Builder::new()
        .name(format!("fuselab-engine-{name}"))
        .spawn(move || match factory() {
            Ok(engine) => {
                let _ = ready_tx.send(Ok(()));
                if let Ok((rx, clock, events)) = go_rx.recv() {
                    engine_loop(engine, rx, clock, &events);
                }
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
            }
        })
        .map_err(|e| HarnessError::EngineStart {
            engine: name.to_string(),
            message: format!("cannot spawn its thread: {e}"),
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(BuiltEngine { go, thread }),
        Ok(Err(message)) => Err(HarnessError::EngineStart {
            engine: name.to_string(),
            message,
        }),
        Err(_) => Err(HarnessError::EngineStart {
            engine: name.to_string(),
            message: "its thread died while building the engine".into(),
        }),
    }
}

impl std::fmt::Debug for NativeEngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeEngineHandle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NativeEngineHandle {
    /// An engine named `name`, built on its thread by `factory`.
    pub fn new<E, F>(name: impl Into<String>, factory: F) -> Self
    where
        E: StepEngine + 'static,
        F: FnOnce() -> Result<E, BoxError> + Send + 'static,
    {
        Self {
            name: name.into(),
            factory: Some(Box::new(move || {
                factory().map(|e| Box::new(e) as Box<dyn StepEngine>)
            })),
            built: None,
        }
    }
}

impl EngineHandle for NativeEngineHandle {
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare(&mut self) -> crate::Prepare<'_> {
        Box::pin(async move {
            if let Some(factory) = self.factory.take() {
                self.built = Some(build(&self.name, factory)?);
            }
            Ok(())
        })
    }

    fn start(
        mut self: Box<Self>,
        clock: RunClock,
        events: EventSink,
    ) -> Result<EngineChannels, HarnessError> {
        let built = match (self.built.take(), self.factory.take()) {
            (Some(b), _) => b,
            (None, Some(factory)) => build(&self.name, factory)?,
            (None, None) => {
                return Err(HarnessError::EngineStart {
                    engine: self.name.clone(),
                    message: "internal: the engine was already started".into(),
                });
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        built
            .go
            .send((rx, clock, events))
            .map_err(|_| HarnessError::EngineStart {
                engine: self.name.clone(),
                message: "its thread ended before the run started".into(),
            })?;
        Ok(EngineChannels {
            commands: tx,
            thread: Some(built.thread),
        })
    }
}

/// Applies a command; false means stop.
fn apply(engine: &mut dyn StepEngine, cmd: EngineCommand, clock: &RunClock) -> bool {
    match cmd {
        EngineCommand::Submit { spec, .. } => engine.submit(&spec, clock.now_s()),
        EngineCommand::Cancel { id, status } => {
            // The harness already recorded the outcome; the engine just frees the request.
            let _ = engine.cancel(id, status, clock.now_s());
        }
        EngineCommand::Shutdown => return false,
    }
    true
}

fn engine_loop(
    mut engine: Box<dyn StepEngine>,
    mut rx: mpsc::UnboundedReceiver<EngineCommand>,
    clock: RunClock,
    events: &EventSink,
) {
    loop {
        if !engine.has_work() {
            match rx.blocking_recv() {
                Some(cmd) => {
                    if !apply(engine.as_mut(), cmd, &clock) {
                        return;
                    }
                }
                None => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(cmd) => {
                    if !apply(engine.as_mut(), cmd, &clock) {
                        return;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if !engine.has_work() {
            continue;
        }
        match engine.step(clock.now_s()) {
            Ok(report) => {
                for ev in report.events {
                    events.send(EngineEvent::Tokens(ev));
                }
                // The step record goes before the step's finish events: the
                // harness stops collecting on the last finish.
                if let Some(rec) = report.record
                    && !events.send(EngineEvent::Step(rec))
                {
                    return;
                }
                for f in report.finished {
                    events.send(EngineEvent::Finished {
                        id: f.id,
                        status: f.status,
                        error: f.error,
                        t: f.t,
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "engine failed");
                events.send(EngineEvent::Fatal(e.to_string()));
                return;
            }
        }
    }
}
