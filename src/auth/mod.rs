//! auth: SASL authentication for client sessions — the JAAS file that lists the users, and the
//! server side of DIGEST-MD5.
//!
//! Owns: reading JAAS files (`jaas`) and the DIGEST-MD5 exchange (`sasl_digest`).
//! Must not: know about `Config`, sessions or sockets; callers pass paths, section names, user
//! maps and tokens. Apart from `jaas::JaasConfig::from_file` / `load_server_users` (file reads)
//! and `OsRandomNonce` (getrandom), everything here is pure.
//! Invariants: passwords never appear in `Debug` output or error messages; a failed exchange
//! stays failed.

pub mod jaas;
pub mod sasl_digest;

use std::collections::HashMap;
use std::sync::Arc;

pub use jaas::{load_server_users, JaasConfig, JaasError, JaasSection};
pub use sasl_digest::{
    DigestMd5Server, NonceSource, OsRandomNonce, SaslError, SaslStep, ZK_SASL_PROTOCOL,
    ZK_SASL_REALM,
};

/// A DIGEST-MD5 server as ZooKeeper configures it (realm `zk-sasl-md5`, digest-uri
/// `zookeeper/zk-sasl-md5`), with nonces from the kernel.
pub fn new_digest_server(users: &Arc<HashMap<String, String>>) -> DigestMd5Server {
    DigestMd5Server::new(Arc::clone(users), ZK_SASL_REALM, OsRandomNonce)
}

/// One GetSASLRequest token in, the SetSASLResponse token out, plus the user once the exchange
/// has just completed (add `sasl:<user>` to the connection's ids then, and only then).
///
/// # Errors
/// The exchange failed; reply AUTHFAILED and close the connection, as ZooKeeper does.
pub fn sasl_step(
    server: &mut DigestMd5Server,
    token: &[u8],
) -> Result<(Vec<u8>, Option<String>), SaslError> {
    match server.step(token)? {
        SaslStep::Challenge(challenge) => Ok((challenge, None)),
        SaslStep::Complete {
            authorized_id,
            final_token,
        } => Ok((final_token, Some(authorized_id))),
    }
}
