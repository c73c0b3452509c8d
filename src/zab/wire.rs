//! wire: ZooKeeper 3.8's byte layouts on the election and quorum ports, as a pure codec
//! (reference §5.2–5.4).
//!
//! Owns: the FastLeaderElection notification (version 2, with the 28- and 40-byte legacy
//! forms on read) and the jute `QuorumPacket{int type; long zxid; buffer data; vector<Id>
//! authinfo}` with ZooKeeper's packet type numbers, plus the mapping from [`Packet`].
//! Must not: panic or allocate unboundedly on input; decoders return `WireError`, and the
//! stream decoder returns `Ok(None)` when it needs more bytes (mini-redis).
//! Not on the wire: `Link` (the TCP connection provides it). Keel-to-Keel additions: SNAP
//! carries the snapshot in `data` (ZooKeeper streams the database after the packet).
//! authinfo is jute's null vector on every packet but REQUEST (the client connection's ids),
//! as ZooKeeper writes it; REVALIDATE's two directions are told apart by their data length.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub use super::AuthId;
use super::{Entry, Notification, Packet, Payload, PeerId, ServerState, Snapshot, Vote, Zxid};

/// ZooKeeper's packet type numbers (`Leader.java`).
pub mod packet_type {
    pub const REQUEST: i32 = 1;
    pub const PROPOSAL: i32 = 2;
    pub const ACK: i32 = 3;
    pub const COMMIT: i32 = 4;
    pub const PING: i32 = 5;
    pub const REVALIDATE: i32 = 6;
    pub const SYNC: i32 = 7;
    pub const INFORM: i32 = 8;
    pub const COMMITANDACTIVATE: i32 = 9;
    pub const NEWLEADER: i32 = 10;
    pub const FOLLOWERINFO: i32 = 11;
    pub const UPTODATE: i32 = 12;
    pub const DIFF: i32 = 13;
    pub const TRUNC: i32 = 14;
    pub const SNAP: i32 = 15;
    pub const OBSERVERINFO: i32 = 16;
    pub const LEADERINFO: i32 = 17;
    pub const ACKEPOCH: i32 = 18;
    pub const INFORMANDACTIVATE: i32 = 19;
}

/// The notification version this codec writes.
pub const NOTIFICATION_VERSION: i32 = 2;
/// `LearnerInfo.protocolVersion` and LEADERINFO's payload (`0x10000`).
pub const PROTOCOL_VERSION: i32 = 0x10000;
/// QuorumCnxManager's message limit on the election port.
pub const NOTIFICATION_BYTES_MAX: usize = 512 * 1024;
/// authinfo entries a packet may carry.
pub const AUTH_IDS_MAX: usize = 1024;

/// A packet's type, zxid and data length.
const PACKET_HEAD_BYTES: usize = 16;
/// REVALIDATE's data from a learner: `long sessionId, int timeout`.
const REVALIDATE_BYTES: usize = 12;
/// REVALIDATE's data from the leader: `long sessionId, boolean valid`.
const REVALIDATED_BYTES: usize = 9;
const NOTIFICATION_BYTES_V2_MIN: usize = 44;
const NOTIFICATION_BYTES_LEGACY_28: usize = 28;
const NOTIFICATION_BYTES_LEGACY_40: usize = 40;

/// Bytes that are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("notification of {0} bytes (minimum 28)")]
    ShortNotification(usize),
    #[error("message of {len} bytes exceeds the maximum {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown server state {0}")]
    UnknownState(i32),
    #[error("bad length {0}")]
    BadLength(i64),
    #[error("unknown or unsupported packet type {0}")]
    UnknownType(i32),
    #[error("packet type {kind}: {reason}")]
    BadPayload { kind: i32, reason: &'static str },
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// A notification with everything version 2 carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireNotification {
    pub state: ServerState,
    pub leader: PeerId,
    pub zxid: Zxid,
    pub election_epoch: u64,
    pub peer_epoch: u64,
    pub version: i32,
    /// QuorumVerifier text (`server.1=…`, `version=…`).
    pub config: Vec<u8>,
}

impl WireNotification {
    pub fn from_notification(n: &Notification, config: Vec<u8>) -> WireNotification {
        WireNotification {
            state: n.state,
            leader: n.vote.leader,
            zxid: n.vote.zxid,
            election_epoch: n.round,
            peer_epoch: u64::from(n.vote.peer_epoch),
            version: NOTIFICATION_VERSION,
            config,
        }
    }

    /// # Errors
    /// The peer epoch does not fit ZooKeeper's 32-bit epoch.
    pub fn to_notification(&self) -> Result<Notification, WireError> {
        let peer_epoch = u32::try_from(self.peer_epoch)
            .map_err(|_| WireError::BadLength(self.peer_epoch as i64))?;
        let vote = Vote {
            leader: self.leader,
            zxid: self.zxid,
            peer_epoch,
        };
        Ok(Notification {
            state: self.state,
            vote,
            round: self.election_epoch,
        })
    }
}

/// A bounded big-endian cursor; every read checks what remains.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Some(head)
    }

    fn i32(&mut self) -> Option<i32> {
        let mut array = [0u8; 4];
        array.copy_from_slice(self.take(4)?);
        Some(i32::from_be_bytes(array))
    }

    fn i64(&mut self) -> Option<i64> {
        let mut array = [0u8; 8];
        array.copy_from_slice(self.take(8)?);
        Some(i64::from_be_bytes(array))
    }
}

fn state_from(value: i32) -> Result<ServerState, WireError> {
    match value {
        0 => Ok(ServerState::Looking),
        1 => Ok(ServerState::Following),
        2 => Ok(ServerState::Leading),
        3 => Ok(ServerState::Observing),
        other => Err(WireError::UnknownState(other)),
    }
}

/// The notification payload (without QuorumCnxManager's `int len` frame).
pub fn encode_notification(n: &WireNotification) -> Vec<u8> {
    let mut out = Vec::with_capacity(NOTIFICATION_BYTES_V2_MIN + n.config.len());
    out.extend_from_slice(&(n.state as i32).to_be_bytes());
    out.extend_from_slice(&(n.leader as i64).to_be_bytes());
    out.extend_from_slice(&(n.zxid.0 as i64).to_be_bytes());
    out.extend_from_slice(&(n.election_epoch as i64).to_be_bytes());
    out.extend_from_slice(&(n.peer_epoch as i64).to_be_bytes());
    out.extend_from_slice(&n.version.to_be_bytes());
    let len = i32::try_from(n.config.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&n.config);
    out
}

/// Decodes one notification payload, accepting ZooKeeper's legacy 28- and 40-byte forms.
///
/// # Errors
/// Too short, too long, an unknown state or a config length that does not fit.
pub fn decode_notification(bytes: &[u8]) -> Result<WireNotification, WireError> {
    if bytes.len() < NOTIFICATION_BYTES_LEGACY_28 {
        return Err(WireError::ShortNotification(bytes.len()));
    }
    if bytes.len() > NOTIFICATION_BYTES_MAX {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            max: NOTIFICATION_BYTES_MAX,
        });
    }
    let short = WireError::ShortNotification(bytes.len());
    let mut c = Cursor { bytes };
    let state = state_from(c.i32().ok_or(short.clone())?)?;
    let leader = c.i64().ok_or(short.clone())? as u64;
    let zxid = Zxid(c.i64().ok_or(short.clone())? as u64);
    let election_epoch = c.i64().ok_or(short.clone())? as u64;
    let mut n = WireNotification {
        state,
        leader,
        zxid,
        election_epoch,
        peer_epoch: u64::from(zxid.epoch()),
        version: 0,
        config: Vec::new(),
    };
    if bytes.len() == NOTIFICATION_BYTES_LEGACY_28 {
        return Ok(n);
    }
    n.peer_epoch = c.i64().ok_or(short.clone())? as u64;
    if bytes.len() == NOTIFICATION_BYTES_LEGACY_40 {
        return Ok(n); // Version 1 (ZooKeeper 3.4): read as version 0, no config.
    }
    n.version = c.i32().ok_or(short.clone())?;
    if n.version > 1 {
        let len = c.i32().ok_or(short)?;
        let len_bytes = usize::try_from(len).map_err(|_| WireError::BadLength(len.into()))?;
        let config = c.take(len_bytes).ok_or(WireError::BadLength(len.into()))?;
        n.config = config.to_vec();
    }
    Ok(n)
}

/// ZooKeeper's `QuorumPacket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumPacket {
    pub kind: i32,
    pub zxid: i64,
    /// None is jute's null buffer (length -1). Shared, not copied, with the [`Packet`] it
    /// comes from or goes to (a SNAP's is the whole snapshot).
    pub data: Option<Payload>,
    /// None is jute's null vector (count -1): what ZooKeeper sends on every packet but a
    /// REQUEST, which carries the client connection's ids.
    pub auth: Option<Vec<AuthId>>,
}

fn write_buffer(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(bytes) => {
            let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// Appends one packet (QuorumPackets go back to back, with no length prefix).
pub fn encode_packet(packet: &QuorumPacket, out: &mut Vec<u8>) {
    let data_bytes = packet.data.as_ref().map_or(0, |data| data.len());
    out.reserve(PACKET_HEAD_BYTES + data_bytes + 4);
    encode_packet_head(packet, out);
    if let Some(data) = &packet.data {
        out.extend_from_slice(data);
    }
    encode_packet_tail(packet, out);
}

/// Appends what precedes a packet's data bytes: type, zxid and the data's length (-1: null).
/// Head, data and tail back to back are `encode_packet`'s bytes: a sender may write a large
/// data buffer (a SNAP's) from where it is instead of copying it.
pub fn encode_packet_head(packet: &QuorumPacket, out: &mut Vec<u8>) {
    let data_bytes = packet.data.as_ref().map(|data| data.len());
    encode_head(packet.kind, packet.zxid, data_bytes, out);
}

/// `encode_packet_head` for data that is not in a `QuorumPacket` (a mapped SNAP's).
pub fn encode_head(kind: i32, zxid: i64, data_bytes: Option<usize>, out: &mut Vec<u8>) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&zxid.to_be_bytes());
    let len = data_bytes.map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
    out.extend_from_slice(&len.to_be_bytes());
}

/// Appends what follows a packet's data bytes: the authinfo vector.
pub fn encode_packet_tail(packet: &QuorumPacket, out: &mut Vec<u8>) {
    let Some(auth) = &packet.auth else {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return;
    };
    let count = i32::try_from(auth.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for id in auth {
        write_buffer(out, Some(id.scheme.as_bytes()));
        write_buffer(out, Some(id.id.as_bytes()));
    }
}

/// Reads a jute length: Ok(None) for null, Err for a negative or over-limit one.
fn read_len(c: &mut Cursor<'_>, max: usize) -> Result<Option<Option<usize>>, WireError> {
    let Some(len) = c.i32() else { return Ok(None) };
    if len == -1 {
        return Ok(Some(None));
    }
    let len_bytes = usize::try_from(len).map_err(|_| WireError::BadLength(len.into()))?;
    if len_bytes > max {
        return Err(WireError::TooLarge {
            len: len_bytes,
            max,
        });
    }
    Ok(Some(Some(len_bytes)))
}

fn read_string(c: &mut Cursor<'_>, max: usize) -> Result<Option<String>, WireError> {
    let Some(len) = read_len(c, max)? else {
        return Ok(None);
    };
    let Some(bytes) = c.take(len.unwrap_or(0)) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(bytes).map_err(|_| WireError::BadPayload {
        kind: 0,
        reason: "authinfo is not UTF-8",
    })?;
    Ok(Some(text.to_string()))
}

/// Decodes the first packet of `bytes`: `Ok(None)` when more bytes are needed, otherwise
/// the packet and how many bytes it took. `data_bytes_max` bounds the data buffer.
///
/// # Errors
/// A negative or over-limit length, too many auth ids, or non-UTF-8 auth text.
pub fn decode_packet(
    bytes: &[u8],
    data_bytes_max: usize,
) -> Result<Option<(QuorumPacket, usize)>, WireError> {
    let mut c = Cursor { bytes };
    let (Some(kind), Some(zxid)) = (c.i32(), c.i64()) else {
        return Ok(None);
    };
    let Some(data_len) = read_len(&mut c, data_bytes_max)? else {
        return Ok(None);
    };
    let data = match data_len {
        None => None,
        Some(len) => match c.take(len) {
            None => return Ok(None),
            Some(data) => Some(Payload::from(data)),
        },
    };
    let Some(count) = read_len(&mut c, AUTH_IDS_MAX)? else {
        return Ok(None);
    };
    let auth = match count {
        None => None,
        Some(count) => {
            let mut auth = Vec::with_capacity(count.min(16));
            for _ in 0..count {
                let Some(scheme) = read_string(&mut c, data_bytes_max)? else {
                    return Ok(None);
                };
                let Some(id) = read_string(&mut c, data_bytes_max)? else {
                    return Ok(None);
                };
                auth.push(AuthId { scheme, id });
            }
            Some(auth)
        }
    };
    let used = bytes.len() - c.bytes.len();
    Ok(Some((
        QuorumPacket {
            kind,
            zxid,
            data,
            auth,
        },
        used,
    )))
}

fn int_data(value: i32) -> Option<Payload> {
    Some(Payload::from(value.to_be_bytes().as_slice()))
}

fn epoch_zxid(epoch: u32) -> i64 {
    Zxid::new(epoch, 0).0 as i64
}

/// The QuorumPacket ZooKeeper sends for `packet` from server `sender`.
pub fn to_quorum_packet(packet: &Packet, sender: PeerId) -> QuorumPacket {
    use packet_type as t;
    let z = |zxid: Zxid| zxid.0 as i64;
    let (kind, zxid, data) = match packet {
        Packet::Request { payload, auth } => {
            return QuorumPacket {
                kind: t::REQUEST,
                zxid: -1,
                data: Some(payload.clone()),
                auth: Some(auth.clone()),
            };
        }
        Packet::Sync => (t::SYNC, 0, None),
        Packet::Revalidate {
            session_id,
            timeout_ms,
        } => {
            let mut data = Vec::with_capacity(REVALIDATE_BYTES);
            data.extend_from_slice(&session_id.to_be_bytes());
            data.extend_from_slice(&timeout_ms.to_be_bytes());
            (t::REVALIDATE, -1, Some(Payload::from(data)))
        }
        Packet::Revalidated { session_id, valid } => {
            let mut data = Vec::with_capacity(REVALIDATED_BYTES);
            data.extend_from_slice(&session_id.to_be_bytes());
            data.push(u8::from(*valid));
            (t::REVALIDATE, -1, Some(Payload::from(data)))
        }
        Packet::Proposal { entry } => (t::PROPOSAL, z(entry.zxid), Some(entry.payload.clone())),
        Packet::Ack { zxid } => (t::ACK, z(*zxid), None),
        Packet::Commit { zxid } => (t::COMMIT, z(*zxid), None),
        Packet::Ping { payload } => (t::PING, 0, Some(payload.clone())),
        Packet::Inform { entry } => (t::INFORM, z(entry.zxid), Some(entry.payload.clone())),
        Packet::NewLeader { epoch } => (t::NEWLEADER, epoch_zxid(*epoch), Some(Payload::from([]))),
        Packet::FollowerInfo {
            accepted_epoch,
            observer,
        } => {
            let kind = if *observer {
                t::OBSERVERINFO
            } else {
                t::FOLLOWERINFO
            };
            let mut info = Vec::with_capacity(20);
            info.extend_from_slice(&(sender as i64).to_be_bytes());
            info.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
            info.extend_from_slice(&0i64.to_be_bytes()); // configVersion
            (kind, epoch_zxid(*accepted_epoch), Some(Payload::from(info)))
        }
        Packet::UpToDate => (t::UPTODATE, -1, None),
        Packet::Diff { zxid } => (t::DIFF, z(*zxid), None),
        Packet::Trunc { zxid } => (t::TRUNC, z(*zxid), None),
        Packet::Snap { snapshot } => (t::SNAP, z(snapshot.zxid), Some(snapshot.data.to_payload())),
        Packet::LeaderInfo { epoch } => (
            t::LEADERINFO,
            epoch_zxid(*epoch),
            int_data(PROTOCOL_VERSION),
        ),
        Packet::AckEpoch {
            current_epoch,
            last_zxid,
        } => {
            let epoch = current_epoch.map_or(-1, |e| i32::try_from(e).unwrap_or(i32::MAX));
            (t::ACKEPOCH, z(*last_zxid), int_data(epoch))
        }
    };
    QuorumPacket {
        kind,
        zxid,
        data,
        auth: None,
    }
}

fn bad(kind: i32, reason: &'static str) -> WireError {
    WireError::BadPayload { kind, reason }
}

fn epoch_of(kind: i32, zxid: i64) -> Result<u32, WireError> {
    let zxid = Zxid(zxid as u64);
    if zxid.counter() != 0 {
        return Err(bad(kind, "epoch zxid with a counter"));
    }
    Ok(zxid.epoch())
}

fn data_i32(kind: i32, data: Option<&[u8]>) -> Result<i32, WireError> {
    let bytes = data.ok_or(bad(kind, "missing int"))?;
    let array: [u8; 4] = bytes
        .try_into()
        .map_err(|_| bad(kind, "int of wrong size"))?;
    Ok(i32::from_be_bytes(array))
}

/// A REVALIDATE from a learner (`long sessionId, int timeout`) or from the leader (`long
/// sessionId, boolean valid`): the two directions differ only in their data's length.
fn revalidate_of(q: &QuorumPacket) -> Result<Packet, WireError> {
    let bytes = q.data.as_deref().unwrap_or(&[]);
    let mut c = Cursor { bytes };
    let short = || bad(q.kind, "REVALIDATE of a wrong size");
    let session_id = c.i64().ok_or_else(short)?;
    let packet = match bytes.len() {
        REVALIDATE_BYTES => Packet::Revalidate {
            session_id,
            timeout_ms: c.i32().ok_or_else(short)?,
        },
        REVALIDATED_BYTES => Packet::Revalidated {
            session_id,
            // Java's readBoolean: any non-zero byte is true.
            valid: c.take(1).ok_or_else(short)? != [0],
        },
        _ => return Err(short()),
    };
    Ok(packet)
}

/// The [`Packet`] a QuorumPacket carries.
///
/// # Errors
/// A type Keel does not speak (the reconfig types) or a malformed payload.
pub fn from_quorum_packet(q: &QuorumPacket) -> Result<Packet, WireError> {
    use packet_type as t;
    let zxid = Zxid(q.zxid as u64);
    let payload = || q.data.clone().unwrap_or_else(|| Payload::from([]));
    let entry = || Entry {
        zxid,
        payload: payload(),
    };
    let packet = match q.kind {
        t::REQUEST => Packet::Request {
            payload: payload(),
            auth: q.auth.clone().unwrap_or_default(),
        },
        t::SYNC => Packet::Sync,
        t::REVALIDATE => revalidate_of(q)?,
        t::PROPOSAL => Packet::Proposal { entry: entry() },
        t::ACK => Packet::Ack { zxid },
        t::COMMIT => Packet::Commit { zxid },
        t::PING => Packet::Ping { payload: payload() },
        t::INFORM => Packet::Inform { entry: entry() },
        t::NEWLEADER => Packet::NewLeader {
            epoch: epoch_of(q.kind, q.zxid)?,
        },
        t::FOLLOWERINFO | t::OBSERVERINFO => Packet::FollowerInfo {
            accepted_epoch: epoch_of(q.kind, q.zxid)?,
            observer: q.kind == t::OBSERVERINFO,
        },
        t::UPTODATE => Packet::UpToDate,
        t::DIFF => Packet::Diff { zxid },
        t::TRUNC => Packet::Trunc { zxid },
        t::SNAP => Packet::Snap {
            snapshot: Snapshot {
                zxid,
                data: payload().into(),
            },
        },
        t::LEADERINFO => Packet::LeaderInfo {
            epoch: epoch_of(q.kind, q.zxid)?,
        },
        t::ACKEPOCH => {
            // -1 means "this epoch was accepted before": not counted in the epoch quorum.
            let current_epoch = match data_i32(q.kind, q.data.as_deref())? {
                -1 => None,
                epoch => Some(u32::try_from(epoch).map_err(|_| bad(q.kind, "negative epoch"))?),
            };
            Packet::AckEpoch {
                current_epoch,
                last_zxid: zxid,
            }
        }
        other => return Err(WireError::UnknownType(other)),
    };
    Ok(packet)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample_notification() -> WireNotification {
        WireNotification {
            state: ServerState::Looking,
            leader: 3,
            zxid: Zxid::new(2, 7),
            election_epoch: 5,
            peer_epoch: 2,
            version: NOTIFICATION_VERSION,
            config: b"version=100000000".to_vec(),
        }
    }

    #[test]
    fn notification_layout_is_byte_exact() {
        // The version-2 layout: int state, long leader, long zxid, long electionEpoch,
        // long peerEpoch, int version, int configLength, config (reference §5.2).
        let mut n = sample_notification();
        n.config = b"ab".to_vec();
        let bytes = encode_notification(&n);
        let mut expected = vec![0, 0, 0, 0];
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 7]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(bytes, expected);
        assert_eq!(bytes.len(), 44 + 2);
    }

    #[test]
    fn notification_round_trips() {
        // Every field survives an encode/decode, and so does the protocol view of it.
        let n = sample_notification();
        assert_eq!(decode_notification(&encode_notification(&n)).unwrap(), n);
        let protocol = n.to_notification().unwrap();
        assert_eq!(
            WireNotification::from_notification(&protocol, n.config.clone()),
            n
        );
    }

    #[test]
    fn notification_legacy_forms_are_read() {
        // A 28-byte message takes its peer epoch from the zxid; a 40-byte one has no config.
        let bytes = encode_notification(&sample_notification());
        let old = decode_notification(&bytes[..28]).unwrap();
        assert_eq!((old.peer_epoch, old.version), (2, 0));
        let v1 = decode_notification(&bytes[..40]).unwrap();
        assert_eq!((v1.peer_epoch, v1.config.len()), (2, 0));
    }

    #[test]
    fn notification_rejects_bad_input() {
        // Short messages, unknown states and lying config lengths are errors, not panics.
        let bytes = encode_notification(&sample_notification());
        assert!(decode_notification(&bytes[..27]).is_err());
        let mut bad_state = bytes.clone();
        bad_state[3] = 9;
        assert_eq!(
            decode_notification(&bad_state),
            Err(WireError::UnknownState(9))
        );
        let mut bad_len = bytes.clone();
        bad_len[43] = 200;
        assert!(decode_notification(&bad_len).is_err());
        for cut in 0..bytes.len() {
            let _ = decode_notification(&bytes[..cut]);
        }
    }

    #[test]
    fn packet_layout_is_byte_exact() {
        // QuorumPacket: int type, long zxid, buffer data, vector<Id> authinfo (jute).
        let q = QuorumPacket {
            kind: packet_type::COMMIT,
            zxid: 0x1_0000_0002,
            data: None,
            auth: Some(vec![AuthId {
                scheme: "ip".into(),
                id: "1".into(),
            }]),
        };
        let mut out = Vec::new();
        encode_packet(&q, &mut out);
        let mut expected = vec![0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff];
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, b'i', b'p', 0, 0, 0, 1, b'1']);
        assert_eq!(out, expected);
    }

    #[test]
    fn packets_round_trip_and_stream() {
        // Every packet kind maps to ZooKeeper's type and back; packets decode back to back
        // and a cut packet asks for more bytes.
        let entry = Entry {
            zxid: Zxid::new(3, 9),
            payload: Payload::from(vec![1, 2, 3]),
        };
        let snapshot = Snapshot {
            zxid: Zxid::new(3, 1),
            data: Payload::from(vec![9]).into(),
        };
        let packets = vec![
            Packet::Request {
                payload: Payload::from(vec![4]),
                auth: vec![],
            },
            Packet::Request {
                payload: Payload::from(vec![5]),
                auth: vec![AuthId {
                    scheme: "digest".into(),
                    id: "u:h".into(),
                }],
            },
            Packet::Sync,
            Packet::Revalidate {
                session_id: -2,
                timeout_ms: 3,
            },
            Packet::Revalidated {
                session_id: 4,
                valid: true,
            },
            Packet::Revalidated {
                session_id: 4,
                valid: false,
            },
            Packet::Proposal {
                entry: entry.clone(),
            },
            Packet::Ack {
                zxid: Zxid::new(3, 9),
            },
            Packet::Commit {
                zxid: Zxid::new(3, 9),
            },
            Packet::Ping {
                payload: Payload::from(vec![]),
            },
            Packet::Inform { entry },
            Packet::NewLeader { epoch: 3 },
            Packet::FollowerInfo {
                accepted_epoch: 2,
                observer: false,
            },
            Packet::FollowerInfo {
                accepted_epoch: 2,
                observer: true,
            },
            Packet::UpToDate,
            Packet::Diff {
                zxid: Zxid::new(2, 4),
            },
            Packet::Trunc {
                zxid: Zxid::new(2, 3),
            },
            Packet::Snap { snapshot },
            Packet::LeaderInfo { epoch: 3 },
            Packet::AckEpoch {
                current_epoch: Some(2),
                last_zxid: Zxid::new(2, 4),
            },
            Packet::AckEpoch {
                current_epoch: None,
                last_zxid: Zxid::new(2, 4),
            },
        ];
        let mut stream = Vec::new();
        for packet in &packets {
            encode_packet(&to_quorum_packet(packet, 7), &mut stream);
        }
        let mut offset = 0;
        for packet in &packets {
            let (q, used) = decode_packet(&stream[offset..], 1 << 20).unwrap().unwrap();
            assert_eq!(from_quorum_packet(&q).unwrap(), *packet);
            assert!(decode_packet(&stream[offset..offset + used - 1], 1 << 20)
                .unwrap()
                .is_none());
            offset += used;
        }
        assert_eq!(offset, stream.len());
    }

    fn encoded(packet: &Packet) -> Vec<u8> {
        let mut out = Vec::new();
        encode_packet(&to_quorum_packet(packet, 1), &mut out);
        out
    }

    #[test]
    fn request_layout_is_byte_exact() {
        // A learner's REQUEST: type 1, zxid -1, data (here a 16-byte request header and a
        // 2-byte body, as Learner.request builds it), authinfo with the client's ids.
        let mut data = 7i64.to_be_bytes().to_vec();
        data.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1, 0xab, 0xcd]);
        let request = Packet::Request {
            payload: Payload::from(data.clone()),
            auth: vec![AuthId {
                scheme: "digest".into(),
                id: "u:h".into(),
            }],
        };
        let mut expected = vec![0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        expected.extend_from_slice(&[0, 0, 0, 18]);
        expected.extend_from_slice(&data);
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 6]);
        expected.extend_from_slice(b"digest");
        expected.extend_from_slice(&[0, 0, 0, 3]);
        expected.extend_from_slice(b"u:h");
        assert_eq!(encoded(&request), expected);
    }

    #[test]
    fn sync_layout_is_byte_exact() {
        // Leader.sendSync: QuorumPacket(SYNC, 0, null, null): null data and null authinfo.
        let mut expected = vec![0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(encoded(&Packet::Sync), expected);
    }

    #[test]
    fn revalidate_layouts_are_byte_exact() {
        // Learner.validateSession: REVALIDATE, zxid -1, `long sessionId, int timeout`, null
        // authinfo; the leader answers on the same type with `long sessionId, boolean valid`.
        let head = [0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let ask = Packet::Revalidate {
            session_id: 0x0102_0304_0506_0708,
            timeout_ms: 30_000,
        };
        let mut expected = head.to_vec();
        expected.extend_from_slice(&[0, 0, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x75, 0x30]);
        expected.extend_from_slice(&[0xff; 4]);
        assert_eq!(encoded(&ask), expected);
        let answer = Packet::Revalidated {
            session_id: 0x0102_0304_0506_0708,
            valid: true,
        };
        let mut expected = head.to_vec();
        expected.extend_from_slice(&[0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 1]);
        expected.extend_from_slice(&[0xff; 4]);
        assert_eq!(encoded(&answer), expected);
        let refused = Packet::Revalidated {
            session_id: 1,
            valid: false,
        };
        assert_eq!(encoded(&refused)[24], 0, "false is one zero byte");
    }

    #[test]
    fn packet_rejects_bad_input() {
        // Negative and oversized lengths, and types Keel does not speak, are errors.
        let mut out = Vec::new();
        let q = QuorumPacket {
            kind: 2,
            zxid: 1,
            data: Some(Payload::from(vec![0; 64])),
            auth: None,
        };
        encode_packet(&q, &mut out);
        assert!(matches!(
            decode_packet(&out, 16),
            Err(WireError::TooLarge { .. })
        ));
        out[12..16].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(decode_packet(&out, 1 << 20).is_err());
        let activate = QuorumPacket {
            kind: packet_type::COMMITANDACTIVATE,
            zxid: 0,
            data: None,
            auth: None,
        };
        assert_eq!(
            from_quorum_packet(&activate),
            Err(WireError::UnknownType(9))
        );
        let revalidate = |len: usize| QuorumPacket {
            kind: packet_type::REVALIDATE,
            zxid: -1,
            data: Some(Payload::from(vec![0; len])),
            auth: None,
        };
        for len in [0, 8, 10, 11, 13] {
            assert!(from_quorum_packet(&revalidate(len)).is_err(), "{len} bytes");
        }
        let bad_epoch = QuorumPacket {
            kind: packet_type::NEWLEADER,
            zxid: 5,
            data: None,
            auth: None,
        };
        assert!(from_quorum_packet(&bad_epoch).is_err());
    }
}
