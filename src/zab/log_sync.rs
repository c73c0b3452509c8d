//! log_sync: the thread that fdatasyncs the zab log while the driver's loop goes on.
//!
//! Owns: one thread and two bounded channels. A request names the file and the last zxid
//! written before it; the answer carries the zxid back with the outcome.
//! Must not: decide what is durable. `FileStore` waits for the answer in flight (and drops
//! it) before it cuts or replaces the log.
//! One request is in flight at a time (`FileStore` waits for the answer before the next), so
//! the channels never hold more than one message each.

use std::fs::File;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel;

use super::Zxid;

/// One fdatasync to run.
pub(super) struct SyncRequest {
    pub file: Arc<File>,
    pub upto: Zxid,
}

/// What a `SyncRequest` came to.
pub(super) struct SyncDone {
    pub upto: Zxid,
    pub result: std::io::Result<()>,
    pub took: Duration,
}

/// The sync thread. Dropping it lets the thread finish its current fdatasync and joins it.
pub(super) struct LogSyncer {
    requests: Option<channel::Sender<SyncRequest>>,
    done: channel::Receiver<SyncDone>,
    thread: Option<JoinHandle<()>>,
}

impl LogSyncer {
    /// Starts the thread; `notify` runs after every answer (it wakes the driver's loop).
    pub(super) fn start(name: String, notify: Box<dyn Fn() + Send>) -> std::io::Result<LogSyncer> {
        let (requests, request_rx) = channel::bounded::<SyncRequest>(1);
        let (done_tx, done) = channel::bounded::<SyncDone>(1);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            for request in request_rx {
                let started = Instant::now();
                let result = request.file.sync_data();
                let took = started.elapsed();
                drop(request.file);
                let answer = SyncDone {
                    upto: request.upto,
                    result,
                    took,
                };
                if done_tx.send(answer).is_err() {
                    return;
                }
                notify();
            }
        })?;
        Ok(LogSyncer {
            requests: Some(requests),
            done,
            thread: Some(thread),
        })
    }

    /// Hands over a request. False when the thread is gone (it cannot be: it only stops
    /// when this handle drops), which the caller treats as a failed sync.
    pub(super) fn request(&self, request: SyncRequest) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|r| r.send(request).is_ok())
    }

    /// The answer, if the thread has one.
    pub(super) fn try_done(&self) -> Option<SyncDone> {
        self.done.try_recv().ok()
    }

    /// Waits for the answer to the request in flight.
    pub(super) fn wait_done(&self) -> Option<SyncDone> {
        self.done.recv().ok()
    }
}

impl std::fmt::Debug for LogSyncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSyncer")
    }
}

impl Drop for LogSyncer {
    fn drop(&mut self) {
        self.requests = None;
        // Unblock a thread stuck sending its last answer.
        while self.done.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
