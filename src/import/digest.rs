//! digest: ZooKeeper's tree digest (`DigestCalculator`, `AdHash`), to check an import against
//! the digest ZooKeeper logged with its last txn.
//!
//! Node digest = CRC32 over `path ‖ data ‖ czxid mzxid pzxid ctime mtime (longs) version
//! cversion aversion (ints) ephemeralOwner (long)`, big-endian, the root hashed as `""`, nodes
//! under `/zookeeper/` contributing 0; the tree digest is the wrapping sum of node digests.

use crate::tree::DataTree;

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        // i < 256 == table.len(): the loop bound.
        #[allow(clippy::indexing_slicing)]
        {
            table[i] = crc;
        }
        i += 1;
    }
    table
}

static CRC32_TABLE: [u32; 256] = crc32_table();

/// Continues a CRC-32 (IEEE, java.util.zip.CRC32) over `bytes`; start from `!0`, finish with `!`.
fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        let index = usize::from((crc as u8) ^ byte);
        crc = (crc >> 8) ^ CRC32_TABLE.get(index).copied().unwrap_or(0);
    }
    crc
}

/// CRC-32 (IEEE) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    !crc32_update(!0, bytes)
}

/// The tree digest ZooKeeper would compute for `tree`.
pub fn tree_digest(tree: &DataTree) -> i64 {
    let mut sum: i64 = 0;
    tree.walk(|path, node| {
        if path.starts_with("/zookeeper/") {
            return;
        }
        let path = if path == "/" { "" } else { path };
        let stat = node.stored_stat();
        let mut fixed = Vec::with_capacity(60);
        for long in [
            stat.czxid,
            stat.mzxid,
            stat.pzxid,
            stat.ctime_ms,
            stat.mtime_ms,
        ] {
            fixed.extend_from_slice(&long.to_be_bytes());
        }
        for int in [stat.version, stat.cversion, stat.aversion] {
            fixed.extend_from_slice(&int.to_be_bytes());
        }
        fixed.extend_from_slice(&stat.ephemeral_owner.to_be_bytes());
        let mut crc = crc32_update(!0, path.as_bytes());
        if let Some(data) = node.data() {
            crc = crc32_update(crc, data);
        }
        crc = !crc32_update(crc, &fixed);
        sum = sum.wrapping_add(i64::from(crc));
    });
    sum
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
