//! Configuration of the protocol core.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use confab_sip::auth::Algorithm;
use confab_sip::transaction::Timers;
use confab_sip::TransportKind;

use crate::registrar::RegistrarConfig;

/// Everything [`crate::Endpoint`] needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The SIP domain served; also the digest realm.
    pub domain: String,
    /// Other names counted as our domain: aliases, advertised host names and addresses.
    pub local_hosts: Vec<String>,
    /// The server's own addresses. Requests addressed to them (and to `localhost`, 127.0.0.0/8
    /// and ::1) count as addressed to the domain.
    pub local_ips: Vec<IpAddr>,
    pub registrar: RegistrarConfig,
    /// RFC 3261 §17 timer values (T1, T2, T4).
    pub timers: Timers,
    /// How long a nonce is accepted before a correct answer gets `stale=true`.
    pub nonce_lifetime: Duration,
    /// Failed authentications from one address (within `failure_window`) that cause a ban;
    /// 0 disables banning.
    pub max_auth_failures: u32,
    pub failure_window: Duration,
    pub ban_duration: Duration,
    /// Digest algorithms offered in challenges, most preferred first (RFC 8760 §2.4); answers
    /// with any other algorithm are not accepted. Some clients (SIPp, old phones) read only the
    /// first challenge and need MD5 first.
    pub digest_algorithms: Vec<Algorithm>,
    /// Largest message handled; larger requests get `513 Message Too Large` when they can be
    /// addressed, anything else larger is dropped.
    pub max_message_size: usize,
    /// Seeds the nonce and tag secrets, for reproducible tests. `None`: OS randomness.
    pub rng_seed: Option<u64>,
    /// The address:port per transport that goes in our Via and Contact headers (the public
    /// address behind a NAT or load balancer). A transport without an entry uses the local
    /// address the flow runs on.
    pub advertised: Vec<(TransportKind, SocketAddr)>,
    /// How often a keep-alive (CRLFCRLF, RFC 5626 §3.5.1 style) goes to each registered UDP
    /// flow, so NAT bindings stay open for calls to the device; `None` disables it.
    pub nat_keepalive_interval: Option<Duration>,
    /// Calls between users (the B2BUA).
    pub calls: CallConfig,
}

/// Policy of the call core (see [`crate::call`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallConfig {
    /// Ringing ends after this with 480 (the `NoAnswer` decision point).
    pub no_answer_timeout: Duration,
    /// Session interval we ask for and grant (RFC 4028 §4; default 1800 s).
    pub session_expires: Duration,
    /// Smallest session interval accepted; smaller requests get 422 (RFC 4028 §5, at least
    /// 90 s).
    pub min_se: Duration,
    /// An answered call with no media from either side for this long is ended (dead phones
    /// that never send BYE); `None` disables the check.
    pub media_timeout: Option<Duration>,
    /// Calls at once (ringing or active); beyond it new calls get 503.
    pub max_calls: usize,
    /// Calls ringing at once from one source address; 0: no limit.
    pub max_ringing_per_source: u32,
    /// New INVITEs per second from one source address (token bucket); 0: no limit.
    pub invites_per_second_per_source: u32,
    /// Bucket size of that limit.
    pub invite_burst_per_source: u32,
    /// Retry-After of the 503s those limits send.
    pub retry_after: Duration,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self {
            no_answer_timeout: Duration::from_secs(60),
            session_expires: Duration::from_secs(1800),
            min_se: Duration::from_secs(90),
            media_timeout: Some(Duration::from_secs(120)),
            max_calls: 10_000,
            max_ringing_per_source: 20,
            invites_per_second_per_source: 10,
            invite_burst_per_source: 20,
            retry_after: Duration::from_secs(10),
        }
    }
}

impl CoreConfig {
    /// A configuration for `domain` with the defaults: the registrar's defaults (GRUUs in
    /// `domain`), RFC 3261 timers, 5-minute nonces, a 15-minute ban after 10 failures within 5
    /// minutes, NAT keep-alives every 25 s, [`CallConfig::default`].
    pub fn new(domain: impl Into<String>) -> Self {
        let domain = domain.into();
        let registrar = RegistrarConfig {
            domain: domain.clone(),
            ..RegistrarConfig::default()
        };
        Self {
            domain,
            local_hosts: Vec::new(),
            local_ips: Vec::new(),
            registrar,
            timers: Timers::default(),
            nonce_lifetime: Duration::from_secs(300),
            max_auth_failures: 10,
            failure_window: Duration::from_secs(300),
            ban_duration: Duration::from_secs(900),
            digest_algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            max_message_size: crate::endpoint::MAX_MESSAGE_SIZE,
            rng_seed: None,
            advertised: Vec::new(),
            nat_keepalive_interval: Some(Duration::from_secs(25)),
            calls: CallConfig::default(),
        }
    }
}
