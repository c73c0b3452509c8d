//! proto: ZooKeeper 3.8's client wire protocol, pure and bounded.
//!
//! Owns: the jute codec, framing, every client record, opcodes and error codes.
//! Must not: do IO, allocate in proportion to a length it has not checked, or panic on any input.
//! Invariant: a decoder given arbitrary bytes returns `Ok(Some(_))`, `Ok(None)` (need more bytes)
//! or `Err(ProtoError)`; the connection that sent a bad frame is closed, nothing else is touched.

pub mod data;
pub mod error_code;
pub mod jute;
pub mod op_code;
pub mod records;

pub use data::{open_acl_unsafe, read_acl_unsafe, Acl, Id, Stat};
pub use error_code::ErrorCode;
pub use op_code::{
    op, perms, xid, AddWatchMode, CreateMode, EventType, WatcherType, KEEPER_STATE_SYNC_CONNECTED,
};

/// Why bytes from the network could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("frame ended before the record did")]
    Short,
    #[error("unreasonable length {0}")]
    BadLength(i32),
    #[error("string is not valid UTF-8")]
    BadUtf8,
    #[error("frame length {len} is out of range (jute.maxbuffer={max})")]
    FrameTooLarge { len: i64, max: u32 },
    #[error("unknown opcode {0}")]
    UnknownOp(i32),
    #[error("malformed multi: {0}")]
    BadMulti(&'static str),
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
}
