//! Shared by loadgen's integration tests: an in-process Keel server on 127.0.0.1.

use keel::config::Config;
use std::net::SocketAddr;

/// Starts an in-process Keel on 127.0.0.1:`port` (0: any) with `shards` client shards and a
/// fresh data directory `<tag>-<pid>` under the temp dir; returns its address.
pub fn start_keel(port: u16, shards: usize, tag: &str) -> SocketAddr {
    let mut config = Config::embedded_default();
    let client_port = format!("clientPort={port}");
    let shards = format!("keel.shards={shards}");
    for pair in [
        client_port.as_str(),
        "keel.unpinned=true",
        shards.as_str(),
        "maxClientCnxns=0",
        "preAllocSize=4096",
    ] {
        config.apply_override(pair).expect("override");
    }
    let data_dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    config
        .apply_override(&format!("dataDir={}", data_dir.display()))
        .expect("dataDir");
    let server = keel::server::start(config).expect("server starts");
    let addr = server.client_addr;
    std::thread::spawn(move || server.join());
    addr
}
