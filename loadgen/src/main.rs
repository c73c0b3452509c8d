//! keel-loadgen: load generator and linearizability checker for ZooKeeper-protocol servers.
//!
//! Not yet built: this binary only says so. Its issue ("keel-loadgen") builds it on the
//! server crate's protocol codec (`keel::proto`).

fn main() {
    eprintln!("keel-loadgen: not yet implemented (see the keel-loadgen issue)");
    std::process::exit(2);
}
