//! The harness-side engine abstraction: what the harness sends an engine and
//! what it hears back, over channels.
//!
//! An engine is started once per run with [`EngineHandle::start`], receiving
//! the run's clock and an [`EventSink`]; it returns the sender for
//! [`EngineCommand`]s. Engines stamp their events with the run clock, so the
//! times in the records are the engine's, not the harness's receive times.

use fuselab_core::{RequestId, RequestSpec, RequestStatus, ServerSide, StepRecord, TokenEvent};
use tokio::sync::mpsc;

use crate::HarnessError;

/// The run's clock: seconds since the run started.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    origin: tokio::time::Instant,
}

impl RunClock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }

    /// The instant the run started.
    pub fn origin(&self) -> tokio::time::Instant {
        self.origin
    }

    /// Seconds since the run started.
    pub fn now_s(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// The instant `s` seconds after the start (0 for negative `s`).
    pub fn at(&self, s: f64) -> tokio::time::Instant {
        self.origin + std::time::Duration::from_secs_f64(s.max(0.0))
    }
}

/// What the harness asks of an engine.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineCommand {
    /// Serve a request (sent at `t_sent`).
    Submit {
        /// The request.
        spec: RequestSpec,
        /// When the harness sent it, seconds from the run's start.
        t_sent: f64,
    },
    /// Stop serving a request (timeout or cancellation); no more events are
    /// expected for it.
    Cancel {
        /// The request.
        id: RequestId,
        /// Why: `Timeout` or `Cancelled`.
        status: RequestStatus,
    },
    /// Stop the engine.
    Shutdown,
}

/// What an engine reports.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineEvent {
    /// Output tokens became visible.
    Tokens(TokenEvent),
    /// A request ended.
    Finished {
        /// The request.
        id: RequestId,
        /// How it ended.
        status: RequestStatus,
        /// Why, when not `Ok`.
        error: Option<String>,
        /// When, seconds from the run's start.
        t: f64,
    },
    /// What a server reported about a request (engines behind HTTP), sent
    /// before its `Finished`.
    Server {
        /// The request.
        id: RequestId,
        /// The server's id and token counts.
        info: ServerSide,
    },
    /// An in-process engine ran a forward step.
    Step(StepRecord),
    /// The engine failed as a whole and stops; unfinished requests fail with this message.
    Fatal(String),
}

/// Where an engine sends its events; cheap to clone.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Inbox>,
}

/// The harness's inbox: engine events and its own bookkeeping, in one FIFO so
/// that a request's `Sent` always precedes its events.
#[derive(Debug)]
pub(crate) enum Inbox {
    Sent {
        spec: RequestSpec,
        t_scheduled: f64,
        t_sent: f64,
    },
    SenderDone,
    Engine(EngineEvent),
}

impl EventSink {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Inbox>) -> Self {
        Self { tx }
    }

    /// A sink whose events go to the returned receiver instead of a harness
    /// run: for driving an engine from elsewhere (`fuselab serve`).
    pub fn detached() -> (Self, EventReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, EventReceiver { rx })
    }

    /// Delivers an event; returns false once the harness has stopped listening.
    pub fn send(&self, ev: EngineEvent) -> bool {
        self.tx.send(Inbox::Engine(ev)).is_ok()
    }
}

/// The receiving end of [`EventSink::detached`].
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::UnboundedReceiver<Inbox>,
}

impl EventReceiver {
    /// The next event; `None` once every sink is dropped.
    pub async fn recv(&mut self) -> Option<EngineEvent> {
        loop {
            if let Inbox::Engine(ev) = self.rx.recv().await? {
                return Some(ev);
            }
        }
    }
}

/// What a started engine gives the harness.
#[derive(Debug)]
pub struct EngineChannels {
    /// Commands to the engine.
    pub commands: mpsc::UnboundedSender<EngineCommand>,
    /// The engine's OS thread, joined when the run ends.
    pub thread: Option<std::thread::JoinHandle<()>>,
}

/// The future of [`EngineHandle::prepare`].
pub type Prepare<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HarnessError>> + Send + 'a>>;

/// An engine the harness can drive: the in-process engine on its own thread,
/// the null engine, an HTTP client.
pub trait EngineHandle: Send {
    /// Short name: `cpu`, `null`, `http`, ….
    fn name(&self) -> &str;

    /// Set-up that must not count as run time, done before the run's clock
    /// starts (an HTTP client opening its connections). Nothing by default.
    ///
    /// # Errors
    /// [`HarnessError::EngineStart`] when the set-up fails.
    fn prepare(&mut self) -> Prepare<'_> {
        Box::pin(async { Ok(()) })
    }

    /// Starts the engine for one run. Called inside the tokio runtime.
    ///
    /// # Errors
    /// [`HarnessError::EngineStart`] when it cannot run.
    fn start(
        self: Box<Self>,
        clock: RunClock,
        events: EventSink,
    ) -> Result<EngineChannels, HarnessError>;
}
