//! The server side of SASL DIGEST-MD5 (RFC 2831) as the JDK's `DigestMD5Server` speaks it for
//! ZooKeeper: `Sasl.createSaslServer("DIGEST-MD5", "zookeeper", "zk-sasl-md5", null, handler)`.
//!
//! The exchange over opcode 102 (GetSASLRequest / SetSASLResponse):
//! 1. The client sends an empty token (Java client, kazoo) and the server answers the challenge
//!    `realm="zk-sasl-md5",nonce="<40 base64 chars>",charset=utf-8,algorithm=md5-sess`.
//!    With no properties the JDK offers no `qop` directive, which means "auth" only.
//! 2. The client sends its digest-response; the server checks it and answers
//!    `rspauth=<32 hex>`. Authentication is then complete.
//! 3. A client may send one more empty token; it gets an empty token back.
//!
//! Checks follow `DigestMD5Server.validateClientResponse`: charset must be `utf-8` if present,
//! the realm must be the server's, the nonce must be ours, the nonce count must be 1 (only
//! initial authentication exists), qop must be `auth`, digest-uri must equal
//! `<protocol>/<realm>` ignoring case, and the response must match the one computed from the
//! user's password. The authorized id is the user name (ZooKeeper's callback handler derives it
//! from the authentication id, not from `authzid`).
//!
//! Pure: no clock, no randomness, no IO inside. Nonces come from the injected `NonceSource`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use md5::{Digest, Md5};

/// The realm and server name ZooKeeper hard-wires for DIGEST-MD5.
pub const ZK_SASL_REALM: &str = "zk-sasl-md5";
/// The SASL protocol (service) name ZooKeeper uses.
pub const ZK_SASL_PROTOCOL: &str = "zookeeper";
/// Random bytes in a nonce before base64, as in the JDK (`RAW_NONCE_SIZE`): 40 characters.
pub const NONCE_RAW_BYTES: usize = 30;
/// The longest client response accepted, in bytes (the JDK's `MAX_RESPONSE_LENGTH`).
pub const RESPONSE_BYTES_MAX: usize = 4096;
/// The only nonce count accepted: subsequent authentication is not supported.
const NONCE_COUNT: &str = "00000001";

/// Why a DIGEST-MD5 exchange failed; one line, for the server log (the client only sees
/// AUTHFAILED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("DIGEST-MD5 response of {length_bytes} bytes exceeds {RESPONSE_BYTES_MAX}")]
    ResponseTooLong { length_bytes: usize },
    #[error("DIGEST-MD5 response is malformed: {0}")]
    Malformed(String),
    #[error("DIGEST-MD5 response sent {0} more than once")]
    DuplicateDirective(String),
    #[error("DIGEST-MD5 response has no {0}")]
    MissingDirective(&'static str),
    #[error("DIGEST-MD5 response directive {directive} is invalid: {reason}")]
    InvalidDirective {
        directive: &'static str,
        reason: String,
    },
    #[error("DIGEST-MD5 realm {got:?} is not the server's realm {expected:?}")]
    RealmMismatch { got: String, expected: String },
    #[error("DIGEST-MD5 nonce does not match the one the server sent")]
    NonceMismatch,
    #[error("DIGEST-MD5 digest-uri {got:?} does not match {expected:?}")]
    DigestUriMismatch { got: String, expected: String },
    #[error("DIGEST-MD5 user {0:?} is unknown")]
    UnknownUser(String),
    #[error("DIGEST-MD5 response for user {0:?} does not match (wrong password?)")]
    ResponseMismatch(String),
    #[error("DIGEST-MD5 exchange already finished; a non-empty token arrived")]
    AlreadyComplete,
    #[error("DIGEST-MD5 exchange failed earlier and cannot continue")]
    Failed,
    #[error("no nonce available: {0}")]
    NonceUnavailable(String),
}

/// Supplies the server nonces. Production uses `OsRandomNonce`; tests inject fixed values.
/// A closure `FnMut() -> Result<String, SaslError>` is a `NonceSource`.
pub trait NonceSource {
    /// A fresh nonce: printable, and never reused.
    ///
    /// # Errors
    /// No randomness could be obtained.
    fn next_nonce(&mut self) -> Result<String, SaslError>;
}

impl<F> NonceSource for F
where
    F: FnMut() -> Result<String, SaslError>,
{
    fn next_nonce(&mut self) -> Result<String, SaslError> {
        self()
    }
}

/// Nonces of `NONCE_RAW_BYTES` bytes from the kernel (`getrandom(2)`), base64-encoded as the
/// JDK encodes them.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandomNonce;

impl NonceSource for OsRandomNonce {
    fn next_nonce(&mut self) -> Result<String, SaslError> {
        let mut raw = [0u8; NONCE_RAW_BYTES];
        // SAFETY: `raw` is writable for its whole length; getrandom writes at most that much.
        let written = unsafe { libc::getrandom(raw.as_mut_ptr().cast(), raw.len(), 0) };
        if usize::try_from(written).ok() != Some(raw.len()) {
            let error = std::io::Error::last_os_error();
            return Err(SaslError::NonceUnavailable(format!("getrandom: {error}")));
        }
        Ok(encode_nonce(&raw))
    }
}

/// Encodes raw nonce bytes as the JDK does (standard base64 with padding).
pub fn encode_nonce(raw: &[u8; NONCE_RAW_BYTES]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// What the server sends back for one client token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslStep {
    /// Not finished: send this token (possibly empty) and wait for the next one.
    Challenge(Vec<u8>),
    /// Authenticated: send `final_token` (`rspauth=...`) and add id `sasl:<authorized_id>`.
    Complete {
        authorized_id: String,
        final_token: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Initial,
    AwaitingResponse { nonce: Vec<u8> },
    Complete { authorized_id: String },
    Failed,
}

/// One DIGEST-MD5 exchange on one connection.
pub struct DigestMd5Server {
    users: Arc<HashMap<String, String>>,
    realm: String,
    digest_uri: String,
    nonce_source: Box<dyn NonceSource + Send>,
    state: State,
}

impl fmt::Debug for DigestMd5Server {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Users and passwords stay out of logs.
        formatter
            .debug_struct("DigestMd5Server")
            .field("realm", &self.realm)
            .field("digest_uri", &self.digest_uri)
            .field("user_count", &self.users.len())
            .field("state", &self.state)
            .finish()
    }
}

/// The directives of a client's digest-response that the server reads.
#[derive(Default)]
struct Directives {
    username: Option<Vec<u8>>,
    realm: Option<Vec<u8>>,
    nonce: Option<Vec<u8>>,
    cnonce: Option<Vec<u8>>,
    nonce_count: Option<Vec<u8>>,
    qop: Option<Vec<u8>>,
    digest_uri: Option<Vec<u8>>,
    response: Option<Vec<u8>>,
    maxbuf: Option<Vec<u8>>,
    charset: Option<Vec<u8>>,
    authzid: Option<Vec<u8>>,
}

impl DigestMd5Server {
    /// A ZooKeeper DIGEST-MD5 server: protocol `zookeeper`, digest-uri `zookeeper/<realm>`.
    /// `users` maps user names to passwords (the JAAS `user_<name>` options).
    pub fn new(
        users: impl Into<Arc<HashMap<String, String>>>,
        realm: &str,
        nonce_source: impl NonceSource + Send + 'static,
    ) -> DigestMd5Server {
        DigestMd5Server::with_protocol(users, ZK_SASL_PROTOCOL, realm, nonce_source)
    }

    /// A DIGEST-MD5 server for any protocol; the digest-uri is `<protocol>/<realm>`.
    pub fn with_protocol(
        users: impl Into<Arc<HashMap<String, String>>>,
        protocol: &str,
        realm: &str,
        nonce_source: impl NonceSource + Send + 'static,
    ) -> DigestMd5Server {
        DigestMd5Server {
            users: users.into(),
            realm: realm.to_owned(),
            digest_uri: format!("{protocol}/{realm}"),
            nonce_source: Box::new(nonce_source),
            state: State::Initial,
        }
    }

    /// Starts (or restarts) the exchange and returns the first challenge, with a fresh nonce.
    ///
    /// # Errors
    /// The nonce source failed.
    pub fn start(&mut self) -> Result<Vec<u8>, SaslError> {
        let nonce = self.nonce_source.next_nonce()?.into_bytes();
        let mut challenge = Vec::with_capacity(96 + self.realm.len() + nonce.len());
        challenge.extend_from_slice(b"realm=\"");
        push_quoted_value(&mut challenge, self.realm.as_bytes());
        challenge.extend_from_slice(b"\",nonce=\"");
        push_quoted_value(&mut challenge, &nonce);
        challenge.extend_from_slice(b"\",charset=utf-8,algorithm=md5-sess");
        self.state = State::AwaitingResponse { nonce };
        Ok(challenge)
    }

    /// Handles one client token. The first token is the client's initial response, which
    /// DIGEST-MD5 ignores (the JDK does too); the answer is the challenge. The second is the
    /// digest-response. Any failure is final: later calls return `SaslError::Failed`.
    ///
    /// # Errors
    /// The response is malformed or does not authenticate, or the exchange is over.
    pub fn step(&mut self, token: &[u8]) -> Result<SaslStep, SaslError> {
        if token.len() > RESPONSE_BYTES_MAX {
            self.state = State::Failed;
            return Err(SaslError::ResponseTooLong {
                length_bytes: token.len(),
            });
        }
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Initial => self.start().map(SaslStep::Challenge),
            State::AwaitingResponse { nonce } => {
                let (authorized_id, final_token) = self.verify_response(&nonce, token)?;
                self.state = State::Complete {
                    authorized_id: authorized_id.clone(),
                };
                Ok(SaslStep::Complete {
                    authorized_id,
                    final_token,
                })
            }
            State::Complete { authorized_id } if token.is_empty() => {
                self.state = State::Complete { authorized_id };
                Ok(SaslStep::Challenge(Vec::new()))
            }
            State::Complete { .. } => Err(SaslError::AlreadyComplete),
            State::Failed => Err(SaslError::Failed),
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Complete { .. })
    }

    /// The authenticated user once the exchange is complete.
    pub fn authorized_id(&self) -> Option<&str> {
        match &self.state {
            State::Complete { authorized_id } => Some(authorized_id),
            _ => None,
        }
    }

    /// Checks a digest-response against `nonce`; returns the user and the `rspauth` token.
    fn verify_response(&self, nonce: &[u8], token: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
        let directives = parse_directives(token)?;
        let username = self.check_directives(&directives, nonce)?;
        let digest_uri = directives.digest_uri.as_deref().unwrap_or_default();
        let password = self
            .users
            .get(&username)
            .ok_or_else(|| SaslError::UnknownUser(username.clone()))?;
        let inputs = DigestInputs {
            username: &username,
            realm: &self.realm,
            password,
            nonce,
            cnonce: directives.cnonce.as_deref().unwrap_or_default(),
            authzid: directives.authzid.as_deref(),
            digest_uri,
        };
        let expected = response_value(&inputs, "AUTHENTICATE");
        let received = directives.response.as_deref().unwrap_or_default();
        if !constant_time_eq(&expected, received) {
            return Err(SaslError::ResponseMismatch(username));
        }
        let mut final_token = b"rspauth=".to_vec();
        final_token.extend_from_slice(&response_value(&inputs, ""));
        Ok((username, final_token))
    }

    /// The JDK's directive checks, in its order; returns the user name.
    fn check_directives(&self, directives: &Directives, nonce: &[u8]) -> Result<String, SaslError> {
        let username = check_charset_maxbuf_username(directives)?;
        let realm = directives.realm.as_deref().unwrap_or_default();
        if realm != self.realm.as_bytes() {
            let got = String::from_utf8_lossy(realm).into_owned();
            return Err(SaslError::RealmMismatch {
                got,
                expected: self.realm.clone(),
            });
        }
        let client_nonce = directives
            .nonce
            .as_deref()
            .ok_or(SaslError::MissingDirective("nonce"))?;
        if !constant_time_eq(client_nonce, nonce) {
            return Err(SaslError::NonceMismatch);
        }
        if directives.cnonce.is_none() {
            return Err(SaslError::MissingDirective("cnonce"));
        }
        check_nonce_count(directives.nonce_count.as_deref())?;
        let qop = directives.qop.as_deref().unwrap_or(b"auth");
        if qop != b"auth" {
            let qop = String::from_utf8_lossy(qop);
            let reason = format!("{qop:?} is not offered; only auth is");
            return Err(SaslError::InvalidDirective {
                directive: "qop",
                reason,
            });
        }
        let digest_uri = directives
            .digest_uri
            .as_deref()
            .ok_or(SaslError::MissingDirective("digest-uri"))?;
        if !digest_uri.eq_ignore_ascii_case(self.digest_uri.as_bytes()) {
            let got = String::from_utf8_lossy(digest_uri).into_owned();
            return Err(SaslError::DigestUriMismatch {
                got,
                expected: self.digest_uri.clone(),
            });
        }
        if directives.response.is_none() {
            return Err(SaslError::MissingDirective("response"));
        }
        Ok(username)
    }
}

/// The first checks of the JDK: charset is `utf-8` if present, maxbuf is a number if present,
/// and the user name is present and UTF-8. Returns the user name.
fn check_charset_maxbuf_username(directives: &Directives) -> Result<String, SaslError> {
    if let Some(charset) = &directives.charset {
        if charset.as_slice() != b"utf-8" {
            let reason = format!("{:?} is not utf-8", String::from_utf8_lossy(charset));
            return Err(SaslError::InvalidDirective {
                directive: "charset",
                reason,
            });
        }
    }
    if let Some(maxbuf) = &directives.maxbuf {
        let parsed = std::str::from_utf8(maxbuf)
            .ok()
            .and_then(|text| text.parse::<u32>().ok());
        if parsed.is_none() {
            let reason = format!("{:?} is not a number", String::from_utf8_lossy(maxbuf));
            return Err(SaslError::InvalidDirective {
                directive: "maxbuf",
                reason,
            });
        }
    }
    let username = directives
        .username
        .as_deref()
        .ok_or(SaslError::MissingDirective("username"))?;
    String::from_utf8(username.to_vec()).map_err(|_| SaslError::InvalidDirective {
        directive: "username",
        reason: "not valid UTF-8".to_owned(),
    })
}

fn check_nonce_count(nonce_count: Option<&[u8]>) -> Result<(), SaslError> {
    let Some(nonce_count) = nonce_count else {
        return Ok(());
    };
    let text = std::str::from_utf8(nonce_count).unwrap_or("");
    if u32::from_str_radix(text, 16).ok() != Some(1) {
        let reason = format!("{:?} is not 00000001", String::from_utf8_lossy(nonce_count));
        return Err(SaslError::InvalidDirective {
            directive: "nc",
            reason,
        });
    }
    Ok(())
}

/// What the response value is computed from (RFC 2831 section 2.1.2.1).
struct DigestInputs<'a> {
    username: &'a str,
    realm: &'a str,
    password: &'a str,
    nonce: &'a [u8],
    cnonce: &'a [u8],
    authzid: Option<&'a [u8]>,
    digest_uri: &'a [u8],
}

/// The 32 lowercase hex digits of `KD(HEX(H(A1)), nonce:nc:cnonce:qop:HEX(H(A2)))` with qop
/// `auth` and `A1 = H(user:realm:password):nonce:cnonce[:authzid]` (md5-sess).
/// `method` is `AUTHENTICATE` for the client's response and empty for `rspauth`.
fn response_value(inputs: &DigestInputs<'_>, method: &str) -> [u8; 32] {
    let mut secret = Md5::new();
    secret.update(digest_string_bytes(inputs.username));
    secret.update(b":");
    secret.update(digest_string_bytes(inputs.realm));
    secret.update(b":");
    secret.update(digest_string_bytes(inputs.password));
    let mut a1 = Md5::new();
    a1.update(secret.finalize());
    a1.update(b":");
    a1.update(inputs.nonce);
    a1.update(b":");
    a1.update(inputs.cnonce);
    if let Some(authzid) = inputs.authzid {
        a1.update(b":");
        a1.update(authzid);
    }
    let a1_hex = hex32(&a1.finalize().into());
    let mut a2 = Md5::new();
    a2.update(method.as_bytes());
    a2.update(b":");
    a2.update(inputs.digest_uri);
    let a2_hex = hex32(&a2.finalize().into());
    let mut kd = Md5::new();
    kd.update(a1_hex);
    kd.update(b":");
    kd.update(inputs.nonce);
    kd.update(b":");
    kd.update(NONCE_COUNT.as_bytes());
    kd.update(b":");
    kd.update(inputs.cnonce);
    kd.update(b":auth:");
    kd.update(a2_hex);
    hex32(&kd.finalize().into())
}

/// RFC 2831 with charset=utf-8: a string whose characters all fit ISO-8859-1 is hashed in
/// ISO-8859-1, any other in UTF-8 (the JDK's `stringToByte_8859_1`).
fn digest_string_bytes(text: &str) -> Vec<u8> {
    if text.chars().all(|c| u32::from(c) <= 0xff) {
        text.chars()
            .filter_map(|c| u8::try_from(u32::from(c)).ok())
            .collect()
    } else {
        text.as_bytes().to_vec()
    }
}

fn hex32(digest: &[u8; 16]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

/// Compares without an early exit, so timing does not reveal how much of a digest matched.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

/// Appends a quoted-string body, escaping `"` and `\` (the JDK's `writeQuotedStringValue`).
fn push_quoted_value(out: &mut Vec<u8>, value: &[u8]) {
    for &byte in value {
        if byte == b'"' || byte == b'\\' {
            out.push(b'\\');
        }
        out.push(byte);
    }
}

fn is_lws(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// Parses `key=value, key="quoted value", ...` (RFC 2831's `1#` lists) like the JDK's
/// `parseDirectives`: keys are case-insensitive, empty elements are skipped, unknown keys are
/// ignored and a repeated known key is an error.
fn parse_directives(input: &[u8]) -> Result<Directives, SaslError> {
    let mut directives = Directives::default();
    let mut index = skip_lws(input, 0);
    while index < input.len() {
        if input[index] == b',' {
            index = skip_lws(input, index + 1);
            continue;
        }
        let key_start = index;
        while index < input.len() && input[index] != b'=' && !is_lws(input[index]) {
            if input[index] == b',' {
                return Err(SaslError::Malformed("a directive has no '='".to_owned()));
            }
            index += 1;
        }
        let key = String::from_utf8_lossy(&input[key_start..index]).to_ascii_lowercase();
        index = skip_lws(input, index);
        if index >= input.len() || input[index] != b'=' {
            return Err(SaslError::Malformed(format!("'=' expected after {key:?}")));
        }
        if key.is_empty() {
            return Err(SaslError::Malformed("empty directive name".to_owned()));
        }
        index = skip_lws(input, index + 1);
        let (value, next) = read_directive_value(input, index, &key)?;
        store_directive(&mut directives, &key, value)?;
        index = skip_lws(input, next);
        match input.get(index) {
            None | Some(b',') => {}
            Some(_) => {
                let reason = format!("',' expected after the value of {key:?}");
                return Err(SaslError::Malformed(reason));
            }
        }
    }
    Ok(directives)
}

fn skip_lws(input: &[u8], mut index: usize) -> usize {
    while index < input.len() && is_lws(input[index]) {
        index += 1;
    }
    index
}

/// Reads a quoted or bare value starting at `index`; returns it and the index after it.
fn read_directive_value(
    input: &[u8],
    mut index: usize,
    key: &str,
) -> Result<(Vec<u8>, usize), SaslError> {
    let mut value = Vec::new();
    if input.get(index) != Some(&b'"') {
        while index < input.len() && input[index] != b',' && !is_lws(input[index]) {
            value.push(input[index]);
            index += 1;
        }
        return Ok((value, index));
    }
    index += 1;
    loop {
        match input.get(index) {
            None => {
                let reason = format!("unterminated quoted value of {key:?}");
                return Err(SaslError::Malformed(reason));
            }
            Some(b'"') => return Ok((value, index + 1)),
            Some(b'\\') => {
                let escaped = input.get(index + 1).ok_or_else(|| {
                    SaslError::Malformed(format!("unterminated quoted value of {key:?}"))
                })?;
                value.push(*escaped);
                index += 2;
            }
            Some(byte) => {
                value.push(*byte);
                index += 1;
            }
        }
    }
}

fn store_directive(
    directives: &mut Directives,
    key: &str,
    value: Vec<u8>,
) -> Result<(), SaslError> {
    let slot = match key {
        "username" => &mut directives.username,
        "realm" => &mut directives.realm,
        "nonce" => &mut directives.nonce,
        "cnonce" => &mut directives.cnonce,
        "nc" => &mut directives.nonce_count,
        "qop" => &mut directives.qop,
        "digest-uri" => &mut directives.digest_uri,
        "response" => &mut directives.response,
        "maxbuf" => &mut directives.maxbuf,
        "charset" => &mut directives.charset,
        "authzid" => &mut directives.authzid,
        // cipher matters only for auth-conf, which is never offered; auth-params are ignored.
        _ => return Ok(()),
    };
    if slot.is_some() {
        return Err(SaslError::DuplicateDirective(key.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_nonce(nonce: &'static str) -> impl NonceSource + Send + 'static {
        move || Ok(nonce.to_owned())
    }

    fn users(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(user, password)| ((*user).to_owned(), (*password).to_owned()))
            .collect()
    }

    /// An independent RFC 2831 client computation, written with string formatting only.
    fn client_response(
        user: &str,
        password: &str,
        nonce: &str,
        cnonce: &str,
        method: &str,
    ) -> String {
        let md5_hex = |data: &[u8]| -> String {
            Md5::digest(data)
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect()
        };
        let secret = Md5::digest(format!("{user}:{ZK_SASL_REALM}:{password}").as_bytes());
        let mut a1 = secret.to_vec();
        a1.extend_from_slice(format!(":{nonce}:{cnonce}").as_bytes());
        let a2 = format!("{method}:zookeeper/zk-sasl-md5");
        let kd = format!(
            "{}:{nonce}:00000001:{cnonce}:auth:{}",
            md5_hex(&a1),
            md5_hex(a2.as_bytes())
        );
        md5_hex(kd.as_bytes())
    }

    fn zookeeper_response(user: &str, password: &str, nonce: &str) -> String {
        let response = client_response(user, password, nonce, "c1c2c3", "AUTHENTICATE");
        format!(
            "charset=utf-8,username=\"{user}\",realm=\"zk-sasl-md5\",nonce=\"{nonce}\",\
             nc=00000001,cnonce=\"c1c2c3\",digest-uri=\"zookeeper/zk-sasl-md5\",maxbuf=65536,\
             response={response},qop=auth"
        )
    }

    #[test]
    fn rfc_2831_worked_example_authenticates() {
        // RFC 2831 section 4's IMAP exchange (chris/secret) yields the RFC's rspauth.
        let mut server = DigestMd5Server::with_protocol(
            users(&[("chris", "secret")]),
            "imap",
            "elwood.innosoft.com",
            fixed_nonce("OA6MG9tEQGm2hh"),
        );
        let challenge = server.start().expect("challenge");
        assert_eq!(
            challenge,
            b"realm=\"elwood.innosoft.com\",nonce=\"OA6MG9tEQGm2hh\",\
              charset=utf-8,algorithm=md5-sess"
        );
        let response = b"charset=utf-8,username=\"chris\",realm=\"elwood.innosoft.com\",\
            nonce=\"OA6MG9tEQGm2hh\",nc=00000001,cnonce=\"OA6MHXh6VqTrRk\",\
            digest-uri=\"imap/elwood.innosoft.com\",\
            response=d388dad90d4bbd760a152321f2143af7,qop=auth";
        let step = server.step(response).expect("authenticates");
        assert_eq!(
            step,
            SaslStep::Complete {
                authorized_id: "chris".to_owned(),
                final_token: b"rspauth=ea40f60335c427b5527b84dbabcdfffd".to_vec(),
            }
        );
        assert!(server.is_complete());
        assert_eq!(server.authorized_id(), Some("chris"));
    }

    #[test]
    fn zookeeper_exchange_with_an_initial_empty_token() {
        // Empty token, challenge, response, rspauth, then a final empty token, as clients do.
        let nonce = "qWkHmx+rW9vYQNysvUOCA3gWLks3u9cL5rc9JJFi";
        let mut server = DigestMd5Server::new(
            users(&[("bob", "bobsecret")]),
            ZK_SASL_REALM,
            fixed_nonce(nonce),
        );
        let SaslStep::Challenge(challenge) = server.step(b"").expect("challenge") else {
            panic!("expected a challenge");
        };
        let expected =
            format!("realm=\"zk-sasl-md5\",nonce=\"{nonce}\",charset=utf-8,algorithm=md5-sess");
        assert_eq!(challenge, expected.as_bytes());
        let step = server
            .step(zookeeper_response("bob", "bobsecret", nonce).as_bytes())
            .expect("ok");
        let rspauth = client_response("bob", "bobsecret", nonce, "c1c2c3", "");
        assert_eq!(
            step,
            SaslStep::Complete {
                authorized_id: "bob".to_owned(),
                final_token: format!("rspauth={rspauth}").into_bytes(),
            }
        );
        assert_eq!(
            server.step(b"").expect("final empty token"),
            SaslStep::Challenge(Vec::new())
        );
        assert_eq!(server.step(b"x"), Err(SaslError::AlreadyComplete));
    }

    #[test]
    fn a_wrong_password_fails_and_the_exchange_stays_failed() {
        // A response computed with the wrong password is refused, and so is everything after.
        let nonce = "n0nce";
        let mut server = DigestMd5Server::new(
            users(&[("bob", "bobsecret")]),
            ZK_SASL_REALM,
            fixed_nonce(nonce),
        );
        server.start().expect("challenge");
        let response = zookeeper_response("bob", "guess", nonce);
        assert_eq!(
            server.step(response.as_bytes()),
            Err(SaslError::ResponseMismatch("bob".to_owned()))
        );
        assert_eq!(server.step(b""), Err(SaslError::Failed));
        assert!(!server.is_complete());
    }

    #[test]
    fn each_broken_directive_is_reported() {
        // Every check of validateClientResponse rejects its own kind of bad response.
        let nonce = "n0nce";
        let good = zookeeper_response("bob", "pw", nonce);
        let attempt = |response: &str| {
            let mut server =
                DigestMd5Server::new(users(&[("bob", "pw")]), ZK_SASL_REALM, fixed_nonce(nonce));
            server.start().expect("challenge");
            server.step(response.as_bytes())
        };
        assert!(attempt(&good).is_ok());
        let bad = |from: &str, to: &str| attempt(&good.replace(from, to)).expect_err("must fail");
        assert_eq!(
            bad("username=\"bob\"", "username=\"eve\""),
            SaslError::UnknownUser("eve".to_owned())
        );
        assert!(matches!(
            bad("realm=\"zk-sasl-md5\"", "realm=\"x\""),
            SaslError::RealmMismatch { .. }
        ));
        assert_eq!(
            bad("nonce=\"n0nce\"", "nonce=\"other\""),
            SaslError::NonceMismatch
        );
        assert!(matches!(
            bad("nc=00000001", "nc=00000002"),
            SaslError::InvalidDirective {
                directive: "nc",
                ..
            }
        ));
        assert!(matches!(
            bad("qop=auth", "qop=auth-int"),
            SaslError::InvalidDirective {
                directive: "qop",
                ..
            }
        ));
        assert!(matches!(
            bad("zookeeper/zk-sasl-md5", "ldap/zk-sasl-md5"),
            SaslError::DigestUriMismatch { .. }
        ));
        assert!(matches!(
            bad("charset=utf-8", "charset=latin1"),
            SaslError::InvalidDirective {
                directive: "charset",
                ..
            }
        ));
        assert_eq!(
            bad("cnonce=\"c1c2c3\",", ""),
            SaslError::MissingDirective("cnonce")
        );
        assert_eq!(
            bad("qop=auth", "qop=auth,QOP=auth"),
            SaslError::DuplicateDirective("qop".to_owned())
        );
        assert!(matches!(
            bad("username=\"bob\"", "username=\"bob"),
            SaslError::Malformed(_)
        ));
        assert!(matches!(
            bad("maxbuf=65536", "maxbuf=big"),
            SaslError::InvalidDirective {
                directive: "maxbuf",
                ..
            }
        ));
    }

    #[test]
    fn kazoo_style_response_without_charset_or_maxbuf_authenticates() {
        // pure-sasl sends qop first, no charset and no maxbuf; the digest-uri case may differ.
        let nonce = "abc";
        let mut server =
            DigestMd5Server::new(users(&[("bob", "pw")]), ZK_SASL_REALM, fixed_nonce(nonce));
        server.start().expect("challenge");
        let response_hex = client_response("bob", "pw", nonce, "998877", "AUTHENTICATE");
        let response = format!(
            "qop=auth,realm=\"zk-sasl-md5\",username=\"bob\",nonce=\"abc\",cnonce=\"998877\",\
             nc=00000001,digest-uri=\"zookeeper/zk-sasl-md5\",response={response_hex}"
        );
        assert!(matches!(
            server.step(response.as_bytes()),
            Ok(SaslStep::Complete { .. })
        ));
    }

    #[test]
    fn oversized_and_garbage_tokens_fail_without_panicking() {
        // Tokens past the size limit or made of arbitrary bytes are errors, never panics.
        let mut server =
            DigestMd5Server::new(users(&[("bob", "pw")]), ZK_SASL_REALM, fixed_nonce("n"));
        server.start().expect("challenge");
        let long = vec![b'a'; RESPONSE_BYTES_MAX + 1];
        assert_eq!(
            server.step(&long),
            Err(SaslError::ResponseTooLong {
                length_bytes: RESPONSE_BYTES_MAX + 1
            })
        );
        for garbage in [
            &b"="[..],
            b",,,",
            b"a",
            b"a=\"\\",
            b"\xff\xfe=\x00",
            b"k = v , ,x=\"y\" z",
        ] {
            let mut server = DigestMd5Server::new(users(&[]), ZK_SASL_REALM, fixed_nonce("n"));
            server.start().expect("challenge");
            assert!(server.step(garbage).is_err());
        }
    }

    #[test]
    fn os_random_nonces_look_like_the_jdks() {
        // OS nonces are 40 base64 characters and differ between calls.
        let mut source = OsRandomNonce;
        let first = source.next_nonce().expect("nonce");
        let second = source.next_nonce().expect("nonce");
        assert_eq!(first.len(), 40);
        assert_ne!(first, second);
        assert_eq!(encode_nonce(&[0u8; NONCE_RAW_BYTES]), "A".repeat(40));
    }

    #[test]
    fn latin1_names_hash_in_latin1() {
        // A password in the ISO-8859-1 range is hashed as ISO-8859-1, as RFC 2831 requires.
        assert_eq!(
            digest_string_bytes("caf\u{e9}"),
            vec![b'c', b'a', b'f', 0xe9]
        );
        assert_eq!(
            digest_string_bytes("\u{20ac}"),
            "\u{20ac}".as_bytes().to_vec()
        );
    }
}
