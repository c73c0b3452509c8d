//! The `org.apache.zookeeper.data` records: Id, ACL, Stat.

use super::jute::{Reader, Writer};
use super::ProtoError;
use std::sync::Arc;

/// An authenticated identity or an ACL subject: `scheme:id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    pub scheme: Arc<str>,
    pub id: Arc<str>,
}

impl Id {
    pub fn new(scheme: &str, id: &str) -> Id {
        Id {
            scheme: Arc::from(scheme),
            id: Arc::from(id),
        }
    }

    pub fn read(r: &mut Reader<'_>) -> Result<Id, ProtoError> {
        let scheme = r.read_string()?;
        let id = r.read_string()?;
        Ok(Id::new(scheme, id))
    }

    pub fn write(&self, w: &mut Writer<'_>) {
        w.write_string(&self.scheme);
        w.write_string(&self.id);
    }
}

/// One ACL entry: permission bits for an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acl {
    pub perms: i32,
    pub id: Id,
}

impl Acl {
    pub fn new(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            id: Id::new(scheme, id),
        }
    }

    pub fn read(r: &mut Reader<'_>) -> Result<Acl, ProtoError> {
        let perms = r.read_i32()?;
        let id = Id::read(r)?;
        Ok(Acl { perms, id })
    }

    pub fn write(&self, w: &mut Writer<'_>) {
        w.write_i32(self.perms);
        self.id.write(w);
    }

    /// `vector<ACL>`; a null vector reads as empty.
    pub fn read_vec(r: &mut Reader<'_>) -> Result<Vec<Acl>, ProtoError> {
        let count = r.read_vec_len()?.unwrap_or(0);
        let mut out = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            out.push(Acl::read(r)?);
        }
        Ok(out)
    }

    pub fn write_vec(acls: &[Acl], w: &mut Writer<'_>) {
        w.write_vec_len(acls.len());
        for acl in acls {
            acl.write(w);
        }
    }
}

/// `[ALL, world:anyone]`.
pub fn open_acl_unsafe() -> Vec<Acl> {
    vec![Acl::new(super::perms::ALL, "world", "anyone")]
}

/// `[READ, world:anyone]`.
pub fn read_acl_unsafe() -> Vec<Acl> {
    vec![Acl::new(super::perms::READ, "world", "anyone")]
}

/// The client-visible Stat record (68 bytes on the wire; pzxid is last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

impl Stat {
    pub const WIRE_BYTES: usize = 68;

    pub fn read(r: &mut Reader<'_>) -> Result<Stat, ProtoError> {
        Ok(Stat {
            czxid: r.read_i64()?,
            mzxid: r.read_i64()?,
            ctime: r.read_i64()?,
            mtime: r.read_i64()?,
            version: r.read_i32()?,
            cversion: r.read_i32()?,
            aversion: r.read_i32()?,
            ephemeral_owner: r.read_i64()?,
            data_length: r.read_i32()?,
            num_children: r.read_i32()?,
            pzxid: r.read_i64()?,
        })
    }

    pub fn write(&self, w: &mut Writer<'_>) {
        w.write_i64(self.czxid);
        w.write_i64(self.mzxid);
        w.write_i64(self.ctime);
        w.write_i64(self.mtime);
        w.write_i32(self.version);
        w.write_i32(self.cversion);
        w.write_i32(self.aversion);
        w.write_i64(self.ephemeral_owner);
        w.write_i32(self.data_length);
        w.write_i32(self.num_children);
        w.write_i64(self.pzxid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_68_bytes_with_pzxid_last() {
        // The Stat record's layout matches ZooKeeper's: 68 bytes, pzxid in the last 8.
        let stat = Stat {
            pzxid: 0x1122_3344_5566_7788,
            num_children: 3,
            ..Stat::default()
        };
        let mut out = Vec::new();
        stat.write(&mut Writer::new(&mut out));
        assert_eq!(out.len(), Stat::WIRE_BYTES);
        assert_eq!(&out[60..], &0x1122_3344_5566_7788i64.to_be_bytes());
        assert_eq!(Stat::read(&mut Reader::new(&out)).unwrap(), stat);
    }

    #[test]
    fn acl_vec_round_trips() {
        // A vector of ACLs reads back equal.
        let acls = vec![
            Acl::new(31, "world", "anyone"),
            Acl::new(1, "digest", "u:x"),
        ];
        let mut out = Vec::new();
        Acl::write_vec(&acls, &mut Writer::new(&mut out));
        assert_eq!(Acl::read_vec(&mut Reader::new(&out)).unwrap(), acls);
    }
}
