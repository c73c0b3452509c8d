//! Keel: a ZooKeeper-compatible coordination server on thread-per-core shards.
//!
//! Layers, bottom up: `proto` (wire codec, pure), `tree` (the data tree and its views, pure),
//! `session` (session table and expiry, pure), `zab` (the replication protocol as a state
//! machine, pure), `config` (zoo.cfg), then `io` (the runtime
//! boundary), `shard` (client connections) and `server` (wiring). The pure layers never import
//! `io`, `shard` or `server`.

pub mod auth;
pub mod config;
pub mod import;
pub mod io;
pub mod log;
pub mod proto;
pub mod replica;
pub mod server;
pub mod session;
pub mod shard;
pub mod snapshot;
pub mod tree;
pub mod zab;
