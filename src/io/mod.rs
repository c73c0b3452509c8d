//! io: the boundary between Keel and its runtime (glommio 0.9 on io_uring).
//!
//! Owns: executor construction with this machine's workarounds (memlock-sized io_memory, no
//! spin on cores that will sync), the cross-core channel types, TCP and timers as the shards
//! and the server see them. Only `shard`, `server` and `io` may use what is here; `proto`,
//! `tree`, `session` and `replica` never do.

mod signal;

pub use glommio::channels::shared_channel::{
    new_bounded as cross_core_channel, ConnectedReceiver, ConnectedSender, SharedReceiver,
    SharedSender,
};
pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::timer::sleep;
pub use glommio::{spawn_local, yield_if_needed, ExecutorJoinHandle};
pub use signal::Signal;

use glommio::{LocalExecutorBuilder, Placement};
use std::time::Duration;

/// Where an executor runs: pinned to a CPU, or wherever the kernel puts it (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    Cpu(usize),
    Unpinned,
}

/// Registered io_uring buffer memory per executor. glommio registers it with each of its three
/// rings, and without CAP_IPC_LOCK a uid may lock only 8 MiB in all (platform.md §2.2).
const IO_MEMORY_BYTES: usize = 1 << 20;

/// Spawns one executor thread running `future_factory`. With `spin_before_park` above zero,
/// an executor out of work polls that long before it parks: a completion arriving meanwhile
/// (a blocking-pool fdatasync) is picked up without the ~50 µs wake-up of a halted vCPU
/// (platform.md §3.3), at the cost of that CPU time.
///
/// # Errors
/// The executor could not be created (thread spawn, io_uring setup, memlock).
pub fn spawn_executor<F, Fut, T>(
    name: &str,
    pin: Pin,
    spin_before_park: Duration,
    future_factory: F,
) -> std::io::Result<ExecutorJoinHandle<T>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    let placement = match pin {
        Pin::Cpu(cpu) => Placement::Fixed(cpu),
        Pin::Unpinned => Placement::Unbound,
    };
    LocalExecutorBuilder::new(placement)
        .name(name)
        .spin_before_park(spin_before_park)
        .io_memory(IO_MEMORY_BYTES)
        .preempt_timer(Duration::from_millis(100))
        .spawn(future_factory)
        .map_err(|error| std::io::Error::other(error.to_string()))
}

/// Runs `work` on the current executor's blocking thread pool (for syscalls io_uring cannot
/// overlap for us, like fdatasync on this disk) and awaits its result; the executor keeps
/// running its other tasks meanwhile.
pub fn spawn_blocking<F, R>(work: F) -> impl std::future::Future<Output = R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(work)
}

/// Runs `work` to completion on a new thread that may run on any CPU of the process, and
/// blocks the caller until it ends. A thread started from a pinned executor (or from its
/// blocking pool) inherits that executor's one CPU: long CPU work there (building or
/// loading a snapshot of a million znodes) would queue behind the executor on its CPU while
/// another idles. Runs `work` on the caller's thread if no thread can be started.
pub fn run_unpinned<R: Send>(name: &str, work: impl FnOnce() -> R + Send) -> R {
    let work = std::sync::Mutex::new(Some(work));
    let take = || work.lock().ok().and_then(|mut slot| slot.take());
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn_scoped(scope, || {
                allow_every_process_cpu();
                take().map(|work| work())
            });
        let done = match spawned {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(error) => {
                tracing::warn!(%error, name, "no thread for unpinned work; running it here");
                None
            }
        };
        match done {
            Some(result) => result,
            None => take()
                .map(|work| work())
                .unwrap_or_else(|| unreachable!("work ran once")),
        }
    })
}

/// Widens the calling thread's CPU affinity to the main thread's (the process's own, which
/// executors never narrow). Failure leaves the thread where it is: harmless.
fn allow_every_process_cpu() {
    // SAFETY: cpu_set_t is a plain bit array, so all-zero bytes are a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let set_bytes = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a live, writable cpu_set_t of `set_bytes` bytes; getpid() names the
    // main thread, and 0 the calling thread.
    unsafe {
        if libc::sched_getaffinity(libc::getpid(), set_bytes, &mut set) == 0 {
            libc::sched_setaffinity(0, set_bytes, &set);
        }
    }
}

/// Raises RLIMIT_MEMLOCK's soft limit to its hard limit, so io_uring can register buffers
/// where the hard limit allows (platform.md §2.2). Failure is harmless: glommio falls back.
pub fn raise_memlock_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
    }
}
