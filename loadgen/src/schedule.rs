//! Open-loop pacing: every request has an intended send time fixed in advance, whatever the
//! server does, and its latency is measured from that time (wrk2's correction for coordinated
//! omission). A stalled server therefore delays the requests that were due during the stall, and
//! each of them is charged the wait, instead of the generator quietly sending fewer.
//!
//! The global schedule sends op j at `start + j / rate`. Worker w of W owns ops w, w+W, w+2W, …,
//! so the workers together keep the exact global spacing. Due ops are a counter, not a queue:
//! a backlog costs no memory however far behind the server falls.

/// One worker's lane of the global open-loop schedule.
#[derive(Debug, Clone)]
pub struct OpenLoopSchedule {
    start_ns: u64,
    period_ns: f64,
    lane_index: u64,
    lane_count: u64,
    /// The next op of this lane that has not been sent (a count of this lane's ops).
    next_index: u64,
}

impl OpenLoopSchedule {
    /// # Panics
    /// A rate that is not positive and finite, or a lane outside `0..lane_count`.
    pub fn new(start_ns: u64, rate_ops_per_s: f64, lane_index: u64, lane_count: u64) -> Self {
        assert!(rate_ops_per_s.is_finite() && rate_ops_per_s > 0.0);
        assert!(lane_count > 0);
        assert!(lane_index < lane_count);
        OpenLoopSchedule {
            start_ns,
            period_ns: 1e9 / rate_ops_per_s,
            lane_index,
            lane_count,
            next_index: 0,
        }
    }

    /// When this lane's op `index` is meant to be sent.
    pub fn intended_ns(&self, index: u64) -> u64 {
        let global_index = index * self.lane_count + self.lane_index;
        self.start_ns + (global_index as f64 * self.period_ns) as u64
    }

    /// The intended time of the next unsent op.
    pub fn next_intended_ns(&self) -> u64 {
        self.intended_ns(self.next_index)
    }

    /// The next op's intended time if it is due at `now_ns`; the caller must then send it.
    pub fn take_due(&mut self, now_ns: u64) -> Option<u64> {
        let intended_ns = self.next_intended_ns();
        if intended_ns > now_ns {
            return None;
        }
        self.next_index += 1;
        Some(intended_ns)
    }

    /// Ops due by `now_ns` but not yet sent: the generator's backlog.
    pub fn backlog(&self, now_ns: u64) -> u64 {
        if now_ns < self.next_intended_ns() {
            return 0;
        }
        let global_due = ((now_ns - self.start_ns) as f64 / self.period_ns) as u64 + 1;
        let lane_due = global_due
            .saturating_sub(self.lane_index)
            .div_ceil(self.lane_count);
        lane_due.saturating_sub(self.next_index)
    }

    /// Ops of this lane sent so far.
    pub fn sent(&self) -> u64 {
        self.next_index
    }
}

#[cfg(test)]
mod tests {
    use super::OpenLoopSchedule;

    #[test]
    fn lanes_interleave_into_the_exact_global_spacing() {
        // Four lanes at 1000 ops/s together send one op every millisecond, in order.
        let lanes: Vec<OpenLoopSchedule> = (0..4)
            .map(|lane| OpenLoopSchedule::new(5_000, 1000.0, lane, 4))
            .collect();
        let mut all: Vec<u64> = lanes
            .iter()
            .flat_map(|lane| (0..25).map(move |index| lane.intended_ns(index)))
            .collect();
        all.sort_unstable();
        for (j, intended) in all.iter().enumerate() {
            assert_eq!(*intended, 5_000 + j as u64 * 1_000_000);
        }
    }

    #[test]
    fn due_ops_are_taken_once_and_in_order() {
        // At 1000 ops/s, 10.5 ms after start ops 0..=10 are due; taking them empties the backlog.
        let mut schedule = OpenLoopSchedule::new(0, 1000.0, 0, 1);
        let now_ns = 10_500_000;
        assert_eq!(schedule.backlog(now_ns), 11);
        let taken: Vec<u64> = std::iter::from_fn(|| schedule.take_due(now_ns)).collect();
        assert_eq!(taken.len(), 11);
        assert_eq!(taken[10], 10_000_000);
        assert_eq!(schedule.backlog(now_ns), 0);
        assert_eq!(schedule.next_intended_ns(), 11_000_000);
        assert_eq!(schedule.sent(), 11);
    }

    #[test]
    fn a_lane_counts_only_its_own_backlog() {
        // Lane 1 of 2 at 1000 ops/s owns the odd milliseconds: by 4.5 ms, ops at 1 and 3 ms.
        let schedule = OpenLoopSchedule::new(0, 1000.0, 1, 2);
        assert_eq!(schedule.backlog(4_500_000), 2);
        assert_eq!(schedule.backlog(500_000), 0);
    }

    /// Simulates one connection that answers in 100 µs, except that it stalls from 100 ms to
    /// 300 ms; ops go out at 1000 ops/s with one outstanding. Returns (latency from intended
    /// time, latency from actual send) for every op sent in the first 500 ms.
    fn stalled_server_latencies() -> Vec<(u64, u64)> {
        let service_ns = 100_000;
        let (stall_start_ns, stall_end_ns) = (100_000_000, 300_000_000);
        let mut schedule = OpenLoopSchedule::new(0, 1000.0, 0, 1);
        let mut now_ns = 0;
        let mut latencies = Vec::new();
        while now_ns < 500_000_000 {
            let Some(intended_ns) = schedule.take_due(now_ns) else {
                now_ns = schedule.next_intended_ns();
                continue;
            };
            let sent_ns = now_ns;
            let mut done_ns = sent_ns + service_ns;
            if done_ns > stall_start_ns && sent_ns < stall_end_ns {
                done_ns = done_ns.max(stall_end_ns);
            }
            latencies.push((done_ns - intended_ns, done_ns - sent_ns));
            now_ns = done_ns;
        }
        latencies
    }

    #[test]
    fn a_stall_is_charged_to_every_op_it_delayed() {
        // Measured from intended times, the 200 ops due during a 200 ms stall, and the few that
        // queue behind them while the backlog drains, all show the wait; measured from actual
        // sends (coordinated omission) only the one op caught in the stall looks slow.
        let latencies = stalled_server_latencies();
        assert_eq!(
            latencies.len(),
            500,
            "the backlog is sent once the stall ends"
        );
        let slow_intended = latencies.iter().filter(|(i, _)| *i > 10_000_000).count();
        let slow_sent = latencies.iter().filter(|(_, s)| *s > 10_000_000).count();
        assert!((205..=215).contains(&slow_intended), "{slow_intended}");
        assert_eq!(slow_sent, 1);
        let worst_ns = latencies.iter().map(|(i, _)| *i).max().unwrap();
        assert!(worst_ns >= 199_000_000, "{worst_ns}");
    }
}
