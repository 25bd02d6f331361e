//! The sans-IO request dispatcher: bytes in, transmits out.
//!
//! [`Endpoint`] takes one inbound datagram or frame at a time, parses it, absorbs retransmissions
//! through server transactions (RFC 3261 §17.2), applies the request checks of RFC 3261 §8.2 and
//! §16.3 in the order RFC 4475 §3.2–3.3 exercises them, authenticates, and answers. It never
//! forwards anything: requests for domains it does not serve are refused (403), so Confab is not
//! an open relay.
//!
//! It reads no clock and touches no socket: `now` (monotonic) and `unix_now` (wall clock, for
//! the registrar's Date and persisted expiries) are inputs, and answers are appended to a
//! caller-supplied `Vec<Transmit>`.
//!
//! Calls between users are routed to the [`crate::call`] module: authenticated INVITEs to our
//! users, the CANCELs, ACKs and in-dialog requests of those calls, and every response (all
//! responses belong to the calls' client transactions). The endpoint keeps the server
//! transactions; a call answers them through [`crate::call`]'s outputs, applied here after the
//! call's lock is released.

use std::cmp::Ordering as CmpOrdering;
use std::collections::hash_map::DefaultHasher;
use std::collections::BinaryHeap;

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_sip::message::recover_request_headers;
use confab_sip::transaction::{
    AckOutcome, ServerInvite, ServerNonInvite, Timers, TransactionKey, TransactionState,
};
use confab_sip::{
    Destination, HeaderName, Headers, Host, Message, Method, ParseError, Request, Response, Source,
    Transmit, TransportKind, Uri, Via,
};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tracing::{debug, warn};

use crate::auth::{AuthKind, AuthOutcome, DigestAuth};
use crate::ban::{BanCheck, FailureOutcome};
use crate::call::{
    has_our_via, CallManager, CallOutput, CallRecord, CallSummary, Incoming, MediaRelay, Reply,
};
use crate::config::CoreConfig;
use crate::directory::{UserCredential, UserDirectory};
use crate::hash::{FastMap, FastSet};
use crate::registrar::{Authenticated, Registrar};

/// Larger inputs are dropped unparsed (the parser's own limit; stream framing enforces its own).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// The methods answered for our domain (RFC 3261 §20.5); INFO and UPDATE inside calls.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE";
/// Option tags a `Require` may name (RFC 3261 §8.2.2.3): the registrar implements outbound
/// (RFC 5626) and GRUU (RFC 5627), calls session timers (RFC 4028). Not Path (RFC 3327): Path
/// headers are not stored yet.
pub const SUPPORTED: &[&str] = &["outbound", "gruu", "timer"];
/// The NAT keep-alive (RFC 5626 §3.5.1 double CRLF, sent as one UDP datagram).
const KEEPALIVE: &[u8] = b"\r\n\r\n";
/// Body types read in INVITE (RFC 3261 §8.2.3).
const ACCEPTED_BODIES: &[&str] = &[
    "application/sdp",
    "multipart/mixed",
    "multipart/alternative",
];
const SERVER: &str = "Confab";
const TRANSACTION_SHARDS: usize = 16;
/// Per shard; beyond it new requests are answered statelessly (no retransmission absorption).
const MAX_TRANSACTIONS_PER_SHARD: usize = 32_768;

/// Counters since start; see [`Endpoint::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Requests that parsed (retransmissions included).
    pub requests: u64,
    /// Responses that parsed (for the calls' client transactions, or stray).
    pub responses: u64,
    /// Responses that matched no client transaction, dropped (RFC 3261 §18.1.2).
    pub stray_responses: u64,
    /// Live calls (ringing, active, or ended and absorbing retransmissions).
    pub calls: u64,
    /// NAT keep-alives sent to registered UDP flows.
    pub keepalives_sent: u64,
    /// New INVITEs refused by the per-source flood limits (503).
    pub invites_limited: u64,
    /// Malformed requests answered with 400 (or 505/513).
    pub malformed_requests: u64,
    pub malformed_responses_dropped: u64,
    /// Input that was not recognisably SIP, or a malformed request too broken to answer.
    pub garbage_dropped: u64,
    pub oversized_dropped: u64,
    /// UDP keep-alives (CRLFs, NULs) ignored.
    pub keepalives: u64,
    /// Request retransmissions answered from a transaction (or ignored while it is pending).
    pub retransmissions_absorbed: u64,
    pub stray_acks_dropped: u64,
    pub challenges_sent: u64,
    pub auth_successes: u64,
    pub auth_failures: u64,
    pub stale_nonces: u64,
    pub bans: u64,
    /// Messages dropped because their source is banned.
    pub banned_drops: u64,
    /// Requests for other domains refused with 403.
    pub relay_denied: u64,
    /// Responses (and retransmissions) handed to the transport.
    pub responses_sent: u64,
    /// Panics caught while handling a message (a bug; the message was dropped).
    pub internal_errors: u64,
    /// Live server transactions.
    pub transactions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    responses: AtomicU64,
    stray_responses: AtomicU64,
    keepalives_sent: AtomicU64,
    invites_limited: AtomicU64,
    malformed_requests: AtomicU64,
    malformed_responses_dropped: AtomicU64,
    garbage_dropped: AtomicU64,
    oversized_dropped: AtomicU64,
    keepalives: AtomicU64,
    retransmissions_absorbed: AtomicU64,
    stray_acks_dropped: AtomicU64,
    challenges_sent: AtomicU64,
    auth_successes: AtomicU64,
    auth_failures: AtomicU64,
    stale_nonces: AtomicU64,
    bans: AtomicU64,
    banned_drops: AtomicU64,
    relay_denied: AtomicU64,
    responses_sent: AtomicU64,
    internal_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The names and addresses that count as "us" in a Request-URI. A few entries: scanned, not
/// hashed.
#[derive(Debug)]
struct LocalNames {
    /// Lower-cased, without a trailing dot.
    names: Vec<String>,
    ips: Vec<IpAddr>,
}

impl LocalNames {
    fn new(config: &CoreConfig) -> Self {
        let mut names = Vec::new();
        let mut ips: Vec<IpAddr> = config
            .local_ips
            .iter()
            .map(|ip| ip.to_canonical())
            .collect();
        for name in std::iter::once(&config.domain).chain(&config.local_hosts) {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            let bare = name.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip.to_canonical()),
                Err(_) => names.push(name),
            }
        }
        names.push("localhost".to_owned());
        names.sort();
        names.dedup();
        ips.sort();
        ips.dedup();
        Self { names, ips }
    }

    fn contains(&self, host: &Host) -> bool {
        match host {
            Host::Domain(d) => {
                let d = d.trim_end_matches('.');
                self.names.iter().any(|n| n.eq_ignore_ascii_case(d))
            }
            Host::Ipv4(a) => a.is_loopback() || self.ips.contains(&IpAddr::V4(*a)),
            Host::Ipv6(a) => {
                let ip = IpAddr::V6(*a).to_canonical();
                ip.is_loopback() || self.ips.contains(&ip)
            }
        }
    }
}

/// The dispatcher. `Send + Sync`: every method takes `&self` and may be called from several
/// transport threads at once; state is sharded and locks are held briefly.
///
/// Calling contract (quinn-proto's method families):
/// 1. for each inbound message call [`Endpoint::handle_message`] with the instant it was read and
///    send everything it appended to `out`;
/// 2. after any call, ask [`Endpoint::poll_timeout`] for the next deadline and call
///    [`Endpoint::handle_timeout`] at or after it (a call before the deadline does nothing
///    harmful), sending what it appends;
/// 3. tell it about closed connections with [`Endpoint::connection_closed`];
/// 4. drain the call log with [`Endpoint::drain_call_records`] now and then.
///
/// Instants never go backwards.
///
/// Lock order: a call's shard (see [`crate::call`]) may be held while the call index, the
/// record queue and the [`MediaRelay`] are used; the transaction shards, the registrar and the
/// directory are never used while a call's lock is held.
pub struct Endpoint {
    domain: String,
    local: LocalNames,
    auth: DigestAuth,
    users: Arc<dyn UserDirectory>,
    registrar: Registrar,
    transactions: Transactions,
    calls: CallManager,
    keepalive_interval: Option<Duration>,
    next_keepalive: Mutex<Option<Instant>>,
    max_message_size: usize,
    tag_secret: [u8; 16],
    /// A hasher that has absorbed `tag_secret` already: cloned for each To tag instead of
    /// hashing the secret again (the same state, so the same tags).
    tag_keyed: DefaultHasher,
    stats: Counters,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Builds the endpoint. `media` anchors call media (the binary implements it over the
    /// relay; tests use [`crate::call::FakeMediaRelay`]). `epoch` anchors the nonce clock: pass
    /// the same `Instant` the transport uses for `now` at start-up.
    pub fn new(
        config: CoreConfig,
        users: Arc<dyn UserDirectory>,
        media: Arc<dyn MediaRelay>,
        epoch: Instant,
    ) -> Self {
        let mut nonce_secret = [0u8; 32];
        let mut tag_secret = [0u8; 16];
        match config.rng_seed {
            Some(seed) => {
                let mut rng = StdRng::seed_from_u64(seed);
                rng.fill_bytes(&mut nonce_secret);
                rng.fill_bytes(&mut tag_secret);
            }
            None => {
                let mut rng = rand::thread_rng();
                rng.fill_bytes(&mut nonce_secret);
                rng.fill_bytes(&mut tag_secret);
            }
        }
        let domain = config.domain.trim().to_ascii_lowercase();
        let auth = DigestAuth::new(
            &domain,
            users.clone(),
            nonce_secret,
            config.nonce_lifetime,
            epoch,
            config.max_auth_failures,
            config.failure_window,
            config.ban_duration,
            config.digest_algorithms.clone(),
        );
        Self {
            local: LocalNames::new(&config),
            auth,
            users,
            registrar: Registrar::new(config.registrar.clone()),
            transactions: Transactions::new(config.timers),
            calls: CallManager::new(&config, media, epoch),
            keepalive_interval: config.nat_keepalive_interval.filter(|d| !d.is_zero()),
            next_keepalive: Mutex::new(None),
            max_message_size: config.max_message_size.min(MAX_MESSAGE_SIZE),
            tag_secret,
            tag_keyed: {
                let mut h = DefaultHasher::new();
                tag_secret.hash(&mut h);
                h
            },
            stats: Counters::default(),
            domain,
        }
    }

    /// The registrar, for location look-ups and persistence.
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// Whether `host` names this server (the domain, an alias, one of its addresses, loopback).
    pub fn is_local_host(&self, host: &Host) -> bool {
        self.local.contains(host)
    }

    /// Handles one inbound datagram (UDP) or frame (TCP/TLS message, WebSocket message): parses
    /// it, absorbs retransmissions, dispatches, and appends the answers to `out`.
    ///
    /// `now` is when the transport read the message, `unix_now` the wall clock in seconds. Never
    /// panics, whatever the bytes: a bug reached by some input is logged, counted
    /// (`internal_errors`) and the message dropped.
    pub fn handle_message(
        &self,
        now: Instant,
        unix_now: u64,
        bytes: &[u8],
        source: &Source,
        out: &mut Vec<Transmit>,
    ) {
        let before = out.len();
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.handle_message_inner(now, unix_now, bytes, source, out)
        }));
        if result.is_err() {
            out.truncate(before);
            bump(&self.stats.internal_errors);
            tracing::error!(source = %source.peer, len = bytes.len(), "internal error handling message; dropped");
        }
    }

    fn handle_message_inner(
        &self,
        now: Instant,
        unix_now: u64,
        bytes: &[u8],
        source: &Source,
        out: &mut Vec<Transmit>,
    ) {
        let ip = source.peer.ip().to_canonical();
        if let BanCheck::Banned { until, first_drop } = self.auth.bans().check(ip, now) {
            bump(&self.stats.banned_drops);
            if first_drop {
                debug!(source = %ip, remaining = ?until.saturating_duration_since(now), "dropping traffic from banned address");
            }
            return;
        }
        if bytes.len() > self.max_message_size {
            bump(&self.stats.oversized_dropped);
            debug!(source = %source.peer, len = bytes.len(), "oversized message refused");
            // RFC 3261 §21.5.14: a request we can address gets 513; anything else is dropped.
            if recover_request_headers(bytes).is_some_and(|h| h.get(&HeaderName::Via).is_some()) {
                let error = ParseError::with_status(513, "Message Too Large");
                self.handle_malformed(bytes, &error, source, out);
            }
            return;
        }
        // RFC 5626 §3.5.1 / common practice: CRLF or NUL keep-alives on UDP.
        if bytes
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
        {
            bump(&self.stats.keepalives);
            return;
        }
        self.calls.observe_clock(now, unix_now);
        match Message::parse(bytes, source.transport.is_stream()) {
            Ok(Message::Request(req)) => {
                bump(&self.stats.requests);
                self.handle_request(now, unix_now, req, source, out);
            }
            Ok(Message::Response(resp)) => {
                bump(&self.stats.responses);
                let call_id = resp.call_id().to_owned();
                let status = resp.status.0;
                let mut outputs = Vec::new();
                if !self.calls.handle_response(now, resp, &mut outputs) {
                    // RFC 3261 §18.1.2: a response that matches no transaction is dropped.
                    bump(&self.stats.stray_responses);
                    debug!(source = %source.peer, call_id = %call_id, status, "stray response dropped");
                }
                self.apply(now, outputs, out);
            }
            Err(error) => self.handle_malformed(bytes, &error, source, out),
        }
    }

    /// RFC 3261 §16.3 step 1 / §8.2: a request that does not parse gets a 400 (or the status the
    /// parser names) with the reason in the phrase, when enough of it can be recovered to
    /// address a response; a response that does not parse is dropped.
    fn handle_malformed(
        &self,
        bytes: &[u8],
        error: &ParseError,
        source: &Source,
        out: &mut Vec<Transmit>,
    ) {
        if bytes.starts_with(b"SIP/") {
            bump(&self.stats.malformed_responses_dropped);
            debug!(source = %source.peer, error = %error, "malformed response dropped");
            return;
        }
        // Never answer an ACK (RFC 3261 §17.2.1), even a broken one.
        if bytes.starts_with(b"ACK ") {
            bump(&self.stats.garbage_dropped);
            return;
        }
        let Some(headers) = recover_request_headers(bytes) else {
            bump(&self.stats.garbage_dropped);
            debug!(source = %source.peer, error = %error, "unparseable input dropped");
            return;
        };
        let status = if (400..=699).contains(&error.status) {
            error.status
        } else {
            400
        };
        let mut resp = Response {
            status: confab_sip::StatusCode(status),
            reason: sanitize_reason(&error.reason, status),
            headers,
            body: Bytes::new(),
        };
        let (destination, tag) = match resp.top_via() {
            Ok(via) => {
                let via = stamp_via(&mut resp.headers, via, source);
                (
                    response_destination(source, &via),
                    self.to_tag(&via, resp.call_id(), &resp.headers),
                )
            }
            // The Via itself is what is broken (RFC 4475 §3.1.2.16, badvers: `SIP/7.0/UDP`): it is
            // echoed as received and the answer goes to the source address.
            Err(_) => {
                let Some(raw) = resp.headers.get(&HeaderName::Via) else {
                    bump(&self.stats.garbage_dropped);
                    return;
                };
                let destination = Destination {
                    transport: source.transport,
                    addr: source.peer,
                    connection: source.connection,
                    local: Some(source.local),
                };
                (destination, self.raw_tag(&[raw, resp.call_id()]))
            }
        };
        add_to_tag_if_missing(&mut resp, &tag);
        resp.headers.push(HeaderName::Server, SERVER);
        bump(&self.stats.malformed_requests);
        debug!(source = %source.peer, call_id = resp.call_id(), error = %error, status, "malformed request rejected");
        self.send(resp, destination, out);
    }

    fn handle_request(
        &self,
        now: Instant,
        unix_now: u64,
        mut req: Request,
        source: &Source,
        out: &mut Vec<Transmit>,
    ) {
        let Ok(via) = req.top_via() else {
            // The parser guarantees a top Via; a request without one cannot be answered.
            bump(&self.stats.garbage_dropped);
            return;
        };
        let Ok(key) = TransactionKey::server_with_via(&req, &via) else {
            bump(&self.stats.garbage_dropped);
            return;
        };
        // Keys come from the request as received (RFC 2543 keys include the whole top Via).
        let cancelled = if req.method == Method::Cancel {
            TransactionKey::cancelled_invite(&req).ok()
        } else {
            None
        };
        // RFC 3261 §18.2.1, RFC 3581 §4: note where the request really came from.
        let via = stamp_via(&mut req.headers, via, source);
        let destination = response_destination(source, &via);

        if req.method == Method::Ack {
            match self.transactions.ack(now, &key) {
                Some(AckOutcome::Absorbed) => {}
                // RFC 3261 §13.3.1.4 / RFC 6026 §8.7: an ACK for a 2xx belongs to the dialog.
                Some(AckOutcome::PassToTransactionUser) | None => {
                    let mut outputs = Vec::new();
                    if !self.calls.handle_ack(now, &req, &mut outputs) {
                        bump(&self.stats.stray_acks_dropped);
                        debug!(call_id = req.call_id(), source = %source.peer, "stray ACK dropped");
                    }
                    self.apply(now, outputs, out);
                }
            }
            return;
        }

        // A REGISTER without credentials is challenged (or refused) statelessly, as a stateless
        // element answers (RFC 3261 §8.2.7, §16.11): nothing is kept for it, and a
        // retransmission simply gets another challenge. The REGISTER with credentials that
        // follows gets a transaction, so its retransmissions get the same final response.
        let stateless =
            req.method == Method::Register && req.headers.get(&HeaderName::Authorization).is_none();
        let stateful = if stateless {
            false
        } else {
            match self
                .transactions
                .begin(now, &key, &req, source.transport, destination)
            {
                Begin::Retransmission(answers) => {
                    bump(&self.stats.retransmissions_absorbed);
                    for answer in answers {
                        self.send_wire(answer, destination, out);
                    }
                    return;
                }
                Begin::New => true,
                Begin::Stateless => false,
            }
        };

        debug!(call_id = req.call_id(), method = %req.method, source = %source.peer, "request");
        let tag = self.to_tag(&via, req.call_id(), &req.headers);
        let mut outputs = Vec::new();
        let ctx = RequestContext {
            cancelled: cancelled.as_ref(),
            source,
            key: &key,
            destination,
            tag: &tag,
            stateful,
        };
        let mut resp = match self.dispatch(now, unix_now, &req, &ctx, &mut outputs) {
            Dispatched::Answer(resp) => resp,
            Dispatched::Pending => {
                // A call answers later. An INVITE gets its 100 (Trying) now: the answer will
                // take longer than 200 ms (RFC 3261 §17.2.1).
                if req.method == Method::Invite {
                    let trying = reply(&req, 100, None);
                    for answer in self.transactions.respond(now, &key, trying) {
                        self.send_wire(answer, destination, out);
                    }
                }
                self.apply(now, outputs, out);
                return;
            }
        };
        // Outputs of a call the request touched (e.g. a CANCEL's 487 for its INVITE) go after
        // this request's own answer.
        add_to_tag_if_missing(&mut resp, &tag);
        if resp.headers.get(&HeaderName::Server).is_none() {
            resp.headers.push(HeaderName::Server, SERVER);
        }
        debug!(call_id = req.call_id(), method = %req.method, status = resp.status.0, "response");
        if stateful {
            for answer in self.transactions.respond(now, &key, resp) {
                self.send_wire(answer, destination, out);
            }
        } else {
            self.send(resp, destination, out);
        }
        self.apply(now, outputs, out);
    }

    /// Applies what calls asked for: requests to send, responses for server transactions.
    fn apply(&self, now: Instant, outputs: Vec<CallOutput>, out: &mut Vec<Transmit>) {
        for o in outputs {
            match o {
                CallOutput::Send(t) => out.push(t),
                CallOutput::Respond {
                    key,
                    mut response,
                    destination,
                } => {
                    if response.headers.get(&HeaderName::Server).is_none() {
                        response.headers.push(HeaderName::Server, SERVER);
                    }
                    for answer in self.transactions.respond(now, &key, response) {
                        self.send_wire(answer, destination, out);
                    }
                }
            }
        }
    }

    /// Decides the answer to a new request: now, or later through a call.
    fn dispatch(
        &self,
        now: Instant,
        unix_now: u64,
        req: &Request,
        ctx: &RequestContext<'_>,
        outputs: &mut Vec<CallOutput>,
    ) -> Dispatched {
        // RFC 3261 §9.2: CANCEL matches a transaction, whatever else it says.
        if req.method == Method::Cancel {
            let matched = ctx.cancelled.filter(|k| self.transactions.contains(k));
            return Dispatched::Answer(match matched {
                Some(invite) => {
                    // The call answers its INVITE with 487 and cancels its branches.
                    self.calls.handle_cancel(now, req, invite, outputs);
                    reply(req, 200, None)
                }
                None => reply(req, 481, None),
            });
        }
        Dispatched::Answer(
            match self.dispatch_request(now, unix_now, req, ctx, outputs) {
                Some(resp) => resp,
                None => return Dispatched::Pending,
            },
        )
    }

    /// [`Self::dispatch`] for everything but CANCEL; `None`: a call answers later.
    fn dispatch_request(
        &self,
        now: Instant,
        unix_now: u64,
        req: &Request,
        ctx: &RequestContext<'_>,
        outputs: &mut Vec<CallOutput>,
    ) -> Option<Response> {
        let source = ctx.source;
        // RFC 3261 §8.2.2.1, RFC 4475 §3.3.2/§3.3.3: unknown Request-URI scheme.
        let target_host = match &req.uri {
            Uri::Sip(u) => Some(&u.host),
            Uri::Tel(_) => None,
            _ => return Some(reply(req, 416, None)),
        };
        let has_user = match &req.uri {
            Uri::Sip(u) => u.user.is_some(),
            _ => true,
        };

        // RFC 3261 §8.2.2.3, §16.3 step 5, RFC 4475 §3.3.7 (bext01): unsupported extensions.
        let unsupported = unsupported_extensions(req);
        if !unsupported.is_empty() {
            let mut resp = reply(req, 420, None);
            resp.headers
                .push(HeaderName::Unsupported, unsupported.join(", "));
            return Some(resp);
        }

        // RFC 3261 §16.3 step 3: a request we would route on needs hops left. REGISTER and
        // OPTIONS are answered here and never routed (RFC 4475 §3.3.11, zeromf).
        let would_route = has_user && !matches!(req.method, Method::Register | Method::Options);
        if would_route && req.max_forwards() == Some(0) {
            return Some(reply(req, 483, None));
        }

        // RFC 3261 §8.2.3: a body we must read but cannot (RFC 4475 §3.3.8, invut).
        if req.method == Method::Invite {
            if let Some(resp) = check_body(req) {
                return Some(resp);
            }
        }

        // Requests inside one of our calls' dialogs (RFC 3261 §12.2.2): the call handles them.
        let in_dialog = req.headers.get(&HeaderName::To).is_some_and(may_have_tag)
            && req.to_tag().is_ok_and(|t| t.is_some());
        if in_dialog && !matches!(req.method, Method::Register) && self.calls.owns(req.call_id()) {
            // We relay them to the other leg, so they need a hop left (RFC 3261 §16.3 step 3).
            if req.max_forwards() == Some(0) && req.method != Method::Options {
                return Some(reply(req, 483, None));
            }
            if !ctx.stateful {
                let mut resp = reply(req, 503, None);
                resp.headers.push(HeaderName::RetryAfter, "5");
                return Some(resp);
            }
            match self
                .calls
                .handle_request(now, req, ctx.key.clone(), ctx.destination, outputs)
            {
                Some(Reply::Now(resp)) => return Some(resp),
                Some(Reply::Later) => return None,
                None => return Some(reply(req, 481, None)),
            }
        }

        // Not an open relay: only our domain, aliases and addresses.
        if let Some(host) = target_host {
            if !self.local.contains(host) {
                bump(&self.stats.relay_denied);
                debug!(call_id = req.call_id(), source = %source.peer, host = %host, "relaying denied");
                return Some(reply(req, 403, Some("Relaying denied")));
            }
        }

        Some(match &req.method {
            Method::Register => self.register(now, unix_now, req, source),
            Method::Options => self.options(req),
            // RFC 3261 §12.2.2: a request for a dialog we do not know.
            Method::Invite if in_dialog => reply(req, 481, None),
            Method::Invite => return self.invite(now, req, ctx, outputs),
            // Outside our calls' dialogs (matched above), these belong to no dialog.
            Method::Bye | Method::Info | Method::Update | Method::Prack | Method::Notify => {
                reply(req, 481, None)
            }
            Method::Subscribe | Method::Publish | Method::Message | Method::Refer => {
                let mut resp = reply(req, 405, None);
                resp.headers.push(HeaderName::Allow, ALLOW);
                resp
            }
            // RFC 3261 §8.2.1: a method we do not know at all.
            _ => {
                let mut resp = reply(req, 501, None);
                resp.headers.push(HeaderName::Allow, ALLOW);
                resp
            }
        })
    }

    /// RFC 3261 §10.3: registrar. The Request-URI names our domain (checked by the caller); a
    /// user part is tolerated.
    fn register(&self, now: Instant, unix_now: u64, req: &Request, source: &Source) -> Response {
        // RFC 3261 §10.2: the Request-URI names the domain, a SIP or SIPS URI.
        if !matches!(req.uri, Uri::Sip(_)) {
            return reply(req, 416, None);
        }
        // RFC 3261 §10.2: the To header holds the address of record, a SIP or SIPS URI
        // (RFC 4475 §3.3.2, unksm2).
        let to = match req.to_header() {
            Ok(to) if matches!(to.uri, Uri::Sip(_)) => to,
            _ => return reply(req, 416, Some("Unsupported URI Scheme in To")),
        };
        match self.authenticate(now, req, AuthKind::Www, source) {
            Ok(user) => {
                let who = Authenticated::new(&user.user, user.extension.as_deref());
                let is_local = |h: &Host| self.local.contains(h);
                self.registrar
                    .handle_register_to(now, unix_now, req, &to, source, &who, &is_local)
            }
            Err(challenge) => challenge,
        }
    }

    /// RFC 3261 §11.2: capabilities. Answered identically for the domain and for any user in it,
    /// so OPTIONS cannot probe which users exist.
    fn options(&self, req: &Request) -> Response {
        let mut resp = reply(req, 200, None);
        resp.headers.push(HeaderName::Allow, ALLOW);
        resp.headers
            .push(HeaderName::Other("Accept".to_owned()), "application/sdp");
        resp.headers
            .push(HeaderName::Other("Accept-Encoding".to_owned()), "identity");
        resp.headers
            .push(HeaderName::Supported, SUPPORTED.join(", "));
        resp
    }

    /// A new INVITE for our domain: loop and flood checks, authentication (407; unauthenticated
    /// calls are never routed), then the call router. `None`: the call answers later.
    fn invite(
        &self,
        now: Instant,
        req: &Request,
        ctx: &RequestContext<'_>,
        outputs: &mut Vec<CallOutput>,
    ) -> Option<Response> {
        let source = ctx.source;
        // RFC 3261 §16.3 step 4: one of our own requests came back.
        let ours = |via: &Via| self.local.contains(&via.host);
        if has_our_via(req, &ours) {
            return Some(reply(req, 482, None));
        }
        // Flood limits per source, before any work that costs (RFC 3261 §21.5.4: 503 with
        // Retry-After).
        let ip = source.peer.ip().to_canonical();
        if !self.calls.admit_invite(ip, now) {
            bump(&self.stats.invites_limited);
            debug!(source = %ip, "INVITE rate limit");
            let mut resp = reply(req, 503, Some("Too many calls"));
            resp.headers
                .push(HeaderName::RetryAfter, self.calls.retry_after().to_string());
            return Some(resp);
        }
        let user = match self.authenticate(now, req, AuthKind::Proxy, source) {
            Ok(user) => user,
            Err(challenge) => return Some(challenge),
        };
        if !ctx.stateful {
            let mut resp = reply(req, 503, None);
            resp.headers.push(HeaderName::RetryAfter, "5");
            return Some(resp);
        }
        let who = Authenticated::new(&user.user, user.extension.as_deref());
        let incoming = Incoming {
            now,
            invite: req,
            who: &who,
            source,
            server_key: ctx.key.clone(),
            respond_to: ctx.destination,
            local_tag: ctx.tag.to_owned(),
        };
        self.calls
            .route(incoming, &*self.users, &self.registrar, outputs)
            .err()
    }

    /// Runs the digest policy; `Err` holds the challenge to send.
    fn authenticate(
        &self,
        now: Instant,
        req: &Request,
        kind: AuthKind,
        source: &Source,
    ) -> Result<UserCredential, Response> {
        let ip = source.peer.ip().to_canonical();
        let stale = match self.auth.authenticate(now, req, kind, ip) {
            AuthOutcome::Verified(user) => {
                bump(&self.stats.auth_successes);
                debug!(call_id = req.call_id(), user = %user.user, source = %ip, "authenticated");
                return Ok(user);
            }
            AuthOutcome::Challenge => false,
            AuthOutcome::Stale => {
                bump(&self.stats.stale_nonces);
                true
            }
            AuthOutcome::Failed(outcome) => {
                bump(&self.stats.auth_failures);
                if let FailureOutcome::Banned(until) = outcome {
                    bump(&self.stats.bans);
                    warn!(
                        source = %ip,
                        duration = ?until.saturating_duration_since(now),
                        "address banned after repeated authentication failures"
                    );
                } else {
                    debug!(call_id = req.call_id(), source = %ip, "authentication failed");
                }
                false
            }
        };
        bump(&self.stats.challenges_sent);
        let mut resp = reply(req, kind.status(), None);
        self.auth.add_challenges(now, &mut resp, kind, stale);
        Err(resp)
    }

    /// Fires every timer due at `now` (transaction retransmissions and expiry, call timers,
    /// registration expiry, ban expiry, NAT keep-alives) and appends what to send to `out`.
    pub fn handle_timeout(&self, now: Instant, out: &mut Vec<Transmit>) {
        let before = out.len();
        let result = catch_unwind(AssertUnwindSafe(|| {
            for (answer, destination) in self.transactions.handle_timeout(now) {
                self.send_wire(answer, destination, out);
            }
            let mut outputs = Vec::new();
            self.calls.handle_timeout(now, &mut outputs);
            self.apply(now, outputs, out);
            self.registrar.handle_timeout(now);
            self.keepalives(now, out);
            for ip in self.auth.handle_timeout(now) {
                tracing::info!(source = %ip, "ban lifted");
            }
        }));
        if result.is_err() {
            out.truncate(before);
            bump(&self.stats.internal_errors);
            tracing::error!("internal error in handle_timeout");
        }
    }

    /// The earliest instant at which [`Endpoint::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.transactions.poll_timeout(),
            self.calls.poll_timeout(),
            self.registrar.poll_timeout(),
            self.auth.poll_timeout(),
            *self.next_keepalive.lock(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// NAT keep-alives: every `nat_keepalive_interval`, a CRLFCRLF datagram (RFC 5626 §3.5.1
    /// style) to each registered UDP flow, from the local socket the device registered to, so
    /// its NAT keeps the binding open for our INVITEs. A CRLFCRLF needs no transaction and no
    /// answer (devices ignore it); it does not detect dead devices, which the registration
    /// expiry and the call timers handle.
    fn keepalives(&self, now: Instant, out: &mut Vec<Transmit>) {
        let Some(interval) = self.keepalive_interval else {
            return;
        };
        {
            let mut next = self.next_keepalive.lock();
            match *next {
                None => {
                    *next = Some(now + interval);
                    return;
                }
                Some(at) if at > now => return,
                Some(_) => *next = Some(now + interval),
            }
        }
        let mut flows: FastSet<(SocketAddr, SocketAddr)> = FastSet::default();
        for b in self.registrar.snapshot() {
            if b.source.transport == TransportKind::Udp
                && b.expires_at > now
                && flows.insert((b.source.local, b.source.peer))
            {
                out.push(Transmit {
                    destination: Destination {
                        transport: TransportKind::Udp,
                        addr: b.source.peer,
                        connection: None,
                        local: Some(b.source.local),
                    },
                    bytes: Bytes::from_static(KEEPALIVE),
                });
                bump(&self.stats.keepalives_sent);
            }
        }
    }

    /// Moves the call records produced since the last call into `out` (oldest first): one
    /// snapshot when a call starts ringing, one when it is answered, one when it ends, all with
    /// the same `id` (upsert by id). See [`CallRecord`].
    pub fn drain_call_records(&self, out: &mut Vec<CallRecord>) {
        self.calls.drain_records(out);
    }

    /// The calls ringing or active now, oldest first.
    pub fn active_calls(&self) -> Vec<CallSummary> {
        self.calls.active_calls()
    }

    /// A connection (TCP, TLS, WS, WSS) closed: bindings that live on it go.
    pub fn connection_closed(&self, id: confab_sip::ConnectionId, now: Instant) {
        self.registrar.connection_closed(id, now);
    }

    /// Whether `ip` is banned at `now`: transports may refuse its connections outright.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.auth.bans().is_banned(ip.to_canonical(), now)
    }

    /// Addresses banned at `now`, with the end of each ban.
    pub fn banned(&self, now: Instant) -> Vec<(IpAddr, Instant)> {
        self.auth.bans().banned(now)
    }

    pub fn stats(&self) -> EndpointStats {
        let s = &self.stats;
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EndpointStats {
            requests: l(&s.requests),
            responses: l(&s.responses),
            stray_responses: l(&s.stray_responses),
            calls: self.calls.len() as u64,
            keepalives_sent: l(&s.keepalives_sent),
            invites_limited: l(&s.invites_limited),
            malformed_requests: l(&s.malformed_requests),
            malformed_responses_dropped: l(&s.malformed_responses_dropped),
            garbage_dropped: l(&s.garbage_dropped),
            oversized_dropped: l(&s.oversized_dropped),
            keepalives: l(&s.keepalives),
            retransmissions_absorbed: l(&s.retransmissions_absorbed),
            stray_acks_dropped: l(&s.stray_acks_dropped),
            challenges_sent: l(&s.challenges_sent),
            auth_successes: l(&s.auth_successes),
            auth_failures: l(&s.auth_failures),
            stale_nonces: l(&s.stale_nonces),
            bans: l(&s.bans),
            banned_drops: l(&s.banned_drops),
            relay_denied: l(&s.relay_denied),
            responses_sent: l(&s.responses_sent),
            internal_errors: l(&s.internal_errors),
            transactions: self.transactions.len() as u64,
        }
    }

    fn send(&self, resp: Response, destination: Destination, out: &mut Vec<Transmit>) {
        self.send_wire(Wire::Message(resp), destination, out);
    }

    fn send_wire(&self, answer: Wire, destination: Destination, out: &mut Vec<Transmit>) {
        bump(&self.stats.responses_sent);
        let bytes = match answer {
            Wire::Bytes(b) => b,
            Wire::Message(r) => Bytes::from(r.to_bytes()),
        };
        out.push(Transmit { destination, bytes });
    }

    /// A To tag that is the same for every retransmission of a request (so a retransmission that
    /// arrives after its transaction ended gets an identical answer) and unpredictable without
    /// the secret. CANCEL and its INVITE share it (RFC 3261 §9.2 SHOULD).
    fn to_tag(&self, via: &Via, call_id: &str, headers: &Headers) -> String {
        let mut h = self.tag_keyed.clone();
        let branch = via.branch().unwrap_or("");
        let mut lower = [0u8; 64];
        match lower.get_mut(..branch.len()) {
            // Lower-cased on the stack (branches are short), hashed as the `str` would be.
            Some(buf) => {
                buf.copy_from_slice(branch.as_bytes());
                buf.make_ascii_lowercase();
                h.write(buf);
                h.write_u8(0xff);
            }
            None => branch.to_ascii_lowercase().hash(&mut h),
        }
        via.host.hash(&mut h);
        via.port.hash(&mut h);
        call_id.hash(&mut h);
        if !via.has_rfc3261_branch() {
            // RFC 2543 peers: the branch does not identify the request.
            headers.get(&HeaderName::From).unwrap_or("").hash(&mut h);
            headers
                .get(&HeaderName::CSeq)
                .and_then(|c| c.split_whitespace().next())
                .unwrap_or("")
                .hash(&mut h);
        }
        let a = h.finish();
        self.tag_secret[8..].hash(&mut h);
        let b = h.finish();
        let mut tag = [0u8; 24];
        let _ = hex_into(&a.to_be_bytes(), &mut tag[..16]);
        let _ = hex_into(&(b as u32).to_be_bytes(), &mut tag[16..]);
        // Hex digits are ASCII: always valid UTF-8.
        String::from_utf8(tag.to_vec()).unwrap_or_default()
    }

    /// A To tag from raw header text, for requests whose Via does not parse.
    fn raw_tag(&self, parts: &[&str]) -> String {
        let mut h = self.tag_keyed.clone();
        parts.hash(&mut h);
        let a = h.finish();
        self.tag_secret[8..].hash(&mut h);
        format!("{:016x}{:08x}", a, h.finish() as u32)
    }

    /// The configured domain (lower-cased).
    pub fn domain(&self) -> &str {
        &self.domain
    }
}

/// What [`Endpoint::dispatch`] needs about the request besides the request.
struct RequestContext<'a> {
    /// For a CANCEL: the INVITE transaction it targets.
    cancelled: Option<&'a TransactionKey>,
    source: &'a Source,
    /// The request's server transaction.
    key: &'a TransactionKey,
    /// Where responses go.
    destination: Destination,
    /// Our To tag for this request (also leg A's tag of a call it starts).
    tag: &'a str,
    /// Whether a server transaction exists (the table was not full).
    stateful: bool,
}

/// The decision of [`Endpoint::dispatch`].
enum Dispatched {
    Answer(Response),
    /// A call answers later through its outputs.
    Pending,
}

/// A response to `req` with the RFC 3261 §8.2.6 headers copied.
fn reply(req: &Request, status: u16, reason: Option<&str>) -> Response {
    Response::for_request(req, status, reason)
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) -> Option<()> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        *out.get_mut(2 * i)? = DIGITS[usize::from(b >> 4)];
        *out.get_mut(2 * i + 1)? = DIGITS[usize::from(b & 15)];
    }
    Some(())
}

/// Adds `;tag=` to the To header of a non-100 response that lacks one (RFC 3261 §8.2.6.2).
/// The header text is kept: appending a parameter is valid for both name-addr and addr-spec
/// forms, where trailing parameters are header parameters.
fn add_to_tag_if_missing(resp: &mut Response, tag: &str) {
    if resp.status.0 == 100 {
        return;
    }
    let Some(line) = resp.headers.0.iter_mut().find(|h| h.name == HeaderName::To) else {
        return;
    };
    let has_tag = may_have_tag(&line.value)
        && confab_sip::NameAddr::parse_tag(&line.value)
            .map_or_else(|_| line.value.contains(";tag="), |t| t.is_some());
    if !has_tag {
        let end = line.value.trim_end().len();
        line.value.truncate(end);
        line.value.reserve(5 + tag.len());
        line.value.push_str(";tag=");
        line.value.push_str(tag);
    }
}

/// Whether a To or From value could carry a `tag` parameter: it holds the letters "tag" (in any
/// case). Most do not (a request outside a dialog), and they need no parse to know it.
fn may_have_tag(value: &str) -> bool {
    value
        .as_bytes()
        .windows(3)
        .any(|w| w.eq_ignore_ascii_case(b"tag"))
}

/// A reason phrase is one line of text (RFC 3261 §25.1 Reason-Phrase); parser messages are, but
/// be sure, and keep it short.
fn sanitize_reason(reason: &str, status: u16) -> String {
    let cleaned: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    if cleaned.trim().is_empty() {
        confab_sip::StatusCode(status).default_reason().to_owned()
    } else {
        cleaned
    }
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: fills `received` (and `rport`, when the client asked) in the
/// top Via of `headers`, so every response built from them carries it. Returns the updated Via.
fn stamp_via(headers: &mut Headers, mut via: Via, source: &Source) -> Via {
    let ip = source.peer.ip().to_canonical();
    let wants_rport = matches!(via.params.get("rport"), Some(None) | Some(Some("")));
    let host_matches = match (&via.host, ip) {
        (Host::Ipv4(a), IpAddr::V4(b)) => *a == b,
        (Host::Ipv6(a), b) => IpAddr::V6(*a).to_canonical() == b,
        _ => false,
    };
    if !wants_rport && host_matches {
        return via;
    }
    if wants_rport {
        via.params
            .set("rport", Some(source.peer.port().to_string()));
    }
    via.params.set("received", Some(ip.to_string()));
    replace_top_via(headers, &via);
    via
}

/// Replaces the first Via value (which may share a line with others) by `via`.
fn replace_top_via(headers: &mut Headers, via: &Via) {
    let Some(pos) = headers.0.iter().position(|h| h.name == HeaderName::Via) else {
        return;
    };
    let line = Headers(vec![headers.0[pos].clone()]);
    let rest: Vec<String> = line
        .values(&HeaderName::Via)
        .skip(1)
        .map(str::to_owned)
        .collect();
    headers.0[pos].value = via.to_string();
    for (i, value) in rest.into_iter().enumerate() {
        headers.0.insert(
            pos + 1 + i,
            confab_sip::Header {
                name: HeaderName::Via,
                value,
            },
        );
    }
}

/// RFC 3261 §18.2.2, RFC 3581 §4: where a response goes.
fn response_destination(source: &Source, via: &Via) -> Destination {
    if source.transport.is_reliable() {
        return Destination {
            transport: source.transport,
            addr: source.peer,
            connection: source.connection,
            local: Some(source.local),
        };
    }
    let wants_rport = via.params.contains("rport");
    let addr = if wants_rport {
        source.peer
    } else {
        // §18.2.2: the `received` address and the sent-by port. `maddr` is ignored on purpose:
        // answering to an address the message names (RFC 4475 bcast) would make us a reflector.
        SocketAddr::new(source.peer.ip(), via.port.unwrap_or(5060))
    };
    Destination {
        transport: TransportKind::Udp,
        addr,
        connection: None,
        local: Some(source.local),
    }
}

/// Option tags in Require and Proxy-Require that we do not support.
fn unsupported_extensions(req: &Request) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // Most requests have neither header: one pass over the lines tells.
    if !req
        .headers
        .0
        .iter()
        .any(|h| h.name == HeaderName::Require || h.name == HeaderName::ProxyRequire)
    {
        return out;
    }
    for name in [HeaderName::Require, HeaderName::ProxyRequire] {
        for tag in req.headers.values(&name) {
            let tag = tag.trim();
            if tag.is_empty() || SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(tag)) {
                continue;
            }
            if !out.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
                out.push(tag.to_owned());
            }
        }
    }
    out
}

/// RFC 3261 §8.2.3: 415 for a body type or encoding we cannot read; 406 when the Accept header
/// rules out the SDP an INVITE answer carries (RFC 4475 §3.3.15, sdp01).
fn check_body(req: &Request) -> Option<Response> {
    let accept = HeaderName::Other("Accept".to_owned());
    if req.headers.get(&accept).is_some() {
        let acceptable = req.headers.values(&accept).any(|a| {
            let media = a.split(';').next().unwrap_or("").trim();
            ["application/sdp", "application/*", "*/*"]
                .iter()
                .any(|m| m.eq_ignore_ascii_case(media))
        });
        if !acceptable {
            let mut resp = reply(req, 406, Some("Not Acceptable"));
            resp.headers.push(
                HeaderName::Warning,
                "399 - \"Answers carry application/sdp only\"",
            );
            return Some(resp);
        }
    }
    if let Some(enc) = req
        .headers
        .values(&HeaderName::ContentEncoding)
        .find(|e| !e.eq_ignore_ascii_case("identity"))
    {
        let _ = enc;
        let mut resp = reply(req, 415, None);
        resp.headers
            .push(HeaderName::Other("Accept-Encoding".to_owned()), "identity");
        return Some(resp);
    }
    if req.body.is_empty() {
        return None;
    }
    let ctype = req
        .headers
        .get(&HeaderName::ContentType)
        .unwrap_or("application/sdp");
    let media = ctype.split(';').next().unwrap_or("").trim();
    if ACCEPTED_BODIES
        .iter()
        .any(|a| a.eq_ignore_ascii_case(media))
    {
        return None;
    }
    let mut resp = reply(req, 415, None);
    resp.headers
        .push(HeaderName::Other("Accept".to_owned()), "application/sdp");
    Some(resp)
}

// ---------------------------------------------------------------------------------------------
// Server transactions, sharded.

/// How often completed non-INVITE transactions past Timer J are swept out of a shard. They need
/// no timer of their own: an expired one found by a retransmission is replaced, so the sweep
/// only bounds memory.
const ANSWERED_SWEEP: Duration = Duration::from_secs(1);

/// A response on its way out: serialised already (cached answers) or not yet (serialised by the
/// caller, outside the shard lock).
enum Wire {
    Bytes(Bytes),
    Message(Response),
}

/// A server transaction in a shard's table. Small, because tens of thousands live at once
/// under REGISTER load and the table moves them when it grows or rehashes.
enum TxEntry {
    /// Running the RFC 3261 state machine: INVITE, and non-INVITE until its final response.
    Live(Box<Live>),
    /// A non-INVITE transaction in Completed on UDP (RFC 3261 §17.2.2), kept compact: all it does
    /// until Timer J is re-send its final response, so only the serialised response and the
    /// Timer J deadline are stored (no destination: a retransmission is answered where it came
    /// from), and each retransmission is a reference-count increment. Swept, not timed.
    Answered { response: Bytes, timer_j: Instant },
}

struct Live {
    txn: ServerTxn,
    destination: Destination,
}

enum ServerTxn {
    NonInvite(ServerNonInvite),
    Invite(ServerInvite),
}

impl ServerTxn {
    fn handle_request(&mut self, now: Instant) -> Vec<Wire> {
        match self {
            Self::NonInvite(t) => t.handle_request(now),
            Self::Invite(t) => t.handle_request(now),
        }
        self.drain()
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Self::NonInvite(t) => t.handle_timeout(now),
            Self::Invite(t) => t.handle_timeout(now),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::NonInvite(t) => t.poll_timeout(),
            Self::Invite(t) => t.poll_timeout(),
        }
    }
    fn is_terminated(&self) -> bool {
        match self {
            Self::NonInvite(t) => t.is_terminated(),
            Self::Invite(t) => t.is_terminated(),
        }
    }
    fn drain(&mut self) -> Vec<Wire> {
        let mut v = Vec::new();
        loop {
            let next = match self {
                Self::NonInvite(t) => t.poll_transmit(),
                Self::Invite(t) => t.poll_transmit(),
            };
            match next {
                Some(r) => v.push(Wire::Message(r)),
                None => return v,
            }
        }
    }
}

impl TxEntry {
    fn is_terminated(&self, now: Instant) -> bool {
        match self {
            Self::Live(live) => live.txn.is_terminated(),
            Self::Answered { timer_j, .. } => *timer_j <= now,
        }
    }
}

/// A deadline in the shard's timer heap (live transactions only). Entries go stale when a
/// transaction's deadline moves or it ends; a stale entry is recognised when popped (its instant
/// is not the transaction's current deadline) and skipped.
struct TimerEntry {
    at: Instant,
    key: TransactionKey,
}

impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for TimerEntry {}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerEntry {
    /// Reversed, so `BinaryHeap` pops the earliest.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.at.cmp(&self.at)
    }
}

#[derive(Default)]
struct TxShard {
    map: FastMap<TransactionKey, TxEntry>,
    timers: BinaryHeap<TimerEntry>,
    /// No earlier than the earliest Timer J of the `Answered` entries; `None` without any.
    answered_due: Option<Instant>,
    last_sweep: Option<Instant>,
}

impl TxShard {
    /// After input to `key`'s live transaction: drop it if it ended, else schedule its deadline
    /// if it moved from `before`.
    fn settle(&mut self, now: Instant, key: &TransactionKey, before: Option<Instant>) {
        let Some(entry) = self.map.get(key) else {
            return;
        };
        if entry.is_terminated(now) {
            self.map.remove(key);
            return;
        }
        let TxEntry::Live(live) = entry else {
            return;
        };
        if let Some(at) = live.txn.poll_timeout() {
            if before != Some(at) {
                self.timers.push(TimerEntry {
                    at,
                    key: key.clone(),
                });
            }
        }
    }

    fn answered(&mut self, timer_j: Instant) {
        self.answered_due = Some(self.answered_due.map_or(timer_j, |d| d.min(timer_j)));
    }

    /// When the next sweep of expired `Answered` entries is due: at most once per
    /// [`ANSWERED_SWEEP`].
    fn sweep_due(&self) -> Option<Instant> {
        let due = self.answered_due?;
        Some(match self.last_sweep {
            Some(last) => due.max(last + ANSWERED_SWEEP),
            None => due,
        })
    }

    /// Drops the `Answered` entries past Timer J and gives back table memory after a burst.
    fn sweep(&mut self, now: Instant) {
        let mut earliest: Option<Instant> = None;
        self.map.retain(|_, entry| match entry {
            TxEntry::Answered { timer_j, .. } if *timer_j <= now => false,
            TxEntry::Answered { timer_j, .. } => {
                earliest = Some(earliest.map_or(*timer_j, |e| e.min(*timer_j)));
                true
            }
            TxEntry::Live(_) => true,
        });
        self.answered_due = earliest;
        self.last_sweep = Some(now);
        // A table that held a burst keeps its capacity until shrunk.
        if self.map.capacity() > 4 * self.map.len().max(256) {
            self.map.shrink_to(2 * self.map.len());
        }
        if self.timers.capacity() > 4 * self.timers.len().max(256) {
            self.timers.shrink_to(2 * self.timers.len());
        }
    }
}

enum Begin {
    New,
    Retransmission(Vec<Wire>),
    /// The table is full: answer without a transaction.
    Stateless,
}

struct Transactions {
    shards: Box<[Mutex<TxShard>]>,
    hasher: foldhash::fast::RandomState,
    timers: Timers,
}

impl Transactions {
    fn new(timers: Timers) -> Self {
        Self {
            shards: (0..TRANSACTION_SHARDS)
                .map(|_| Mutex::new(TxShard::default()))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            timers,
        }
    }

    fn shard(&self, key: &TransactionKey) -> &Mutex<TxShard> {
        let h = self.hasher.hash_one(key);
        &self.shards[(h as usize) % self.shards.len()]
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    fn contains(&self, key: &TransactionKey) -> bool {
        self.shard(key).lock().map.contains_key(key)
    }

    /// Finds the transaction of `req` (a retransmission: what to re-send) or creates it.
    fn begin(
        &self,
        now: Instant,
        key: &TransactionKey,
        req: &Request,
        transport: TransportKind,
        destination: Destination,
    ) -> Begin {
        let mut shard = self.shard(key).lock();
        if let Some(entry) = shard.map.get_mut(key) {
            match entry {
                TxEntry::Answered { response, timer_j } if *timer_j > now => {
                    return Begin::Retransmission(vec![Wire::Bytes(response.clone())]);
                }
                TxEntry::Live(live) if !live.txn.is_terminated() => {
                    let before = live.txn.poll_timeout();
                    let out = live.txn.handle_request(now);
                    // Answer where the retransmission came from (the NAT binding may have moved).
                    live.destination = destination;
                    shard.settle(now, key, before);
                    return Begin::Retransmission(out);
                }
                // Ended but not yet swept: a new transaction replaces it.
                _ => {
                    shard.map.remove(key);
                }
            }
        }
        if shard.map.len() >= MAX_TRANSACTIONS_PER_SHARD {
            return Begin::Stateless;
        }
        let txn = if req.method == Method::Invite {
            let mut t = ServerInvite::new(now, req, transport, self.timers);
            // The answer follows at once, so the queued 100 (Trying) is not needed
            // (RFC 3261 §17.2.1: only when the TU will not answer within 200 ms).
            while t.poll_transmit().is_some() {}
            ServerTxn::Invite(t)
        } else {
            ServerTxn::NonInvite(ServerNonInvite::new(now, req, transport, self.timers))
        };
        shard.map.insert(
            key.clone(),
            TxEntry::Live(Box::new(Live { txn, destination })),
        );
        Begin::New
    }

    /// The TU's answer for `key`; returns what to send.
    fn respond(&self, now: Instant, key: &TransactionKey, resp: Response) -> Vec<Wire> {
        let final_non_invite =
            resp.status.is_final() && !matches!(resp.cseq().map(|c| c.method), Ok(Method::Invite));
        // Serialised outside the lock; the compact Completed state keeps these bytes.
        let wire = final_non_invite.then(|| Bytes::from(resp.to_bytes()));
        let mut guard = self.shard(key).lock();
        let shard = &mut *guard;
        let Some(entry) = shard.map.get_mut(key) else {
            // Gone meanwhile (cannot happen before a final answer): answer anyway.
            return vec![wire.map_or(Wire::Message(resp), Wire::Bytes)];
        };
        let TxEntry::Live(live) = entry else {
            // A final response was sent already (RFC 3261 §17.2.2: later ones are discarded).
            return Vec::new();
        };
        let before = live.txn.poll_timeout();
        match (&mut live.txn, wire) {
            (ServerTxn::NonInvite(t), Some(bytes)) => {
                // RFC 3261 §17.2.2: the first final response is sent and completes the
                // transaction (Timer J = 64*T1 on UDP, zero on reliable transports); the state
                // machine is not needed to know that, nor to keep a copy of the response.
                if matches!(
                    t.state(),
                    TransactionState::Completed | TransactionState::Terminated
                ) {
                    return Vec::new();
                }
                if live.destination.transport.is_reliable() {
                    shard.map.remove(key);
                } else {
                    let timer_j = now + self.timers.transaction_timeout();
                    *entry = TxEntry::Answered {
                        response: bytes.clone(),
                        timer_j,
                    };
                    shard.answered(timer_j);
                }
                vec![Wire::Bytes(bytes)]
            }
            (txn, _) => {
                match txn {
                    ServerTxn::NonInvite(t) => t.respond(now, resp),
                    ServerTxn::Invite(t) => t.respond(now, resp),
                }
                let out = txn.drain();
                shard.settle(now, key, before);
                out
            }
        }
    }

    /// An ACK: `None` when no INVITE transaction matches.
    fn ack(&self, now: Instant, key: &TransactionKey) -> Option<AckOutcome> {
        let mut shard = self.shard(key).lock();
        let TxEntry::Live(live) = shard.map.get_mut(key)? else {
            return None;
        };
        let ServerTxn::Invite(t) = &mut live.txn else {
            return None;
        };
        let before = t.poll_timeout();
        let outcome = t.handle_ack(now);
        shard.settle(now, key, before);
        Some(outcome)
    }

    /// Fires due timers; returns retransmissions with their destinations.
    fn handle_timeout(&self, now: Instant) -> Vec<(Wire, Destination)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            while shard.timers.peek().is_some_and(|t| t.at <= now) {
                let Some(TimerEntry { at, key }) = shard.timers.pop() else {
                    break;
                };
                let Some(TxEntry::Live(live)) = shard.map.get_mut(&key) else {
                    continue;
                };
                if live.txn.poll_timeout() != Some(at) {
                    // Stale: the deadline moved (a fresh entry exists) or none is armed.
                    continue;
                }
                live.txn.handle_timeout(now);
                let destination = live.destination;
                for answer in live.txn.drain() {
                    out.push((answer, destination));
                }
                // `before = None` forces a fresh heap entry for the new deadline.
                shard.settle(now, &key, None);
            }
            if shard.sweep_due().is_some_and(|at| at <= now) {
                shard.sweep(now);
            }
        }
        out
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.shards
            .iter()
            .filter_map(|s| {
                let s = s.lock();
                [s.timers.peek().map(|t| t.at), s.sweep_due()]
                    .into_iter()
                    .flatten()
                    .min()
            })
            .min()
    }
}
