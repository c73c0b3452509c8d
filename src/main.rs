//! `keel [zoo.cfg] [key=value ...]`: parse the configuration, validate it, run the server.
//! `keel import <zk dataDir> [<zk dataLogDir>] [zoo.cfg] [key=value ...]`: see `keel::import`.
//!
//! With no arguments Keel runs standalone on 127.0.0.1:2181 with data under ./keel-data. A bad
//! configuration prints one line and exits with status 2; nothing starts.

use keel::config::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (mimalloc asks for them with
/// MADV_HUGEPAGE on its arenas). With THP, a fault may compact memory synchronously to find 2
/// MiB: loading a ~900k-znode snapshot took 417-469 ms instead of 216-235 ms after another
/// server's files filled the page cache (3 alternating runs each of the ensemble catch-up),
/// the kind of stall Redis and MongoDB also advise turning THP off for.
fn disable_transparent_huge_pages() {
    // SAFETY: a plain prctl with integer arguments; it changes only this process's THP flag.
    let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if result != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(),
            "could not turn transparent huge pages off; memory faults may stall on compaction");
    }
}

const USAGE: &str = "usage: keel [path/to/zoo.cfg] [key=value ...]
  With no zoo.cfg, runs a standalone server on 127.0.0.1:2181 with data under ./keel-data.
  key=value pairs override zoo.cfg keys (ZooKeeper's names, e.g. clientPort=2182).
usage: keel import <zookeeper dataDir> [<zookeeper dataLogDir>] [path/to/zoo.cfg] [key=value ...]
  Imports Apache ZooKeeper 3.x snapshots and logs into Keel's dataDir (from zoo.cfg/key=value).
  Starting keel on a dataDir that holds ZooKeeper's files imports them the same way.";

fn main() {
    init_logging();
    abort_on_panic();
    disable_transparent_huge_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return;
    }
    if args.first().map(String::as_str) == Some("import") {
        std::process::exit(keel::import::run_cli(&args[1..]));
    }
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("keel: configuration error: {error}");
            std::process::exit(2);
        }
    };
    let server = match keel::server::start(config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("keel: cannot start: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = server.join() {
        eprintln!("keel: {error}");
        std::process::exit(1);
    }
}

fn load_config(args: &[String]) -> Result<Config, String> {
    let (file, overrides) = match args.first() {
        Some(first) if !first.contains('=') => (Some(first.as_str()), &args[1..]),
        _ => (None, args),
    };
    let mut config = match file {
        Some(path) => Config::from_file(std::path::Path::new(path)).map_err(|e| e.to_string())?,
        None => Config::embedded_default(),
    };
    for pair in overrides {
        config.apply_override(pair).map_err(|e| e.to_string())?;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// A panic on any thread stops the whole process. Keel's threads depend on each other (a
/// shard without its replica core would accept requests it can never answer), so a process
/// with a dead thread must not linger: it stops, and a restart recovers from disk.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("keel: a thread panicked; stopping the process (restart to recover)");
        std::process::abort();
    }));
}
