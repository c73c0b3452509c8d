//! Four-letter words on the client port, in ZooKeeper 3.8's output formats.
//!
//! A command runs on the shard that accepted the connection. Server-wide figures come from
//! `ServerStats`; connection and watch listings are this shard's.

use crate::shard::Shard;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

/// The version string `srvr`, `stat`, `envi` and `mntr` report. Tools parse the leading
/// ZooKeeper version, so it leads.
pub const VERSION: &str = concat!("3.8.0-keel-", env!("CARGO_PKG_VERSION"), ", built on keel");

/// What ZooKeeper answers to most commands while it has no quorum.
const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests\n";

/// Every command Keel answers.
pub const COMMANDS: [&str; 15] = [
    "ruok", "srvr", "stat", "conf", "cons", "crst", "srst", "mntr", "wchs", "wchc", "wchp", "dump",
    "envi", "dirs", "isro",
];

/// Runs `command` (already known to be one of `COMMANDS`) and returns its text.
pub fn run(command: &str, shard: &Shard) -> String {
    if !shard.config.four_letter_word_allowed(command) {
        return format!("{command} is not executed because it is not in the whitelist.\n");
    }
    let needs_serving = !matches!(command, "ruok" | "conf" | "envi" | "dirs" | "isro");
    if needs_serving && shard.stats.not_serving.load(Relaxed) {
        return NOT_SERVING.to_owned();
    }
    match command {
        "ruok" => "imok".to_owned(),
        "srvr" => stats_text(shard, false),
        "stat" => stats_text(shard, true),
        "conf" => conf(shard),
        "cons" => cons(shard),
        "crst" => {
            reset_connection_stats(shard);
            "Connection stats reset.\n".to_owned()
        }
        "srst" => {
            shard.stats.reset();
            shard.reset_server_stats_if_asked();
            "Server stats reset.\n".to_owned()
        }
        "mntr" => mntr(shard),
        "wchs" => wchs(shard),
        "wchc" => wchc(shard),
        "wchp" => wchp(shard),
        "dump" => dump(shard),
        "envi" => envi(),
        "dirs" => dirs(shard),
        "isro" => "rw".to_owned(),
        _ => String::new(),
    }
}

fn stats_text(shard: &Shard, with_clients: bool) -> String {
    let stats = &shard.stats;
    let mut out = format!("Zookeeper version: {VERSION}\n");
    if with_clients {
        out.push_str("Clients:\n");
        for report in shard.all_reports() {
            for conn in &report.conns {
                out.push_str(&conn.brief);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    let (min, avg, max) = stats.latency_ms();
    let _ = writeln!(
        out,
        "Latency min/avg/max: {}/{:?}/{}",
        min as u64, avg, max as u64
    );
    let _ = writeln!(out, "Received: {}", stats.packets_received.load(Relaxed));
    let _ = writeln!(out, "Sent: {}", stats.packets_sent.load(Relaxed));
    let _ = writeln!(out, "Connections: {}", stats.connections.load(Relaxed));
    let _ = writeln!(
        out,
        "Outstanding: {}",
        stats.outstanding.load(Relaxed).max(0)
    );
    let _ = writeln!(out, "Zxid: {:#x}", stats.last_zxid.load(Relaxed));
    let state = super::quorum::state_name(stats.server_state.load(Relaxed));
    let _ = writeln!(out, "Mode: {state}");
    let _ = writeln!(out, "Node count: {}", stats.node_count.load(Relaxed));
    out
}

fn cons(shard: &Shard) -> String {
    let mut out = String::new();
    for report in shard.all_reports() {
        for conn in &report.conns {
            out.push_str(&conn.full);
            out.push('\n');
        }
    }
    out.push('\n');
    out
}

/// `crst` reaches every shard through a generation counter; this shard applies it at once.
fn reset_connection_stats(shard: &Shard) {
    shard.stats.crst_generation.fetch_add(1, Relaxed);
    shard.reset_connection_stats_if_asked();
}

fn conf(shard: &Shard) -> String {
    let mut out = String::new();
    let data_bytes = dir_size(&shard.config.data_dir);
    let log_bytes = dir_size(&shard.config.data_log_dir);
    for (key, value) in shard.config.conf_lines_with_sizes(data_bytes, log_bytes) {
        let _ = writeln!(out, "{key}={value}");
    }
    out
}

fn mntr(shard: &Shard) -> String {
    let stats = &shard.stats;
    let reports = shard.all_reports();
    let watch_count: usize = reports.iter().map(|r| r.watch_count).sum();
    let (min, avg, max) = stats.latency_ms();
    // ZooKeeper 3.8's order (its metrics map's iteration order, stable across runs), for the
    // keys Keel has; tools that diff mntr output keep working.
    let lines: Vec<(&str, String)> = vec![
        ("zk_version", VERSION.to_owned()),
        (
            "zk_server_state",
            super::quorum::state_name(stats.server_state.load(Relaxed)).to_owned(),
        ),
        (
            "zk_ephemerals_count",
            stats.ephemerals_count.load(Relaxed).to_string(),
        ),
        (
            "zk_num_alive_connections",
            stats.connections.load(Relaxed).to_string(),
        ),
        ("zk_avg_latency", java_double(avg)),
        (
            "zk_outstanding_requests",
            stats.outstanding.load(Relaxed).max(0).to_string(),
        ),
        ("zk_znode_count", stats.node_count.load(Relaxed).to_string()),
        (
            "zk_global_sessions",
            stats.session_count.load(Relaxed).to_string(),
        ),
        (
            "zk_packets_sent",
            stats.packets_sent.load(Relaxed).to_string(),
        ),
        (
            "zk_packets_received",
            stats.packets_received.load(Relaxed).to_string(),
        ),
        ("zk_watch_count", watch_count.to_string()),
        (
            "zk_auth_failed_count",
            stats.auth_failed_count.load(Relaxed).to_string(),
        ),
        ("zk_min_latency", (min as u64).to_string()),
        ("zk_max_file_descriptor_count", max_fd_count().to_string()),
        (
            "zk_approximate_data_size",
            stats.approximate_data_size.load(Relaxed).to_string(),
        ),
        ("zk_open_file_descriptor_count", open_fd_count().to_string()),
        ("zk_local_sessions", "0".to_owned()),
        ("zk_uptime", stats.started.elapsed().as_millis().to_string()),
        ("zk_max_latency", (max as u64).to_string()),
        (
            "zk_connection_rejected",
            stats.connection_rejected.load(Relaxed).to_string(),
        ),
        (
            "zk_connection_drop_count",
            stats.connection_drop_count.load(Relaxed).to_string(),
        ),
        (
            "zk_bytes_received_count",
            stats.bytes_received.load(Relaxed).to_string(),
        ),
    ];
    let mut lines = lines;
    if stats.server_state.load(Relaxed) != super::quorum::STATE_STANDALONE {
        lines.splice(2..2, quorum_lines(stats));
    }
    let mut out = String::new();
    for (key, value) in lines {
        let _ = writeln!(out, "{key}\t{value}");
    }
    // ZooKeeper's order among its summaries; all of them come before the latency ones.
    let disk = [
        ("startup_txns_load_time", &stats.startup_txns_load_time_ms),
        ("fsynctime", &stats.fsync_time_ms),
        ("snapshottime", &stats.snapshot_time_ms),
        ("startup_txns_loaded", &stats.startup_txns_loaded),
        ("dbinittime", &stats.db_init_time_ms),
        ("sync_processor_batch_size", &stats.sync_batch_txns),
    ];
    for (name, summary) in disk {
        counter_lines(&mut out, "zk", name, summary);
    }
    let update = merged(reports.iter().filter_map(|r| r.update_latency_us.as_ref()));
    let read = merged(reports.iter().filter_map(|r| r.read_latency_us.as_ref()));
    summary_lines(&mut out, "updatelatency", &update);
    summary_lines(&mut out, "readlatency", &read);
    // Keel's own keys, after all of ZooKeeper's.
    counter_lines(&mut out, "keel", "wal_batch_bytes", &stats.sync_batch_bytes);
    let _ = writeln!(
        out,
        "keel_last_snapshot_bytes\t{}",
        stats.last_snapshot_bytes.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "keel_last_snapshot_zxid\t0x{:x}",
        stats.last_snapshot_zxid.load(Relaxed)
    );
    // ZooKeeper 3.8 counts these too (ServerStats) but shows them only over JMX.
    let _ = writeln!(
        out,
        "keel_fsync_threshold_exceed_count\t{}",
        stats.fsync_threshold_exceed_count.load(Relaxed)
    );
    out
}

/// A ZooKeeper `AvgMinMaxCounter` summary: `<prefix>_{avg,min,max,cnt,sum}_<name>`.
/// An ensemble member's mntr keys: zk_peer_state right after zk_server_state, as ZooKeeper
/// prints it, then the quorum size and a leader's learner counts and pending learner syncs
/// (ZooKeeper's `Leader.getNumPendingSyncs`).
fn quorum_lines(stats: &super::stats::ServerStats) -> Vec<(&'static str, String)> {
    let figures = match stats.quorum.lock() {
        Ok(figures) => figures.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let [diff, trunc, snap] = figures.syncs;
    let mut lines = vec![
        ("zk_peer_state", figures.peer_state.to_owned()),
        ("zk_quorum_size", figures.quorum_size.to_string()),
        ("keel_learner_syncs_diff", diff.to_string()),
        ("keel_learner_syncs_trunc", trunc.to_string()),
        ("keel_learner_syncs_snap", snap.to_string()),
    ];
    if let Some(counts) = figures.learners {
        lines.extend([
            ("zk_learners", counts.learners.to_string()),
            ("zk_synced_followers", counts.synced_followers.to_string()),
            ("zk_synced_non_voting_followers", "0".to_owned()),
            ("zk_synced_observers", counts.synced_observers.to_string()),
            ("zk_pending_syncs", figures.pending_syncs.to_string()),
            ("keel_leader_snap_waits", figures.snapshot_waits.to_string()),
        ]);
    }
    lines
}

fn counter_lines(out: &mut String, prefix: &str, name: &str, summary: &super::stats::Summary) {
    let (count, sum, min, max) = summary.read();
    let avg = if count == 0 {
        0.0
    } else {
        sum as f64 / count as f64
    };
    let _ = writeln!(out, "{prefix}_avg_{name}\t{}", java_double(avg));
    let _ = writeln!(out, "{prefix}_min_{name}\t{min}");
    let _ = writeln!(out, "{prefix}_max_{name}\t{max}");
    let _ = writeln!(out, "{prefix}_cnt_{name}\t{count}");
    let _ = writeln!(out, "{prefix}_sum_{name}\t{sum}");
}

fn merged<'a>(histograms: impl Iterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut total = crate::shard::latency_histogram();
    for histogram in histograms {
        // Same bounds everywhere, so adding cannot fail; a failure would only drop figures.
        let _ = total.add(histogram);
    }
    total
}

/// A ZooKeeper ADVANCED summary in milliseconds: avg min max cnt sum p50 p95 p99 p999.
fn summary_lines(out: &mut String, name: &str, latency_us: &Histogram<u64>) {
    let count = latency_us.len();
    let ms = |us: u64| us / 1000;
    let (avg, min, max) = if count == 0 {
        (0.0, 0, 0)
    } else {
        (
            latency_us.mean() / 1000.0,
            ms(latency_us.min()),
            ms(latency_us.max()),
        )
    };
    let sum_ms = (latency_us.mean() * count as f64 / 1000.0) as u64;
    let _ = writeln!(out, "zk_avg_{name}\t{}", java_double(avg));
    let _ = writeln!(out, "zk_min_{name}\t{min}");
    let _ = writeln!(out, "zk_max_{name}\t{max}");
    let _ = writeln!(out, "zk_cnt_{name}\t{count}");
    let _ = writeln!(out, "zk_sum_{name}\t{sum_ms}");
    for (label, quantile) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999)] {
        let value = if count == 0 {
            0
        } else {
            ms(latency_us.value_at_quantile(quantile))
        };
        let _ = writeln!(out, "zk_{label}_{name}\t{value}");
    }
}

/// A double as ZooKeeper prints its average latency: rounded to 4 decimals, Java's
/// `Double.toString` form (always a fractional part).
fn java_double(value: f64) -> String {
    let rounded = (value * 10_000.0).round() / 10_000.0;
    format!("{rounded:?}")
}

fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn max_fd_count() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if ok {
        limit.rlim_cur
    } else {
        0
    }
}

/// Every shard's data-side watches as (session id, path) pairs, and their exact total.
fn all_watches(shard: &Shard) -> (Vec<(i64, String)>, usize) {
    let mut pairs = Vec::new();
    let mut total = 0;
    for report in shard.all_reports() {
        total += report.data_watch_count;
        pairs.extend(report.watches);
    }
    (pairs, total)
}

fn wchs(shard: &Shard) -> String {
    let (pairs, total) = all_watches(shard);
    let sessions: BTreeSet<i64> = pairs.iter().map(|(session, _)| *session).collect();
    let paths: BTreeSet<&str> = pairs.iter().map(|(_, path)| path.as_str()).collect();
    format!(
        "{} connections watching {} paths\nTotal watches:{total}\n",
        sessions.len(),
        paths.len()
    )
}

fn wchc(shard: &Shard) -> String {
    let mut by_session: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (session, path) in all_watches(shard).0 {
        by_session.entry(session).or_default().push(path);
    }
    let mut out = String::new();
    for (session, paths) in by_session {
        let _ = writeln!(out, "{session:#x}");
        for path in paths {
            let _ = writeln!(out, "\t{path}");
        }
    }
    out.push('\n');
    out
}

fn wchp(shard: &Shard) -> String {
    let mut by_path: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (session, path) in all_watches(shard).0 {
        by_path.entry(path).or_default().push(session);
    }
    let mut out = String::new();
    for (path, sessions) in by_path {
        let _ = writeln!(out, "{path}");
        for session in sessions {
            let _ = writeln!(out, "\t{session:#x}");
        }
    }
    out.push('\n');
    out
}

fn dump(shard: &Shard) -> String {
    let view = shard.view.borrow().clone();
    let mut out = String::from("SessionTracker dump:\n");
    let sets = shard
        .stats
        .session_sets
        .lock()
        .map(|sets| sets.clone())
        .unwrap_or_default();
    let session_count: usize = sets.iter().map(|(_, ids)| ids.len()).sum();
    let _ = writeln!(out, "Session Sets ({})/({session_count}):", sets.len());
    for (expiry_ms, ids) in sets {
        let _ = writeln!(out, "{} expire at {}:", ids.len(), java_date(expiry_ms));
        for id in ids {
            let _ = writeln!(out, "\t{id:#x}");
        }
    }
    out.push_str("ephemeral nodes dump:\n");
    let sessions = view.session_ids_with_ephemerals();
    let _ = writeln!(out, "Sessions with Ephemerals ({}):", sessions.len());
    for session_id in sessions {
        let _ = writeln!(out, "{session_id:#x}:");
        for path in view.ephemerals(session_id) {
            let _ = writeln!(out, "\t{path}");
        }
    }
    out.push_str("Connections dump:\n");
    let conns: Vec<(String, i64)> = shard
        .all_reports()
        .into_iter()
        .flat_map(|report| report.conns.into_iter())
        .map(|conn| (conn.peer, conn.session_id))
        .collect();
    let _ = writeln!(out, "Connections Sets (1)/({}):", conns.len());
    let expiry_ms = wall_clock_ms() + i64::from(shard.config.tick_time_ms);
    let _ = writeln!(out, "{} expire at {}:", conns.len(), java_date(expiry_ms));
    for (peer, session_id) in conns {
        let _ = writeln!(out, "\tip: /{peer} sessionId: {session_id:#x}");
    }
    out
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Java's `Date.toString()` in UTC: `Sun Nov 22 01:59:14 UTC 2026`.
fn java_date(epoch_ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = epoch_ms.div_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
        year
    )
}

fn envi() -> String {
    let mut out = String::from("Environment:\n");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let os_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cwd = std::env::current_dir().map(|d| d.display().to_string());
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        other => other,
    };
    let pairs = [
        ("zookeeper.version", VERSION.to_owned()),
        ("host.name", host.trim().to_owned()),
        ("os.name", "Linux".to_owned()),
        ("os.arch", arch.to_owned()),
        ("os.version", os_release.trim().to_owned()),
        ("user.name", user_name()),
        ("user.home", std::env::var("HOME").unwrap_or_default()),
        ("user.dir", cwd.unwrap_or_default()),
    ];
    for (key, value) in pairs {
        let _ = writeln!(out, "{key}={value}");
    }
    out
}

/// The effective user's login name, as Java's `user.name` reports it.
fn user_name() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the name out
    // at once and never keep the pointer.
    unsafe {
        let entry = libc::getpwuid(libc::geteuid());
        if entry.is_null() || (*entry).pw_name.is_null() {
            return std::env::var("USER").unwrap_or_default();
        }
        std::ffi::CStr::from_ptr((*entry).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

fn dirs(shard: &Shard) -> String {
    let data = dir_size(&shard.config.data_dir);
    let log = dir_size(&shard.config.data_log_dir);
    format!("datadir_size: {data}\nlogdir_size: {log}\n")
}

/// Bytes in the files directly under `dir` and its `version-2`.
pub fn dir_size(dir: &std::path::Path) -> u64 {
    let sum = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|meta| meta.len())
                .sum()
        })
    };
    sum(dir) + sum(&dir.join("version-2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_date_matches_date_to_string() {
        // Known instants print as java.util.Date.toString() does in UTC.
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date(1_795_312_754_000), "Sun Nov 22 01:59:14 UTC 2026");
        assert_eq!(java_date(951_782_400_000), "Tue Feb 29 00:00:00 UTC 2000");
    }

    #[test]
    fn average_latency_prints_like_java() {
        // Averages are rounded to 4 decimals and always show a fractional part.
        assert_eq!(java_double(0.0), "0.0");
        assert_eq!(java_double(0.090_799_999_999), "0.0908");
        assert_eq!(java_double(2.0), "2.0");
    }
}
