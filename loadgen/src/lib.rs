//! keel-loadgen: a load generator for ZooKeeper-protocol servers (Keel or Apache ZooKeeper).
//!
//! Owns: sessions over raw sockets speaking the client protocol through `keel::proto`, open-
//! and closed-loop pacing, workloads, latency histograms and the summary. Must not: use a
//! third-party ZooKeeper client, block without a timeout, or queue without a bound.
//!
//! Layout: `cli` (flags → `Plan`), `driver` (setup, workers, progress, teardown, time limit),
//! `worker` + `session` (the event loop), `workload` (what to send), `keys` + `rng` + `schedule`
//! (what and when), `stats` + `summary` (figures), `sync_client` (blocking setup/teardown),
//! `failover` + `populate` (the ensemble benchmark's fail-over timer and bulk creates).

pub mod checker;
pub mod cli;
pub mod compare;
pub mod cpu;
pub mod driver;
pub mod failover;
pub mod keys;
pub mod linearizability;
pub mod plan;
pub mod plot;
pub mod populate;
pub mod rng;
pub mod scenario;
pub mod schedule;
pub mod session;
pub mod stats;
pub mod summary;
pub mod sync_client;
pub mod synced;
pub mod timer;
pub mod worker;
pub mod workload;
pub mod workload_file;
