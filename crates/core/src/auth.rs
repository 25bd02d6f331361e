//! The digest authentication policy: which challenges to send, how credentials are checked, and
//! what a failure costs the sender.
//!
//! Rules (RFC 3261 §22, RFC 7616, RFC 8760):
//! - Challenges offer SHA-256 first, then MD5 (RFC 8760 §2.4), `qop="auth"`, one fresh nonce.
//! - An unknown user and a wrong password look the same on the wire (a fresh challenge) and cost
//!   about the same time: an unknown user is verified against a dummy HA1.
//! - Failures count against the source address; after too many the address is banned
//!   (see [`crate::ban`]).
//! - A correct answer to an expired nonce gets `stale=true` and is not a failure.
//! - A replayed nonce count is a failure.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_sip::auth::{self, Algorithm, Challenge, Credentials, NonceCheck, NonceManager};
use confab_sip::{HeaderName, Request, Response};
use parking_lot::Mutex;

use crate::ban::{BanList, FailureOutcome};
use crate::directory::{UserCredential, UserDirectory};

/// How many of the most recently issued nonces replay protection covers (a bit each, about
/// 0.6 MB at most). Beyond that the oldest are forgotten and come back as stale, which costs a
/// phone one extra round trip: at 5,000 challenges a second that happens only past 800 s, after
/// the nonce lifetime anyway.
const MAX_TRACKED_NONCES: usize = 4_000_000;

/// Which header pair the challenge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthKind {
    /// 401, WWW-Authenticate / Authorization (registrar, UAS).
    Www,
    /// 407, Proxy-Authenticate / Proxy-Authorization (requests routed on, e.g. INVITE).
    Proxy,
}

impl AuthKind {
    pub(crate) fn status(self) -> u16 {
        match self {
            Self::Www => 401,
            Self::Proxy => 407,
        }
    }
    fn credentials_header(self) -> HeaderName {
        match self {
            Self::Www => HeaderName::Authorization,
            Self::Proxy => HeaderName::ProxyAuthorization,
        }
    }
    fn challenge_header(self) -> HeaderName {
        match self {
            Self::Www => HeaderName::WwwAuthenticate,
            Self::Proxy => HeaderName::ProxyAuthenticate,
        }
    }
}

/// What [`DigestAuth::authenticate`] decided.
#[derive(Debug)]
pub(crate) enum AuthOutcome {
    /// The credentials verified; the nonce count was committed.
    Verified(UserCredential),
    /// No usable credentials (none, another realm, another scheme, a nonce we did not issue):
    /// challenge, nothing counted.
    Challenge,
    /// The password was right but the nonce expired: challenge with `stale=true`.
    Stale,
    /// Wrong password, unknown user or replayed nonce: counted; challenge (unless now banned).
    Failed(FailureOutcome),
}

/// The digest policy shared by every request path. `Send + Sync`; locks are held only for a
/// nonce issue or check.
pub(crate) struct DigestAuth {
    realm: String,
    users: Arc<dyn UserDirectory>,
    nonces: Mutex<NonceManager>,
    bans: BanList,
    dummy_md5: String,
    dummy_sha256: String,
    algorithms: Vec<Algorithm>,
}

impl DigestAuth {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        realm: &str,
        users: Arc<dyn UserDirectory>,
        nonce_secret: [u8; 32],
        nonce_lifetime: Duration,
        epoch: Instant,
        max_failures: u32,
        failure_window: Duration,
        ban_duration: Duration,
        algorithms: Vec<Algorithm>,
    ) -> Self {
        // The dummy password is derived from the secret, so it is unguessable and per-process.
        let dummy_pw: String = nonce_secret.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            realm: realm.to_owned(),
            users,
            nonces: Mutex::new(NonceManager::new(
                nonce_secret,
                nonce_lifetime,
                MAX_TRACKED_NONCES,
                epoch,
            )),
            bans: BanList::new(max_failures, failure_window, ban_duration),
            dummy_md5: auth::ha1(Algorithm::Md5, "\u{0}", realm, &dummy_pw),
            dummy_sha256: auth::ha1(Algorithm::Sha256, "\u{0}", realm, &dummy_pw),
            algorithms,
        }
    }

    pub(crate) fn bans(&self) -> &BanList {
        &self.bans
    }

    /// Checks the credentials of `req` for `kind`. Never panics on any input.
    pub(crate) fn authenticate(
        &self,
        now: Instant,
        req: &Request,
        kind: AuthKind,
        source: IpAddr,
    ) -> AuthOutcome {
        let Some(creds) = self.our_credentials(req, kind) else {
            return AuthOutcome::Challenge;
        };
        if !self.algorithms.contains(&creds.algorithm) {
            // Not an algorithm we offered: answer with our challenges, as for no credentials.
            return AuthOutcome::Challenge;
        }
        let check = self.nonces.lock().check(&creds.nonce, creds.nc, now);
        let nonce_use = match check {
            NonceCheck::Unknown => return AuthOutcome::Challenge,
            NonceCheck::Replayed => {
                return AuthOutcome::Failed(self.bans.record_failure(source, now));
            }
            NonceCheck::Valid(used) => Some(used),
            NonceCheck::Stale => None,
        };
        // The same work whether or not the user exists: look up, then verify against the real
        // HA1 or against a dummy one.
        let found = self.users.credentials(&creds.username, creds.algorithm);
        let dummy = match creds.algorithm {
            Algorithm::Sha256 => &self.dummy_sha256,
            Algorithm::Md5 => &self.dummy_md5,
        };
        let ha1 = found.as_ref().map_or(dummy.as_str(), |u| u.ha1.as_str());
        let verified = auth::verify(&creds, req.method.as_str(), ha1);
        match (found, verified, nonce_use) {
            (Some(user), true, Some(used)) => {
                // A false commit means the same count won a race meanwhile: a replay.
                if !self.nonces.lock().commit(used) {
                    return AuthOutcome::Failed(self.bans.record_failure(source, now));
                }
                self.bans.record_success(source);
                AuthOutcome::Verified(user)
            }
            // Right password, expired nonce (RFC 7616 §3.3): retry silently, no failure.
            (Some(_), true, None) => AuthOutcome::Stale,
            _ => AuthOutcome::Failed(self.bans.record_failure(source, now)),
        }
    }

    /// The first Digest credentials of `kind` for our realm, if any parse.
    fn our_credentials(&self, req: &Request, kind: AuthKind) -> Option<Credentials> {
        let name = kind.credentials_header();
        let found = req
            .headers
            .get_all(&name)
            .filter_map(|v| Credentials::parse(v).ok())
            .find(|c| c.realm == self.realm);
        found
    }

    /// Adds one challenge per configured algorithm, most preferred first (RFC 8760 §2.4).
    pub(crate) fn add_challenges(
        &self,
        now: Instant,
        resp: &mut Response,
        kind: AuthKind,
        stale: bool,
    ) {
        let nonce = self.nonces.lock().issue(now);
        let header = kind.challenge_header();
        for &algorithm in &self.algorithms {
            let value = Challenge::header_value(&self.realm, &nonce, None, algorithm, stale);
            resp.headers.push(header.clone(), value);
        }
    }

    /// Periodic upkeep of nonce state and bans; returns the addresses whose ban was lifted.
    pub(crate) fn handle_timeout(&self, now: Instant) -> Vec<IpAddr> {
        self.nonces.lock().handle_timeout(now);
        self.bans.handle_timeout(now)
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let nonces = self.nonces.lock().poll_timeout();
        [nonces, self.bans.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}
