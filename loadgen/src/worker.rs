//! worker: one plain thread driving a share of the sessions over non-blocking sockets (mio).
//!
//! Owns: its sessions, their sockets and buffers, an op generator, a seeded PRNG and a
//! `Recorder`. Shares only the progress figures (a mutex taken a few times a second) and the
//! abort flag. A worker goes through four phases: connect (every session handshakes, at most
//! `CONNECTING_MAX` at a time), load (warmup + measured window, closed or open loop), drain (no
//! new requests; wait a bounded time for replies) and close (closeSession, bounded wait).
//! Every wait is bounded by a phase deadline and by the run's time limit.

use crate::plan::{duration_ns, Clock, Mode, Plan};
use crate::rng::Rng;
use crate::schedule::OpenLoopSchedule;
use crate::session::{InFlight, Phase, Session};
use crate::stats::{cause, Live, Recorder};
use crate::sync_client::FRAME_BYTES_MAX;
use crate::timer::Timer;
use crate::workload::{Effects, Notification, OpGenerator, OpKind, Reply};
use keel::proto::jute::Reader;
use keel::proto::records::{encode, split_frame};
use keel::proto::{op, xid as special_xid};
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections in the TCP connect or handshake step at once, per worker.
const CONNECTING_MAX: usize = 512;
/// Requests issued per loop turn before the worker reads replies again.
const ISSUE_BATCH_MAX: usize = 4096;
/// Bytes read from a socket per call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A partial frame plus one read chunk: more than this is a protocol error.
const INBOX_BYTES_MAX: usize = FRAME_BYTES_MAX as usize + READ_CHUNK_BYTES;
const EVENTS_MAX: usize = 1024;
/// The poll token of the worker's timer; session tokens are their slot numbers.
const TIMER_TOKEN: Token = Token(usize::MAX);
/// Waits shorter than this use the timerfd; epoll's own timeout rounds up to whole ms.
const PRECISE_WAIT_NS_MAX: u64 = 1_000_000;
const HOUSEKEEPING_NS: u64 = 10_000_000;
const PROGRESS_FLUSH_NS: u64 = 200_000_000;
const POLL_WAIT_NS_MAX: u64 = 10_000_000;
/// How often a worker waiting for the start signal looks for it.
const START_POLL_NS: u64 = 1_000_000;
/// How long the drain and close phases wait at most.
const DRAIN_NS_MAX: u64 = 5_000_000_000;
const CLOSE_NS_MAX: u64 = 1_000_000_000;
const BACKOFF_NS_BASE: u64 = 50_000_000;
const BACKOFF_DOUBLINGS_MAX: u32 = 4;

/// What the driver tells a worker once every worker has connected.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    Go { start_ns: u64 },
    Abort,
}

/// A worker's sessions after the connect phase.
#[derive(Debug, Clone, Copy)]
pub struct ConnectReport {
    pub worker: usize,
    pub ready: usize,
    pub total: usize,
}

pub struct WorkerSetup {
    pub index: usize,
    pub plan: Arc<Plan>,
    pub clock: Clock,
    pub generator: Box<dyn OpGenerator>,
    pub live: Arc<Mutex<Live>>,
    pub abort: Arc<AtomicBool>,
    /// The run's time limit on the shared clock.
    pub deadline_ns: u64,
    pub reports: SyncSender<ConnectReport>,
    pub start: Receiver<Start>,
}

#[derive(Debug, Clone)]
pub struct WorkerResult {
    pub recorder: Recorder,
    pub sessions_ready_at_start: usize,
    pub reconnects: u64,
    /// Open loop: ops that were due by the end but never sent (the server could not keep up).
    pub backlog_at_end: u64,
    pub hit_time_limit: bool,
}

struct Worker {
    index: usize,
    plan: Arc<Plan>,
    clock: Clock,
    poll: Poll,
    events: Events,
    timer: Timer,
    sessions: Vec<Session>,
    ready: std::collections::VecDeque<usize>,
    dirty: Vec<usize>,
    generator: Box<dyn OpGenerator>,
    /// What the generator asked for in its last callback; drained after each one.
    effects: Effects,
    rng: Rng,
    recorder: Recorder,
    live: Arc<Mutex<Live>>,
    abort: Arc<AtomicBool>,
    deadline_ns: u64,
    scratch: Vec<u8>,
    connecting_count: usize,
    ready_count: usize,
    closing_count: usize,
    inflight_count: usize,
    reconnects: u64,
    stopping: bool,
    hit_time_limit: bool,
    next_housekeeping_ns: u64,
    next_progress_ns: u64,
}

/// Runs one worker to the end; every phase is bounded in time.
///
/// # Errors
/// The OS refused an epoll instance.
pub fn run(setup: WorkerSetup) -> std::io::Result<WorkerResult> {
    let reports = setup.reports.clone();
    let start = setup.start;
    let (index, total) = (setup.index, setup.plan.sessions_of(setup.index));
    let worker = Worker::new(
        setup.index,
        setup.plan,
        setup.clock,
        setup.generator,
        (setup.live, setup.abort),
        setup.deadline_ns,
    );
    let mut worker = match worker {
        Ok(worker) => worker,
        Err(error) => {
            // Report anyway, so the driver does not wait for this worker until the limit.
            let _ = reports.try_send(ConnectReport {
                worker: index,
                ready: 0,
                total,
            });
            return Err(error);
        }
    };
    worker.connect_phase();
    let report = ConnectReport {
        worker: worker.index,
        ready: worker.ready_count,
        total: worker.sessions.len(),
    };
    let _ = reports.try_send(report);
    let mut backlog_at_end = 0;
    if let Start::Go { start_ns } = worker.wait_for_start(&start) {
        backlog_at_end = worker.load_phase(start_ns);
    }
    worker.drain_phase();
    worker.close_phase();
    Ok(WorkerResult {
        sessions_ready_at_start: report.ready,
        reconnects: worker.reconnects,
        backlog_at_end,
        hit_time_limit: worker.hit_time_limit,
        recorder: worker.recorder,
    })
}

impl Worker {
    fn new(
        index: usize,
        plan: Arc<Plan>,
        clock: Clock,
        generator: Box<dyn OpGenerator>,
        (live, abort): (Arc<Mutex<Live>>, Arc<AtomicBool>),
        deadline_ns: u64,
    ) -> std::io::Result<Worker> {
        plan.assert_valid();
        let count = plan.sessions_of(index);
        assert!(count < TIMER_TOKEN.0);
        let poll = Poll::new()?;
        let timer = Timer::new(poll.registry(), TIMER_TOKEN)?;
        let sessions = (0..count)
            .map(|slot| {
                let global = index + slot * plan.threads;
                Session::new(global % plan.servers.len(), plan.outstanding_max)
            })
            .collect();
        Ok(Worker {
            index,
            poll,
            timer,
            events: Events::with_capacity(EVENTS_MAX),
            sessions,
            ready: std::collections::VecDeque::with_capacity(count),
            dirty: Vec::with_capacity(count),
            generator,
            effects: Effects::default(),
            rng: Rng::new(plan.seed, index as u64),
            recorder: Recorder::new(u64::MAX, u64::MAX),
            live,
            abort,
            deadline_ns,
            scratch: vec![0; READ_CHUNK_BYTES],
            connecting_count: 0,
            ready_count: 0,
            closing_count: 0,
            inflight_count: 0,
            reconnects: 0,
            stopping: false,
            hit_time_limit: false,
            next_housekeeping_ns: 0,
            next_progress_ns: 0,
            clock,
            plan,
        })
    }

    /// True once the run must end now: the driver aborted or the time limit passed.
    fn must_stop(&mut self, now_ns: u64) -> bool {
        if now_ns >= self.deadline_ns {
            self.hit_time_limit = true;
            self.abort.store(true, Ordering::Relaxed);
        }
        self.abort.load(Ordering::Relaxed)
    }

    /// Every session tries to connect once; ends when each is ready or has failed, or after
    /// twice the connect timeout.
    fn connect_phase(&mut self) {
        let now_ns = self.clock.now_ns();
        let end_ns = now_ns + 2 * duration_ns(self.plan.connect_timeout);
        loop {
            let now_ns = self.clock.now_ns();
            if self.must_stop(now_ns) || now_ns >= end_ns {
                break;
            }
            if now_ns >= self.next_housekeeping_ns {
                self.housekeeping(now_ns);
                let settled = self
                    .sessions
                    .iter()
                    .all(|session| session.phase == Phase::Ready || session.failures_in_row > 0);
                if settled {
                    break;
                }
            }
            self.turn(self.next_housekeeping_ns.saturating_sub(now_ns));
        }
        self.recorder.flush_interval(&self.live);
    }

    /// Keeps the sessions alive (replies, pings, reconnects) until the driver says go, which
    /// it does once every worker has reported; the time limit bounds the wait.
    fn wait_for_start(&mut self, start: &Receiver<Start>) -> Start {
        loop {
            match start.try_recv() {
                Ok(signal) => return signal,
                Err(TryRecvError::Disconnected) => return Start::Abort,
                Err(TryRecvError::Empty) => {}
            }
            let now_ns = self.clock.now_ns();
            if self.must_stop(now_ns) {
                return Start::Abort;
            }
            if now_ns >= self.next_housekeeping_ns {
                self.housekeeping(now_ns);
            }
            self.turn(
                self.next_housekeeping_ns
                    .saturating_sub(now_ns)
                    .min(START_POLL_NS),
            );
        }
    }

    /// Warmup and measurement: issues requests until `start + warmup + duration`. Returns the
    /// open-loop backlog at the end.
    fn load_phase(&mut self, start_ns: u64) -> u64 {
        let window_start_ns = start_ns + duration_ns(self.plan.warmup);
        let issue_end_ns = window_start_ns + duration_ns(self.plan.duration);
        self.recorder.set_window(window_start_ns, issue_end_ns);
        let mut schedule = match self.plan.mode {
            Mode::ClosedLoop => None,
            Mode::OpenLoop { rate_ops_per_s } => Some(OpenLoopSchedule::new(
                start_ns,
                rate_ops_per_s,
                self.index as u64,
                self.plan.threads as u64,
            )),
        };
        let last_ns = issue_end_ns - 1;
        loop {
            let now_ns = self.clock.now_ns();
            if self.must_stop(now_ns) {
                break;
            }
            if now_ns >= issue_end_ns {
                // Ops meant for the last moments of the window still go out, late.
                if let Some(schedule) = schedule.as_mut() {
                    self.issue_open_loop(schedule, last_ns);
                }
                break;
            }
            if now_ns >= self.next_housekeeping_ns {
                self.housekeeping(now_ns);
            }
            let mut wait_ns = self.next_housekeeping_ns.saturating_sub(now_ns);
            if now_ns < start_ns {
                wait_ns = wait_ns.min(start_ns - now_ns);
            } else if let Some(schedule) = schedule.as_mut() {
                self.issue_open_loop(schedule, now_ns);
                if !self.ready.is_empty() {
                    wait_ns = wait_ns.min(schedule.next_intended_ns().saturating_sub(now_ns));
                }
            } else {
                self.issue_closed_loop(now_ns);
            }
            self.turn(wait_ns.min(issue_end_ns - now_ns));
        }
        schedule.map_or(0, |schedule| {
            schedule.backlog(last_ns.min(self.clock.now_ns()))
        })
    }

    /// No new requests; waits (bounded) for the outstanding ones, then fails what is left.
    fn drain_phase(&mut self) {
        self.stopping = true;
        let now_ns = self.clock.now_ns();
        let end_ns = now_ns + duration_ns(self.plan.request_timeout).min(DRAIN_NS_MAX);
        loop {
            let now_ns = self.clock.now_ns();
            if self.inflight_count == 0 || self.must_stop(now_ns) || now_ns >= end_ns {
                break;
            }
            if now_ns >= self.next_housekeeping_ns {
                self.housekeeping(now_ns);
            }
            self.turn(self.next_housekeeping_ns.saturating_sub(now_ns));
        }
        for session in &mut self.sessions {
            for inflight in session.inflight.drain(..) {
                self.recorder.record_op_failure(
                    inflight.kind,
                    inflight.intended_ns,
                    cause::UNFINISHED,
                    || format!("{} had no reply when the run ended", inflight.kind.name()),
                );
            }
        }
        self.inflight_count = 0;
    }

    /// Closes every ready session (closeSession, then a bounded wait) and drops the rest.
    fn close_phase(&mut self) {
        let now_ns = self.clock.now_ns();
        for slot in 0..self.sessions.len() {
            if self.sessions[slot].phase == Phase::Ready {
                let session = &mut self.sessions[slot];
                session.close_xid = session.take_xid();
                encode::request(
                    &mut session.outbox,
                    session.close_xid,
                    op::CLOSE_SESSION,
                    |_| {},
                );
                self.mark_dirty(slot);
                self.set_phase(
                    slot,
                    Phase::Closing {
                        deadline_ns: now_ns + CLOSE_NS_MAX,
                    },
                );
            } else {
                self.drop_connection(slot);
                self.set_phase(slot, Phase::Closed);
            }
        }
        let end_ns = now_ns + CLOSE_NS_MAX;
        loop {
            let now_ns = self.clock.now_ns();
            if self.closing_count == 0 || now_ns >= end_ns {
                break;
            }
            if now_ns >= self.next_housekeeping_ns {
                self.housekeeping(now_ns);
            }
            self.turn(self.next_housekeeping_ns.saturating_sub(now_ns));
        }
        for slot in 0..self.sessions.len() {
            self.drop_connection(slot);
            self.set_phase(slot, Phase::Closed);
        }
        self.recorder.flush_interval(&self.live);
    }
}

/// Issuing requests.
impl Worker {
    /// Closed loop: every ready session is filled up to its outstanding limit.
    fn issue_closed_loop(&mut self, now_ns: u64) {
        let mut issued = 0;
        while issued < ISSUE_BATCH_MAX {
            let Some(slot) = self.pop_ready() else {
                break;
            };
            while issued < ISSUE_BATCH_MAX && self.sessions[slot].has_capacity() {
                if !self.send_op(slot, now_ns, now_ns) {
                    break;
                }
                issued += 1;
            }
            self.requeue(slot);
        }
    }

    /// Open loop: each due op goes to the next session with room; with none free it stays
    /// due, and the wait counts in its latency.
    fn issue_open_loop(&mut self, schedule: &mut OpenLoopSchedule, due_by_ns: u64) {
        let now_ns = self.clock.now_ns();
        let mut issued = 0;
        while issued < ISSUE_BATCH_MAX && schedule.next_intended_ns() <= due_by_ns {
            let Some(slot) = self.pop_ready() else {
                break;
            };
            // Ops due together share a session up to its limit: one write, one server read.
            while issued < ISSUE_BATCH_MAX
                && self.sessions[slot].has_capacity()
                && schedule.next_intended_ns() <= due_by_ns
            {
                if !self.send_op(slot, schedule.next_intended_ns(), now_ns) {
                    break;
                }
                schedule.take_due(due_by_ns).expect("the next op is due");
                issued += 1;
            }
            self.requeue(slot);
        }
    }

    fn pop_ready(&mut self) -> Option<usize> {
        while let Some(slot) = self.ready.pop_front() {
            self.sessions[slot].queued = false;
            if self.sessions[slot].has_capacity() {
                return Some(slot);
            }
        }
        None
    }

    /// Puts a session at the back of the ready queue if it can take another request.
    fn requeue(&mut self, slot: usize) {
        let session = &mut self.sessions[slot];
        if session.has_capacity() && !session.queued && !session.parked && !self.stopping {
            session.queued = true;
            self.ready.push_back(slot);
            debug_assert!(self.ready.len() <= self.sessions.len());
        }
    }

    /// False when the generator had nothing to send: the session is parked until a wake.
    fn send_op(&mut self, slot: usize, intended_ns: u64, now_ns: u64) -> bool {
        let session = &mut self.sessions[slot];
        assert!(session.has_capacity());
        let xid = session.take_xid();
        let outbox_bytes = session.outbox.len();
        let next = self
            .generator
            .next_op(slot, xid, now_ns, &mut self.rng, &mut session.outbox);
        let Some(kind) = next else {
            assert_eq!(
                session.outbox.len(),
                outbox_bytes,
                "nothing to send, nothing encoded"
            );
            session.parked = true;
            return false;
        };
        session.inflight.push_back(InFlight {
            xid,
            kind,
            intended_ns,
            sent_ns: now_ns,
        });
        session.last_send_ns = now_ns;
        self.recorder.record_send(intended_ns, now_ns);
        self.inflight_count += 1;
        self.mark_dirty(slot);
        true
    }

    /// Carries out what the generator asked for in its last callback.
    fn apply_effects(&mut self, now_ns: u64) {
        if self.effects.is_empty() {
            return;
        }
        let mut effects = std::mem::take(&mut self.effects);
        for (kind, start_ns, end_ns) in effects.latencies.drain(..) {
            self.recorder.record_reply(kind, start_ns, end_ns, 0);
        }
        for slot in effects.wake.drain(..) {
            self.sessions[slot].parked = false;
            self.requeue(slot);
        }
        for slot in effects.renew.drain(..) {
            self.renew(slot, now_ns);
        }
        self.effects = effects;
    }

    /// Sends closeSession on a ready session; once it is answered the slot opens a new one.
    fn renew(&mut self, slot: usize, now_ns: u64) {
        let session = &mut self.sessions[slot];
        if session.phase != Phase::Ready || self.stopping {
            return;
        }
        session.renewing = true;
        session.close_xid = session.take_xid();
        session.close_sent_ns = now_ns;
        encode::request(
            &mut session.outbox,
            session.close_xid,
            op::CLOSE_SESSION,
            |_| {},
        );
        self.mark_dirty(slot);
        let deadline_ns = now_ns + duration_ns(self.plan.request_timeout);
        self.set_phase(slot, Phase::Closing { deadline_ns });
    }

    fn mark_dirty(&mut self, slot: usize) {
        let session = &mut self.sessions[slot];
        if !session.dirty {
            session.dirty = true;
            self.dirty.push(slot);
        }
    }
}

/// Socket IO: one turn is flush, poll, then handle the events.
impl Worker {
    /// Flushes, then waits up to `wait_ns` for events; sub-millisecond waits end on the timer.
    fn turn(&mut self, wait_ns: u64) {
        self.flush_dirty();
        let wait_ns = wait_ns.min(POLL_WAIT_NS_MAX);
        if wait_ns > 0 && wait_ns < PRECISE_WAIT_NS_MAX {
            let now_ns = self.clock.now_ns();
            self.timer.wake_by(now_ns, now_ns + wait_ns);
        }
        let wait = Duration::from_nanos(wait_ns);
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        if let Err(error) = self.poll.poll(&mut events, Some(wait)) {
            assert_eq!(
                error.kind(),
                ErrorKind::Interrupted,
                "epoll_wait failed: {error}"
            );
        }
        let now_ns = self.clock.now_ns();
        for event in events.iter() {
            if event.token() == TIMER_TOKEN {
                self.timer.fired();
                continue;
            }
            let slot = event.token().0;
            let failed = event.is_error() || event.is_read_closed() || event.is_write_closed();
            self.on_event(
                slot,
                event.is_readable(),
                event.is_writable(),
                failed,
                now_ns,
            );
        }
        self.events = events;
    }

    fn on_event(&mut self, slot: usize, readable: bool, writable: bool, failed: bool, now_ns: u64) {
        match self.sessions[slot].phase {
            Phase::Connecting { .. } => self.finish_connect(slot, now_ns),
            Phase::Handshaking { .. } | Phase::Ready | Phase::Closing { .. } => {
                if writable {
                    self.flush(slot, now_ns);
                }
                if readable || failed {
                    self.read_available(slot, failed, now_ns);
                }
            }
            Phase::Idle { .. } | Phase::Closed => {}
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        let now_ns = self.clock.now_ns();
        for &slot in &dirty {
            self.sessions[slot].dirty = false;
            self.flush(slot, now_ns);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Writes what the socket takes; the rest waits for a writable event.
    fn flush(&mut self, slot: usize, now_ns: u64) {
        let session = &mut self.sessions[slot];
        let Some(stream) = session.stream.as_mut() else {
            return;
        };
        while session.outbox_sent_bytes < session.outbox.len() {
            match stream.write(&session.outbox[session.outbox_sent_bytes..]) {
                Ok(0) => {
                    return self.lose(slot, cause::CONNECTION_CLOSED, "write returned 0", now_ns)
                }
                Ok(count) => session.outbox_sent_bytes += count,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    return self.lose(slot, cause::CONNECTION_CLOSED, &error.to_string(), now_ns)
                }
            }
        }
        session.outbox.clear();
        session.outbox_sent_bytes = 0;
    }

    /// Reads what has arrived, handling each whole frame. A short read means the socket was
    /// empty at that moment, and data arriving later raises a new edge, so the extra read
    /// that would only return EAGAIN is skipped, unless the peer has closed its side: its
    /// FIN raises no further event, so then reads go on until EOF or EAGAIN.
    fn read_available(&mut self, slot: usize, closed_by_peer: bool, now_ns: u64) {
        loop {
            let session = &mut self.sessions[slot];
            let Some(stream) = session.stream.as_mut() else {
                return;
            };
            match stream.read(&mut self.scratch) {
                Ok(0) => {
                    let detail = "the server closed the connection";
                    return self.lose(slot, cause::CONNECTION_CLOSED, detail, now_ns);
                }
                Ok(count) => {
                    session.inbox.extend_from_slice(&self.scratch[..count]);
                    if session.inbox.len() > INBOX_BYTES_MAX {
                        let detail = "reply larger than the frame limit";
                        return self.lose(slot, cause::PROTOCOL_ERROR, detail, now_ns);
                    }
                    self.process_inbox(slot, now_ns);
                    if count < READ_CHUNK_BYTES && !closed_by_peer {
                        return;
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    return self.lose(slot, cause::CONNECTION_CLOSED, &error.to_string(), now_ns)
                }
            }
        }
    }

    fn process_inbox(&mut self, slot: usize, now_ns: u64) {
        let mut inbox = std::mem::take(&mut self.sessions[slot].inbox);
        let mut consumed = 0;
        let result = loop {
            match split_frame(&inbox[consumed..], FRAME_BYTES_MAX) {
                Ok(None) => break Ok(()),
                Ok(Some(range)) => {
                    let frame = &inbox[consumed + range.start..consumed + range.end];
                    consumed += range.end;
                    if let Err(detail) = self.on_frame(slot, frame, now_ns) {
                        break Err(detail);
                    }
                    if self.sessions[slot].stream.is_none() {
                        break Ok(());
                    }
                }
                Err(error) => break Err(format!("bad frame: {error}")),
            }
        };
        inbox.drain(..consumed);
        if self.sessions[slot].stream.is_some() {
            self.sessions[slot].inbox = inbox;
        }
        if let Err(detail) = result {
            self.lose(slot, cause::PROTOCOL_ERROR, &detail, now_ns);
        }
    }

    fn on_frame(&mut self, slot: usize, frame: &[u8], now_ns: u64) -> Result<(), String> {
        match self.sessions[slot].phase {
            Phase::Handshaking { .. } => self.on_handshake(slot, frame, now_ns),
            Phase::Ready | Phase::Closing { .. } => self.on_reply(slot, frame, now_ns),
            _ => Ok(()),
        }
    }
}

/// Session lifecycle: connect, handshake, replies, loss, timers.
impl Worker {
    fn connect(&mut self, slot: usize, now_ns: u64) {
        let server = self.plan.servers[self.sessions[slot].server_index];
        let stream = mio::net::TcpStream::connect(server).and_then(|mut stream| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.poll
                .registry()
                .register(&mut stream, Token(slot), interest)?;
            Ok(stream)
        });
        match stream {
            Ok(stream) => {
                self.sessions[slot].stream = Some(stream);
                self.sessions[slot].connect_started_ns = now_ns;
                let deadline_ns = now_ns + duration_ns(self.plan.connect_timeout);
                self.set_phase(slot, Phase::Connecting { deadline_ns });
            }
            Err(error) => self.lose(slot, cause::CONNECT_FAILED, &error.to_string(), now_ns),
        }
    }

    /// The socket became writable or failed: the TCP connect is done either way.
    fn finish_connect(&mut self, slot: usize, now_ns: u64) {
        let Some(stream) = self.sessions[slot].stream.as_ref() else {
            return;
        };
        let outcome = match stream.take_error() {
            Ok(Some(error)) | Err(error) => Err(error),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => Ok(()),
                Err(error) if error.kind() == ErrorKind::NotConnected => return,
                Err(error) => Err(error),
            },
        };
        if let Err(error) = outcome.and_then(|()| stream.set_nodelay(true)) {
            return self.lose(slot, cause::CONNECT_FAILED, &error.to_string(), now_ns);
        }
        self.sessions[slot].encode_handshake(self.plan.session_timeout_ms);
        self.mark_dirty(slot);
        let deadline_ns = now_ns + duration_ns(self.plan.connect_timeout);
        self.set_phase(slot, Phase::Handshaking { deadline_ns });
    }

    fn on_handshake(&mut self, slot: usize, frame: &[u8], now_ns: u64) -> Result<(), String> {
        let session = &mut self.sessions[slot];
        let id = session.session_id;
        let accepted = session
            .accept_handshake(frame)
            .map_err(|error| format!("bad handshake reply: {error}"))?;
        if !accepted {
            self.recorder
                .record_session_failure(cause::SESSION_EXPIRED, || {
                    format!("the server expired session 0x{id:x}; starting a new one")
                });
            self.drop_connection(slot);
            self.schedule_retry(slot, now_ns);
            return Ok(());
        }
        let new_session = session.session_id != id;
        let renewed = std::mem::take(&mut session.renewing);
        self.reconnects += u64::from(session.ever_ready && !renewed);
        session.ever_ready = true;
        session.failures_in_row = 0;
        session.last_send_ns = now_ns;
        session.parked = false;
        if renewed {
            let started_ns = session.connect_started_ns;
            self.recorder
                .record_reply(OpKind::SessionOpen, started_ns, now_ns, 0);
        }
        self.set_phase(slot, Phase::Ready);
        self.generator.on_session_ready(slot, new_session, now_ns);
        self.requeue(slot);
        Ok(())
    }

    fn on_reply(&mut self, slot: usize, frame: &[u8], now_ns: u64) -> Result<(), String> {
        let mut r = Reader::new(frame);
        let header =
            (|| Ok::<_, keel::proto::ProtoError>((r.read_i32()?, r.read_i64()?, r.read_i32()?)))();
        let (xid, zxid, err) = header.map_err(|error| format!("bad reply header: {error}"))?;
        let session = &mut self.sessions[slot];
        session.last_zxid = session.last_zxid.max(zxid);
        if xid == special_xid::NOTIFICATION {
            let event = (|| {
                let event_type = r.read_i32()?;
                let _state = r.read_i32()?;
                Ok::<_, keel::proto::ProtoError>((event_type, r.read_string()?))
            })();
            let (event_type, path) = event.map_err(|error| format!("bad notification: {error}"))?;
            let event = Notification {
                event_type,
                path,
                now_ns,
            };
            self.generator
                .on_notification(slot, event, &mut self.effects);
            self.apply_effects(now_ns);
            return Ok(());
        }
        if xid == special_xid::PING {
            session.ping_sent_ns = None;
            return Ok(());
        }
        if let Phase::Closing { .. } = session.phase {
            if xid == session.close_xid {
                self.closed(slot, now_ns);
            }
            return Ok(());
        }
        let Some(oldest) = session.inflight.pop_front() else {
            return Err(format!("reply xid {xid} with no request outstanding"));
        };
        if oldest.xid != xid {
            return Err(format!(
                "reply xid {xid}, expected {} (out of order)",
                oldest.xid
            ));
        }
        self.inflight_count -= 1;
        let counted_err = if self.generator.error_is_expected(oldest.kind, err) {
            0
        } else {
            err
        };
        self.recorder
            .record_reply(oldest.kind, oldest.intended_ns, now_ns, counted_err);
        let reply = Reply {
            kind: oldest.kind,
            err,
            body: frame.get(16..).unwrap_or(&[]),
            sent_ns: oldest.sent_ns,
            now_ns,
        };
        self.generator.on_reply(slot, reply, &mut self.effects);
        self.apply_effects(now_ns);
        self.requeue(slot);
        Ok(())
    }

    /// closeSession was answered: the end of the session, or a renewal's first half.
    fn closed(&mut self, slot: usize, now_ns: u64) {
        self.drop_connection(slot);
        let session = &mut self.sessions[slot];
        if session.renewing && !self.stopping {
            let sent_ns = session.close_sent_ns;
            session.forget_session();
            self.recorder
                .record_reply(OpKind::SessionClose, sent_ns, now_ns, 0);
            self.set_phase(
                slot,
                Phase::Idle {
                    retry_at_ns: now_ns,
                },
            );
            if self.connecting_count < CONNECTING_MAX {
                self.connect(slot, now_ns);
            }
            return;
        }
        self.set_phase(slot, Phase::Closed);
    }

    /// Closes the socket, fails the outstanding ops, counts the failure and schedules a
    /// reconnect (to the next server) unless the run is ending.
    fn lose(&mut self, slot: usize, failure: &str, detail: &str, now_ns: u64) {
        let phase = self.sessions[slot].phase;
        self.drop_connection(slot);
        let session = &mut self.sessions[slot];
        let lost = session.inflight.len();
        for inflight in session.inflight.drain(..) {
            self.recorder.record_op_failure(
                inflight.kind,
                inflight.intended_ns,
                cause::CONNECTION_LOSS,
                || {
                    format!(
                        "{} outstanding when the connection failed",
                        inflight.kind.name()
                    )
                },
            );
        }
        self.inflight_count -= lost;
        self.generator.on_connection_lost(slot);
        let renewing = std::mem::take(&mut session.renewing);
        if renewing {
            session.forget_session();
        }
        let renews = renewing && !self.stopping;
        if matches!(phase, Phase::Closing { .. } | Phase::Closed) && !renews {
            return self.set_phase(slot, Phase::Closed);
        }
        let server = self.plan.servers[session.server_index];
        self.recorder
            .record_session_failure(failure, || format!("{server}: {detail}"));
        self.schedule_retry(slot, now_ns);
    }

    /// After a failure: the next server in the list, after a backoff that doubles with each
    /// failure in a row (with jitter, so sessions do not retry in lockstep).
    fn schedule_retry(&mut self, slot: usize, now_ns: u64) {
        let session = &mut self.sessions[slot];
        session.failures_in_row += 1;
        session.server_index = (session.server_index + 1) % self.plan.servers.len();
        let doublings = (session.failures_in_row - 1).min(BACKOFF_DOUBLINGS_MAX);
        let backoff_ns = BACKOFF_NS_BASE << doublings;
        let retry_at_ns = now_ns + backoff_ns + self.rng.below(backoff_ns / 2);
        let next = if self.stopping {
            Phase::Closed
        } else {
            Phase::Idle { retry_at_ns }
        };
        self.set_phase(slot, next);
    }

    /// Deregisters and drops the socket and clears the buffers; phase and ops are untouched.
    fn drop_connection(&mut self, slot: usize) {
        let session = &mut self.sessions[slot];
        if let Some(mut stream) = session.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        session.outbox.clear();
        session.outbox_sent_bytes = 0;
        session.inbox.clear();
        session.ping_sent_ns = None;
    }

    /// Moves a session to `next`, keeping the phase counters in step.
    fn set_phase(&mut self, slot: usize, next: Phase) {
        let previous = std::mem::replace(&mut self.sessions[slot].phase, next);
        let connecting = |phase: &Phase| {
            usize::from(matches!(
                phase,
                Phase::Connecting { .. } | Phase::Handshaking { .. }
            ))
        };
        let ready = |phase: &Phase| usize::from(*phase == Phase::Ready);
        let closing = |phase: &Phase| usize::from(matches!(phase, Phase::Closing { .. }));
        self.connecting_count = self.connecting_count + connecting(&next) - connecting(&previous);
        self.ready_count = self.ready_count + ready(&next) - ready(&previous);
        self.closing_count = self.closing_count + closing(&next) - closing(&previous);
        let ready_delta = i64::from(next == Phase::Ready) - i64::from(previous == Phase::Ready);
        self.recorder.adjust_sessions_ready(ready_delta);
        assert!(
            self.ready_count + self.connecting_count + self.closing_count <= self.sessions.len()
        );
    }

    /// Timers, every `HOUSEKEEPING_NS`: reconnects, connect and request timeouts, pings, and
    /// the progress flush.
    fn housekeeping(&mut self, now_ns: u64) {
        self.next_housekeeping_ns = now_ns + HOUSEKEEPING_NS;
        for slot in 0..self.sessions.len() {
            match self.sessions[slot].phase {
                Phase::Idle { retry_at_ns } => {
                    let room = self.connecting_count < CONNECTING_MAX;
                    if !self.stopping && room && now_ns >= retry_at_ns {
                        self.connect(slot, now_ns);
                    }
                }
                Phase::Connecting { deadline_ns } | Phase::Handshaking { deadline_ns } => {
                    if now_ns >= deadline_ns {
                        let detail = format!("no session within {:?}", self.plan.connect_timeout);
                        self.lose(slot, cause::CONNECT_FAILED, &detail, now_ns);
                    }
                }
                Phase::Ready => {
                    if self.sessions[slot].parked {
                        self.sessions[slot].parked = false;
                        self.requeue(slot);
                    }
                    self.check_ready(slot, now_ns);
                }
                Phase::Closing { deadline_ns } => {
                    if now_ns >= deadline_ns && self.sessions[slot].renewing && !self.stopping {
                        let detail = format!(
                            "no reply to closeSession within {:?}",
                            self.plan.request_timeout
                        );
                        self.lose(slot, cause::REQUEST_TIMEOUT, &detail, now_ns);
                    } else if now_ns >= deadline_ns {
                        self.drop_connection(slot);
                        self.set_phase(slot, Phase::Closed);
                    }
                }
                Phase::Closed => {}
            }
        }
        if now_ns >= self.next_progress_ns {
            self.next_progress_ns = now_ns + PROGRESS_FLUSH_NS;
            self.recorder.flush_interval(&self.live);
        }
    }

    /// A ready session: a request or ping unanswered for too long drops the connection; an
    /// idle one pings at a third of its session timeout so it does not expire.
    fn check_ready(&mut self, slot: usize, now_ns: u64) {
        let timeout_ns = duration_ns(self.plan.request_timeout);
        let session = &mut self.sessions[slot];
        if let Some(oldest) = session.inflight.front() {
            if now_ns.saturating_sub(oldest.sent_ns) >= timeout_ns {
                let kind = oldest.kind.name();
                let detail = format!("no reply to {kind} within {:?}", self.plan.request_timeout);
                return self.lose(slot, cause::REQUEST_TIMEOUT, &detail, now_ns);
            }
            return;
        }
        if let Some(ping_sent_ns) = session.ping_sent_ns {
            if now_ns.saturating_sub(ping_sent_ns) >= timeout_ns {
                let detail = format!("no reply to a ping within {:?}", self.plan.request_timeout);
                return self.lose(slot, cause::REQUEST_TIMEOUT, &detail, now_ns);
            }
            return;
        }
        let ping_every_ns =
            u64::try_from(session.negotiated_timeout_ms).unwrap_or(0) * 1_000_000 / 3;
        if now_ns.saturating_sub(session.last_send_ns) >= ping_every_ns {
            encode::request(&mut session.outbox, special_xid::PING, op::PING, |_| {});
            session.ping_sent_ns = Some(now_ns);
            session.last_send_ns = now_ns;
            self.mark_dirty(slot);
        }
    }
}
