//! Configuration of the protocol core.

use std::net::IpAddr;
use std::time::Duration;

use confab_sip::auth::Algorithm;
use confab_sip::transaction::Timers;

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
    /// Seeds the nonce and tag secrets, for reproducible tests. `None`: OS randomness.
    pub rng_seed: Option<u64>,
}

impl CoreConfig {
    /// A configuration for `domain` with the defaults: the registrar's defaults (GRUUs in
    /// `domain`), RFC 3261 timers, 5-minute nonces, a 15-minute ban after 10 failures within 5
    /// minutes.
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
            rng_seed: None,
        }
    }
}
