//! A timerfd registered with the worker's poll, so open-loop sends wake up on time: epoll's own
//! timeout has millisecond granularity, which would add up to 1 ms of the generator's own delay
//! to every open-loop latency at rates above 1000 ops/s per worker.
//!
//! mio registers edge-triggered, and the kernel signals every expiry, so an expiry need not be
//! read back; re-arming resets the count. A pending expiry at or before the wanted time is left
//! alone, so a busy worker does not pay a syscall per turn for its timer.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct Timer {
    fd: OwnedFd,
    /// When the armed expiry fires, on the worker's clock; None once it has fired.
    armed_at_ns: Option<u64>,
}

impl Timer {
    /// # Errors
    /// The OS refused a timerfd.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new fd we own.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer {
            fd,
            armed_at_ns: None,
        })
    }

    /// Makes sure an expiry comes at or before `at_ns` (worker clock; `now_ns` is the time now).
    pub fn wake_by(&mut self, now_ns: u64, at_ns: u64) {
        if let Some(armed_at_ns) = self.armed_at_ns {
            if armed_at_ns > now_ns && armed_at_ns <= at_ns {
                return;
            }
        }
        // At least 1 ns: a zero it_value would disarm the timer instead.
        let delay_ns = at_ns.saturating_sub(now_ns).max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (delay_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (delay_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: the fd is ours and `spec` outlives the call; the old value is not wanted.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "timerfd_settime: {}", io::Error::last_os_error());
        self.armed_at_ns = Some(now_ns + delay_ns);
    }

    /// The timer's event arrived: nothing is armed any more.
    pub fn fired(&mut self) {
        self.armed_at_ns = None;
    }

    pub fn is_armed(&self) -> bool {
        self.armed_at_ns.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::Timer;
    use mio::{Events, Poll, Token};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    fn wait_for_timer(poll: &mut Poll, events: &mut Events) -> Duration {
        let start = Instant::now();
        poll.poll(events, Some(Duration::from_millis(50))).unwrap();
        assert!(
            events.iter().any(|event| event.token() == Token(7)),
            "the timer fired"
        );
        start.elapsed()
    }

    #[test]
    fn wakes_a_poll_well_before_its_millisecond_timeout_every_time() {
        // Armed for 200 µs, twice without reading the fd, the timer ends each poll that would
        // otherwise wait 50 ms: the poll reports the timer's token (a timed-out poll reports
        // nothing). How soon it returns is the scheduler's business: no upper bound here
        // (20 ms failed under load).
        let mut poll = Poll::new().unwrap();
        let mut timer = Timer::new(poll.registry(), Token(7)).unwrap();
        let mut events = Events::with_capacity(4);
        for _ in 0..2 {
            timer.wake_by(0, 200_000);
            let waited = wait_for_timer(&mut poll, &mut events);
            assert!(waited >= Duration::from_micros(200), "{waited:?}");
            timer.fired();
            assert!(!timer.is_armed());
        }
    }

    #[test]
    fn an_earlier_pending_expiry_is_kept() {
        // Asking for a later wake-up than the one pending leaves the earlier one in place.
        let mut poll = Poll::new().unwrap();
        let mut timer = Timer::new(poll.registry(), Token(7)).unwrap();
        timer.wake_by(1_000, 1_000 + 300_000);
        timer.wake_by(2_000, 2_000 + 40_000_000);
        assert_eq!(timer.armed_at_ns, Some(301_000));
        // The fd itself holds the earlier expiry, not the 40 ms one.
        let mut left = std::mem::MaybeUninit::<libc::itimerspec>::zeroed();
        // SAFETY: timerfd_gettime writes one itimerspec into `left`, a valid pointer.
        let rc = unsafe { libc::timerfd_gettime(timer.fd.as_raw_fd(), left.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: zeroed, then written by the successful call.
        let left = unsafe { left.assume_init() }.it_value;
        let left_ns = left.tv_sec as u64 * 1_000_000_000 + left.tv_nsec as u64;
        assert!(left_ns <= 300_000, "{left_ns} ns to go");
        let mut events = Events::with_capacity(4);
        wait_for_timer(&mut poll, &mut events);
    }
}
