//! Znode path rules: ZooKeeper's `PathUtils.validatePath`, and the parent/name split used by
//! prep and apply.

use crate::proto::ErrorCode;

/// The paths ZooKeeper owns; delete refuses them (`DataTree.isSpecialPath`).
pub const SPECIAL_PATHS: [&str; 4] = ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"];

/// Checks a path as ZooKeeper's `PathUtils.validatePath` does.
///
/// The rules work on UTF-16 code units as Java sees them: a character outside the BMP is a
/// surrogate pair to Java, and surrogates are rejected, so every such character is invalid here.
///
/// # Errors
/// `BadArguments` if the path is empty, relative, ends with `/` (except the root), has an empty
/// segment, a `.` or `..` segment, or a forbidden character (NUL, U+0001–U+001F,
/// U+007F–U+009F, U+D800–U+F8FF, U+FFF0–U+FFFF, anything above U+FFFF).
pub fn validate_path(path: &str) -> Result<(), ErrorCode> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(ErrorCode::BadArguments);
    };
    // A trailing `/` or a `//` makes an empty segment.
    if rest.is_empty() || rest.split('/').all(valid_name) {
        Ok(())
    } else {
        Err(ErrorCode::BadArguments)
    }
}

/// Whether `name` may be one segment of a valid path (`validate_path`'s rules): not empty,
/// `.` or `..`, and without `/` or a forbidden character.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(is_forbidden_char)
}

fn is_forbidden_char(c: char) -> bool {
    let code = u32::from(c);
    code == 0
        || (0x01..=0x1F).contains(&code)
        || (0x7F..=0x9F).contains(&code)
        || (0xD800..=0xF8FF).contains(&code)
        || (0xFFF0..=0xFFFF).contains(&code)
        || code > 0xFFFF
}

/// Splits a path at its last `/` into (parent, name) as ZooKeeper's `lastIndexOf('/')` does.
/// The parent of a top-level node is `""`, ZooKeeper's alias of the root.
pub(crate) fn split_parent(path: &str) -> Option<(&str, &str)> {
    path.rsplit_once('/')
}

/// The parent for delete and deleteContainer (`getParentPathAndValidate`).
///
/// # Errors
/// `BadArguments` for a path with no `/`, with a NUL, or one of the special paths.
pub(crate) fn parent_for_delete(path: &str) -> Result<&str, ErrorCode> {
    if path.contains('\0') || SPECIAL_PATHS.contains(&path) {
        return Err(ErrorCode::BadArguments);
    }
    split_parent(path)
        .map(|(parent, _)| parent)
        .ok_or(ErrorCode::BadArguments)
}

/// The path ZooKeeper's watches use for a parent: the root alias `""` is reported as `/`.
pub(crate) fn watch_path(parent: &str) -> &str {
    if parent.is_empty() {
        "/"
    } else {
        parent
    }
}

/// The path length as Java's `String.length()` counts it (UTF-16 code units), which is what
/// ZooKeeper's `approximate_data_size` adds up.
pub(crate) fn java_length(path: &str) -> u64 {
    let units = if path.is_ascii() {
        path.len()
    } else {
        path.encode_utf16().count()
    };
    u64::try_from(units).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_cursor_rebuilds_pre_order_paths_and_refuses_jumps() {
        let mut cursor = PathCursor::default();
        let walked: Vec<Option<String>> = [(0, ""), (1, "a"), (2, "b"), (1, "c"), (2, "d")]
            .iter()
            .map(|&(depth, name)| cursor.enter(depth, name).map(str::to_string))
            .collect();
        let expected = ["/", "/a", "/a/b", "/c", "/c/d"].map(|p| Some(p.to_string()));
        assert_eq!(walked, expected);
        assert_eq!(cursor.enter(4, "x"), None, "two levels down at once");
        assert_eq!(cursor.enter(0, ""), None, "a second root");
        assert_eq!(PathCursor::default().enter(1, "a"), None, "no root first");
    }

    #[test]
    fn valid_paths_pass() {
        // Ordinary, dotted-but-not-relative and BMP non-ASCII paths are accepted.
        for path in [
            "/", "/a", "/a/b/c", "/a/...", "/..a", "/a./b", "/a/.b", "/é/中", "/a b",
        ] {
            assert_eq!(validate_path(path), Ok(()), "{path:?}");
        }
    }

    #[test]
    fn invalid_paths_fail_with_bad_arguments() {
        // Every rule of PathUtils.validatePath rejects its example.
        let bad = [
            "",
            "a",
            "a/b",
            "/a/",
            "//",
            "/a//b",
            "/.",
            "/..",
            "/a/.",
            "/a/..",
            "/a/./b",
            "/a/../b",
            "/a\0b",
            "/a\u{1}",
            "/a\u{1F}",
            "/a\u{7F}",
            "/a\u{9F}",
            "/a\u{E000}",
            "/a\u{F8FF}",
            "/a\u{FFF0}",
            "/a\u{FFFF}",
            "/a\u{1F600}",
        ];
        for path in bad {
            assert_eq!(
                validate_path(path),
                Err(ErrorCode::BadArguments),
                "{path:?}"
            );
        }
    }

    #[test]
    fn delete_parent_rejects_special_paths() {
        // The root and the /zookeeper system nodes cannot be deleted; others split normally.
        for path in SPECIAL_PATHS {
            assert_eq!(parent_for_delete(path), Err(ErrorCode::BadArguments));
        }
        assert_eq!(parent_for_delete("x"), Err(ErrorCode::BadArguments));
        assert_eq!(parent_for_delete("/a\0"), Err(ErrorCode::BadArguments));
        assert_eq!(parent_for_delete("/a"), Ok(""));
        assert_eq!(parent_for_delete("/a/b"), Ok("/a"));
        assert_eq!(parent_for_delete("/zookeeper/x"), Ok("/zookeeper"));
    }

    #[test]
    fn java_length_counts_utf16_units() {
        // ASCII counts bytes, BMP characters count one, astral characters count two.
        assert_eq!(java_length("/abc"), 4);
        assert_eq!(java_length("/é"), 2);
        assert_eq!(java_length("/\u{1F600}"), 3);
    }
}

/// Full paths rebuilt from a pre-order walk of (depth, name) pairs — the root at depth 0 with
/// any name, each later node one level at most below the previous one — as `walk_names`
/// yields them and a snapshot stores them.
#[derive(Debug, Default)]
pub struct PathCursor {
    path: String,
    /// `path.len()` of the open node at each depth (index 0: the root's, 0).
    lengths: Vec<usize>,
}

impl PathCursor {
    /// The path of the node at `depth` named `name`, or `None` if the pair does not follow
    /// the pre-order of the pairs before it.
    pub fn enter(&mut self, depth: usize, name: &str) -> Option<&str> {
        if depth > self.lengths.len() || (depth == 0) != self.lengths.is_empty() {
            return None;
        }
        if depth > 0 {
            self.lengths.truncate(depth);
            self.path
                .truncate(self.lengths.last().copied().unwrap_or(0));
            self.path.push('/');
            self.path.push_str(name);
        }
        self.lengths.push(self.path.len());
        Some(if depth == 0 { "/" } else { &self.path })
    }
}
