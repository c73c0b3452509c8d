//! Command-line flags and their checks; produces a `Plan`.

use crate::keys::KeyDistribution;
use crate::plan::{self, Mode, Plan};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a run may overrun warmup + duration before the time limit ends it.
const TIME_LIMIT_SLACK: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadArg {
    /// getData, exists and getChildren on the keys.
    Read,
    /// setData on the keys; create and delete of per-session nodes.
    Write,
    /// Reads and writes, --read-pct of them reads.
    Mixed,
    /// Records a history of reads and writes on a few keys and checks it is linearizable.
    Checker,
    /// Providers register ephemeral nodes under services; consumers list them with a watch.
    Registry,
    /// One session sets a node that all the others watch; time to the last notification.
    Fanout,
    /// Sessions open, create ephemeral nodes and close, over and over.
    Churn,
    /// Ephemeral-sequential lock recipe with an exists watch on the predecessor.
    Lock,
    /// Ephemeral-sequential creates as an id generator.
    Seqid,
    /// Sequential produce; consume by getChildren and delete of the lowest.
    Queue,
}

impl WorkloadArg {
    pub fn scenario(self) -> Option<crate::scenario::Kind> {
        use crate::scenario::Kind;
        Some(match self {
            WorkloadArg::Registry => Kind::Registry,
            WorkloadArg::Fanout => Kind::Fanout,
            WorkloadArg::Churn => Kind::Churn,
            WorkloadArg::Lock => Kind::Lock,
            WorkloadArg::Seqid => Kind::Seqid,
            WorkloadArg::Queue => Kind::Queue,
            WorkloadArg::Read | WorkloadArg::Write | WorkloadArg::Mixed | WorkloadArg::Checker => {
                return None
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyDistArg {
    Uniform,
    Zipf,
}

/// Load generator and linearizability checker for ZooKeeper-protocol servers (Keel or Apache
/// ZooKeeper).
///
/// Durations take a unit: 500ms, 10s, 2m (a bare number is seconds). Exit status: 0 clean run,
/// 1 fatal error (nothing measured), 2 bad flags, 3 time limit reached, 4 run finished with
/// errors counted, 5 history not linearizable, 6 linearizability undecided (search budget).
#[derive(Debug, Parser)]
#[command(name = "keel-loadgen", version, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub load: Args,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks a history saved by `--workload checker --history FILE` for linearizability.
    Check(CheckArgs),
    /// Runs the same workload against two servers alternately (A, B, A, B, …) and compares
    /// throughput and latency: medians per server, the ratio B/A and its spread over rounds.
    Compare(Box<CompareArgs>),
    /// Times an outage: optionally kills a server (--kill-pid), then keeps trying a write on
    /// every server until one succeeds; prints the ms from the kill (or start) to that success.
    Failover(crate::failover::FailoverArgs),
    /// Creates --nodes persistent znodes under a prefix with many sessions and creates in
    /// flight (for catch-up and restart measurements); the nodes are left in place.
    Populate(crate::populate::PopulateArgs),
    /// Waits until a restarted server is synced (srvr: follower or observer, zxid at least
    /// the leader's); prints the seconds from its start (--started-ns) to then.
    Synced(crate::synced::SyncedArgs),
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Server A, host:port (the baseline of the ratio B/A).
    #[arg(long)]
    pub a: String,
    /// Server B, host:port.
    #[arg(long)]
    pub b: String,
    /// Rounds; each runs the workload once against A, then once against B.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The workload flags, as for a single run (--servers is ignored).
    #[command(flatten)]
    pub load: Args,
}

impl CompareArgs {
    /// The plan for each run and the two servers.
    ///
    /// # Errors
    /// A flag is out of range or a server does not resolve.
    pub fn into_parts(self) -> Result<(Plan, SocketAddr, SocketAddr, usize)> {
        check_range("--rounds", self.rounds, 1, crate::compare::ROUNDS_MAX)?;
        let a = resolve(std::slice::from_ref(&self.a)).context("--a")?[0];
        let b = resolve(std::slice::from_ref(&self.b)).context("--b")?[0];
        let rounds = self.rounds;
        let plan = self.load.into_plan()?;
        if plan.checker.is_some() {
            bail!("compare runs load workloads; --workload checker does not apply");
        }
        Ok((plan, a, b, rounds))
    }
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The history file (JSON).
    pub file: PathBuf,
    /// Search budget per key, in steps; past it the verdict is `unknown`.
    #[arg(long, default_value_t = crate::linearizability::STEPS_MAX_DEFAULT)]
    pub check_steps: u64,
    /// Also write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The flags of a load or checker run.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Servers as host:port, comma separated; sessions are spread over them in turn.
    #[arg(long, default_value = "127.0.0.1:2181", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Client sessions, each its own TCP connection [default: 100; checker: 8].
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Requests in flight per session (closed loop: always this many; open loop: at most).
    #[arg(long, default_value_t = 1)]
    pub outstanding: usize,
    /// Open loop: total ops/s on a fixed schedule, latency measured from each op's intended
    /// send time. Without it the run is closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Worker threads; sessions are spread over them.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long, value_enum, default_value_t = WorkloadArg::Mixed)]
    pub workload: WorkloadArg,
    /// A TOML file with a custom mix of the basic ops (weights, keys, value sizes); see the
    /// README. Its [keys] and [values] replace --keys, --key-dist, --zipf-s and --value-bytes.
    #[arg(long)]
    pub workload_file: Option<PathBuf>,
    /// Percentage of reads in the mixed workload [default: 90].
    #[arg(long)]
    pub read_pct: Option<u32>,
    /// Bytes of data in each key and created node.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Keys created under the run's prefix [default: 1000; checker: 4].
    #[arg(long)]
    pub keys: Option<u64>,
    #[arg(long, value_enum, default_value_t = KeyDistArg::Uniform)]
    pub key_dist: KeyDistArg,
    /// Zipf exponent for --key-dist zipf (key k drawn with weight 1/(k+1)^s).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_s: f64,
    /// Load before measuring; its ops are not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// The measured window.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Hard limit on the whole run, setup to teardown [default: warmup + duration + 30s].
    #[arg(long, value_parser = parse_duration)]
    pub time_limit: Option<Duration>,
    /// Session timeout asked of the server (it may clamp it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub session_timeout: Duration,
    /// Limit on a TCP connect plus handshake.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// A request without a reply for this long drops its connection and counts as an error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Names the run's prefix /keel-loadgen/<run-id> [default: from the time and pid].
    #[arg(long)]
    pub run_id: Option<String>,
    /// Seed for key and op choices [default: from the clock; printed in the summary].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the summary's figures to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Write latency.svg (latency by percentile) and throughput.svg (ops/s over time) here.
    #[arg(long)]
    pub plot_dir: Option<PathBuf>,
    /// Checker: the most ops to record, over all clients.
    #[arg(long, default_value_t = 2000)]
    pub ops: u64,
    /// Checker: save the recorded history as JSON, for `keel-loadgen check FILE`.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Checker: search budget per key, in steps; past it the verdict is `unknown`.
    #[arg(long, default_value_t = crate::linearizability::STEPS_MAX_DEFAULT)]
    pub check_steps: u64,
    /// Checker: send sync on the key before each getData; the pair is one read op.
    #[arg(long)]
    pub sync_reads: bool,
}

/// `500ms`, `10s`, `2m`, `1.5s`, or a bare number of seconds.
///
/// # Errors
/// Not a non-negative number with one of those units.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration"))?;
    let scale_s = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("'{text}': unit must be ms, s, m or h")),
    };
    Duration::try_from_secs_f64(value * scale_s).map_err(|error| format!("'{text}': {error}"))
}

/// `--servers` as socket addresses (the first address each name resolves to).
///
/// # Errors
/// No server given, or one that does not resolve.
pub(crate) fn resolve(servers: &[String]) -> Result<Vec<SocketAddr>> {
    if servers.is_empty() {
        bail!("--servers: give at least one host:port");
    }
    servers
        .iter()
        .map(|server| {
            server
                .to_socket_addrs()
                .with_context(|| format!("--servers: cannot resolve '{server}'"))?
                .next()
                .ok_or_else(|| anyhow!("--servers: '{server}' has no address"))
        })
        .collect()
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    flag: &str,
    value: T,
    min: T,
    max: T,
) -> Result<()> {
    if value < min || value > max {
        bail!("{flag} {value} is out of range [{min}, {max}]");
    }
    Ok(())
}

impl Args {
    /// The pacing, the read share and the key distribution.
    fn load_shape(&self) -> Result<(Mode, u32, KeyDistribution)> {
        let mode = match self.rate {
            None => Mode::ClosedLoop,
            Some(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e8 => Mode::OpenLoop {
                rate_ops_per_s: rate,
            },
            Some(rate) => bail!("--rate {rate} must be in (0, 1e8] ops/s"),
        };
        let read_pct = match (self.workload, self.read_pct) {
            (WorkloadArg::Read, None) => 100,
            (WorkloadArg::Mixed, pct) => pct.unwrap_or(90),
            (_, None) => 0,
            (_, Some(_)) => bail!("--read-pct applies to --workload mixed only"),
        };
        check_range("--read-pct", read_pct, 0, 100)?;
        let key_count = self.key_count();
        check_range("--keys", key_count, 1, plan::KEYS_MAX)?;
        let keys = match self.key_dist {
            KeyDistArg::Uniform => KeyDistribution::uniform(key_count),
            KeyDistArg::Zipf => {
                if !(self.zipf_s.is_finite() && self.zipf_s > 0.0 && self.zipf_s <= 10.0) {
                    bail!("--zipf-s {} must be in (0, 10]", self.zipf_s);
                }
                KeyDistribution::zipf(key_count, self.zipf_s)
            }
        };
        Ok((mode, read_pct, keys))
    }

    fn is_checker(&self) -> bool {
        self.workload == WorkloadArg::Checker
    }

    fn key_count(&self) -> u64 {
        let default = match self.workload.scenario() {
            Some(kind) => kind.default_groups(),
            None if self.is_checker() => 4,
            None => 1000,
        };
        self.keys.unwrap_or(default)
    }

    fn session_count(&self) -> usize {
        let default = if self.is_checker() { 8 } else { 100 };
        self.sessions.unwrap_or(default)
    }

    /// Checks every flag and resolves the servers.
    ///
    /// # Errors
    /// A flag is out of range, contradicts another, or a server does not resolve.
    pub fn into_plan(self) -> Result<Plan> {
        let sessions = self.session_count();
        check_range("--sessions", sessions, 1, plan::SESSIONS_MAX)?;
        if self.is_checker() {
            check_range("--sessions", sessions, 1, plan::CHECKER_CLIENTS_MAX)?;
            check_range("--ops", self.ops, 1, plan::CHECKER_OPS_MAX)?;
            if self.rate.is_some() {
                bail!("--rate does not apply to --workload checker (each client runs one op at a time)");
            }
            if self.plot_dir.is_some() {
                bail!("--plot-dir does not apply to --workload checker");
            }
        } else if self.history.is_some() || self.sync_reads {
            bail!("--history and --sync-reads apply to --workload checker only");
        }
        check_range("--check-steps", self.check_steps, 1, u64::MAX)?;
        let mix = match &self.workload_file {
            Some(_) if self.workload != WorkloadArg::Mixed || self.read_pct.is_some() => {
                bail!("--workload-file replaces --workload and --read-pct; give only the file")
            }
            Some(path) => Some(crate::workload_file::Mix::load(path)?),
            None => None,
        };
        if self.workload == WorkloadArg::Fanout && (sessions as u64) <= self.key_count() {
            bail!("--workload fanout needs more --sessions than --keys (a writer and watchers per node)");
        }
        check_range("--outstanding", self.outstanding, 1, plan::OUTSTANDING_MAX)?;
        if sessions * self.outstanding > plan::OUTSTANDING_TOTAL_MAX {
            bail!(
                "--sessions × --outstanding exceeds {}",
                plan::OUTSTANDING_TOTAL_MAX
            );
        }
        check_range("--threads", self.threads, 1, plan::THREADS_MAX)?;
        check_range("--value-bytes", self.value_bytes, 0, plan::VALUE_BYTES_MAX)?;
        let (mode, read_pct, mut keys) = self.load_shape()?;
        let mut value_bytes = self.value_bytes;
        if let Some(mix) = &mix {
            keys = mix.key_distribution().unwrap_or(keys);
            value_bytes = mix.value_bytes.map_or(value_bytes, |(_, max)| max);
        }
        if self.duration.is_zero() {
            bail!("--duration must be positive");
        }
        let session_timeout_ms = i32::try_from(self.session_timeout.as_millis())
            .ok()
            .filter(|&ms| ms > 0)
            .ok_or_else(|| anyhow!("--session-timeout must be between 1ms and 24 days"))?;
        for (flag, value) in [
            ("--connect-timeout", self.connect_timeout),
            ("--request-timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                bail!("{flag} must be positive");
            }
        }
        let run_id = self.run_id.clone().unwrap_or_else(default_run_id);
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if run_id.is_empty()
            || run_id.len() > 64
            || !run_id.chars().all(valid)
            || run_id.starts_with('.')
        {
            bail!("--run-id '{run_id}': use 1-64 of [A-Za-z0-9_.-], not starting with '.'");
        }
        let is_checker = self.is_checker();
        let time_limit = self
            .time_limit
            .unwrap_or(self.warmup + self.duration + TIME_LIMIT_SLACK);
        let plan = Plan {
            servers: resolve(&self.servers)?,
            threads: self.threads.min(sessions),
            sessions,
            outstanding_max: self.outstanding,
            mode,
            read_pct,
            value_bytes,
            keys,
            warmup: self.warmup,
            duration: self.duration,
            time_limit,
            session_timeout_ms,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            run_id,
            seed: self.seed.unwrap_or_else(default_seed),
            json_path: self.json,
            plot_dir: self.plot_dir,
            progress: !self.quiet,
            scenario: self.workload.scenario(),
            mix,
            checker: is_checker.then_some(plan::CheckerPlan {
                ops_max: self.ops,
                sync_reads: self.sync_reads,
                history_path: self.history,
                steps_max: self.check_steps,
            }),
        };
        plan.assert_valid();
        Ok(plan)
    }
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn default_run_id() -> String {
    format!("r{}-{}", since_epoch().as_millis(), std::process::id())
}

fn default_seed() -> u64 {
    since_epoch().as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(args: &[&str]) -> Result<Plan> {
        let mut argv = vec!["keel-loadgen", "--servers", "127.0.0.1:2181"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map_err(|e| anyhow!("{e}"))?
            .load
            .into_plan()
    }

    #[test]
    fn durations_take_units() {
        // Units ms, s, m and bare seconds parse; an unknown unit is refused.
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_make_a_closed_loop_mixed_run_with_a_time_limit() {
        // With no flags but --servers: closed loop, 90% reads, limit = warmup + duration + 30 s.
        let plan = plan_of(&[]).unwrap();
        assert_eq!(plan.mode, Mode::ClosedLoop);
        assert_eq!(plan.read_pct, 90);
        assert_eq!(plan.time_limit, Duration::from_secs(42));
        assert!(plan.prefix().starts_with("/keel-loadgen/r"));
    }

    #[test]
    fn contradictions_and_out_of_range_flags_are_refused() {
        // Each bad combination fails with a message naming the flag.
        let cases: [(&[&str], &str); 7] = [
            (&["--sync-reads"], "--sync-reads"),
            (&["--workload", "checker", "--rate", "10"], "--rate"),
            (&["--workload", "read", "--read-pct", "50"], "--read-pct"),
            (&["--sessions", "0"], "--sessions"),
            (&["--rate", "0"], "--rate"),
            (&["--key-dist", "zipf", "--zipf-s", "0"], "--zipf-s"),
            (&["--run-id", "a/b"], "--run-id"),
        ];
        for (args, flag) in cases {
            let error = plan_of(args).unwrap_err().to_string();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
    }

    #[test]
    fn threads_never_exceed_sessions() {
        // One session on four threads runs on one.
        let plan = plan_of(&["--sessions", "1", "--threads", "4"]).unwrap();
        assert_eq!(plan.threads, 1);
        assert_eq!(plan.sessions_of(0), 1);
    }
}
