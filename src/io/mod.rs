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
