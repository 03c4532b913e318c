//! The real-time driver: sends requests on schedule (or as closed-loop clients
//! free up), collects engine events into records, enforces timeouts and
//! honours cancellation.
//!
//! One collector task owns all records. Open-loop sends come from a separate
//! sender that waits until each request's absolute instant `t0 + arrival_s`,
//! announces the request to the collector and then submits it, both over FIFO
//! channels, so the collector always knows a request before its first event.
//!
//! The sender is an OS thread that sleeps until `spin_s` before each instant
//! and spins the rest (tokio's timer has millisecond granularity, and a
//! thread that mostly sleeps is woken promptly even on a busy machine), or,
//! with `spin_s = 0`, a tokio task on tokio's timer (what tests under the
//! paused clock use).
//!
//! Later turns of multi-turn conversations are not on the schedule: the
//! collector sends each one its `think_s` after the previous turn ended (and
//! no earlier than its `arrival_s`), on tokio's timer.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::io::IsTerminal;
use std::time::Duration;

use fuselab_core::{
    Error, RequestId, RequestRecord, RequestSpec, RequestStatus, StepRecord, TokenChunk, TurnLinks,
};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::Inbox;
use crate::{
    CancelToken, EngineCommand, EngineEvent, EngineHandle, EventSink, HarnessError, RunClock,
};

/// What to run and how to measure it.
#[derive(Clone, Debug, PartialEq)]
pub struct RealtimePlan {
    /// The requests. Open loop sends each at its `arrival_s`; closed loop sends
    /// them in order and ignores `arrival_s`.
    pub requests: Vec<RequestSpec>,
    /// `Some(n)`: closed loop with `n` clients, each sending its next request
    /// when its previous one ends. `None`: open loop on the absolute schedule.
    pub closed_loop_clients: Option<u32>,
    /// Requests scheduled (open loop) or sent (closed loop) before this many
    /// seconds are warm-up: run, but reported apart from the measured ones.
    pub warmup_s: f64,
    /// Length of the measurement window after the warm-up; requests due after
    /// `warmup_s + window_s` are not sent. `None`: every request is sent.
    pub window_s: Option<f64>,
    /// Per-request timeout from its send, seconds; the request is recorded
    /// `timeout` and cancelled in the engine.
    pub timeout_s: Option<f64>,
    /// Show a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Open loop: send from a dedicated OS thread that sleeps until this many
    /// seconds before each instant and spins the rest. 0 sends from a tokio
    /// task on tokio's millisecond timer instead; it must be 0 under tokio's
    /// paused test clock.
    pub spin_s: f64,
}

impl RealtimePlan {
    /// Open loop over `requests` with no warm-up, window or timeout, a
    /// 0.5 ms spin (thread sender) and a progress bar.
    pub fn open_loop(requests: Vec<RequestSpec>) -> Self {
        Self {
            requests,
            closed_loop_clients: None,
            warmup_s: 0.0,
            window_s: None,
            timeout_s: None,
            progress: true,
            spin_s: 0.0005,
        }
    }

    /// Closed loop of `clients` clients over `requests`.
    pub fn closed_loop(requests: Vec<RequestSpec>, clients: u32) -> Self {
        Self {
            closed_loop_clients: Some(clients),
            ..Self::open_loop(requests)
        }
    }

    /// Checks the plan; errors name the field and how to fix it.
    pub fn validate(&self) -> Result<(), Error> {
        if self.closed_loop_clients == Some(0) {
            return Err(Error::invalid(
                "clients",
                "0 closed-loop clients",
                "give at least 1 client",
            ));
        }
        if self.closed_loop_clients.is_some() && TurnLinks::of(&self.requests).any() {
            return Err(Error::invalid(
                "clients",
                "a multi-turn workload under closed-loop clients",
                "each turn already waits for the previous one; run conversations open loop",
            ));
        }
        let non_neg = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(
                    field,
                    format!("{v} is not a finite number ≥ 0"),
                    "give seconds ≥ 0",
                ))
            }
        };
        non_neg("warmup", self.warmup_s)?;
        non_neg("spin", self.spin_s)?;
        if let Some(w) = self.window_s {
            non_neg("window", w)?;
        }
        if let Some(t) = self.timeout_s
            && !(t.is_finite() && t > 0.0)
        {
            return Err(Error::invalid(
                "timeout",
                format!("{t} is not > 0"),
                "give a timeout in seconds > 0, or none",
            ));
        }
        if self.closed_loop_clients.is_none()
            && let Some((i, r)) = self
                .requests
                .iter()
                .enumerate()
                .find(|(_, r)| !(r.arrival_s.is_finite() && r.arrival_s >= 0.0))
        {
            return Err(Error::invalid(
                format!("requests[{i}].arrival_s"),
                format!("{} is not a finite time ≥ 0", r.arrival_s),
                "arrival times are seconds from the run's start",
            ));
        }
        Ok(())
    }

    fn window_end(&self) -> Option<f64> {
        self.window_s.map(|w| self.warmup_s + w)
    }
}

/// What a real-time run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HarnessRun {
    /// The engine's name.
    pub engine: String,
    /// Records of the measured requests (sent inside the window), by id.
    pub records: Vec<RequestRecord>,
    /// Records of the warm-up requests, by id.
    pub warmup: Vec<RequestRecord>,
    /// Forward steps of in-process engines, in order.
    pub steps: Vec<StepRecord>,
    /// Requests never sent (after the window, or after cancellation).
    pub unsent: u64,
    /// Whether the run was cancelled.
    pub cancelled: bool,
    /// The engine's fatal error, when it died.
    pub engine_error: Option<String>,
    /// Start of the measurement window, seconds from the run's start.
    pub window_start_s: f64,
    /// End of the measurement window: the last measured request's end (or the
    /// cancellation time).
    pub window_end_s: f64,
    /// Run duration, seconds.
    pub elapsed_s: f64,
}

impl HarnessRun {
    /// `t_sent − t_scheduled` of every measured request.
    pub fn schedule_lags(&self) -> Vec<f64> {
        self.records
            .iter()
            .map(|r| r.t_sent - r.t_scheduled)
            .collect()
    }

    /// Completed measured requests per second over the window.
    pub fn request_rate(&self) -> f64 {
        let ok = self
            .records
            .iter()
            .filter(|r| r.status == RequestStatus::Ok)
            .count();
        let span = self.window_end_s - self.window_start_s;
        if span > 0.0 { ok as f64 / span } else { 0.0 }
    }
}

struct Slot {
    rec: RequestRecord,
    done: bool,
    warm: bool,
}

struct Collector {
    clock: RunClock,
    plan_timeout: Option<f64>,
    warmup_s: f64,
    window_end: Option<f64>,
    closed: bool,
    slots: HashMap<RequestId, Slot>,
    outstanding: usize,
    deadlines: BinaryHeap<Reverse<(Duration, RequestId)>>,
    queue: std::collections::VecDeque<RequestSpec>,
    commands: mpsc::UnboundedSender<EngineCommand>,
    steps: Vec<StepRecord>,
    sent: u64,
    bar: ProgressBar,
    /// Next turns by the id of the turn they wait for.
    follow_ups: HashMap<RequestId, RequestSpec>,
    /// Released next turns: (send instant from the origin, id), and their specs.
    due: BTreeSet<(Duration, RequestId)>,
    due_specs: HashMap<RequestId, (f64, RequestSpec)>,
}

impl Collector {
    fn register(&mut self, spec: RequestSpec, t_scheduled: f64, t_sent: f64) {
        tracing::debug!(request = spec.id, t_scheduled, t_sent, "request sent");
        let key = if self.closed { t_sent } else { t_scheduled };
        let warm = key < self.warmup_s;
        if let Some(t) = self.plan_timeout {
            let at = Duration::from_secs_f64(t_sent + t);
            self.deadlines.push(Reverse((at, spec.id)));
        }
        self.slots.insert(
            spec.id,
            Slot {
                rec: RequestRecord {
                    id: spec.id,
                    prompt_len: spec.prompt_len,
                    output_len: spec.output_len,
                    t_scheduled,
                    t_sent,
                    tokens: Vec::new(),
                    t_done: None,
                    status: RequestStatus::Cancelled,
                    error: None,
                    server: None,
                },
                done: false,
                warm,
            },
        );
        self.outstanding += 1;
        self.sent += 1;
    }

    /// Closed loop: a client is free at `now`; it sends the next request if any.
    fn client_free(&mut self) {
        if !self.closed {
            return;
        }
        let now = self.clock.now_s();
        if self.window_end.is_some_and(|end| now >= end) {
            return;
        }
        if let Some(spec) = self.queue.pop_front() {
            let t_sent = self.clock.now_s();
            self.register(spec.clone(), now, t_sent);
            let _ = self.commands.send(EngineCommand::Submit { spec, t_sent });
        }
    }

    fn finish(&mut self, id: RequestId, status: RequestStatus, error: Option<String>, t: f64) {
        let Some(slot) = self.slots.get_mut(&id) else {
            tracing::warn!(id, "event for a request the harness never sent");
            return;
        };
        if slot.done {
            return;
        }
        slot.done = true;
        slot.rec.status = status;
        slot.rec.error = error;
        slot.rec.t_done = Some(t);
        self.outstanding -= 1;
        self.bar.inc(1);
        self.client_free();
        if let Some(spec) = self.follow_ups.remove(&id) {
            let think = spec.conversation.as_ref().map_or(0.0, |c| c.think_s);
            let at = (t + think).max(spec.arrival_s).max(0.0);
            if self.window_end.is_none_or(|end| at < end) {
                self.due.insert((Duration::from_secs_f64(at), spec.id));
                self.due_specs.insert(spec.id, (at, spec));
            }
        }
    }

    /// Sends the released next turns whose time has come.
    fn send_due(&mut self) {
        let now = self.clock.origin().elapsed();
        while let Some(&(at, id)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            if let Some((t_scheduled, spec)) = self.due_specs.remove(&id) {
                let t_sent = self.clock.now_s();
                self.register(spec.clone(), t_scheduled, t_sent);
                let _ = self.commands.send(EngineCommand::Submit { spec, t_sent });
            }
        }
    }

    fn on_event(&mut self, ev: EngineEvent) -> Option<String> {
        match ev {
            EngineEvent::Tokens(t) => {
                if let Some(slot) = self.slots.get_mut(&t.request)
                    && !slot.done
                {
                    slot.rec.tokens.push(TokenChunk {
                        index: t.index,
                        t: t.t,
                        n_tokens: t.n_tokens,
                    });
                }
            }
            EngineEvent::Finished {
                id,
                status,
                error,
                t,
            } => self.finish(id, status, error, t),
            EngineEvent::Server { id, info } => {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.rec.server = Some(info);
                }
            }
            EngineEvent::Step(s) => self.steps.push(s),
            EngineEvent::Fatal(msg) => return Some(msg),
        }
        None
    }

    fn expire(&mut self) {
        let now = self.clock.origin().elapsed();
        while let Some(Reverse((at, id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self.slots.get(&id).is_some_and(|s| !s.done) {
                let _ = self.commands.send(EngineCommand::Cancel {
                    id,
                    status: RequestStatus::Timeout,
                });
                let t = self.clock.now_s();
                self.finish(
                    id,
                    RequestStatus::Timeout,
                    Some("per-request timeout".into()),
                    t,
                );
            }
        }
    }
}

/// Tells the collector, then the engine; false once either is gone.
fn announce(
    inbox: &mpsc::UnboundedSender<Inbox>,
    commands: &mpsc::UnboundedSender<EngineCommand>,
    spec: RequestSpec,
    t_sent: f64,
) -> bool {
    let t_scheduled = spec.arrival_s;
    inbox
        .send(Inbox::Sent {
            spec: spec.clone(),
            t_scheduled,
            t_sent,
        })
        .is_ok()
        && commands
            .send(EngineCommand::Submit { spec, t_sent })
            .is_ok()
}

/// The tokio-timer sender (millisecond granularity; works under the paused clock).
async fn task_sender(
    order: Vec<RequestSpec>,
    clock: RunClock,
    inbox: mpsc::UnboundedSender<Inbox>,
    commands: mpsc::UnboundedSender<EngineCommand>,
    stop: CancelToken,
) {
    for spec in order {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(clock.at(spec.arrival_s)) => {}
        }
        if !announce(&inbox, &commands, spec, clock.now_s()) {
            break;
        }
    }
    let _ = inbox.send(Inbox::SenderDone);
}

/// The OS-thread sender: sleeps until shortly before each instant, spins the
/// rest, and checks for cancellation at least every 5 ms. How early it wakes
/// adapts to how late the machine's sleeps have been waking it (twice the
/// recent worst lateness, at least 50 µs and at most `spin`), so that at a
/// thousand sends a second it spins a tenth of the time rather than half.
fn thread_sender(
    order: Vec<RequestSpec>,
    clock: RunClock,
    spin: Duration,
    inbox: mpsc::UnboundedSender<Inbox>,
    commands: mpsc::UnboundedSender<EngineCommand>,
    stop: CancelToken,
) {
    let origin = clock.origin().into_std();
    let floor = Duration::from_micros(50).min(spin);
    let mut late = spin / 2;
    'requests: for spec in order {
        let deadline = origin + Duration::from_secs_f64(spec.arrival_s.max(0.0));
        loop {
            if stop.is_cancelled() {
                break 'requests;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            let left = deadline - now;
            let early = (late * 2).clamp(floor, spin);
            if left > early {
                let nap = (left - early).min(Duration::from_millis(5));
                std::thread::sleep(nap);
                let overslept = now.elapsed().saturating_sub(nap);
                late = overslept.max(late.mul_f64(0.99));
            } else {
                std::hint::spin_loop();
            }
        }
        if !announce(&inbox, &commands, spec, clock.now_s()) {
            break;
        }
    }
    let _ = inbox.send(Inbox::SenderDone);
}

enum Sender {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

fn progress_bar(show: bool, len: u64) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {pos}/{len} requests [{elapsed_precise}] {per_sec} {wide_bar}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Runs `plan` against `engine` in real time until every sent request ended,
/// or `cancel` fired (then unfinished requests are recorded `cancelled` and
/// what was measured is returned).
///
/// # Errors
/// An invalid plan, or an engine that fails to start. An engine that dies
/// mid-run is not an error: its requests fail and [`HarnessRun::engine_error`]
/// says why.
pub async fn run_realtime(
    plan: RealtimePlan,
    mut engine: Box<dyn EngineHandle>,
    cancel: CancelToken,
) -> Result<HarnessRun, HarnessError> {
    plan.validate()?;
    engine.prepare().await?;
    let name = engine.name().to_string();
    let (inbox_tx, mut inbox) = mpsc::unbounded_channel();
    let clock = RunClock::start();
    let channels = engine.start(clock, EventSink::new(inbox_tx.clone()))?;
    let total = plan.requests.len() as u64;
    let window_end = plan.window_end();
    let closed = plan.closed_loop_clients.is_some();
    let stop = CancelToken::new();

    let links = TurnLinks::of(&plan.requests);
    let mut follow_ups = HashMap::new();
    for (i, next) in links.next.iter().enumerate() {
        if let Some(j) = *next {
            follow_ups.insert(plan.requests[i].id, plan.requests[j].clone());
        }
    }
    let expected = if closed {
        total
    } else {
        plan.requests
            .iter()
            .filter(|r| window_end.is_none_or(|e| r.arrival_s < e))
            .count() as u64
    };
    let mut c = Collector {
        clock,
        plan_timeout: plan.timeout_s,
        warmup_s: plan.warmup_s,
        window_end,
        closed,
        slots: HashMap::with_capacity(plan.requests.len()),
        outstanding: 0,
        deadlines: BinaryHeap::new(),
        queue: Default::default(),
        commands: channels.commands.clone(),
        steps: Vec::new(),
        sent: 0,
        bar: progress_bar(plan.progress, expected),
        follow_ups,
        due: BTreeSet::new(),
        due_specs: HashMap::new(),
    };

    let mut sender_done = true;
    let sender = if let Some(clients) = plan.closed_loop_clients {
        c.queue = plan.requests.into_iter().collect();
        for _ in 0..clients {
            c.client_free();
        }
        None
    } else {
        let mut order: Vec<RequestSpec> = plan
            .requests
            .into_iter()
            .zip(&links.waits)
            .filter(|(r, waits)| !**waits && window_end.is_none_or(|e| r.arrival_s < e))
            .map(|(r, _)| r)
            .collect();
        order.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        sender_done = false;
        let (inbox, commands, stop) = (inbox_tx.clone(), channels.commands.clone(), stop.clone());
        if plan.spin_s > 0.0 {
            let spin = Duration::from_secs_f64(plan.spin_s);
            let t = std::thread::Builder::new()
                .name("fuselab-sender".into())
                .spawn(move || thread_sender(order, clock, spin, inbox, commands, stop))
                .map_err(HarnessError::Runtime)?;
            Some(Sender::Thread(t))
        } else {
            Some(Sender::Task(tokio::spawn(task_sender(
                order, clock, inbox, commands, stop,
            ))))
        }
    };
    drop(inbox_tx);

    let mut cancelled = false;
    let mut engine_error = None;
    loop {
        if sender_done && c.outstanding == 0 && c.due.is_empty() {
            break;
        }
        let next_deadline = c
            .deadlines
            .peek()
            .map(|Reverse((at, _))| clock.origin() + *at);
        let next_due = c.due.first().map(|(at, _)| clock.origin() + *at);
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                cancelled = true;
                break;
            }
            msg = inbox.recv() => match msg {
                Some(Inbox::Sent { spec, t_scheduled, t_sent }) => c.register(spec, t_scheduled, t_sent),
                Some(Inbox::SenderDone) => sender_done = true,
                Some(Inbox::Engine(ev)) => {
                    if let Some(msg) = c.on_event(ev) {
                        engine_error = Some(msg);
                        break;
                    }
                }
                None => {
                    engine_error = Some("the engine stopped without finishing its requests".into());
                    break;
                }
            },
            () = tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now)), if next_deadline.is_some() => c.expire(),
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => c.send_due(),
        }
    }
    stop.cancel();
    match sender {
        Some(Sender::Task(t)) => {
            let _ = t.await;
        }
        Some(Sender::Thread(t)) => {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        None => {}
    }
    // Requests the sender announced but the loop did not see yet.
    while let Ok(msg) = inbox.try_recv() {
        if let Inbox::Sent {
            spec,
            t_scheduled,
            t_sent,
        } = msg
        {
            c.register(spec, t_scheduled, t_sent);
        }
    }
    let now = clock.now_s();
    let (status, error) = match &engine_error {
        Some(e) => (RequestStatus::Failed, Some(e.clone())),
        None => (RequestStatus::Cancelled, Some("run cancelled".to_string())),
    };
    for slot in c.slots.values_mut().filter(|s| !s.done) {
        slot.done = true;
        slot.rec.status = status;
        slot.rec.error = error.clone();
        slot.rec.t_done = Some(now);
        let _ = c.commands.send(EngineCommand::Cancel {
            id: slot.rec.id,
            status: RequestStatus::Cancelled,
        });
    }
    let _ = c.commands.send(EngineCommand::Shutdown);
    drop(c.commands);
    drop(channels.commands);
    if let Some(t) = channels.thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    c.bar.finish_and_clear();
    // Steps the engine ran after the loop stopped (it has shut down by now).
    while let Ok(msg) = inbox.try_recv() {
        if let Inbox::Engine(EngineEvent::Step(s)) = msg {
            c.steps.push(s);
        }
    }

    let mut records = Vec::new();
    let mut warmup = Vec::new();
    for s in c.slots.into_values() {
        if s.warm {
            warmup.push(s.rec);
        } else {
            records.push(s.rec);
        }
    }
    records.sort_by_key(|r| r.id);
    warmup.sort_by_key(|r| r.id);
    let window_end_s = if cancelled {
        now
    } else {
        records
            .iter()
            .filter_map(|r| r.t_done)
            .fold(plan.warmup_s, f64::max)
    };
    tracing::debug!(engine = %name, sent = c.sent, cancelled, "real-time run finished");
    Ok(HarnessRun {
        engine: name,
        records,
        warmup,
        steps: c.steps,
        unsent: total - c.sent,
        cancelled,
        engine_error,
        window_start_s: plan.warmup_s,
        window_end_s,
        elapsed_s: now,
    })
}

/// [`run_realtime`] on a new multi-threaded runtime (2 workers). With
/// `ctrl_c`, Ctrl-C cancels the run: the records measured so far are returned
/// (unfinished requests `cancelled`) and the caller writes them.
///
/// # Errors
/// As [`run_realtime`], plus a runtime that cannot be built.
pub fn run_realtime_blocking(
    plan: RealtimePlan,
    engine: Box<dyn EngineHandle>,
    ctrl_c: bool,
) -> Result<HarnessRun, HarnessError> {
    // One worker per core (or FUSELAB_HARNESS_WORKERS): an HTTP engine's
    // streams are all served here (a thousand streams at 100 chunks/s each keep
    // several cores busy), while an in-process engine runs on its own thread
    // and leaves the workers parked.
    let workers = std::env::var("FUSELAB_HARNESS_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().max(2)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        // Latency over throughput: look at I/O readiness and at tasks woken from
        // outside the runtime (the sender thread, the null engine's clock) every
        // 8 polls rather than tokio's default 61 (device run 6: TTFT p99 at ~1000
        // streams +0.84 to +1.11 ms, against +0.88 to +3.22 ms with the default).
        .event_interval(8)
        .global_queue_interval(8)
        .enable_all()
        .build()
        .map_err(HarnessError::Runtime)?;
    rt.block_on(async move {
        let cancel = CancelToken::new();
        if ctrl_c {
            let c = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    tracing::warn!("Ctrl-C: stopping the run and keeping what was measured");
                    c.cancel();
                }
            });
        }
        run_realtime(plan, engine, cancel).await
    })
}
