//! Configuration: embedded defaults, overridden by a TOML file, overridden by the environment.
//!
//! Every setting has a default ([`DEFAULT_TOML`] documents them), so `confab serve` runs with no
//! file at all. A file given with `--config` overrides any of them, and environment variables
//! override the file: `CONFAB_<SECTION>__<KEY>` (two underscores between section and key, any
//! case), for example `CONFAB_SIP__UDP=127.0.0.1:5070`. Lists are comma-separated, and an empty
//! value gives an empty list, which disables that transport. Variables starting with `CONFAB_`
//! but without `__` (such as `CONFAB_CONFIG`) are not settings and are left alone.
//!
//! Loading fails on unknown keys, values of the wrong type and values that make no sense
//! together, and every message names the key (or variable) and the expected form.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override settings.
pub(crate) const ENV_PREFIX: &str = "CONFAB_";

/// The embedded default configuration, printed by `confab config default`. It parses to
/// [`Config::default`] (a unit test holds them together).
pub(crate) const DEFAULT_TOML: &str = r#"# Confab configuration. Every key is optional: what is left out keeps the value shown here.
# Environment variables override this file: CONFAB_<SECTION>__<KEY>, e.g. CONFAB_SIP__UDP=127.0.0.1:5070
# (lists comma-separated; an empty value gives an empty list, which disables that transport).

[server]
# Where the SQLite database (confab.db) and generated TLS files live.
data_dir = "./confab-data"
# The SIP domain: users are sip:NAME@domain, and it is the digest realm.
domain = "confab.local"
# Further host names (or IP addresses) that also count as the local domain.
aliases = []

[sip]
# Listen addresses, IP:PORT. An empty list disables that transport.
udp = ["0.0.0.0:5060"]
tcp = ["0.0.0.0:5060"]
tls = ["0.0.0.0:5061"]
ws = ["0.0.0.0:8080"]
wss = ["0.0.0.0:8443"]
# The IP address or host name put in Via, Contact and Record-Route. Default: derived from the
# listen address (the outbound interface's address when listening on 0.0.0.0).
# advertised_address = "203.0.113.10"
# RFC 3261 timers, milliseconds.
t1_ms = 500
t2_ms = 4000
t4_ms = 5000
# Largest SIP message accepted, bytes.
max_message_size = 65535
# Stream (TCP, TLS, WS, WSS) connections accepted per source IP address.
max_connections_per_ip = 64
# Close a stream connection idle for this long, seconds.
connection_idle_timeout_secs = 900
# Keep NAT bindings of UDP devices open: a keep-alive to each registered UDP flow this often,
# seconds (0 disables).
nat_keepalive_secs = 25
# While a UDP socket is busy (datagrams arriving faster than one per window), it is read at
# most once per this many microseconds, so one wake-up takes a batch of datagrams: less CPU
# per call for up to this much added latency. A quiet socket reads at once (0: never pace).
udp_batch_window_us = 3000

[tls]
# Certificate chain and private key, PEM. Default: a self-signed pair generated on first start
# under <data_dir>/tls/.
# cert = "/etc/confab/cert.pem"
# key = "/etc/confab/key.pem"

[registrar]
# Bounds on the registration interval a client may ask for, seconds (RFC 3261 §10.3).
min_expires = 60
max_expires = 3600
# Interval granted when a REGISTER asks for none.
default_expires = 3600
max_contacts_per_aor = 10

[media]
# The RTP relay: every call's audio flows through these ports (symmetric RTP latching, so phones
# behind NAT work). Bind address of the relay sockets.
bind = "0.0.0.0"
# The address written into SDP for the relay. Default: sip.advertised_address when it is an IP
# address, else the bind address, else this host's first non-loopback address.
# advertised_address = "203.0.113.10"
# Inclusive port range; each call stream takes an RTP/RTCP pair facing each side.
port_min = 20000
port_max = 29999
# Relay threads (0: one per core).
workers = 0
# Sockets of ended calls stay open and are reused by later calls (creating and binding sockets
# is the costliest part of a call's relay set-up), after this many milliseconds, so that a late
# packet of the ended call cannot reach the next one; and at most this many RTP/RTCP pairs
# (0: always close; also capped at an eighth of the open-file limit).
park_cooling_ms = 2000
park_max_pairs = 4096

[calls]
# Ring this long before giving up with 480, seconds.
no_answer_timeout_secs = 60
# RFC 4028 session timer asked of the phones, and the smallest accepted, seconds.
session_expires_secs = 1800
min_se_secs = 90
# End a call when no RTP has flowed either way for this long, seconds (0 disables).
media_timeout_secs = 120
# Limits against call floods: calls at once, and per source IP address ringing calls and new
# INVITEs per second (burst allowance on top).
max_calls = 10000
max_ringing_per_source = 20
invites_per_second_per_source = 10
invite_burst_per_source = 20

[auth]
# How long a digest nonce stays valid, seconds.
nonce_lifetime_secs = 300
# After max_failures failed authentications from one IP within failure_window_secs, that IP is
# banned for ban_secs (0 disables bans).
max_failures = 10
failure_window_secs = 60
ban_secs = 600
# Digest algorithms offered, most preferred first (RFC 8760): "SHA-256" and/or "MD5".
# MD5 alone by default: many phones (Debian's baresip 1.0, SIPp, older desk phones) give up when
# any challenge is not MD5. Offer ["SHA-256", "MD5"] when every phone supports RFC 8760.
algorithms = ["MD5"]

[log]
# A tracing filter: error, warn, info, debug, trace, or directives like "info,confab_sip=debug".
# RUST_LOG overrides it.
level = "info"
# "text" or "json".
format = "text"
"#;

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) sip: SipConfig,
    pub(crate) tls: TlsConfig,
    pub(crate) registrar: RegistrarConfig,
    pub(crate) media: MediaConfig,
    pub(crate) calls: CallsConfig,
    pub(crate) auth: AuthConfig,
    pub(crate) log: LogConfig,
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// Data directory: the SQLite database and generated TLS files.
    pub(crate) data_dir: PathBuf,
    /// The SIP domain, also the digest realm.
    pub(crate) domain: String,
    /// Extra host names counted as the local domain.
    pub(crate) aliases: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./confab-data"),
            domain: "confab.local".to_owned(),
            aliases: Vec::new(),
        }
    }
}

/// `[sip]`: transports and protocol limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SipConfig {
    #[serde(deserialize_with = "socket_addrs")]
    pub(crate) udp: Vec<SocketAddr>,
    #[serde(deserialize_with = "socket_addrs")]
    pub(crate) tcp: Vec<SocketAddr>,
    #[serde(deserialize_with = "socket_addrs")]
    pub(crate) tls: Vec<SocketAddr>,
    #[serde(deserialize_with = "socket_addrs")]
    pub(crate) ws: Vec<SocketAddr>,
    #[serde(deserialize_with = "socket_addrs")]
    pub(crate) wss: Vec<SocketAddr>,
    /// IP address or host name to advertise in Via/Contact/Record-Route; `None`: derive it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) advertised_address: Option<String>,
    pub(crate) t1_ms: u64,
    pub(crate) t2_ms: u64,
    pub(crate) t4_ms: u64,
    pub(crate) max_message_size: usize,
    pub(crate) max_connections_per_ip: u32,
    pub(crate) connection_idle_timeout_secs: u64,
    /// 0 disables NAT keep-alives.
    pub(crate) nat_keepalive_secs: u64,
    /// 0 reads every datagram as soon as it arrives.
    pub(crate) udp_batch_window_us: u64,
}

impl Default for SipConfig {
    fn default() -> Self {
        let any = |port| vec![SocketAddr::from(([0, 0, 0, 0], port))];
        Self {
            udp: any(5060),
            tcp: any(5060),
            tls: any(5061),
            ws: any(8080),
            wss: any(8443),
            advertised_address: None,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            max_message_size: 65535,
            max_connections_per_ip: 64,
            connection_idle_timeout_secs: 900,
            nat_keepalive_secs: 25,
            udp_batch_window_us: 3000,
        }
    }
}

// Accessors for the server wiring (server.rs), which may not use all of them yet.
#[allow(dead_code)]
impl SipConfig {
    /// RFC 3261 T1, the round-trip estimate.
    pub(crate) fn t1(&self) -> Duration {
        Duration::from_millis(self.t1_ms)
    }

    /// RFC 3261 T2, the longest retransmit interval for non-INVITE requests and INVITE responses.
    pub(crate) fn t2(&self) -> Duration {
        Duration::from_millis(self.t2_ms)
    }

    /// RFC 3261 T4, the longest time a message stays in the network.
    pub(crate) fn t4(&self) -> Duration {
        Duration::from_millis(self.t4_ms)
    }

    /// How long an idle stream connection is kept.
    pub(crate) fn connection_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.connection_idle_timeout_secs)
    }
}

/// `[tls]`: certificate and key; both unset means a generated self-signed pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TlsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<PathBuf>,
}

/// `[registrar]`, seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RegistrarConfig {
    pub(crate) min_expires: u32,
    pub(crate) max_expires: u32,
    pub(crate) default_expires: u32,
    pub(crate) max_contacts_per_aor: u32,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts_per_aor: 10,
        }
    }
}

/// `[media]`: the RTP relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MediaConfig {
    pub(crate) bind: std::net::IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) advertised_address: Option<std::net::IpAddr>,
    pub(crate) port_min: u16,
    pub(crate) port_max: u16,
    pub(crate) workers: u32,
    pub(crate) park_cooling_ms: u64,
    pub(crate) park_max_pairs: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            advertised_address: None,
            port_min: 20000,
            port_max: 29999,
            workers: 0,
            park_cooling_ms: 2000,
            park_max_pairs: 4096,
        }
    }
}

/// `[calls]`: ringing, session timers and flood limits, seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CallsConfig {
    pub(crate) no_answer_timeout_secs: u64,
    pub(crate) session_expires_secs: u64,
    pub(crate) min_se_secs: u64,
    /// 0 disables the media-inactivity timeout.
    pub(crate) media_timeout_secs: u64,
    pub(crate) max_calls: u32,
    pub(crate) max_ringing_per_source: u32,
    pub(crate) invites_per_second_per_source: u32,
    pub(crate) invite_burst_per_source: u32,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            no_answer_timeout_secs: 60,
            session_expires_secs: 1800,
            min_se_secs: 90,
            media_timeout_secs: 120,
            max_calls: 10000,
            max_ringing_per_source: 20,
            invites_per_second_per_source: 10,
            invite_burst_per_source: 20,
        }
    }
}

/// `[auth]`: digest nonces and brute-force bans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AuthConfig {
    pub(crate) nonce_lifetime_secs: u64,
    pub(crate) max_failures: u32,
    pub(crate) failure_window_secs: u64,
    /// 0 disables bans.
    pub(crate) ban_secs: u64,
    /// Digest algorithms offered, most preferred first.
    pub(crate) algorithms: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            nonce_lifetime_secs: 300,
            max_failures: 10,
            failure_window_secs: 60,
            ban_secs: 600,
            algorithms: vec!["MD5".to_owned()],
        }
    }
}

// Accessors for the server wiring (server.rs), which may not use all of them yet.
#[allow(dead_code)]
impl AuthConfig {
    pub(crate) fn nonce_lifetime(&self) -> Duration {
        Duration::from_secs(self.nonce_lifetime_secs)
    }

    pub(crate) fn failure_window(&self) -> Duration {
        Duration::from_secs(self.failure_window_secs)
    }

    pub(crate) fn ban(&self) -> Duration {
        Duration::from_secs(self.ban_secs)
    }
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive string; `RUST_LOG` overrides it.
    pub(crate) level: String,
    pub(crate) format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{0}")]
    Syntax(String),
    /// One or more settings are wrong; each problem names its key or variable.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems found, one line each, for printing.
    pub(crate) fn lines(&self) -> Vec<String> {
        match self {
            Self::Invalid(problems) => problems.iter().map(ToString::to_string).collect(),
            other => other.to_string().lines().map(str::to_owned).collect(),
        }
    }
}

/// One wrong setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Where: a key path such as `sip.udp[0]`, possibly with the file line or the environment
    /// variable it came from.
    pub(crate) key: String,
    /// What is wrong and what is expected.
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Loads the effective configuration: defaults, then `file` if given, then the process
    /// environment.
    pub(crate) fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.to_path_buf(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Self::from_sources(text.as_deref(), std::env::vars())
    }

    /// Builds the configuration from a file's text (if any) and environment variables (all of
    /// them may be passed; only `CONFAB_<SECTION>__<KEY>` ones are read), then validates it.
    pub(crate) fn from_sources(
        file: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(text) => {
                let table: toml::Table = text
                    .parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
                // Deserialize the file alone first, so that its mistakes are reported with their
                // line numbers.
                let deserializer = toml::Deserializer::new(text);
                if let Err(e) = serde_path_to_error::deserialize::<_, Self>(deserializer) {
                    let line = e.inner().span().map(|span| line_of(text, span.start));
                    let key = match line {
                        Some(line) => format!("{} (line {line})", e.path()),
                        None => e.path().to_string(),
                    };
                    return Err(ConfigError::Invalid(vec![problem(
                        key,
                        clarify(e.inner().message()),
                    )]));
                }
                table
            }
            None => toml::Table::new(),
        };
        let from_env = apply_env(&mut table, env)?;
        let config: Self =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let mut key = e.path().to_string();
                // Name the variable when the bad value came from the environment.
                let var = from_env.iter().find(|(setting, _)| {
                    key.strip_prefix(setting.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('['))
                });
                if let Some((_, var)) = var {
                    key = format!("{key} ({var})");
                }
                ConfigError::Invalid(vec![problem(key, clarify(e.inner().message()))])
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: ranges, bounds that must be ordered, host names.
    /// Reports every problem found, not only the first.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, message: String| {
            if !ok {
                problems.push(problem(key, message));
            }
        };

        let server = &self.server;
        check(
            !server.data_dir.as_os_str().is_empty(),
            "server.data_dir",
            "must not be empty (expected a directory path, e.g. \"./confab-data\")".to_owned(),
        );
        check(
            is_host(&server.domain),
            "server.domain",
            format!(
                "{:?} is not a domain name (expected e.g. \"example.com\")",
                server.domain
            ),
        );
        for (i, alias) in server.aliases.iter().enumerate() {
            check(
                is_host(alias),
                &format!("server.aliases[{i}]"),
                format!("{alias:?} is not a host name or IP address (expected e.g. \"pbx.example.com\")"),
            );
        }

        check(
            !self.auth.algorithms.is_empty(),
            "auth.algorithms",
            "must name at least one algorithm (expected e.g. [\"SHA-256\", \"MD5\"])".to_owned(),
        );
        for (i, name) in self.auth.algorithms.iter().enumerate() {
            check(
                confab_sip::auth::Algorithm::parse(name).is_ok(),
                &format!("auth.algorithms[{i}]"),
                format!("{name:?} is not a digest algorithm (expected \"SHA-256\" or \"MD5\")"),
            );
        }

        let media = &self.media;
        check(
            media.port_min >= 1024 && media.port_min < media.port_max,
            "media.port_min",
            format!(
                "{}..{} is not a usable range (expected 1024 <= port_min < port_max, e.g. 20000 and 29999)",
                media.port_min, media.port_max
            ),
        );
        check(
            media.port_max - media.port_min.min(media.port_max) >= 3,
            "media.port_max",
            "the range must hold at least one call (4 ports)".to_owned(),
        );
        check(
            media.park_cooling_ms >= 100 && media.park_cooling_ms <= 60_000,
            "media.park_cooling_ms",
            format!(
                "{} is outside 100..=60000 (milliseconds before a parked relay port is reused)",
                media.park_cooling_ms
            ),
        );
        let calls = &self.calls;
        check(
            calls.no_answer_timeout_secs > 0,
            "calls.no_answer_timeout_secs",
            "must be at least 1 (seconds)".to_owned(),
        );
        check(
            calls.min_se_secs >= 90,
            "calls.min_se_secs",
            format!("{} is below 90, the RFC 4028 minimum", calls.min_se_secs),
        );
        check(
            calls.session_expires_secs >= calls.min_se_secs,
            "calls.session_expires_secs",
            format!(
                "{} is less than calls.min_se_secs ({})",
                calls.session_expires_secs, calls.min_se_secs
            ),
        );
        check(
            calls.max_calls > 0,
            "calls.max_calls",
            "must be at least 1".to_owned(),
        );

        let sip = &self.sip;
        check(
            [&sip.udp, &sip.tcp, &sip.tls, &sip.ws, &sip.wss]
                .iter()
                .any(|l| !l.is_empty()),
            "sip",
            "every transport list (udp, tcp, tls, ws, wss) is empty: enable at least one"
                .to_owned(),
        );
        if let Some(addr) = &sip.advertised_address {
            check(
                is_host(addr),
                "sip.advertised_address",
                format!(
                    "{addr:?} is not an IP address or host name (expected e.g. \"203.0.113.10\" \
                     or \"sip.example.com\", without a port)"
                ),
            );
        }
        check(
            sip.t1_ms > 0,
            "sip.t1_ms",
            "must be at least 1 (milliseconds)".to_owned(),
        );
        check(
            sip.t2_ms >= sip.t1_ms,
            "sip.t2_ms",
            format!(
                "{} is less than sip.t1_ms ({}); T2 must be at least T1",
                sip.t2_ms, sip.t1_ms
            ),
        );
        check(
            sip.t4_ms > 0,
            "sip.t4_ms",
            "must be at least 1 (milliseconds)".to_owned(),
        );
        check(
            (1024..=16 * 1024 * 1024).contains(&sip.max_message_size),
            "sip.max_message_size",
            format!(
                "{} is out of range (expected 1024 to 16777216 bytes)",
                sip.max_message_size
            ),
        );
        check(
            sip.max_connections_per_ip > 0,
            "sip.max_connections_per_ip",
            "must be at least 1".to_owned(),
        );
        check(
            sip.udp_batch_window_us <= 100_000,
            "sip.udp_batch_window_us",
            format!(
                "{} is out of range (expected 0 to 100000 microseconds; 0 disables batching)",
                sip.udp_batch_window_us
            ),
        );
        check(
            sip.connection_idle_timeout_secs > 0,
            "sip.connection_idle_timeout_secs",
            "must be at least 1 (seconds)".to_owned(),
        );

        let tls = &self.tls;
        match (&tls.cert, &tls.key) {
            (Some(_), None) => check(false, "tls.key", "must be set when tls.cert is".to_owned()),
            (None, Some(_)) => check(false, "tls.cert", "must be set when tls.key is".to_owned()),
            _ => {}
        }
        for (key, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
            if let Some(path) = path {
                check(
                    path.is_file(),
                    key,
                    format!("file {} does not exist", path.display()),
                );
            }
        }

        let reg = &self.registrar;
        check(
            reg.min_expires > 0,
            "registrar.min_expires",
            "must be at least 1 (seconds)".to_owned(),
        );
        check(
            reg.min_expires <= reg.max_expires,
            "registrar.min_expires",
            format!(
                "{} is greater than registrar.max_expires ({}); expected min_expires <= max_expires",
                reg.min_expires, reg.max_expires
            ),
        );
        check(
            (reg.min_expires..=reg.max_expires).contains(&reg.default_expires)
                || reg.min_expires > reg.max_expires,
            "registrar.default_expires",
            format!(
                "{} is outside registrar.min_expires..=registrar.max_expires ({}..={})",
                reg.default_expires, reg.min_expires, reg.max_expires
            ),
        );
        check(
            reg.max_contacts_per_aor > 0,
            "registrar.max_contacts_per_aor",
            "must be at least 1".to_owned(),
        );

        let auth = &self.auth;
        check(
            auth.nonce_lifetime_secs > 0,
            "auth.nonce_lifetime_secs",
            "must be at least 1 (seconds)".to_owned(),
        );
        check(
            auth.max_failures > 0,
            "auth.max_failures",
            "must be at least 1".to_owned(),
        );
        check(
            auth.failure_window_secs > 0,
            "auth.failure_window_secs",
            "must be at least 1 (seconds)".to_owned(),
        );

        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            check(
                false,
                "log.level",
                format!(
                    "{:?} is not a log filter ({e}); expected error, warn, info, debug, trace or \
                     directives like \"info,confab_sip=debug\"",
                    self.log.level
                ),
            );
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The effective configuration as TOML (`confab config show`).
    pub(crate) fn to_toml(&self) -> String {
        // Invariant: every field is a string, path, integer, list or table, all of which TOML
        // represents, and `None`s are skipped; `config_round_trips_through_toml` checks this.
        toml::to_string_pretty(self).expect("Config always serializes to TOML")
    }

    /// The configured digest algorithms, most preferred first (valid after `validate`).
    pub(crate) fn digest_algorithms(&self) -> Vec<confab_sip::auth::Algorithm> {
        self.auth
            .algorithms
            .iter()
            .filter_map(|a| confab_sip::auth::Algorithm::parse(a).ok())
            .collect()
    }

    /// The domain and its aliases: host names that mean "this server".
    #[allow(dead_code)] // For the server wiring (server.rs).
    pub(crate) fn local_domains(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.server.domain.as_str())
            .chain(self.server.aliases.iter().map(String::as_str))
    }

    #[allow(dead_code)] // For the server wiring (server.rs).
    /// Certificate and key paths: the configured ones, or where the generated self-signed pair
    /// lives (`<data_dir>/tls/cert.pem`, `<data_dir>/tls/key.pem`).
    pub(crate) fn tls_paths(&self) -> (PathBuf, PathBuf) {
        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => {
                let dir = self.server.data_dir.join("tls");
                (dir.join("cert.pem"), dir.join("key.pem"))
            }
        }
    }

    #[allow(dead_code)] // For the server wiring (server.rs).
    /// Whether the TLS certificate is generated rather than configured.
    pub(crate) fn tls_self_signed(&self) -> bool {
        self.tls.cert.is_none() || self.tls.key.is_none()
    }
}

/// Overrides `table` with the `CONFAB_<SECTION>__<KEY>` variables in `env`, converting each value
/// to the type of its key. Returns which variable set which `section.key`.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let schema = schema();
    let mut problems = Vec::new();
    let mut applied = BTreeMap::new();
    // Sorted, so that errors come out in a stable order.
    let vars: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name.contains("__"))
        .collect();
    for (var, raw) in vars {
        let rest = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let Some((section, key)) = rest
            .split_once("__")
            .filter(|(s, k)| !s.is_empty() && !k.contains("__"))
        else {
            problems.push(problem(
                var,
                "expected CONFAB_<SECTION>__<KEY>, e.g. CONFAB_SIP__UDP",
            ));
            continue;
        };
        let Some(keys) = schema.get(section) else {
            let sections: Vec<_> = schema.keys().map(String::as_str).collect();
            problems.push(problem(
                var,
                format!(
                    "unknown section `{section}`, expected one of {}",
                    sections.join(", ")
                ),
            ));
            continue;
        };
        let Some(kind) = keys.get(key) else {
            let known: Vec<_> = keys.keys().map(String::as_str).collect();
            problems.push(problem(
                var,
                format!(
                    "unknown key `{section}.{key}`, expected one of {}",
                    known.join(", ")
                ),
            ));
            continue;
        };
        let value = match kind {
            Kind::List => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| toml::Value::String(item.to_owned()))
                    .collect(),
            ),
            Kind::Integer => match raw.trim().parse::<i64>() {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => {
                    problems.push(problem(
                        format!("{var} ({section}.{key})"),
                        format!("{raw:?} is not a whole number"),
                    ));
                    continue;
                }
            },
            Kind::Boolean => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => {
                    problems.push(problem(
                        format!("{var} ({section}.{key})"),
                        format!("{raw:?} is not a boolean (expected true or false)"),
                    ));
                    continue;
                }
            },
            Kind::String => toml::Value::String(raw),
        };
        let section_table = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key.to_owned(), value);
                applied.insert(format!("{section}.{key}"), var.clone());
            }
            _ => problems.push(problem(section, "expected a table, e.g. [sip]")),
        }
    }
    if problems.is_empty() {
        Ok(applied)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// The type of a setting, for converting environment values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    String,
    Integer,
    Boolean,
    List,
}

/// Settings that are unset by default, so that serializing the defaults does not show them.
const OPTIONAL_KEYS: [(&str, &str); 4] = [
    ("sip", "advertised_address"),
    ("media", "advertised_address"),
    ("tls", "cert"),
    ("tls", "key"),
];

/// Every section and key with its kind, read off the serialized defaults so it cannot drift from
/// the structs.
fn schema() -> BTreeMap<String, BTreeMap<String, Kind>> {
    let defaults =
        toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Table(toml::Table::new()));
    let mut schema: BTreeMap<String, BTreeMap<String, Kind>> = BTreeMap::new();
    if let toml::Value::Table(sections) = defaults {
        for (section, keys) in sections {
            let entry = schema.entry(section).or_default();
            if let toml::Value::Table(keys) = keys {
                for (key, value) in keys {
                    let kind = match value {
                        toml::Value::Integer(_) => Kind::Integer,
                        toml::Value::Boolean(_) => Kind::Boolean,
                        toml::Value::Array(_) => Kind::List,
                        _ => Kind::String,
                    };
                    entry.insert(key, kind);
                }
            }
        }
    }
    for (section, key) in OPTIONAL_KEYS {
        schema
            .entry(section.to_owned())
            .or_default()
            .insert(key.to_owned(), Kind::String);
    }
    schema
}

/// Rewrites serde's type names in an error message into words a user knows.
fn clarify(message: &str) -> String {
    let mut message = message.trim().to_owned();
    for (rust, words) in [
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a non-negative whole number"),
        ("expected usize", "expected a non-negative whole number"),
        ("expected a string", "expected a quoted string"),
    ] {
        if message.ends_with(rust) {
            message.truncate(message.len() - rust.len());
            message.push_str(words);
        }
    }
    message
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Whether `s` is an IP address or a DNS host name (RFC 1123 labels).
fn is_host(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Deserializes a list of `IP:PORT` strings, naming the bad element and the expected form.
fn socket_addrs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SocketAddr>, D::Error> {
    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<SocketAddr>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of socket addresses (IP:PORT), e.g. [\"0.0.0.0:5060\"]")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut addrs = Vec::new();
            while let Some(ListenAddr(addr)) = seq.next_element()? {
                addrs.push(addr);
            }
            Ok(addrs)
        }
    }

    deserializer.deserialize_seq(ListVisitor)
}

/// One `IP:PORT` list element.
struct ListenAddr(SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AddrVisitor;

        impl Visitor<'_> for AddrVisitor {
            type Value = ListenAddr;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a socket address string IP:PORT, e.g. \"0.0.0.0:5060\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<ListenAddr, E> {
                s.trim().parse().map(ListenAddr).map_err(|_| {
                    E::custom(format!(
                        "{s:?} is not a socket address (expected IP:PORT, e.g. 0.0.0.0:5060)"
                    ))
                })
            }
        }

        deserializer.deserialize_str(AddrVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn from(file: &str) -> Result<Config, ConfigError> {
        Config::from_sources(Some(file), env(&[]))
    }

    fn error(file: &str, vars: &[(&str, &str)]) -> String {
        Config::from_sources(Some(file), env(vars))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn embedded_default_toml_is_the_default() {
        assert_eq!(from(DEFAULT_TOML).unwrap(), Config::default());
        assert_eq!(
            Config::from_sources(None, env(&[])).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn udp_batch_window_is_bounded_and_zero_turns_it_off() {
        let e = error("[sip]\nudp_batch_window_us = 200000\n", &[]);
        assert!(e.contains("sip.udp_batch_window_us"), "{e}");
        assert!(e.contains("0 to 100000"), "{e}");
        let off = from("[sip]\nudp_batch_window_us = 0\n").unwrap();
        assert_eq!(off.sip.udp_batch_window_us, 0);
        let by_env =
            Config::from_sources(None, env(&[("CONFAB_SIP__UDP_BATCH_WINDOW_US", "500")])).unwrap();
        assert_eq!(by_env.sip.udp_batch_window_us, 500);
    }

    #[test]
    fn config_round_trips_through_toml() {
        let mut config = Config::default();
        config.sip.advertised_address = Some("127.0.0.1".into());
        config.sip.ws.clear();
        config.server.aliases = vec!["pbx.example.com".into()];
        let text = config.to_toml();
        assert_eq!(from(&text).unwrap(), config);
        assert_eq!(
            from(&Config::default().to_toml()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn file_overrides_defaults_and_keeps_the_rest() {
        let config =
            from("[sip]\nudp = [\"127.0.0.1:5070\"]\nwss = []\n[server]\ndomain = \"pbx.test\"\n")
                .unwrap();
        assert_eq!(
            config.sip.udp,
            ["127.0.0.1:5070".parse::<SocketAddr>().unwrap()]
        );
        assert!(config.sip.wss.is_empty());
        assert_eq!(config.sip.tcp, SipConfig::default().tcp);
        assert_eq!(config.server.domain, "pbx.test");
        assert_eq!(config.registrar, RegistrarConfig::default());
    }

    #[test]
    fn env_overrides_file() {
        let vars = [
            ("CONFAB_SIP__UDP", "127.0.0.1:5070, 127.0.0.1:5071"),
            ("CONFAB_SIP__WS", ""),
            ("confab_registrar__max_expires", "7200"),
            ("CONFAB_SIP__ADVERTISED_ADDRESS", "127.0.0.1"),
            ("CONFAB_LOG__FORMAT", "json"),
            ("CONFAB_CONFIG", "/not/a/setting.toml"),
            ("PATH", "/usr/bin"),
        ];
        let config = Config::from_sources(
            Some("[sip]\nudp = [\"0.0.0.0:1\"]\n[registrar]\nmax_expires = 100\ndefault_expires = 100\n"),
            env(&vars),
        )
        .unwrap();
        assert_eq!(config.sip.udp.len(), 2);
        assert_eq!(
            config.sip.udp[1],
            "127.0.0.1:5071".parse::<SocketAddr>().unwrap()
        );
        assert!(config.sip.ws.is_empty());
        // The prefix is upper case (the section and key are matched in any case).
        assert_eq!(
            config.registrar.max_expires, 100,
            "confab_ is not the prefix"
        );
        assert_eq!(config.sip.advertised_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(config.log.format, LogFormat::Json);

        let config =
            Config::from_sources(None, env(&[("CONFAB_Registrar__Max_Expires", "7200")])).unwrap();
        assert_eq!(config.registrar.max_expires, 7200);
    }

    #[test]
    fn every_optional_key_can_come_from_env() {
        let dir = std::env::temp_dir();
        let file = dir.join(format!("confab-config-test-{}.pem", std::process::id()));
        std::fs::write(&file, "x").unwrap();
        let path = file.to_str().unwrap();
        let config = Config::from_sources(
            None,
            env(&[("CONFAB_TLS__CERT", path), ("CONFAB_TLS__KEY", path)]),
        )
        .unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(config.tls_paths(), (file.clone(), file));
        assert!(!config.tls_self_signed());
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = error("", &[("CONFAB_SIP__UPD", "127.0.0.1:5060")]);
        assert!(
            e.starts_with("CONFAB_SIP__UPD: unknown key `sip.upd`, expected one of"),
            "{e}"
        );
        let e = error("", &[("CONFAB_SIPP__UDP", "x")]);
        assert!(e.contains("unknown section `sipp`"), "{e}");
        let e = error("", &[("CONFAB_SIP__T1_MS", "fast")]);
        assert_eq!(
            e,
            "CONFAB_SIP__T1_MS (sip.t1_ms): \"fast\" is not a whole number"
        );
        let e = error("", &[("CONFAB_SIP__UDP", "127.0.0.1:5060,localhost:5060")]);
        assert_eq!(
            e,
            "sip.udp[1] (CONFAB_SIP__UDP): \"localhost:5060\" is not a socket address (expected IP:PORT, e.g. \
             0.0.0.0:5060)"
        );
    }

    #[test]
    fn file_errors_name_the_key() {
        let e = error("[sip]\nudp = [\"127.0.0.1:99999\"]\n", &[]);
        assert_eq!(
            e,
            "sip.udp[0] (line 2): \"127.0.0.1:99999\" is not a socket address (expected IP:PORT, \
             e.g. 0.0.0.0:5060)"
        );
        let e = error("[sip]\nudpp = []\n", &[]);
        assert!(
            e.starts_with("sip.udpp (line 2): unknown field `udpp`, expected one of `udp`"),
            "{e}"
        );
        let e = error("[sipp]\n", &[]);
        assert!(e.starts_with("sipp (line 1): unknown field `sipp`"), "{e}");
        let e = error("[registrar]\nmin_expires = \"60\"\n", &[]);
        assert!(
            e.starts_with("registrar.min_expires (line 2): invalid type: string \"60\""),
            "{e}"
        );
        assert!(
            e.ends_with("expected a whole number from 0 to 4294967295"),
            "{e}"
        );
        let e = error("[sip]\nudp = \"0.0.0.0:5060\"\n", &[]);
        assert!(e.contains("expected a list of socket addresses"), "{e}");
        let e = error("[log]\nformat = \"xml\"\n", &[]);
        assert!(
            e.starts_with("log.format (line 2): unknown variant `xml`"),
            "{e}"
        );
        let e = error("[sip\n", &[]);
        assert!(e.starts_with("TOML parse error at line 1"), "{e}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let e = Config::from_sources(
            Some(
                "[registrar]\nmin_expires = 7200\nmax_expires = 3600\n[server]\ndomain = \"a b\"\n\
                 [sip]\nt1_ms = 0\nadvertised_address = \"1.2.3.4:5060\"\n[tls]\ncert = \"c.pem\"\n",
            ),
            env(&[]),
        )
        .unwrap_err();
        let lines = e.lines();
        let keys: Vec<_> = lines.iter().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "server.domain",
                "sip.advertised_address",
                "sip.t1_ms",
                "tls.key",
                "tls.cert",
                "registrar.min_expires"
            ],
            "{lines:#?}"
        );
        assert!(
            lines[5].contains("7200 is greater than registrar.max_expires (3600)"),
            "{e}"
        );
    }

    #[test]
    fn other_checks() {
        assert!(from("[registrar]\ndefault_expires = 10\n").is_err());
        assert!(from("[sip]\nudp=[]\ntcp=[]\ntls=[]\nws=[]\nwss=[]\n").is_err());
        assert!(from("[sip]\nudp=[]\ntcp=[]\ntls=[]\nws=[]\n").is_ok());
        assert!(from("[log]\nlevel = \"info,confab_sip=debug\"\n").is_ok());
        assert!(from("[log]\nlevel = \"[[[\"\n").is_err());
        assert!(
            from("[server]\naliases = [\"pbx.example.com\", \"127.0.0.1\", \"bad_name\"]\n")
                .unwrap_err()
                .to_string()
                .starts_with("server.aliases[2]: \"bad_name\"")
        );
        assert!(from("[sip]\nadvertised_address = \"sip.example.com\"\n").is_ok());
    }

    #[test]
    fn helpers() {
        let config = Config::default();
        assert_eq!(config.sip.t1(), Duration::from_millis(500));
        assert_eq!(config.auth.ban(), Duration::from_secs(600));
        assert_eq!(config.local_domains().collect::<Vec<_>>(), ["confab.local"]);
        assert_eq!(
            config.tls_paths().0,
            Path::new("./confab-data/tls/cert.pem")
        );
        assert!(config.tls_self_signed());
    }
}
