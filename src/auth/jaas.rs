//! JAAS login configuration files, in the syntax the JDK's `ConfigFile` reads, as ZooKeeper
//! uses them for SASL:
//!
//! ```text
//! Server {
//!     org.apache.zookeeper.server.auth.DigestLoginModule required
//!     user_super="adminsecret"
//!     user_bob="bobsecret";
//! };
//! ```
//!
//! A file holds sections (`Name { entries };`); an entry is a login module class, a control
//! flag (`required`, `requisite`, `sufficient`, `optional`) and `key=value` options ending in
//! `;`. Values are double-quoted strings (with backslash escapes) or bare words. `//` and
//! `/* */` are comments. ZooKeeper's `SaslServerCallbackHandler` takes the DIGEST-MD5 users from
//! every `user_<name>="<password>"` option of every entry in the server section.
//!
//! Differences from the JDK: bare values may start with a digit, and `${property}` expansion
//! is refused with an error instead of reading JVM system properties.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A JAAS file larger than this is refused rather than read.
pub const JAAS_FILE_BYTES_MAX: u64 = 1 << 20;
/// The option prefix naming a DIGEST-MD5 user (`SaslServerCallbackHandler.USER_PREFIX`).
pub const USER_OPTION_PREFIX: &str = "user_";

/// A JAAS file that cannot be used: one line, with the line number when it is a syntax error.
#[derive(Debug, thiserror::Error)]
pub enum JaasError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {size_bytes} bytes is over the {limit_bytes}-byte limit", path.display())]
    FileTooLarge {
        path: PathBuf,
        size_bytes: u64,
        limit_bytes: u64,
    },
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("line {line}: section {name:?} appears twice")]
    DuplicateSection { line: usize, name: String },
}

/// How a login module's outcome counts (`LoginModuleControlFlag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlFlag {
    Required,
    Requisite,
    Sufficient,
    Optional,
}

/// One `module flag options;` entry of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginModuleEntry {
    pub login_module: String,
    pub flag: ControlFlag,
    /// Options by key; a repeated key keeps its last value, as Java's `HashMap` does.
    pub options: BTreeMap<String, String>,
}

/// One named section (a JAAS "application").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasSection {
    pub name: String,
    pub entries: Vec<LoginModuleEntry>,
}

impl JaasSection {
    /// The DIGEST-MD5 users: every `user_<name>` option of every entry, name to password.
    pub fn digest_users(&self) -> HashMap<String, String> {
        let options = self.entries.iter().flat_map(|entry| entry.options.iter());
        options
            .filter_map(|(key, password)| {
                let name = key.strip_prefix(USER_OPTION_PREFIX)?;
                Some((name.to_owned(), password.clone()))
            })
            .collect()
    }
}

/// A whole JAAS file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JaasConfig {
    pub sections: Vec<JaasSection>,
}

impl JaasConfig {
    /// Parses JAAS text.
    ///
    /// # Errors
    /// The text is not valid JAAS syntax, or a section name appears twice.
    pub fn parse(text: &str) -> Result<JaasConfig, JaasError> {
        let tokens = tokenize(text)?;
        Parser { tokens, index: 0 }.parse_config()
    }

    /// Reads and parses a JAAS file (UTF-8, or ISO-8859-1 when it is not valid UTF-8).
    ///
    /// # Errors
    /// The file cannot be read, is too large, or does not parse.
    pub fn from_file(path: &Path) -> Result<JaasConfig, JaasError> {
        let io_error = |source| JaasError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_error)?;
        let mut bytes = Vec::new();
        file.take(JAAS_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        let size_bytes = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if size_bytes > JAAS_FILE_BYTES_MAX {
            return Err(JaasError::FileTooLarge {
                path: path.to_path_buf(),
                size_bytes,
                limit_bytes: JAAS_FILE_BYTES_MAX,
            });
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => error.into_bytes().iter().map(|&b| char::from(b)).collect(),
        };
        JaasConfig::parse(&text)
    }

    /// The section with exactly this name (names are case-sensitive, as in the JDK).
    pub fn section(&self, name: &str) -> Option<&JaasSection> {
        self.sections.iter().find(|section| section.name == name)
    }
}

/// Reads the DIGEST-MD5 users of section `section` from the JAAS file at `path`. Returns
/// `Ok(None)` when the file has no such section: ZooKeeper then runs without SASL, so the
/// caller should log a warning rather than stop.
///
/// # Errors
/// The file cannot be read or does not parse.
pub fn load_server_users(
    path: &Path,
    section: &str,
) -> Result<Option<HashMap<String, String>>, JaasError> {
    let config = JaasConfig::from_file(path)?;
    Ok(config.section(section).map(JaasSection::digest_users))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenKind {
    /// A bare word: letters, digits and `$ _ - * .`, or any non-ASCII character.
    Word(String),
    /// A double-quoted string, escapes resolved.
    Quoted(String),
    /// One of `{ } ; =`.
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    line: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '$' | '_' | '-' | '*' | '.') || !c.is_ascii()
}

fn syntax(line: usize, reason: impl Into<String>) -> JaasError {
    JaasError::Syntax {
        line,
        reason: reason.into(),
    }
}

/// Splits JAAS text into tokens, dropping whitespace and comments.
fn tokenize(text: &str) -> Result<Vec<Token>, JaasError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        let start_line = line;
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '/' if chars.peek() == Some(&'/') => {
                while chars.peek().is_some_and(|&next| next != '\n') {
                    chars.next();
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = '\0';
                loop {
                    let Some(next) = chars.next() else {
                        return Err(syntax(start_line, "unterminated /* comment"));
                    };
                    line += usize::from(next == '\n');
                    if previous == '*' && next == '/' {
                        break;
                    }
                    previous = next;
                }
            }
            '"' => {
                let text = quoted_string(&mut chars, start_line)?;
                tokens.push(Token {
                    kind: TokenKind::Quoted(text),
                    line: start_line,
                });
            }
            '{' | '}' | ';' | '=' => {
                tokens.push(Token {
                    kind: TokenKind::Punct(c),
                    line: start_line,
                });
            }
            c if is_word_char(c) => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek().filter(|&&next| is_word_char(next)) {
                    word.push(next);
                    chars.next();
                }
                tokens.push(Token {
                    kind: TokenKind::Word(word),
                    line: start_line,
                });
            }
            other => {
                return Err(syntax(
                    start_line,
                    format!("unexpected character {other:?}"),
                ))
            }
        }
    }
    Ok(tokens)
}

/// Reads the rest of a double-quoted string; a newline before the closing quote is an error,
/// as in Java's `StreamTokenizer`.
fn quoted_string(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    line: usize,
) -> Result<String, JaasError> {
    let mut text = String::new();
    loop {
        let Some(c) = chars.next() else {
            return Err(syntax(line, "unterminated quoted string"));
        };
        match c {
            '"' => return Ok(text),
            '\n' => return Err(syntax(line, "unterminated quoted string")),
            '\\' => match chars.next() {
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some('r') => text.push('\r'),
                Some('b') => text.push('\x08'),
                Some('f') => text.push('\x0c'),
                Some('\n') | None => return Err(syntax(line, "unterminated quoted string")),
                Some(other) => text.push(other),
            },
            other => text.push(other),
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    index: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.index)
    }

    fn last_line(&self) -> usize {
        self.tokens.last().map_or(1, |token| token.line)
    }

    /// The next token, which must be a word or a quoted string; `what` names it in errors.
    fn expect_text(&mut self, what: &str) -> Result<(String, usize), JaasError> {
        let Some(token) = self.tokens.get(self.index) else {
            return Err(syntax(
                self.last_line(),
                format!("expected {what}, found end of file"),
            ));
        };
        let line = token.line;
        match &token.kind {
            TokenKind::Word(text) | TokenKind::Quoted(text) => {
                let text = text.clone();
                self.index += 1;
                Ok((text, line))
            }
            TokenKind::Punct(c) => Err(syntax(line, format!("expected {what}, found {c:?}"))),
        }
    }

    fn expect_punct(&mut self, expected: char) -> Result<(), JaasError> {
        let Some(token) = self.tokens.get(self.index) else {
            let reason = format!("expected {expected:?}, found end of file");
            return Err(syntax(self.last_line(), reason));
        };
        if token.kind == TokenKind::Punct(expected) {
            self.index += 1;
            return Ok(());
        }
        let found = match &token.kind {
            TokenKind::Word(text) | TokenKind::Quoted(text) => format!("{text:?}"),
            TokenKind::Punct(c) => format!("{c:?}"),
        };
        Err(syntax(
            token.line,
            format!("expected {expected:?}, found {found}"),
        ))
    }

    fn at_punct(&self, expected: char) -> bool {
        self.peek()
            .is_some_and(|token| token.kind == TokenKind::Punct(expected))
    }

    fn parse_config(mut self) -> Result<JaasConfig, JaasError> {
        let mut config = JaasConfig::default();
        while self.peek().is_some() {
            let (name, line) = self.expect_text("a section name")?;
            if config.section(&name).is_some() {
                return Err(JaasError::DuplicateSection { line, name });
            }
            self.expect_punct('{')?;
            let mut entries = Vec::new();
            while !self.at_punct('}') {
                entries.push(self.parse_entry()?);
            }
            self.expect_punct('}')?;
            self.expect_punct(';')?;
            config.sections.push(JaasSection { name, entries });
        }
        Ok(config)
    }

    fn parse_entry(&mut self) -> Result<LoginModuleEntry, JaasError> {
        let (login_module, _) = self.expect_text("a login module class")?;
        let (flag_text, flag_line) = self.expect_text("a control flag")?;
        let flag = match flag_text.to_ascii_lowercase().as_str() {
            "required" => ControlFlag::Required,
            "requisite" => ControlFlag::Requisite,
            "sufficient" => ControlFlag::Sufficient,
            "optional" => ControlFlag::Optional,
            _ => {
                let reason = format!(
                    "invalid control flag {flag_text:?} (expected required, requisite, \
                     sufficient or optional)"
                );
                return Err(syntax(flag_line, reason));
            }
        };
        let mut options = BTreeMap::new();
        while !self.at_punct(';') {
            let (key, _) = self.expect_text("an option name or ';'")?;
            self.expect_punct('=')?;
            let (value, value_line) = self.expect_text("an option value")?;
            if value.contains("${") {
                let reason = format!("option {key}: ${{property}} expansion is not supported");
                return Err(syntax(value_line, reason));
            }
            options.insert(key, value);
        }
        self.expect_punct(';')?;
        Ok(LoginModuleEntry {
            login_module,
            flag,
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZOOKEEPER_EXAMPLE: &str = r#"
        // The server section, as in ZooKeeper's SASL guide.
        Server {
            org.apache.zookeeper.server.auth.DigestLoginModule required
            user_super="adminsecret"
            user_bob="bob\"secret";
        };
        /* A client section
           spanning lines. */
        Client {
            org.apache.zookeeper.server.auth.DigestLoginModule Required
            username=bob password="bobsecret" debug=true;
        };
    "#;

    #[test]
    fn zookeeper_server_section_yields_its_users() {
        // The Server section of ZooKeeper's documented example gives super and bob.
        let config = JaasConfig::parse(ZOOKEEPER_EXAMPLE).expect("parse");
        assert_eq!(config.sections.len(), 2);
        let server = config.section("Server").expect("Server section");
        assert_eq!(server.entries[0].flag, ControlFlag::Required);
        let users = server.digest_users();
        assert_eq!(users.len(), 2);
        assert_eq!(users.get("super").map(String::as_str), Some("adminsecret"));
        assert_eq!(users.get("bob").map(String::as_str), Some("bob\"secret"));
        let client = config.section("Client").expect("Client section");
        assert_eq!(
            client.entries[0]
                .options
                .get("username")
                .map(String::as_str),
            Some("bob")
        );
        assert!(client.digest_users().is_empty());
        assert!(config.section("server").is_none());
    }

    #[test]
    fn several_entries_contribute_users() {
        // Users from every entry of the section are collected; a repeated option keeps the last.
        let text =
            "Server { a.B optional user_x=\"1\" user_x=\"2\"; c.D sufficient user_y=\"3\"; };";
        let config = JaasConfig::parse(text).expect("parse");
        let users = config.section("Server").expect("section").digest_users();
        assert_eq!(users.get("x").map(String::as_str), Some("2"));
        assert_eq!(users.get("y").map(String::as_str), Some("3"));
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        // Each malformed file gives a one-line error with the line it concerns.
        let error = |text: &str| JaasConfig::parse(text).expect_err("must fail").to_string();
        assert_eq!(
            error("Server {\n  m.M mandatory;\n};"),
            "line 2: invalid control flag \"mandatory\" (expected required, requisite, \
             sufficient or optional)"
        );
        assert_eq!(
            error("Server {\n m.M required user_a=\"x\n\";};"),
            "line 2: unterminated quoted string"
        );
        assert_eq!(
            error("Server { m.M required; }"),
            "line 1: expected ';', found end of file"
        );
        assert_eq!(
            error("S { m.M required; };\nS { m.M required; };"),
            "line 2: section \"S\" appears twice"
        );
        assert_eq!(
            error("S { m.M required a=; };"),
            "line 1: expected an option value, found ';'"
        );
        assert!(error("S { m.M required a=\"${user.home}\"; };").contains("expansion"));
        assert!(error("/* open").contains("unterminated /* comment"));
        assert!(error("S { m.M required a=b & c; };").contains("unexpected character '&'"));
        assert!(!error("S {\n m.M required a=\"x\n").contains('\n'));
    }

    #[test]
    fn load_server_users_reads_a_file_and_tolerates_a_missing_section() {
        // A file with the section gives its users; without it the answer is None, not an error.
        let dir = std::env::temp_dir().join(format!("keel-jaas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create dir");
        let path = dir.join("jaas.conf");
        std::fs::write(&path, ZOOKEEPER_EXAMPLE).expect("write");
        let users = load_server_users(&path, "Server")
            .expect("load")
            .expect("section");
        assert_eq!(users.len(), 2);
        assert_eq!(
            load_server_users(&path, "QuorumServer").expect("load"),
            None
        );
        let missing = load_server_users(&dir.join("absent.conf"), "Server").expect_err("absent");
        assert!(missing.to_string().contains("absent.conf"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
