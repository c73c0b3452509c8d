//! ACL checks and fix-ups: ZooKeeper's `ZooKeeperServer.checkACL`,
//! `PrepRequestProcessor.fixupACL` and the built-in authentication providers' `matches` and
//! `isValid` (ip, digest, sasl, x509).

use crate::proto::{perms, Acl, ErrorCode, Id};
use base64::Engine;
use sha1::{Digest, Sha1};
use std::net::Ipv6Addr;

/// Why an ACL list was refused; every reason is `InvalidAcl` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("an ACL list must not be empty")]
    Empty,
    #[error("auth scheme used but the client has no authenticated ids")]
    NoAuthenticatedIds,
    #[error("scheme {scheme:?} is unknown or id {id:?} is malformed")]
    BadId { scheme: String, id: String },
}

impl AclError {
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidAcl
    }
}

impl From<AclError> for ErrorCode {
    fn from(error: AclError) -> ErrorCode {
        error.code()
    }
}

/// Whether `ids` may do `perm` on a node with `acl`.
///
/// An empty ACL allows everything; an id with scheme `super` bypasses every check. An entry
/// grants when its bits include `perm` and it is `world:anyone` or some id of the same scheme
/// matches it: `digest`, `sasl` and `x509` by exact string, `ip` by address under the entry's
/// `/bits` mask (IPv4 and IPv6). Entries of other schemes (including a stored `auth`) match
/// nothing, as ZooKeeper has no provider for them.
pub fn check_acl(acl: &[Acl], perm: i32, ids: &[Id]) -> bool {
    if acl.is_empty() {
        return true;
    }
    if ids.iter().any(|id| &*id.scheme == "super") {
        return true;
    }
    acl.iter()
        .filter(|entry| entry.perms & perm != 0)
        .any(|entry| entry_matches(entry, ids))
}

fn entry_matches(entry: &Acl, ids: &[Id]) -> bool {
    let scheme = &*entry.id.scheme;
    if scheme == "world" && &*entry.id.id == "anyone" {
        return true;
    }
    ids.iter()
        .filter(|id| &*id.scheme == scheme)
        .any(|id| match scheme {
            "digest" | "sasl" | "x509" => id.id == entry.id.id,
            "ip" => ip_matches(&id.id, &entry.id.id),
            _ => false,
        })
}

/// Validates and expands an ACL list for create or setACL (`fixupACL`).
///
/// # Errors
/// `InvalidAcl` (see [`fixup_acl_reason`] for the reasons).
pub fn fixup_acl(acl: &[Acl], ids: &[Id]) -> Result<Vec<Acl>, ErrorCode> {
    fixup_acl_reason(acl, ids).map_err(ErrorCode::from)
}

/// [`fixup_acl`] with the reason kept: duplicates are dropped (first kept); `world:anyone`
/// passes; `auth:<anything>` becomes one entry per authenticated id of the caller (digest,
/// sasl, x509 — an `ip` id does not count as authenticated); any other entry must be of a known
/// scheme with a well-formed id.
///
/// # Errors
/// `Empty` for no entries, `NoAuthenticatedIds` for `auth` without a usable id, `BadId` for an
/// unknown scheme or a malformed id.
pub fn fixup_acl_reason(acl: &[Acl], ids: &[Id]) -> Result<Vec<Acl>, AclError> {
    let mut unique: Vec<&Acl> = Vec::with_capacity(acl.len());
    for entry in acl {
        if !unique.contains(&entry) {
            unique.push(entry);
        }
    }
    if unique.is_empty() {
        return Err(AclError::Empty);
    }
    let mut fixed = Vec::with_capacity(unique.len());
    for entry in unique {
        let (scheme, id) = (&*entry.id.scheme, &*entry.id.id);
        if scheme == "world" && id == "anyone" {
            fixed.push(entry.clone());
        } else if scheme == "auth" {
            let before_count = fixed.len();
            let authenticated = ids.iter().filter(|id| is_authenticated_scheme(&id.scheme));
            fixed.extend(authenticated.map(|id| Acl {
                perms: entry.perms,
                id: id.clone(),
            }));
            if fixed.len() == before_count {
                return Err(AclError::NoAuthenticatedIds);
            }
        } else if is_valid_id(scheme, id) {
            fixed.push(entry.clone());
        } else {
            return Err(AclError::BadId {
                scheme: scheme.to_string(),
                id: id.to_string(),
            });
        }
    }
    Ok(fixed)
}

/// Providers whose ids count as "authenticated" for `auth` expansion (`isAuthenticated`).
fn is_authenticated_scheme(scheme: &str) -> bool {
    matches!(scheme, "digest" | "sasl" | "x509")
}

/// The providers' `isValid` for an ACL id.
fn is_valid_id(scheme: &str, id: &str) -> bool {
    match scheme {
        // Java's `id.split(":").length == 2`, where split drops trailing empty strings.
        "digest" => java_split_count(id, ':') == 2,
        "ip" => parse_ip_expression(id).is_some(),
        "sasl" => is_kerberos_name(id),
        "x509" => true,
        _ => false,
    }
}

/// How many pieces Java's `String.split` (no limit) returns: trailing empty pieces are dropped,
/// and an input of only separators yields none.
fn java_split_count(text: &str, separator: char) -> usize {
    if text.is_empty() {
        return 1;
    }
    let pieces: Vec<&str> = text.split(separator).collect();
    let trailing_empty = pieces
        .iter()
        .rev()
        .take_while(|piece| piece.is_empty())
        .count();
    pieces.len() - trailing_empty
}

/// `KerberosName`'s parse: a name with `@` must be `primary[/instance]@realm`, none of the
/// parts containing `/` or `@`; a name without `@` is always accepted.
fn is_kerberos_name(name: &str) -> bool {
    let Some((principal, realm)) = name.split_once('@') else {
        return true;
    };
    !realm.contains(['/', '@']) && principal.matches('/').count() <= 1
}

/// `digest` ids are `user:base64(sha1("user:password"))`.
pub fn digest_id(user_colon_password: &str) -> String {
    let user = user_colon_password
        .split_once(':')
        .map_or(user_colon_password, |(user, _)| user);
    let hash = Sha1::digest(user_colon_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// getACL without ADMIN shows digest ids as `user:x`, hiding the password hash.
pub fn mask_digest_acl(acl: &[Acl]) -> Vec<Acl> {
    acl.iter()
        .map(|entry| {
            if &*entry.id.scheme != "digest" {
                return entry.clone();
            }
            let user = entry
                .id
                .id
                .split_once(':')
                .map_or(&*entry.id.id, |(u, _)| u);
            Acl::new(entry.perms, "digest", &format!("{user}:x"))
        })
        .collect()
}

/// The ACL a getACL caller may see, following ZooKeeper: the full list with ADMIN (a super
/// id has it), else with digest hashes masked.
pub fn visible_acl(acl: &[Acl], ids: &[Id]) -> Vec<Acl> {
    if check_acl(acl, perms::ADMIN, ids) {
        acl.to_vec()
    } else {
        mask_digest_acl(acl)
    }
}

/// An address as bytes: 4 for IPv4 (`a.b.c.d`, each part a Java int in 0..=255), 16 for IPv6.
fn ip_bytes(address: &str) -> Option<Vec<u8>> {
    if address.contains(':') {
        return address
            .parse::<Ipv6Addr>()
            .ok()
            .map(|v6| v6.octets().to_vec());
    }
    let parts: Vec<&str> = address.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    parts
        .iter()
        .map(|part| part.parse::<i32>().ok().and_then(|v| u8::try_from(v).ok()))
        .collect()
}

/// An `ip` ACL id: `address[/bits]` with bits in `0..=address width`.
fn parse_ip_expression(expression: &str) -> Option<(Vec<u8>, usize)> {
    let (address, bits) = match expression.split_once('/') {
        Some((address, bits)) => (address, Some(bits)),
        None => (expression, None),
    };
    let bytes = ip_bytes(address)?;
    let width_bits = bytes.len() * 8;
    let bits = match bits {
        Some(bits) => usize::try_from(bits.parse::<i32>().ok()?).ok()?,
        None => width_bits,
    };
    (bits <= width_bits).then_some((bytes, bits))
}

fn mask_bits(bytes: &mut [u8], bits: usize) {
    for (index, byte) in bytes.iter_mut().enumerate() {
        let kept_bits = bits.saturating_sub(index * 8).min(8);
        let mask = if kept_bits == 0 {
            0
        } else {
            0xFFu8 << (8 - kept_bits)
        };
        *byte &= mask;
    }
}

/// `IPAuthenticationProvider.matches`: both addresses masked to the entry's prefix length.
/// Addresses of different families never match.
fn ip_matches(remote: &str, expression: &str) -> bool {
    let Some((mut acl_bytes, bits)) = parse_ip_expression(expression) else {
        return false;
    };
    let Some(mut remote_bytes) = ip_bytes(remote) else {
        return false;
    };
    if remote_bytes.len() != acl_bytes.len() {
        return false;
    }
    mask_bits(&mut acl_bytes, bits);
    mask_bits(&mut remote_bytes, bits);
    acl_bytes == remote_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::perms::{ADMIN, ALL, CREATE, DELETE, READ, WRITE};

    fn ip(address: &str) -> Id {
        Id::new("ip", address)
    }

    #[test]
    fn digest_id_matches_zookeeper() {
        // The digest of "super:test" is the value ZooKeeper's own docs use for superDigest.
        assert_eq!(
            digest_id("super:test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
        assert!(digest_id("nocolon").starts_with("nocolon:"));
    }

    #[test]
    fn world_digest_and_empty_acls() {
        // world:anyone grants its bits to everyone; digest needs the exact id; empty allows.
        let acl = vec![
            Acl::new(READ, "world", "anyone"),
            Acl::new(ALL, "digest", &digest_id("bob:pw")),
        ];
        let nobody: Vec<Id> = vec![ip("10.0.0.1")];
        let bob = vec![ip("10.0.0.1"), Id::new("digest", &digest_id("bob:pw"))];
        let eve = vec![Id::new("digest", &digest_id("bob:wrong"))];
        assert!(check_acl(&acl, READ, &nobody));
        assert!(!check_acl(&acl, WRITE, &nobody));
        assert!(check_acl(&acl, WRITE | DELETE, &bob));
        assert!(!check_acl(&acl, WRITE, &eve));
        assert!(check_acl(&[], ADMIN, &nobody));
    }

    #[test]
    fn super_bypasses_everything() {
        // A caller holding a super id passes even an ACL that names nobody it has.
        let acl = vec![Acl::new(READ, "digest", "alice:xyz")];
        let root = vec![Id::new("super", ""), Id::new("digest", "root:abc")];
        assert!(check_acl(&acl, ADMIN, &root));
    }

    #[test]
    fn ip_masks_v4_and_v6() {
        // An ip entry matches addresses in its prefix, rejects others and other families.
        let acl = vec![
            Acl::new(READ, "ip", "10.1.0.0/16"),
            Acl::new(WRITE, "ip", "192.168.1.7"),
            Acl::new(CREATE, "ip", "2001:db8::/32"),
            Acl::new(DELETE, "ip", "10.0.0.0/0"),
        ];
        assert!(check_acl(&acl, READ, &[ip("10.1.200.3")]));
        assert!(!check_acl(&acl, READ, &[ip("10.2.0.1")]));
        assert!(check_acl(&acl, WRITE, &[ip("192.168.1.7")]));
        assert!(!check_acl(&acl, WRITE, &[ip("192.168.1.8")]));
        assert!(check_acl(&acl, CREATE, &[ip("2001:db8:ffff::1")]));
        assert!(!check_acl(&acl, CREATE, &[ip("2001:db9::1")]));
        assert!(!check_acl(&acl, CREATE, &[ip("10.1.0.1")]));
        assert!(check_acl(&acl, DELETE, &[ip("99.99.99.99")]));
        assert!(!check_acl(&acl, DELETE, &[ip("::1")]));
        assert!(!check_acl(
            &[Acl::new(READ, "ip", "10.0.0.1/33")],
            READ,
            &[ip("10.0.0.1")]
        ));
        assert!(ip_matches("10.0.0.129", "10.0.0.128/25"));
        assert!(!ip_matches("10.0.0.127", "10.0.0.128/25"));
    }

    #[test]
    fn sasl_and_unknown_schemes() {
        // sasl matches the exact principal; a stored auth entry or unknown scheme matches none.
        let acl = vec![
            Acl::new(READ, "sasl", "zk/host@REALM"),
            Acl::new(WRITE, "auth", ""),
            Acl::new(ADMIN, "key", "k"),
        ];
        assert!(check_acl(&acl, READ, &[Id::new("sasl", "zk/host@REALM")]));
        assert!(!check_acl(&acl, READ, &[Id::new("sasl", "zk@REALM")]));
        assert!(!check_acl(&acl, WRITE, &[Id::new("auth", "")]));
        assert!(!check_acl(&acl, ADMIN, &[Id::new("key", "k")]));
    }

    #[test]
    fn fixup_expands_auth_and_validates() {
        // auth expands to the digest ids (not ip); bad ids and empty lists are InvalidAcl.
        let ids = vec![ip("127.0.0.1"), Id::new("digest", "u:h")];
        let fixed = fixup_acl(&[Acl::new(ALL, "auth", "whatever")], &ids);
        assert_eq!(fixed, Ok(vec![Acl::new(ALL, "digest", "u:h")]));
        assert_eq!(
            fixup_acl(&[Acl::new(ALL, "auth", "")], &[ip("127.0.0.1")]),
            Err(ErrorCode::InvalidAcl)
        );
        assert_eq!(fixup_acl(&[], &ids), Err(ErrorCode::InvalidAcl));
        let duplicated = vec![Acl::new(ALL, "world", "anyone"); 3];
        assert_eq!(
            fixup_acl(&duplicated, &ids),
            Ok(vec![Acl::new(ALL, "world", "anyone")])
        );
        for (scheme, id) in [
            ("world", "someone"),
            ("digest", "nouser"),
            ("digest", "a:b:c"),
            ("ip", "300.1.1.1"),
            ("ip", "1.2.3"),
            ("ip", "10.0.0.0/40"),
            ("sasl", "a@b@c"),
            ("super", ""),
            ("nosuch", "x"),
        ] {
            let acl = [Acl::new(ALL, scheme, id)];
            assert_eq!(
                fixup_acl(&acl, &ids),
                Err(ErrorCode::InvalidAcl),
                "{scheme}:{id}"
            );
        }
        for (scheme, id) in [
            ("digest", "a:b"),
            ("digest", "a:b:"),
            ("ip", "10.0.0.0/8"),
            ("ip", "::1"),
            ("sasl", "zk/host@REALM"),
            ("sasl", "plain"),
        ] {
            let acl = [Acl::new(READ, scheme, id)];
            assert_eq!(fixup_acl(&acl, &ids), Ok(acl.to_vec()), "{scheme}:{id}");
        }
    }

    #[test]
    fn masking_hides_digest_hashes() {
        // Without ADMIN a reader sees digest ids as user:x; with ADMIN the real hash.
        let acl = vec![
            Acl::new(READ, "world", "anyone"),
            Acl::new(ADMIN, "digest", "bob:hash="),
        ];
        let masked = visible_acl(&acl, &[ip("1.2.3.4")]);
        assert_eq!(masked[1].id.id.as_ref(), "bob:x");
        assert_eq!(masked[0], acl[0]);
        assert_eq!(visible_acl(&acl, &[Id::new("digest", "bob:hash=")]), acl);
    }
}
