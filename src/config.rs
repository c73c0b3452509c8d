//! config: zoo.cfg and Keel's own settings, read into one `Config`.
//!
//! Owns: the Java-properties reader, the meaning and the default of every key ZooKeeper 3.8 reads
//! from zoo.cfg (`QuorumPeerConfig.parseProperties`) or from a system property that zoo.cfg can
//! set, the `keel.*` keys, the `server.N` lines and the `<dataDir>/myid` file.
//! Must not: start anything or log. Warnings and unknown keys are returned in the `Config` for
//! the caller to log; the only files read are the config file and `<dataDir>/myid`.
//! Invariants: a `Config` is always built from its ordered list of settings, so a command-line
//! override behaves exactly as if its line were appended to zoo.cfg. Every error is one line that
//! names the key and the bad value.
//!
//! Key names. ZooKeeper turns every zoo.cfg key it does not know into the system property
//! `zookeeper.<key>`, which is how `forceSync`, `snapCount` or `4lw.commands.whitelist` work.
//! Keel accepts those keys with or without the `zookeeper.` prefix, and also the JVM-only ones
//! (`jute.maxbuffer`, `readonlymode.enabled`, `java.security.auth.login.config`,
//! `znode.container.*`). Keys ZooKeeper parses itself (`tickTime`, `server.N`...) are exact.
//!
//! Values. Each key is read the way ZooKeeper reads it: `forceSync` is off only for exactly
//! `no`, `skipACL` is on only for exactly `yes`, `enforceQuota` and friends follow Java's
//! `Boolean.parseBoolean`, the quorum switches accept only `true`/`false`. Where Java silently
//! falls back to a default on a malformed number (`Integer.getInteger`), Keel reports an error.
//! Relative paths are resolved against the `base_dir` given to `parse_str`; `from_file` keeps
//! them relative to the working directory, as ZooKeeper does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// ZooKeeper's `tickTime` when the key is absent (`ZooKeeperServer.DEFAULT_TICK_TIME`).
pub const TICK_TIME_MS_DEFAULT: i32 = 3000;
/// ZooKeeper's `jute.maxbuffer` default: the largest frame accepted, in bytes.
pub const JUTE_MAX_BUFFER_BYTES_DEFAULT: u32 = 0xfffff;
/// The smallest `autopurge.snapRetainCount` ZooKeeper accepts; lower values are raised to it.
pub const SNAP_RETAIN_COUNT_MIN: u32 = 3;
/// The smallest `snapCount` ZooKeeper accepts (`SyncRequestProcessor`).
pub const SNAP_COUNT_MIN: u32 = 2;
/// The JAAS section ZooKeeper reads server users from (`zookeeper.sasl.serverconfig`).
pub const JAAS_SECTION_DEFAULT: &str = "Server";
/// Every four-letter word ZooKeeper 3.8 knows (`FourLetterCommands`); `*` enables them all.
pub const FOUR_LETTER_WORDS: [&str; 19] = [
    "conf", "cons", "crst", "dirs", "dump", "envi", "gtmk", "ruok", "stmk", "srst", "srvr", "stat",
    "wchc", "wchp", "wchs", "mntr", "isro", "icfg", "sysp",
];
/// A config file larger than this is refused rather than read.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;
/// The highest CPU index `keel.cpus` may name (the size of glibc's `cpu_set_t`, minus one).
pub const CPU_INDEX_MAX: usize = 1023;
/// The most shards `keel.shards` may ask for.
pub const SHARDS_MAX: usize = 1024;

/// A leader SNAPs a learner from a fresh snapshot when more entries than this follow its
/// newest one (and they cost more than building it): below it, replaying the tail is cheap.
pub const SNAP_TAIL_ENTRIES_MIN_DEFAULT: usize = 10_000;

/// What the server does with no config file: a standalone server like `zoo_sample.cfg`, on
/// loopback and with data under `./keel-data`.
const EMBEDDED_SETTINGS: [(&str, &str); 6] = [
    ("tickTime", "2000"),
    ("initLimit", "10"),
    ("syncLimit", "5"),
    ("dataDir", "./keel-data"),
    ("clientPort", "2181"),
    ("clientPortAddress", "127.0.0.1"),
];
const MYID_FILE_BYTES_MAX: u64 = 4096;
const WAL_BATCH_BYTES_MAX_DEFAULT: u32 = 1 << 20;
const MAX_OUTSTANDING_PER_SESSION_DEFAULT: usize = 1000;
const CONNECTIONS_PER_SHARD_MAX_DEFAULT: usize = 10_000;

const _: () = assert!(SNAP_RETAIN_COUNT_MIN >= 1);
const _: () = assert!(TICK_TIME_MS_DEFAULT > 0);
const _: () = assert!(TICK_TIME_MS_DEFAULT <= i32::MAX / 20);
const _: () = assert!(CPU_INDEX_MAX < 1024);
const _: () = assert!(JUTE_MAX_BUFFER_BYTES_DEFAULT < i32::MAX as u32);

/// A configuration error: one line naming the key and the bad value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
    #[error("{origin} line {line}: {reason}")]
    Syntax {
        origin: String,
        line: usize,
        reason: String,
    },
    #[error("{key}={value:?}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("myid file {}: {reason}", path.display())]
    MyId { path: PathBuf, reason: String },
    #[error("command-line override {argument:?} is not of the form key=value")]
    Override { argument: String },
}

/// Whether a server votes (participant) or only follows (observer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerType {
    Participant,
    Observer,
}

/// One quorum address of a `server.N` line: `host:quorumPort:electionPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    pub host: String,
    pub quorum_port: u16,
    pub election_port: u16,
}

/// A parsed `server.N=host:quorumPort:electionPort[:role][;[clientHost:]clientPort]` line.
/// `addresses` holds more than one entry only with `multiAddress.enabled=true` (`|`-joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumServer {
    pub id: u64,
    pub addresses: Vec<PeerAddress>,
    pub role: PeerType,
    /// The client address from after `;`; the host is `0.0.0.0` when only a port is given.
    pub client_address: Option<(String, u16)>,
}

/// A secret string (a password) that `Debug` never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(<redacted>)")
    }
}

/// The ordered `key=value` settings a `Config` was built from; `Debug` shows keys only, because
/// values may be passwords.
#[derive(Clone, PartialEq, Eq, Default)]
struct Settings(Vec<(String, String)>);

impl fmt::Debug for Settings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_list()
            .entries(self.0.iter().map(|(key, _)| key))
            .finish()
    }
}

/// The whole configuration of one Keel server. Build it with `embedded_default`, `from_file` or
/// `parse_str`, apply overrides, then call `validate` before using it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The zoo.cfg this was read from, if any.
    pub config_path: Option<PathBuf>,

    // ZooKeeper keys parsed by QuorumPeerConfig.
    /// `tickTime`, ZooKeeper's `int`; `validate` requires more than 0.
    pub tick_time_ms: i32,
    /// Empty when `dataDir` is not set (`validate` refuses that).
    pub data_dir: PathBuf,
    /// `dataLogDir`, or `data_dir` when absent.
    pub data_log_dir: PathBuf,
    /// `None` when `clientPort` is absent or 0.
    pub client_port: Option<u16>,
    /// The `clientPortAddress` host; `None` means every interface.
    pub client_port_address: Option<String>,
    pub secure_client_port: Option<u16>,
    /// -1 lets the OS choose.
    pub client_port_listen_backlog: i32,
    /// `maxClientCnxns`: connections per client IP; 0 means unlimited.
    pub max_client_cnxns: usize,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub autopurge_snap_retain_count: u32,
    /// 0 disables purging.
    pub autopurge_purge_interval_hours: u32,
    pub local_sessions_enabled: bool,
    pub local_sessions_upgrading_enabled: bool,

    // Quorum.
    /// `myid` in a quorum; 1 for a standalone server (its session-id prefix).
    pub server_id: u64,
    pub servers: BTreeMap<u64, QuorumServer>,
    pub peer_type: PeerType,
    pub init_limit_ticks: u32,
    pub sync_limit_ticks: u32,
    pub connect_to_learner_master_limit_ticks: u32,
    pub standalone_enabled: bool,
    pub reconfig_enabled: bool,
    pub quorum_listen_on_all_ips: bool,
    pub sync_enabled: bool,
    pub multi_address_enabled: bool,
    pub dynamic_config_file: Option<PathBuf>,

    // ZooKeeper settings read from system properties.
    /// `maxCnxns`: connections in total; 0 means unlimited.
    pub max_cnxns: usize,
    pub global_outstanding_limit: u32,
    pub snap_count: u32,
    pub pre_alloc_size_kb: u64,
    pub force_sync: bool,
    /// `fsync.warningthresholdms`: a group commit slower than this is logged and counted.
    pub fsync_warning_threshold_ms: u64,
    pub jute_max_buffer_bytes: u32,
    /// The enabled four-letter words, resolved: `srvr` always, `isro` with read-only mode.
    pub four_letter_whitelist: BTreeSet<String>,
    pub extended_types_enabled: bool,
    pub readonly_mode_enabled: bool,
    pub skip_acl: bool,
    pub enforce_quota: bool,
    pub digest_enabled: bool,
    pub close_session_txn_enabled: bool,
    /// `DigestAuthenticationProvider.superDigest`: `super:<base64 sha1>`.
    pub super_digest: Option<String>,
    /// `authProvider.<name>` values, keyed by `<name>`.
    pub auth_providers: BTreeMap<String, String>,
    /// `java.security.auth.login.config`.
    pub jaas_config_path: Option<PathBuf>,
    /// `zookeeper.sasl.serverconfig`: the JAAS section holding the server's users.
    pub jaas_section: String,
    /// `zookeeper.superUser`: the SASL user that bypasses ACLs.
    pub sasl_super_user: Option<String>,
    /// `zookeeper.SASLAuthenticationProvider.superPassword`: the password of user `super`.
    pub sasl_super_password: Option<Secret>,
    pub container_check_interval_ms: i64,
    /// 0 keeps containers that never had children (ZooKeeper's code default).
    pub container_max_never_used_interval_ms: i64,
    pub container_max_per_minute: usize,

    // Keel's own keys.
    /// `keel.cpus`; `None` means the process affinity mask (see `cpu_list`).
    pub cpus: Option<Vec<usize>>,
    /// `keel.shards`; `None` means one per CPU left after the replica core; `Some(0)` one
    /// shard on the replica core's executor, with no thread of its own (for servers that share
    /// few CPUs with others: an ensemble's three members on one 2-vCPU machine).
    pub shards: Option<usize>,
    /// `keel.unpinned`: run executors without CPU pinning (tests).
    pub unpinned: bool,
    pub wal_batch_bytes_max: u32,
    /// `keel.wal.truncate_at_corruption`: on a damaged log record followed by valid ones,
    /// truncate there and start (losing what follows) instead of refusing to start.
    pub wal_truncate_at_corruption: bool,
    pub wal_batch_wait_us: u32,
    pub max_outstanding_per_session: usize,
    pub connections_per_shard_max: usize,
    /// `keel.sync.snap_tail_entries_min`: see `zab::Config::snap_tail_entries_min` (a leader
    /// SNAPs from a fresh snapshot when more entries than this follow its newest one).
    pub snap_tail_entries_min: usize,

    /// Keys nobody reads. Log the key, never the value: `unknown_value` returns it if needed.
    pub unknown_keys: Vec<String>,
    /// Accepted-but-surprising settings, one sentence each, for the caller to log.
    pub warnings: Vec<String>,

    settings: Settings,
    base_dir: PathBuf,
    myid_found: bool,
}

/// Values whose final form depends on other keys, settled once every line is read.
#[derive(Default)]
struct Pending {
    min_session_timeout_ms: Option<i32>,
    max_session_timeout_ms: Option<i32>,
    data_log_dir: Option<PathBuf>,
    four_letter_whitelist: Option<String>,
    connect_to_learner_master_limit_ticks: Option<u32>,
    server_lines: BTreeMap<u64, (String, String)>,
}

impl Config {
    /// ZooKeeper's code defaults, before any key is read (no dataDir, no client port).
    fn zookeeper_defaults() -> Config {
        Config {
            config_path: None,
            tick_time_ms: TICK_TIME_MS_DEFAULT,
            data_dir: PathBuf::new(),
            data_log_dir: PathBuf::new(),
            client_port: None,
            client_port_address: None,
            secure_client_port: None,
            client_port_listen_backlog: -1,
            max_client_cnxns: 60,
            min_session_timeout_ms: 2 * TICK_TIME_MS_DEFAULT,
            max_session_timeout_ms: 20 * TICK_TIME_MS_DEFAULT,
            autopurge_snap_retain_count: SNAP_RETAIN_COUNT_MIN,
            autopurge_purge_interval_hours: 0,
            local_sessions_enabled: false,
            local_sessions_upgrading_enabled: false,
            server_id: 1,
            servers: BTreeMap::new(),
            peer_type: PeerType::Participant,
            init_limit_ticks: 0,
            sync_limit_ticks: 0,
            connect_to_learner_master_limit_ticks: 0,
            standalone_enabled: true,
            reconfig_enabled: false,
            quorum_listen_on_all_ips: false,
            sync_enabled: true,
            multi_address_enabled: false,
            dynamic_config_file: None,
            max_cnxns: 0,
            global_outstanding_limit: 1000,
            snap_count: 100_000,
            pre_alloc_size_kb: 65_536,
            force_sync: true,
            fsync_warning_threshold_ms: crate::server::stats::FSYNC_WARNING_THRESHOLD_MS_DEFAULT,
            jute_max_buffer_bytes: JUTE_MAX_BUFFER_BYTES_DEFAULT,
            four_letter_whitelist: BTreeSet::from(["srvr".to_owned()]),
            extended_types_enabled: false,
            readonly_mode_enabled: false,
            skip_acl: false,
            enforce_quota: false,
            digest_enabled: true,
            close_session_txn_enabled: true,
            super_digest: None,
            auth_providers: BTreeMap::new(),
            jaas_config_path: None,
            jaas_section: JAAS_SECTION_DEFAULT.to_owned(),
            sasl_super_user: None,
            sasl_super_password: None,
            container_check_interval_ms: 60_000,
            container_max_never_used_interval_ms: 0,
            container_max_per_minute: 10_000,
            cpus: None,
            shards: None,
            unpinned: false,
            wal_batch_bytes_max: WAL_BATCH_BYTES_MAX_DEFAULT,
            wal_truncate_at_corruption: false,
            wal_batch_wait_us: 0,
            max_outstanding_per_session: MAX_OUTSTANDING_PER_SESSION_DEFAULT,
            connections_per_shard_max: CONNECTIONS_PER_SHARD_MAX_DEFAULT,
            snap_tail_entries_min: SNAP_TAIL_ENTRIES_MIN_DEFAULT,
            unknown_keys: Vec::new(),
            warnings: Vec::new(),
            settings: Settings::default(),
            base_dir: PathBuf::new(),
            myid_found: false,
        }
    }

    /// The configuration used without a zoo.cfg: standalone on 127.0.0.1:2181, tickTime 2000
    /// (as in `zoo_sample.cfg`), data under `./keel-data`. Equal to parsing `EMBEDDED_SETTINGS`.
    pub fn embedded_default() -> Config {
        let mut config = Config::zookeeper_defaults();
        config.tick_time_ms = 2000;
        config.init_limit_ticks = 10;
        config.sync_limit_ticks = 5;
        config.connect_to_learner_master_limit_ticks = 10;
        config.data_dir = PathBuf::from("./keel-data");
        config.data_log_dir = config.data_dir.clone();
        config.client_port = Some(2181);
        config.client_port_address = Some("127.0.0.1".to_owned());
        config.min_session_timeout_ms = 4000;
        config.max_session_timeout_ms = 40_000;
        config.settings = Settings(
            EMBEDDED_SETTINGS
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        );
        config
    }

    /// Reads a zoo.cfg. Relative paths inside stay relative to the working directory, and
    /// `<dataDir>/myid` is read when `server.N` lines are present.
    ///
    /// # Errors
    /// The file cannot be read or is too large, a line is malformed, or a value is invalid.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let io_error = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_error)?;
        let mut bytes = Vec::new();
        file.take(CONFIG_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        let size_bytes = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if size_bytes > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::FileTooLarge {
                path: path.to_path_buf(),
                size_bytes,
                limit_bytes: CONFIG_FILE_BYTES_MAX,
            });
        }
        let text = decode_properties_text(bytes);
        let settings = parse_properties(&text, &path.display().to_string())?;
        Config::build(Settings(settings), PathBuf::new(), Some(path.to_path_buf()))
    }

    /// Parses zoo.cfg text; relative `dataDir`, `dataLogDir` and JAAS paths are resolved against
    /// `base_dir`.
    ///
    /// # Errors
    /// A line is malformed or a value is invalid.
    pub fn parse_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let settings = parse_properties(text, "config")?;
        Config::build(Settings(settings), base_dir.to_path_buf(), None)
    }

    /// Applies one `key=value` as if it were the last line of zoo.cfg. On error `self` is
    /// unchanged.
    ///
    /// # Errors
    /// The argument has no `=` or an empty key, or the value is invalid.
    pub fn apply_override(&mut self, argument: &str) -> Result<(), ConfigError> {
        let Some((key, value)) = argument.split_once('=') else {
            return Err(ConfigError::Override {
                argument: argument.to_owned(),
            });
        };
        let key = java_trim(key);
        if key.is_empty() {
            return Err(ConfigError::Override {
                argument: argument.to_owned(),
            });
        }
        let mut settings = self.settings.clone();
        settings
            .0
            .push((key.to_owned(), java_trim(value).to_owned()));
        *self = Config::build(settings, self.base_dir.clone(), self.config_path.clone())?;
        Ok(())
    }

    /// The value of an unknown key (the last one set), for the rare caller that wants it.
    pub fn unknown_value(&self, key: &str) -> Option<&str> {
        if !self.unknown_keys.iter().any(|known| known == key) {
            return None;
        }
        let found = self
            .settings
            .0
            .iter()
            .rev()
            .find(|(name, _)| java_trim(name) == key);
        found.map(|(_, value)| java_trim(value))
    }

    fn build(
        settings: Settings,
        base_dir: PathBuf,
        config_path: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::zookeeper_defaults();
        config.base_dir = base_dir;
        config.config_path = config_path;
        let mut pending = Pending::default();
        for (key, value) in &settings.0 {
            config.apply_setting(&mut pending, java_trim(key), java_trim(value))?;
        }
        config.finish(pending)?;
        config.settings = settings;
        Ok(config)
    }

    fn apply_setting(
        &mut self,
        pending: &mut Pending,
        key: &str,
        value: &str,
    ) -> Result<(), ConfigError> {
        if let Some(name) = key.strip_prefix("keel.") {
            return self.apply_keel_key(name, key, value);
        }
        if self.apply_core_key(pending, key, value)?
            || self.apply_quorum_key(pending, key, value)?
        {
            return Ok(());
        }
        let property = key.strip_prefix("zookeeper.").unwrap_or(key);
        if self.apply_property_key(pending, property, key, value)?
            || self.apply_auth_key(property, key, value)?
        {
            return Ok(());
        }
        if !self.unknown_keys.iter().any(|known| known == key) {
            self.unknown_keys.push(key.to_owned());
        }
        Ok(())
    }

    /// Keys `QuorumPeerConfig` reads for every server. Returns whether `key` was one of them.
    fn apply_core_key(
        &mut self,
        pending: &mut Pending,
        key: &str,
        value: &str,
    ) -> Result<bool, ConfigError> {
        match key {
            "dataDir" => self.data_dir = self.resolve_path(key, value)?,
            "dataLogDir" => pending.data_log_dir = Some(self.resolve_path(key, value)?),
            "clientPort" => self.client_port = parse_port(key, value)?,
            "clientPortAddress" => self.client_port_address = parse_host(key, value)?,
            "secureClientPort" => self.secure_client_port = parse_port(key, value)?,
            "clientPortListenBacklog" => {
                self.client_port_listen_backlog = parse_int(key, value, -1, i64::from(i32::MAX))?;
            }
            "tickTime" => self.tick_time_ms = parse_int(key, value, 0, i64::from(i32::MAX))?,
            "maxClientCnxns" => {
                self.max_client_cnxns = parse_int(key, value, 0, i64::from(i32::MAX))?;
            }
            "minSessionTimeout" => {
                let timeout_ms: i32 = parse_int(key, value, -1, i64::from(i32::MAX))?;
                pending.min_session_timeout_ms = (timeout_ms >= 0).then_some(timeout_ms);
            }
            "maxSessionTimeout" => {
                let timeout_ms: i32 = parse_int(key, value, -1, i64::from(i32::MAX))?;
                pending.max_session_timeout_ms = (timeout_ms >= 0).then_some(timeout_ms);
            }
            "autopurge.snapRetainCount" => {
                let count: i32 = parse_int(key, value, i64::from(i32::MIN), i64::from(i32::MAX))?;
                self.autopurge_snap_retain_count = u32::try_from(count).unwrap_or(0);
                if self.autopurge_snap_retain_count < SNAP_RETAIN_COUNT_MIN {
                    self.warnings.push(format!(
                        "autopurge.snapRetainCount={count} is below the minimum; using \
                         {SNAP_RETAIN_COUNT_MIN}"
                    ));
                    self.autopurge_snap_retain_count = SNAP_RETAIN_COUNT_MIN;
                }
            }
            "autopurge.purgeInterval" => {
                let hours: i32 = parse_int(key, value, i64::from(i32::MIN), i64::from(i32::MAX))?;
                // ZooKeeper schedules no purge for any value <= 0.
                self.autopurge_purge_interval_hours = u32::try_from(hours).unwrap_or(0);
            }
            "localSessionsEnabled" => self.local_sessions_enabled = parse_strict_bool(key, value)?,
            "localSessionsUpgradingEnabled" => {
                self.local_sessions_upgrading_enabled = parse_strict_bool(key, value)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Quorum keys `QuorumPeerConfig` reads. Returns whether `key` was one of them.
    fn apply_quorum_key(
        &mut self,
        pending: &mut Pending,
        key: &str,
        value: &str,
    ) -> Result<bool, ConfigError> {
        let ticks_max = i64::from(i32::MAX);
        match key {
            "initLimit" => self.init_limit_ticks = parse_int(key, value, 0, ticks_max)?,
            "syncLimit" => self.sync_limit_ticks = parse_int(key, value, 0, ticks_max)?,
            "connectToLearnerMasterLimit" => {
                pending.connect_to_learner_master_limit_ticks =
                    Some(parse_int(key, value, 0, ticks_max)?);
            }
            "electionAlg" => {
                if value != "3" {
                    return Err(invalid_value(key, value, "only 3 is supported"));
                }
            }
            "peerType" => self.peer_type = parse_peer_type(key, value)?,
            "dynamicConfigFile" => self.dynamic_config_file = Some(self.resolve_path(key, value)?),
            "standaloneEnabled" => self.standalone_enabled = parse_strict_bool(key, value)?,
            "reconfigEnabled" => self.reconfig_enabled = parse_strict_bool(key, value)?,
            "quorumListenOnAllIPs" => {
                self.quorum_listen_on_all_ips = parse_strict_bool(key, value)?
            }
            "syncEnabled" => self.sync_enabled = parse_strict_bool(key, value)?,
            "multiAddress.enabled" => self.multi_address_enabled = parse_strict_bool(key, value)?,
            _ => {
                let Some(id_text) = key.strip_prefix("server.") else {
                    return Ok(false);
                };
                let id = id_text
                    .parse::<u64>()
                    .map_err(|_| invalid_value(key, value, "the server id must be a number"))?;
                // Lines are parsed once every key is read, so multiAddress.enabled may follow.
                pending
                    .server_lines
                    .insert(id, (key.to_owned(), value.to_owned()));
            }
        }
        Ok(true)
    }

    /// Keys ZooKeeper reads from system properties (`property` has no `zookeeper.` prefix).
    fn apply_property_key(
        &mut self,
        pending: &mut Pending,
        property: &str,
        key: &str,
        value: &str,
    ) -> Result<bool, ConfigError> {
        let int_max = i64::from(i32::MAX);
        match property {
            "snapCount" => {
                self.snap_count = parse_int(key, value, i64::from(i32::MIN), int_max)
                    .map(|count: i32| u32::try_from(count).unwrap_or(0))?;
                if self.snap_count < SNAP_COUNT_MIN {
                    self.warnings.push(format!(
                        "{key}={value} is below the minimum; using {SNAP_COUNT_MIN}"
                    ));
                    self.snap_count = SNAP_COUNT_MIN;
                }
            }
            "preAllocSize" => self.pre_alloc_size_kb = parse_int(key, value, 1, i64::MAX)?,
            "fsync.warningthresholdms" => {
                self.fsync_warning_threshold_ms = parse_int(key, value, 0, i64::MAX)?;
            }
            "forceSync" => {
                // FileTxnLog: fsync stays on unless the value is exactly "no".
                self.force_sync = value != "no";
                if value != "yes" && value != "no" {
                    self.warnings.push(format!(
                        "{key}={value:?} keeps fsync on: ZooKeeper turns it off only for \"no\""
                    ));
                }
            }
            "globalOutstandingLimit" => {
                self.global_outstanding_limit = parse_int(key, value, 1, int_max)?;
            }
            "maxCnxns" => self.max_cnxns = parse_int(key, value, 0, int_max)?,
            "4lw.commands.whitelist" => pending.four_letter_whitelist = Some(value.to_owned()),
            "jute.maxbuffer" => self.jute_max_buffer_bytes = parse_int(key, value, 1, int_max)?,
            "extendedTypesEnabled" => {
                self.extended_types_enabled = self.java_boolean(key, value);
            }
            "readonlymode.enabled" => self.readonly_mode_enabled = self.java_boolean(key, value),
            "enforceQuota" => self.enforce_quota = self.java_boolean(key, value),
            "digest.enabled" => self.digest_enabled = self.java_boolean(key, value),
            "closeSessionTxn.enabled" => {
                self.close_session_txn_enabled = self.java_boolean(key, value);
            }
            "skipACL" => {
                // ZooKeeperServer: ACL checks are skipped only for exactly "yes".
                self.skip_acl = value == "yes";
                if value != "yes" && value != "no" {
                    self.warnings.push(format!(
                        "{key}={value:?} keeps ACL checks on: ZooKeeper skips them only for \"yes\""
                    ));
                }
            }
            "znode.container.checkIntervalMs" => {
                self.container_check_interval_ms = parse_int(key, value, 1, int_max)?;
            }
            "znode.container.maxNeverUsedIntervalMs" => {
                self.container_max_never_used_interval_ms = parse_int(key, value, 0, i64::MAX)?;
            }
            "znode.container.maxPerMinute" => {
                self.container_max_per_minute = parse_int(key, value, 1, int_max)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Authentication keys read from system properties. Returns whether `property` was one.
    fn apply_auth_key(
        &mut self,
        property: &str,
        key: &str,
        value: &str,
    ) -> Result<bool, ConfigError> {
        match property {
            "DigestAuthenticationProvider.superDigest" => {
                if !value.contains(':') {
                    self.warnings.push(format!(
                        "{key} has no ':' and can never match; the form is super:<base64 sha1>"
                    ));
                }
                self.super_digest = non_empty(value);
            }
            "java.security.auth.login.config" => {
                self.jaas_config_path = if value.is_empty() {
                    None
                } else {
                    Some(self.resolve_path(key, value)?)
                };
            }
            "sasl.serverconfig" => {
                if value.is_empty() {
                    return Err(invalid_value(key, value, "the JAAS section name is empty"));
                }
                self.jaas_section = value.to_owned();
            }
            "superUser" => self.sasl_super_user = non_empty(value),
            "SASLAuthenticationProvider.superPassword" => {
                self.sasl_super_password = non_empty(value).map(Secret);
            }
            _ => {
                let Some(name) = property.strip_prefix("authProvider.") else {
                    return Ok(false);
                };
                if name.is_empty() {
                    return Err(invalid_value(
                        key,
                        value,
                        "authProvider needs a name after '.'",
                    ));
                }
                self.auth_providers
                    .insert(name.to_owned(), value.to_owned());
            }
        }
        Ok(true)
    }

    /// `keel.*` keys. An unknown one is an error: a typo must not silently keep a default.
    fn apply_keel_key(&mut self, name: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        let count_max = 1_000_000;
        match name {
            "cpus" => self.cpus = Some(parse_cpu_list(key, value)?),
            "shards" => {
                let shards_max = i64::try_from(SHARDS_MAX).unwrap_or(i64::MAX);
                self.shards = Some(parse_int(key, value, 0, shards_max)?);
            }
            "unpinned" => self.unpinned = parse_strict_bool(key, value)?,
            "wal.batch_bytes_max" => self.wal_batch_bytes_max = parse_int(key, value, 1, 1 << 30)?,
            "wal.batch_wait_us" => self.wal_batch_wait_us = parse_int(key, value, 0, 1_000_000)?,
            "wal.truncate_at_corruption" => {
                self.wal_truncate_at_corruption = parse_strict_bool(key, value)?;
            }
            "max_outstanding_per_session" => {
                self.max_outstanding_per_session = parse_int(key, value, 1, count_max)?;
            }
            "connections_per_shard_max" => {
                self.connections_per_shard_max = parse_int(key, value, 1, count_max)?;
            }
            "sync.snap_tail_entries_min" => {
                self.snap_tail_entries_min = parse_int(key, value, 0, i64::from(i32::MAX))?;
            }
            _ => {
                return Err(ConfigError::Invalid {
                    key: key.to_owned(),
                    reason: "unknown Keel key; known: keel.cpus, keel.shards, keel.unpinned, \
                             keel.wal.batch_bytes_max, keel.wal.batch_wait_us, keel.wal.truncate_at_corruption, \
                             keel.max_outstanding_per_session, keel.connections_per_shard_max, \
                             keel.sync.snap_tail_entries_min"
                        .to_owned(),
                })
            }
        }
        Ok(())
    }

    /// Java's `Boolean.parseBoolean`: "true" in any case is true, anything else false.
    fn java_boolean(&mut self, key: &str, value: &str) -> bool {
        let enabled = value.eq_ignore_ascii_case("true");
        if !enabled && !value.eq_ignore_ascii_case("false") {
            self.warnings.push(format!(
                "{key}={value:?} is read as false: only \"true\" enables it"
            ));
        }
        enabled
    }

    fn resolve_path(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        if value.is_empty() {
            return Err(invalid_value(key, value, "the path is empty"));
        }
        let path = Path::new(value);
        if path.is_absolute() {
            Ok(path.to_path_buf())
        } else {
            Ok(self.base_dir.join(path))
        }
    }

    /// Settles what depends on several keys, then reads myid and applies the server lines.
    fn finish(&mut self, pending: Pending) -> Result<(), ConfigError> {
        let tick_ms = self.tick_time_ms;
        self.min_session_timeout_ms = pending
            .min_session_timeout_ms
            .unwrap_or(tick_ms.saturating_mul(2));
        self.max_session_timeout_ms = pending
            .max_session_timeout_ms
            .unwrap_or(tick_ms.saturating_mul(20));
        self.data_log_dir = pending
            .data_log_dir
            .unwrap_or_else(|| self.data_dir.clone());
        self.connect_to_learner_master_limit_ticks = pending
            .connect_to_learner_master_limit_ticks
            .unwrap_or(self.init_limit_ticks);
        self.four_letter_whitelist = self.resolve_whitelist(pending.four_letter_whitelist);
        for (id, (key, value)) in &pending.server_lines {
            let server = parse_server_line(*id, key, value, self.multi_address_enabled)?;
            self.servers.insert(*id, server);
        }
        if !self.servers.is_empty() && !self.data_dir.as_os_str().is_empty() {
            self.read_myid()?;
        }
        self.apply_own_server_line()
    }

    /// The enabled four-letter words, as `FourLetterCommands.isEnabled` computes them.
    fn resolve_whitelist(&mut self, listed: Option<String>) -> BTreeSet<String> {
        let mut enabled = BTreeSet::new();
        for word in listed
            .iter()
            .flat_map(|text| text.split(','))
            .map(str::trim)
        {
            if word == "*" {
                enabled.extend(FOUR_LETTER_WORDS.iter().map(|word| (*word).to_owned()));
            } else if !word.is_empty() {
                if !FOUR_LETTER_WORDS.contains(&word) {
                    self.warnings.push(format!(
                        "4lw.commands.whitelist names {word:?}, which is not a four-letter word"
                    ));
                }
                enabled.insert(word.to_owned());
            }
        }
        if self.readonly_mode_enabled {
            enabled.insert("isro".to_owned());
        }
        enabled.insert("srvr".to_owned());
        enabled
    }

    /// Reads `<dataDir>/myid` (an ASCII decimal id on the first line) if the file exists.
    fn read_myid(&mut self) -> Result<(), ConfigError> {
        let path = self.data_dir.join("myid");
        let io_error = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(io_error(error)),
        };
        let mut bytes = Vec::new();
        file.take(MYID_FILE_BYTES_MAX)
            .read_to_end(&mut bytes)
            .map_err(io_error)?;
        let text = String::from_utf8_lossy(&bytes);
        let first_line = text.lines().next().unwrap_or("").trim();
        self.server_id = first_line.parse::<u64>().map_err(|_| ConfigError::MyId {
            path: path.clone(),
            reason: format!("server id {first_line:?} is not a number"),
        })?;
        self.myid_found = true;
        Ok(())
    }

    /// ZooKeeper's `setupClientPort` and `setupPeerType`: this server's own `server.N` line
    /// supplies the client address and the peer type.
    fn apply_own_server_line(&mut self) -> Result<(), ConfigError> {
        if !self.myid_found {
            return Ok(());
        }
        let Some(own) = self.servers.get(&self.server_id).cloned() else {
            return Ok(());
        };
        if own.role != self.peer_type {
            self.warnings.push(format!(
                "peerType is {:?} but server.{} says {:?}; using the server line",
                self.peer_type, own.id, own.role
            ));
            self.peer_type = own.role;
        }
        let Some((host, port)) = own.client_address else {
            return Ok(());
        };
        if let Some(static_port) = self.client_port {
            let static_host = self.client_port_address.as_deref().unwrap_or("0.0.0.0");
            let differs = port != static_port || (!is_wildcard(static_host) && static_host != host);
            if differs {
                return Err(ConfigError::Invalid {
                    key: format!("server.{}", own.id),
                    reason: format!(
                        "client address {host}:{port} differs from clientPortAddress/clientPort \
                         {static_host}:{static_port}"
                    ),
                });
            }
        }
        self.client_port = Some(port);
        self.client_port_address = Some(host);
        Ok(())
    }

    /// Whether this server runs in a quorum (ZooKeeper's `isDistributed`): more than one voting
    /// member, or any voting member with `standaloneEnabled=false`.
    pub fn is_quorum(&self) -> bool {
        let participants = self.participant_count();
        participants > 1 || (!self.standalone_enabled && participants > 0)
    }

    fn participant_count(&self) -> usize {
        let servers = self.servers.values();
        servers
            .filter(|server| server.role == PeerType::Participant)
            .count()
    }

    /// Checks what ZooKeeper checks before it starts, plus what Keel cannot serve.
    ///
    /// # Errors
    /// The first problem found, as one line naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason,
            })
        };
        if self.tick_time_ms <= 0 {
            return invalid(
                "tickTime",
                "is not set (it must be more than 0 ms)".to_owned(),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("dataDir", "is not set".to_owned());
        }
        if self.client_port.is_none() {
            if self.client_port_address.is_some() {
                return invalid(
                    "clientPortAddress",
                    "is set but clientPort is not".to_owned(),
                );
            }
            return invalid("clientPort", "is not set".to_owned());
        }
        if self.min_session_timeout_ms > self.max_session_timeout_ms {
            return invalid(
                "minSessionTimeout",
                format!(
                    "{} ms is larger than maxSessionTimeout {} ms",
                    self.min_session_timeout_ms, self.max_session_timeout_ms
                ),
            );
        }
        if self.secure_client_port.is_some() {
            return invalid(
                "secureClientPort",
                "TLS is not supported by Keel".to_owned(),
            );
        }
        if self.dynamic_config_file.is_some() {
            return invalid(
                "dynamicConfigFile",
                "is not supported by Keel; put the server.N lines in zoo.cfg".to_owned(),
            );
        }
        if self.client_socket_addr_checked().is_none() {
            let host = self.client_port_address.clone().unwrap_or_default();
            return invalid("clientPortAddress", format!("{host:?} does not resolve"));
        }
        self.validate_quorum()
    }

    fn validate_quorum(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                reason,
            })
        };
        let participants = self.participant_count();
        let observers = self.servers.len() - participants;
        if participants == 0 && observers > 0 {
            return invalid("server.N", "observers without participants".to_owned());
        }
        if participants == 1 && self.standalone_enabled && observers > 0 {
            return invalid("server.N", "observers without a quorum".to_owned());
        }
        if !self.is_quorum() {
            return Ok(());
        }
        let myid_path = self.data_dir.join("myid");
        if self.init_limit_ticks == 0 {
            return invalid("initLimit", "is not set (required in a quorum)".to_owned());
        }
        if self.sync_limit_ticks == 0 {
            return invalid("syncLimit", "is not set (required in a quorum)".to_owned());
        }
        if !self.myid_found {
            let path = myid_path.display();
            return invalid(
                "myid",
                format!("file {path} is missing (required in a quorum)"),
            );
        }
        if !self.servers.contains_key(&self.server_id) {
            let id = self.server_id;
            return invalid("myid", format!("{id} has no server.{id} line"));
        }
        let id_max = if self.extended_types_enabled {
            254
        } else {
            255
        };
        if self.server_id > id_max {
            return invalid(
                "myid",
                format!(
                    "{} is above {id_max}, the largest id a session id can carry",
                    self.server_id
                ),
            );
        }
        Ok(())
    }

    /// The `conf` four-letter word's lines in ZooKeeper's order, with the directory sizes
    /// reported as 0; see `conf_lines_with_sizes`.
    pub fn conf_lines(&self) -> Vec<(String, String)> {
        self.conf_lines_with_sizes(0, 0)
    }

    /// The `conf` lines (`ZooKeeperServer.dumpConf`) with the caller's directory sizes. A
    /// standalone server reports `serverId=0`, as ZooKeeper does.
    pub fn conf_lines_with_sizes(
        &self,
        data_dir_size_bytes: u64,
        data_log_size_bytes: u64,
    ) -> Vec<(String, String)> {
        let port_text = |port: Option<u16>| port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let server_id = if self.is_quorum() { self.server_id } else { 0 };
        let lines = [
            ("clientPort", port_text(self.client_port)),
            ("secureClientPort", port_text(self.secure_client_port)),
            ("dataDir", version_dir_display(&self.data_dir)),
            ("dataDirSize", data_dir_size_bytes.to_string()),
            ("dataLogDir", version_dir_display(&self.data_log_dir)),
            ("dataLogSize", data_log_size_bytes.to_string()),
            ("tickTime", self.tick_time_ms.to_string()),
            ("maxClientCnxns", self.max_client_cnxns.to_string()),
            ("minSessionTimeout", self.min_session_timeout_ms.to_string()),
            ("maxSessionTimeout", self.max_session_timeout_ms.to_string()),
            (
                "clientPortListenBacklog",
                self.client_port_listen_backlog.to_string(),
            ),
            ("serverId", server_id.to_string()),
        ];
        lines
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect()
    }

    /// Whether a four-letter word may run (it is in the resolved whitelist).
    pub fn four_letter_word_allowed(&self, word: &str) -> bool {
        self.four_letter_whitelist.contains(word)
    }

    /// The address to listen on for clients. A host name is resolved here (first address);
    /// `validate` has checked that it resolves. Without a client port the port is 0.
    pub fn client_socket_addr(&self) -> SocketAddr {
        let port = self.client_port.unwrap_or(0);
        self.client_socket_addr_checked()
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
    }

    fn client_socket_addr_checked(&self) -> Option<SocketAddr> {
        let port = self.client_port.unwrap_or(0);
        let Some(host) = self.client_port_address.as_deref() else {
            return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(SocketAddr::new(ip, port));
        }
        (bare, port).to_socket_addrs().ok()?.next()
    }

    /// The CPUs to run on: `keel.cpus`, or else the process affinity mask
    /// (`sched_getaffinity`), or else `0..available_parallelism`.
    pub fn cpu_list(&self) -> Vec<usize> {
        if let Some(cpus) = &self.cpus {
            return cpus.clone();
        }
        affinity_cpus().unwrap_or_else(|| {
            let count = std::thread::available_parallelism().map_or(1, |count| count.get());
            (0..count).collect()
        })
    }
}

/// The CPUs in this process's affinity mask, or `None` if the mask cannot be read.
fn affinity_cpus() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array, so all-zero bytes are a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let set_bytes = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a live, writable cpu_set_t of exactly `set_bytes` bytes; pid 0 is us.
    let result = unsafe { libc::sched_getaffinity(0, set_bytes, &mut set) };
    if result != 0 {
        return None;
    }
    let capacity = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    // SAFETY: every index is below CPU_SETSIZE, the size of `set`.
    let cpus: Vec<usize> = (0..capacity)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    (!cpus.is_empty()).then_some(cpus)
}

fn absolute_display(path: &Path) -> String {
    if path.is_absolute() {
        return path.display().to_string();
    }
    let relative = path.strip_prefix(".").unwrap_or(path);
    match std::env::current_dir() {
        Ok(current) => current.join(relative).display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// How ZooKeeper's `conf` shows a data directory: the absolute path of its `version-2`
/// subdirectory, where the files actually live.
fn version_dir_display(path: &Path) -> String {
    format!("{}/version-2", absolute_display(path))
}

fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "::" | "[::]")
}

fn invalid_value(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// Java's `String.trim`: strips every char at or below U+0020 from both ends.
fn java_trim(text: &str) -> &str {
    text.trim_matches(|c: char| c <= ' ')
}

/// An integer as `Integer.parseInt` reads it (optional sign, decimal digits), in `min..=max`.
fn parse_int<T: TryFrom<i64>>(
    key: &str,
    value: &str,
    min: i64,
    max: i64,
) -> Result<T, ConfigError> {
    let number = value
        .parse::<i64>()
        .map_err(|_| invalid_value(key, value, "expected an integer"))?;
    if number < min || number > max {
        let reason = format!("out of range {min}..={max}");
        return Err(invalid_value(key, value, &reason));
    }
    T::try_from(number).map_err(|_| invalid_value(key, value, "out of range"))
}

/// A port; 0 means "not set", as in ZooKeeper.
fn parse_port(key: &str, value: &str) -> Result<Option<u16>, ConfigError> {
    let port: u16 = parse_int(key, value, 0, 65_535)?;
    Ok((port != 0).then_some(port))
}

fn parse_host(key: &str, value: &str) -> Result<Option<String>, ConfigError> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(invalid_value(
            key,
            value,
            "expected a host name or IP address",
        ));
    }
    Ok(Some(value.to_owned()))
}

/// `QuorumPeerConfig.parseBoolean`: "true" or "false" in any case, nothing else.
fn parse_strict_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(invalid_value(key, value, "expected true or false"))
    }
}

fn parse_peer_type(key: &str, value: &str) -> Result<PeerType, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "participant" => Ok(PeerType::Participant),
        "observer" => Ok(PeerType::Observer),
        _ => Err(invalid_value(
            key,
            value,
            "expected participant or observer",
        )),
    }
}

/// A Linux CPU list: comma-separated indexes and inclusive ranges, e.g. `0-3,6`. The result is
/// sorted and free of duplicates.
fn parse_cpu_list(key: &str, value: &str) -> Result<Vec<usize>, ConfigError> {
    let mut cpus = BTreeSet::new();
    for item in value.split(',').map(str::trim) {
        let (first, last) = match item.split_once('-') {
            Some((first, last)) => (first.trim(), last.trim()),
            None => (item, item),
        };
        let parse_cpu = |text: &str| -> Result<usize, ConfigError> {
            let cpu = text.parse::<usize>().map_err(|_| {
                let reason = format!("{item:?} is not a CPU index or range like 0-3");
                invalid_value(key, value, &reason)
            })?;
            if cpu > CPU_INDEX_MAX {
                let reason = format!("CPU {cpu} is above the limit {CPU_INDEX_MAX}");
                return Err(invalid_value(key, value, &reason));
            }
            Ok(cpu)
        };
        let (first, last) = (parse_cpu(first)?, parse_cpu(last)?);
        if first > last {
            let reason = format!("range {item:?} runs backwards");
            return Err(invalid_value(key, value, &reason));
        }
        cpus.extend(first..=last);
    }
    Ok(cpus.into_iter().collect())
}

/// `ConfigUtils.getHostAndPort`: splits on ':' except inside a leading `[ipv6]`.
fn split_host_and_ports(text: &str) -> Option<Vec<&str>> {
    let Some(inner) = text.strip_prefix('[') else {
        return Some(text.split(':').collect());
    };
    let (host, rest) = inner.split_once(']')?;
    if rest.is_empty() {
        return Some(vec![host]);
    }
    let rest = rest.strip_prefix(':')?;
    let mut parts = vec![host];
    parts.extend(rest.split(':'));
    Some(parts)
}

const SERVER_LINE_FORM: &str =
    "expected host:quorumPort:electionPort[:participant|observer][;[clientHost:]clientPort]";

/// Parses the value of `server.<id>` as `QuorumPeer.QuorumServer` does.
fn parse_server_line(
    id: u64,
    key: &str,
    value: &str,
    multi_address_enabled: bool,
) -> Result<QuorumServer, ConfigError> {
    let mut sections: Vec<&str> = value.split(';').collect();
    // Java's String.split drops trailing empty pieces, so "host:1:2;" has no client part.
    while sections.len() > 1 && sections.last().is_some_and(|last| last.is_empty()) {
        sections.pop();
    }
    let (server_part, client_part) = match sections.as_slice() {
        [server] => (*server, None),
        [server, client] => (*server, Some(*client)),
        _ => return Err(invalid_value(key, value, SERVER_LINE_FORM)),
    };
    let address_texts: Vec<&str> = server_part.split('|').collect();
    if address_texts.len() > 1 && !multi_address_enabled {
        let reason = "several addresses need multiAddress.enabled=true";
        return Err(invalid_value(key, value, reason));
    }
    let mut addresses = Vec::new();
    let mut role = None;
    for address_text in address_texts {
        let (address, this_role) = parse_peer_address(key, value, address_text)?;
        if let Some(this_role) = this_role {
            if role.is_some_and(|role| role != this_role) {
                let reason = "all addresses of one server must have the same role";
                return Err(invalid_value(key, value, reason));
            }
            role = Some(this_role);
        }
        addresses.push(address);
    }
    let client_address = match client_part {
        None => None,
        Some(client) => Some(parse_client_address(key, value, client)?),
    };
    let role = role.unwrap_or(PeerType::Participant);
    Ok(QuorumServer {
        id,
        addresses,
        role,
        client_address,
    })
}

/// One `host:quorumPort:electionPort[:role]` address of a server line.
fn parse_peer_address(
    key: &str,
    value: &str,
    address_text: &str,
) -> Result<(PeerAddress, Option<PeerType>), ConfigError> {
    let wrong_format = || invalid_value(key, value, SERVER_LINE_FORM);
    let parts = split_host_and_ports(address_text).ok_or_else(wrong_format)?;
    let (host, quorum, election, role_text) = match parts.as_slice() {
        [host, quorum, election] => (*host, *quorum, *election, None),
        [host, quorum, election, role] => (*host, *quorum, *election, Some(*role)),
        _ => return Err(wrong_format()),
    };
    if host.is_empty() {
        return Err(invalid_value(key, value, "the host is empty"));
    }
    let quorum_port = parse_server_port(key, value, quorum)?;
    let election_port = parse_server_port(key, value, election)?;
    if quorum_port == election_port {
        let reason = "the quorum and election ports must differ";
        return Err(invalid_value(key, value, reason));
    }
    let role = match role_text {
        None => None,
        Some(role_text) => Some(parse_peer_type(key, role_text)?),
    };
    let address = PeerAddress {
        host: host.to_owned(),
        quorum_port,
        election_port,
    };
    Ok((address, role))
}

fn parse_server_port(key: &str, value: &str, port_text: &str) -> Result<u16, ConfigError> {
    let port = port_text.parse::<u16>().ok().filter(|port| *port != 0);
    port.ok_or_else(|| {
        let reason = format!("{port_text:?} is not a port number (1..=65535)");
        invalid_value(key, value, &reason)
    })
}

fn parse_client_address(
    key: &str,
    value: &str,
    client: &str,
) -> Result<(String, u16), ConfigError> {
    let parts = split_host_and_ports(client)
        .ok_or_else(|| invalid_value(key, value, "the client address is malformed"))?;
    match parts.as_slice() {
        [port] => Ok(("0.0.0.0".to_owned(), parse_server_port(key, value, port)?)),
        [host, port] if !host.is_empty() => {
            Ok(((*host).to_owned(), parse_server_port(key, value, port)?))
        }
        _ => Err(invalid_value(
            key,
            value,
            "the client address must be port or host:port",
        )),
    }
}

/// Decodes a properties file: UTF-8 (without a BOM) when valid, otherwise ISO-8859-1, which is
/// what Java's `Properties.load(InputStream)` always uses.
fn decode_properties_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => match text.strip_prefix('\u{feff}') {
            Some(stripped) => stripped.to_owned(),
            None => text,
        },
        Err(error) => error
            .into_bytes()
            .iter()
            .map(|&byte| char::from(byte))
            .collect(),
    }
}

/// Splits text into natural lines on `\n`, `\r` or `\r\n`, as `Properties.load` does.
fn natural_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['\n', '\r']) {
            Some(end) => {
                lines.push(&rest[..end]);
                let terminator = if rest[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = &rest[end + terminator..];
            }
            None => {
                lines.push(rest);
                rest = "";
            }
        }
    }
    lines
}

fn is_properties_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

/// Whether a line ends in an odd number of backslashes, i.e. continues on the next line.
fn continues(line: &str) -> bool {
    line.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

/// Reads Java-properties text into ordered `(key, value)` pairs with Java's rules: `#` and `!`
/// comment lines, `=`, `:` or whitespace separators, backslash continuation and escapes.
/// Keys and values are trimmed, as `QuorumPeerConfig` trims them.
fn parse_properties(text: &str, origin: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let lines = natural_lines(text);
    let mut settings = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line_number = index + 1;
        let first = lines[index].trim_start_matches(is_properties_space);
        index += 1;
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = first.to_owned();
        while continues(&logical) {
            logical.pop();
            let Some(next) = lines.get(index) else {
                break;
            };
            logical.push_str(next.trim_start_matches(is_properties_space));
            index += 1;
        }
        let (raw_key, raw_value) = split_key_value(&logical);
        let syntax = |reason: String| ConfigError::Syntax {
            origin: origin.to_owned(),
            line: line_number,
            reason,
        };
        let key = unescape_properties(raw_key).map_err(syntax)?;
        let value = unescape_properties(raw_value).map_err(syntax)?;
        settings.push((java_trim(&key).to_owned(), java_trim(&value).to_owned()));
    }
    Ok(settings)
}

/// Splits a logical line at the first unescaped `=`, `:` or whitespace (`Properties.load0`).
fn split_key_value(line: &str) -> (&str, &str) {
    let mut key_end = line.len();
    let mut value_start = line.len();
    let mut has_separator = false;
    let mut escaped = false;
    for (offset, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || is_properties_space(c) {
            key_end = offset;
            value_start = offset + c.len_utf8();
            has_separator = c == '=' || c == ':';
            break;
        }
    }
    let mut rest = &line[value_start..];
    loop {
        rest = rest.trim_start_matches(is_properties_space);
        match rest.strip_prefix(['=', ':']) {
            Some(after) if !has_separator => {
                has_separator = true;
                rest = after;
            }
            _ => break,
        }
    }
    (&line[..key_end], rest)
}

/// Java's `loadConvert`: `\t \r \n \f`, `\uXXXX` (with surrogate pairs), `\x` for any other x.
fn unescape_properties(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => {}
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('f') => out.push('\x0c'),
            Some('u') => out.push(unicode_escape(&mut chars)?),
            Some(other) => out.push(other),
        }
    }
    Ok(out)
}

/// Decodes the 4 hex digits after `\u`, joining a high surrogate with a following `\uDCxx`.
fn unicode_escape(chars: &mut std::str::Chars<'_>) -> Result<char, String> {
    let read_unit = |chars: &mut std::str::Chars<'_>| -> Result<u32, String> {
        let digits: String = chars.by_ref().take(4).collect();
        if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("malformed \\uxxxx escape \"\\u{digits}\""));
        }
        u32::from_str_radix(&digits, 16).map_err(|_| "malformed \\uxxxx escape".to_owned())
    };
    let unit = read_unit(chars)?;
    if !(0xd800..0xdc00).contains(&unit) {
        return char::from_u32(unit).ok_or_else(|| format!("\\u{unit:04x} is not a character"));
    }
    let mut lookahead = chars.clone();
    if lookahead.next() == Some('\\') && lookahead.next() == Some('u') {
        let low = read_unit(&mut lookahead)?;
        if (0xdc00..0xe000).contains(&low) {
            *chars = lookahead;
            let combined = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
            return char::from_u32(combined).ok_or_else(|| "bad surrogate pair".to_owned());
        }
    }
    Err(format!("\\u{unit:04x} is an unpaired surrogate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        match Config::parse_str(text, Path::new("/base")) {
            Ok(config) => config,
            Err(error) => panic!("parse failed: {error}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match Config::parse_str(text, Path::new("/base")) {
            Ok(_) => panic!("parse unexpectedly succeeded"),
            Err(error) => error.to_string(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    #[test]
    fn embedded_default_matches_its_settings() {
        // The hand-built embedded default equals what parsing its own settings produces.
        let text: String = EMBEDDED_SETTINGS
            .iter()
            .map(|(key, value)| format!("{key}={value}\n"))
            .collect();
        let parsed = Config::parse_str(&text, Path::new("")).expect("embedded settings parse");
        let embedded = Config::embedded_default();
        assert_eq!(parsed, embedded);
        assert_eq!(embedded.tick_time_ms, 2000);
        assert_eq!(
            embedded.client_socket_addr(),
            "127.0.0.1:2181".parse().expect("addr")
        );
        assert!(embedded.validate().is_ok());
    }

    #[test]
    fn absent_keys_take_zookeeper_code_defaults() {
        // A file with only dataDir and clientPort gets ZooKeeper's code defaults.
        let config = parse("dataDir=/var/zk\nclientPort=2181\n");
        assert_eq!(config.tick_time_ms, 3000);
        assert_eq!(config.min_session_timeout_ms, 6000);
        assert_eq!(config.max_session_timeout_ms, 60_000);
        assert_eq!(config.data_log_dir, PathBuf::from("/var/zk"));
        assert_eq!(config.max_client_cnxns, 60);
        assert_eq!(config.max_cnxns, 0);
        assert_eq!(config.global_outstanding_limit, 1000);
        assert_eq!(config.snap_count, 100_000);
        assert_eq!(config.pre_alloc_size_kb, 65_536);
        assert!(config.force_sync);
        assert_eq!(config.jute_max_buffer_bytes, 0xfffff);
        assert_eq!(config.autopurge_snap_retain_count, 3);
        assert_eq!(config.container_check_interval_ms, 60_000);
        assert_eq!(config.container_max_per_minute, 10_000);
        assert!(config.digest_enabled && config.close_session_txn_enabled);
        assert_eq!(config.server_id, 1);
        assert!(config.four_letter_word_allowed("srvr"));
        assert!(!config.four_letter_word_allowed("ruok"));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn java_properties_syntax_is_honoured() {
        // Comments, separators, continuation, escapes and trimming follow Properties.load.
        let text = "# comment\n! also comment\n  tickTime : 1000  \n\
                    dataDir /data\\\n    /zk\r\nclientPort=2181\rsome\\=key=a\\tb\\u0041\n\
                    \n4lw.commands.whitelist=ruok,\\\n  mntr\n";
        let config = parse(text);
        assert_eq!(config.tick_time_ms, 1000);
        assert_eq!(config.data_dir, PathBuf::from("/data/zk"));
        assert_eq!(config.client_port, Some(2181));
        assert_eq!(config.unknown_keys, vec!["some=key".to_owned()]);
        assert_eq!(config.unknown_value("some=key"), Some("a\tbA"));
        assert!(config.four_letter_word_allowed("mntr") && config.four_letter_word_allowed("ruok"));
    }

    #[test]
    fn malformed_unicode_escape_names_the_line() {
        // A broken \u escape is a syntax error that names the line.
        let message = parse_error("dataDir=/a\nkey=\\u12G4\n");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("\\uxxxx"), "{message}");
    }

    #[test]
    fn system_property_keys_accept_the_zookeeper_prefix() {
        // Keys ZooKeeper reads as system properties work with and without `zookeeper.`.
        let config = parse(
            "dataDir=/d\nzookeeper.DigestAuthenticationProvider.superDigest=super:abc=\n\
             extendedTypesEnabled=true\nzookeeper.4lw.commands.whitelist=*\n\
             authProvider.1=org.X\nzookeeper.authProvider.sasl=org.Y\n\
             zookeeper.jute.maxbuffer=4096\n\
             znode.container.checkIntervalMs=100\nzookeeper.skipACL=yes\nenforceQuota=TRUE\n",
        );
        assert_eq!(config.super_digest.as_deref(), Some("super:abc="));
        assert!(config.extended_types_enabled && config.skip_acl && config.enforce_quota);
        assert_eq!(config.four_letter_whitelist.len(), FOUR_LETTER_WORDS.len());
        assert_eq!(
            config.auth_providers.get("1").map(String::as_str),
            Some("org.X")
        );
        assert_eq!(
            config.auth_providers.get("sasl").map(String::as_str),
            Some("org.Y")
        );
        assert_eq!(config.jute_max_buffer_bytes, 4096);
        assert_eq!(config.container_check_interval_ms, 100);
        assert!(config.unknown_keys.is_empty(), "{:?}", config.unknown_keys);
    }

    #[test]
    fn native_keys_do_not_accept_the_zookeeper_prefix() {
        // `zookeeper.tickTime` is not tickTime in ZooKeeper either, so it stays unknown.
        let config = parse("dataDir=/d\nzookeeper.tickTime=5\n");
        assert_eq!(config.tick_time_ms, 3000);
        assert_eq!(config.unknown_keys, vec!["zookeeper.tickTime".to_owned()]);
    }

    #[test]
    fn booleans_are_read_per_key_as_java_reads_them() {
        // forceSync is off only for "no", skipACL on only for "yes", others parseBoolean.
        let config = parse("dataDir=/d\nforceSync=false\nskipACL=true\ndigest.enabled=yes\n");
        assert!(config.force_sync);
        assert!(!config.skip_acl);
        assert!(!config.digest_enabled);
        assert_eq!(config.warnings.len(), 3, "{:?}", config.warnings);
        assert!(!parse("dataDir=/d\nforceSync=no\n").force_sync);
        assert_eq!(parse("dataDir=/d\n").fsync_warning_threshold_ms, 1_000);
        let config = parse("dataDir=/d\nfsync.warningthresholdms=20\n");
        assert_eq!(config.fsync_warning_threshold_ms, 20);
        let message = parse_error("dataDir=/d\nstandaloneEnabled=yes\n");
        assert!(
            message.contains("standaloneEnabled") && message.contains("\"yes\""),
            "{message}"
        );
    }

    #[test]
    fn readonly_mode_enables_isro() {
        // readonlymode.enabled adds isro to the whitelist, and srvr is always present.
        let config = parse("dataDir=/d\nreadonlymode.enabled=true\n4lw.commands.whitelist=ruok\n");
        assert!(config.readonly_mode_enabled);
        let words: Vec<&str> = config
            .four_letter_whitelist
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(words, vec!["isro", "ruok", "srvr"]);
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        // A trailing comment on a value is part of the value, so the number is rejected.
        let message = parse_error("dataDir=/d\nclientPort=2181 # port\n");
        assert_eq!(message, "clientPort=\"2181 # port\": expected an integer");
        let message = parse_error("clientPort=70000\n");
        assert!(
            message.starts_with("clientPort=\"70000\": out of range"),
            "{message}"
        );
        let message = parse_error("electionAlg=1\n");
        assert!(
            message.contains("electionAlg") && message.contains("only 3"),
            "{message}"
        );
        let message = parse_error("keel.shard=4\n");
        assert!(
            message.starts_with("keel.shard: unknown Keel key"),
            "{message}"
        );
    }

    #[test]
    fn validate_applies_zookeepers_checks() {
        // Each broken configuration is refused with a line naming the key.
        let check = |text: &str| parse(text).validate().map_err(|error| error.to_string());
        assert!(check("clientPort=1\n")
            .err()
            .is_some_and(|e| e.starts_with("dataDir")));
        let no_port = check("dataDir=/d\n");
        assert!(no_port.err().is_some_and(|e| e.starts_with("clientPort")));
        let address_only = check("dataDir=/d\nclientPortAddress=1.2.3.4\n");
        assert!(address_only
            .err()
            .is_some_and(|e| e.starts_with("clientPortAddress")));
        let inverted =
            check("dataDir=/d\nclientPort=1\nminSessionTimeout=9\nmaxSessionTimeout=8\n");
        assert!(inverted
            .err()
            .is_some_and(|e| e.starts_with("minSessionTimeout")));
        let no_tick = check("dataDir=/d\nclientPort=1\ntickTime=0\n");
        assert!(no_tick.err().is_some_and(|e| e.starts_with("tickTime")));
    }

    #[test]
    fn snap_retain_count_is_clamped_with_a_warning() {
        // A retain count below 3 is raised to 3, as ZooKeeper does, and a warning says so.
        let config = parse("dataDir=/d\nautopurge.snapRetainCount=1\nautopurge.purgeInterval=-4\n");
        assert_eq!(config.autopurge_snap_retain_count, 3);
        assert_eq!(config.autopurge_purge_interval_hours, 0);
        assert_eq!(config.warnings.len(), 1);
    }

    #[test]
    fn cpu_lists_parse_and_reject_garbage() {
        // keel.cpus takes Linux CPU-list syntax and refuses malformed or reversed ranges.
        let config = parse("dataDir=/d\nkeel.cpus= 0-3, 6 ,2\nkeel.shards=2\nkeel.unpinned=true\n");
        assert_eq!(config.cpus, Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(config.cpu_list(), vec![0, 1, 2, 3, 6]);
        assert_eq!(config.shards, Some(2));
        assert!(config.unpinned);
        assert!(parse_error("keel.cpus=3-1\n").contains("backwards"));
        assert!(parse_error("keel.cpus=a\n").contains("not a CPU index"));
        assert!(parse_error("keel.cpus=\n").contains("keel.cpus"));
        assert!(parse_error("keel.cpus=2000\n").contains("above the limit"));
        // keel.shards=0: one shard on the replica core's executor; below that is an error.
        assert_eq!(parse("dataDir=/d\nkeel.shards=0\n").shards, Some(0));
        assert!(parse_error("keel.shards=-1\n").contains("keel.shards"));
    }

    #[test]
    fn snap_tail_threshold_is_read_and_bounded() {
        assert_eq!(
            parse("dataDir=/d\n").snap_tail_entries_min,
            SNAP_TAIL_ENTRIES_MIN_DEFAULT
        );
        let config = parse("dataDir=/d\nkeel.sync.snap_tail_entries_min=250\n");
        assert_eq!(config.snap_tail_entries_min, 250);
        let message = parse_error("keel.sync.snap_tail_entries_min=-1\n");
        assert!(
            message.contains("keel.sync.snap_tail_entries_min"),
            "{message}"
        );
    }

    #[test]
    fn default_cpu_list_comes_from_the_affinity_mask() {
        // Without keel.cpus the CPU list is the (non-empty, sorted) affinity mask.
        let cpus = Config::embedded_default().cpu_list();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn overrides_behave_like_appended_lines() {
        // An override replaces a file value, re-derives dependants, and leaves self on error.
        let mut config = Config::embedded_default();
        config.apply_override("tickTime=1000").expect("override");
        assert_eq!(config.min_session_timeout_ms, 2000);
        assert_eq!(config.max_session_timeout_ms, 20_000);
        config
            .apply_override(" zookeeper.forceSync = no ")
            .expect("override");
        assert!(!config.force_sync);
        let before = config.clone();
        let error = config
            .apply_override("clientPort=x")
            .expect_err("bad override");
        assert_eq!(error.to_string(), "clientPort=\"x\": expected an integer");
        assert_eq!(config, before);
        assert!(matches!(
            config.apply_override("novalue"),
            Err(ConfigError::Override { .. })
        ));
    }

    #[test]
    fn relative_paths_resolve_against_the_base_dir() {
        // parse_str resolves relative dataDir and JAAS paths against its base directory.
        let config = parse("dataDir=data\njava.security.auth.login.config=jaas.conf\n");
        assert_eq!(config.data_dir, PathBuf::from("/base/data"));
        assert_eq!(
            config.jaas_config_path,
            Some(PathBuf::from("/base/jaas.conf"))
        );
        assert_eq!(config.jaas_section, "Server");
    }

    #[test]
    fn conf_lines_follow_zookeepers_order() {
        // The conf lines come in dumpConf order, and a standalone server reports serverId=0.
        let config = parse("dataDir=/d\nclientPort=2181\ntickTime=2000\n");
        let keys: Vec<String> = config
            .conf_lines()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let expected = [
            "clientPort",
            "secureClientPort",
            "dataDir",
            "dataDirSize",
            "dataLogDir",
            "dataLogSize",
            "tickTime",
            "maxClientCnxns",
            "minSessionTimeout",
            "maxSessionTimeout",
            "clientPortListenBacklog",
            "serverId",
        ];
        assert_eq!(keys, expected);
        let lines = config.conf_lines_with_sizes(10, 20);
        let value = |key: &str| lines.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert_eq!(value("clientPort").as_deref(), Some("2181"));
        assert_eq!(value("secureClientPort").as_deref(), Some("-1"));
        assert_eq!(
            value("dataDir").as_deref(),
            Some("/d/version-2"),
            "ZooKeeper shows the version-2 subdirectory"
        );
        assert_eq!(value("dataLogSize").as_deref(), Some("20"));
        assert_eq!(value("minSessionTimeout").as_deref(), Some("4000"));
        assert_eq!(value("serverId").as_deref(), Some("0"));
    }

    #[test]
    fn server_lines_parse_in_every_form() {
        // Roles, client addresses, IPv6 brackets and multi-addresses parse like QuorumServer.
        let config = parse(
            "dataDir=/nonexistent-keel\nmultiAddress.enabled=true\n\
             server.1=a:2888:3888\nserver.2=b:2888:3888:observer;2181\n\
             server.3=[::1]:2888:3888:participant;10.0.0.3:2182\n\
             server.4=c:1:2|d:3:4\n",
        );
        let server = |id: u64| config.servers.get(&id).expect("server").clone();
        assert_eq!(server(1).role, PeerType::Participant);
        assert_eq!(server(1).client_address, None);
        assert_eq!(server(2).role, PeerType::Observer);
        assert_eq!(server(2).client_address, Some(("0.0.0.0".to_owned(), 2181)));
        assert_eq!(server(3).addresses[0].host, "::1");
        assert_eq!(
            server(3).client_address,
            Some(("10.0.0.3".to_owned(), 2182))
        );
        assert_eq!(server(4).addresses.len(), 2);
        assert!(parse_error("server.1=a:1:1\n").contains("must differ"));
        assert!(parse_error("server.1=a:1\n").contains("expected host:quorumPort"));
        assert!(parse_error("server.1=a:1:2|b:3:4\n").contains("multiAddress.enabled"));
        assert!(parse_error("server.x=a:1:2\n").contains("server id"));
    }

    #[test]
    fn quorum_mode_reads_myid_and_its_own_server_line() {
        // In a quorum the id comes from <dataDir>/myid and the client address from its line.
        let dir = temp_dir("myid");
        std::fs::write(dir.join("myid"), "2\n").expect("write myid");
        let text = format!(
            "dataDir={}\ninitLimit=10\nsyncLimit=5\nserver.1=a:2888:3888;2181\n\
             server.2=b:2888:3888;127.0.0.1:2182\nserver.3=c:2888:3888\n",
            dir.display()
        );
        let config = parse(&text);
        assert!(config.is_quorum());
        assert_eq!(config.server_id, 2);
        assert_eq!(config.client_port, Some(2182));
        assert_eq!(
            config.client_socket_addr(),
            "127.0.0.1:2182".parse().expect("addr")
        );
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        let conf = config.conf_lines();
        assert!(conf.contains(&("serverId".to_owned(), "2".to_owned())));
        std::fs::write(dir.join("myid"), "two\n").expect("write myid");
        assert!(parse_error(&text).contains("is not a number"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn quorum_mode_without_myid_is_refused() {
        // A quorum whose dataDir has no myid file fails validation, naming the file.
        let dir = temp_dir("nomyid");
        let text = format!(
            "dataDir={}\nclientPort=2181\ninitLimit=10\nsyncLimit=5\n\
             server.1=a:2888:3888\nserver.2=b:2888:3888\n",
            dir.display()
        );
        let error = parse(&text).validate().expect_err("missing myid");
        assert!(error.to_string().starts_with("myid: file"), "{error}");
        let no_limit = parse(&text.replace("initLimit=10\n", ""));
        let error = no_limit.validate().expect_err("missing initLimit");
        assert!(error.to_string().starts_with("initLimit"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        // Debug output shows keys but never the SASL super password or unknown values.
        let config = parse(
            "dataDir=/d\nSASLAuthenticationProvider.superPassword=hunter2\nssl.password=hunter3\n",
        );
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("hunter3"),
            "{debug}"
        );
        let password = config.sasl_super_password.as_ref().map(Secret::expose);
        assert_eq!(password, Some("hunter2"));
    }

    #[test]
    fn from_file_reads_and_reports_errors_with_the_path() {
        // A real file is read; a missing file and a bad line both name the path.
        let dir = temp_dir("file");
        let path = dir.join("zoo.cfg");
        std::fs::write(&path, "dataDir=/d\nclientPort=2181\n").expect("write cfg");
        let config = Config::from_file(&path).expect("read cfg");
        assert_eq!(config.config_path.as_deref(), Some(path.as_path()));
        let missing = Config::from_file(&dir.join("absent.cfg")).expect_err("missing file");
        assert!(missing.to_string().contains("absent.cfg"), "{missing}");
        std::fs::write(&path, "a=\\uZZZZ\n").expect("write cfg");
        let bad = Config::from_file(&path).expect_err("bad escape");
        assert!(bad.to_string().contains("zoo.cfg line 1"), "{bad}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn latin1_files_decode_like_java() {
        // Bytes that are not UTF-8 are read as ISO-8859-1, as Properties.load does.
        let text = decode_properties_text(vec![b'k', b'=', 0xe9]);
        assert_eq!(text, "k=\u{e9}");
        assert_eq!(
            decode_properties_text("\u{feff}a=b".as_bytes().to_vec()),
            "a=b"
        );
    }
}
