//! Registrar and location service: RFC 3261 §10.3 registration processing, RFC 5626 (outbound:
//! instance ID and reg-id, flows) and RFC 5627 public GRUUs.
//!
//! The [`Registrar`] is sans-IO: it never reads a clock (the current `Instant` and the wall-clock
//! Unix seconds are arguments) and never touches a socket or the database. It is shared by the
//! transport threads (every method takes `&self`) and keeps its location map in 64 shards, each a
//! `parking_lot::Mutex`, chosen by a hash of the address-of-record (AoR): registrations of
//! different users rarely contend and no lock is global.
//!
//! # Calling contract
//!
//! - [`Registrar::handle_register`] after the dispatcher has authenticated the REGISTER (it hands
//!   over an [`Authenticated`] proof) and checked that the Request-URI names a local domain. It
//!   returns the final response to send; the dispatcher adds the To tag.
//! - [`Registrar::poll_timeout`] after every input gives the earliest instant at which a binding
//!   expires (it may be earlier than needed; never later). Call [`Registrar::handle_timeout`] at
//!   or after it; a spurious call does nothing.
//! - [`Registrar::drain_changes`] regularly (write-behind persistence). Changes are queued per
//!   shard and bounded: when nobody drains, the queue is dropped and a [`LocationChange::Resync`]
//!   tells the writer to rewrite everything from [`Registrar::snapshot`].
//! - [`Registrar::connection_closed`] when a connection-oriented transport loses a connection,
//!   after the last message read from it was handled.
//! - [`Registrar::restore`] once at start with the persisted bindings.
//! - Instants passed in never go backwards.
//!
//! # Binding identity
//!
//! A REGISTER Contact updates an existing binding of the same AoR when
//! - both carry a `+sip.instance`: the instance IDs and the reg-ids (or their absence) are equal
//!   (RFC 5626 §6), whatever the Contact URIs;
//! - otherwise: the Contact URIs are equivalent (scheme, user, host, port,
//!   `transport`, `maddr` and `user` parameters), and the existing binding is not an outbound one.
//!
//! Persistence should therefore key bindings by (AoR, instance, reg-id) when an instance is
//! present, by (AoR, Contact URI) otherwise ([`Binding::key`]). When an update changes the
//! Contact URI of a binding, a `Removed { reason: Replaced }` for the old one precedes the
//! `Upserted` of the new one, so a store keyed by (AoR, Contact) stays right as well.
//!
//! # Choices
//!
//! - More bindings than `max_contacts_per_aor`: the new registration wins, and the bindings not
//!   touched by this REGISTER that expire soonest are evicted (RFC 5626 §6 lets a registrar drop
//!   old flows). A single REGISTER that itself asks for more contacts gets 403.
//! - A closed connection removes the outbound bindings (with reg-id) whose flow it was (RFC 5626
//!   §6: the flow failed; the UA registers a new one). Other bindings that came over it keep
//!   their Contact and peer address but forget the connection (`source.connection = None`), so
//!   routing reaches them by a new connection to the Contact, as RFC 3261 would.
//! - reg-id is honoured only with a `+sip.instance` and when this server is the first hop
//!   (exactly one Via); otherwise it is ignored and the Contact is an ordinary binding.
//! - A malformed `expires` (parameter or header) counts as absent: `default_expires` applies
//!   (RFC 3261 §20.10 suggests 3600, the usual default).

mod contact;
mod date;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_sip::{
    ConnectionId, ContactValue, HeaderName, Host, Method, NameAddr, Request, Response, Source, Uri,
};
use parking_lot::Mutex;

use self::contact::UriKey;
use crate::hash::{stable_hash, FastMap};

/// Number of location-map shards (a power of two).
const SHARDS: usize = 64;
/// Number of shards of the connection → AoRs index.
const CONNECTION_SHARDS: usize = 16;
/// Pending changes kept per shard before the queue is dropped for a [`LocationChange::Resync`].
const MAX_PENDING_CHANGES_PER_SHARD: usize = 4096;
/// Longest User-Agent kept with a binding (bounded memory per binding).
const MAX_USER_AGENT_LEN: usize = 128;

/// Proof that digest credentials were checked for a request. Only the authentication policy of
/// this crate makes one (`pub(crate)` constructor), so the registrar cannot be reached with an
/// unauthenticated request by mistake.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The canonical user name; it is also the AoR key of the location map.
    user: Arc<str>,
    /// The user's extension number, an alternative user part for the To URI.
    extension: Option<Arc<str>>,
    _sealed: (),
}

impl Authenticated {
    pub(crate) fn new(user: &str, extension: Option<&str>) -> Self {
        Self {
            user: Arc::from(user),
            extension: extension.map(Arc::from),
            _sealed: (),
        }
    }

    /// Makes a proof without checking anything, for tests of code that needs one (integration
    /// tests cannot reach the crate-private constructor).
    ///
    /// **Danger**: never call this on a path that serves network traffic.
    #[doc(hidden)]
    pub fn danger_assume_authenticated(user: &str, extension: Option<&str>) -> Self {
        Self::new(user, extension)
    }

    /// The canonical user name (the AoR key).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The user's extension, if any.
    pub fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }
}

/// Registrar policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shortest accepted registration (seconds); shorter non-zero requests get 423 with
    /// `Min-Expires` (RFC 3261 §10.3 step 7).
    pub min_expires: u32,
    /// Longer requests are shortened to this (RFC 3261 §10.3 step 7).
    pub max_expires: u32,
    /// Used when neither the Contact `expires` parameter nor an Expires header says.
    pub default_expires: u32,
    /// Bindings kept per AoR; beyond it the soonest-expiring untouched bindings are evicted.
    pub max_contacts_per_aor: usize,
    /// The domain of public GRUUs (`sip:user@domain;gr=...`).
    pub domain: String,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts_per_aor: 10,
            domain: "localhost".to_owned(),
        }
    }
}

/// One registered contact of an AoR: where to reach one device of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The AoR key: the canonical user name (shared by all bindings of the AoR).
    pub aor: Arc<str>,
    /// The Contact URI as registered (serialised from the parsed URI).
    pub contact: Box<str>,
    /// When the binding expires (monotonic clock).
    pub expires_at: Instant,
    /// When the binding expires, Unix seconds (for persistence and `restore`).
    pub expires_unix: u64,
    /// The Contact `q` value in thousandths (1000 when absent).
    pub q_milli: u16,
    pub call_id: Box<str>,
    pub cseq: u32,
    /// The `+sip.instance` value without quotes, e.g. `<urn:uuid:...>` (RFC 5626 §4.1).
    pub instance: Option<Box<str>>,
    /// The RFC 5626 reg-id; `Some` only for an outbound binding (with an instance, first hop).
    pub reg_id: Option<u32>,
    /// The flow the REGISTER arrived on: send requests for this contact to `source.peer` from
    /// `source.local` (over `source.connection` while it is open) for NAT traversal.
    pub source: Source,
    pub user_agent: Option<Box<str>>,
}

/// How persistence identifies a binding (see the module doc, "Binding identity").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingKey<'a> {
    Instance {
        instance: &'a str,
        reg_id: Option<u32>,
    },
    Contact(&'a str),
}

impl Binding {
    /// Whether this is an RFC 5626 outbound binding (instance and reg-id): its flow matters.
    pub fn is_outbound(&self) -> bool {
        self.reg_id.is_some() && self.instance.is_some()
    }

    /// Seconds left, rounded up (what the 200 OK says in `expires=`).
    pub fn remaining_secs(&self, now: Instant) -> u64 {
        let left = self.expires_at.saturating_duration_since(now);
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }

    /// The persistence identity of the binding within its AoR.
    pub fn key(&self) -> BindingKey<'_> {
        match &self.instance {
            Some(instance) => BindingKey::Instance {
                instance,
                reg_id: self.reg_id,
            },
            None => BindingKey::Contact(&self.contact),
        }
    }

    /// The GRUU `gr` parameter value of this binding (its instance ID without `<>`).
    pub fn gr(&self) -> Option<&str> {
        self.instance.as_deref().map(contact::gr_of_instance)
    }

    /// The public GRUU of this binding (RFC 5627 §3.1): `sip:user@domain;gr=urn:uuid:...`.
    pub fn pub_gruu(&self, domain: &str) -> Option<String> {
        let gr = self.gr()?;
        Some(format!(
            "sip:{}@{};gr={}",
            contact::escape_user(&self.aor),
            domain,
            contact::escape_param(gr)
        ))
    }

    /// The Contact header value the 200 OK lists for this binding.
    fn contact_header(&self, now: Instant, gruu_domain: Option<&str>) -> String {
        // Sized for the usual case (no GRUU) and written piece by piece: one per binding in
        // every 200 OK to a REGISTER.
        let mut v = String::with_capacity(self.contact.len() + 24);
        v.push('<');
        v.push_str(&self.contact);
        v.push_str(">;expires=");
        push_decimal(&mut v, self.remaining_secs(now));
        if self.q_milli != 1000 {
            v.push_str(";q=");
            v.push_str(&contact::format_q(self.q_milli));
        }
        if let Some(instance) = &self.instance {
            v.push_str(";+sip.instance=\"");
            v.push_str(instance);
            v.push('"');
        }
        if let Some(reg_id) = self.reg_id {
            v.push_str(";reg-id=");
            push_decimal(&mut v, u64::from(reg_id));
        }
        if let Some(gruu) = gruu_domain.and_then(|d| self.pub_gruu(d)) {
            v.push_str(";pub-gruu=\"");
            v.push_str(&gruu);
            v.push('"');
        }
        v
    }
}

/// A change of the location map, for write-behind persistence and registration events.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocationChange {
    /// A binding was added or refreshed; this is its full new state.
    Upserted(Binding),
    /// A binding is gone (its last state, and why).
    Removed {
        binding: Binding,
        reason: RemovalReason,
    },
    /// Changes were dropped because nobody drained them: rewrite the whole location store from
    /// [`Registrar::snapshot`]. Comes first in the drained batch.
    Resync,
}

/// Why a binding was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalReason {
    /// The UA removed it (expires 0, or `Contact: *`), or an administrator did.
    Unregistered,
    /// Its registration ran out.
    Expired,
    /// An update of the same binding (same instance and reg-id) changed its Contact URI.
    Replaced,
    /// Evicted to keep the AoR within `max_contacts_per_aor`.
    Evicted,
    /// Its outbound flow (connection) closed, or it was an outbound flow lost in a restart.
    FlowClosed,
}

/// The registrar and location service. See the module documentation for the calling contract.
pub struct Registrar {
    config: RegistrarConfig,
    shards: Box<[PaddedShard]>,
    /// Which AoRs have bindings over which connection (may list AoRs that no longer do).
    connections: Box<[Mutex<ConnectionIndex>]>,
}

/// Connection → the AoRs with a binding registered over it.
type ConnectionIndex = FastMap<ConnectionId, Vec<Arc<str>>>;

/// One shard on its own cache lines, so neighbouring locks do not false-share.
#[repr(align(128))]
struct PaddedShard(Mutex<Shard>);

#[derive(Default)]
struct Shard {
    aors: FastMap<Arc<str>, AorEntry>,
    /// Expiry wake-ups, earliest first, with lazy deletion: an entry is live only if it equals
    /// its AoR's `wake`.
    wakeups: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    /// Number of bindings in this shard.
    bindings: usize,
    changes: Vec<LocationChange>,
    overflowed: bool,
}

struct AorEntry {
    /// Kept without spare capacity (memory per binding is what counts at 100k contacts).
    bindings: Vec<Binding>,
    /// For each binding, in the same order: what the registrar keeps about it beside it.
    meta: Vec<Meta>,
    /// The instant of this AoR's live wake-up in the shard heap; never later than its earliest
    /// expiry.
    wake: Option<Instant>,
}

/// Bookkeeping kept beside each binding (not part of it: nobody outside needs it).
#[derive(Clone, Copy, Debug)]
struct Meta {
    /// [`key_hash`] of the Contact URI key, so matching a REGISTER's Contacts against the AoR's
    /// bindings parses no stored URI (only a binding whose hash matches is parsed, to confirm).
    key: u64,
    /// The `expires_unix` of the last [`LocationChange::Upserted`] reported for the binding.
    reported_unix: u64,
}

impl Meta {
    fn reported(key: u64, b: &Binding) -> Self {
        Self {
            key,
            reported_unix: b.expires_unix,
        }
    }
}

/// Whether a refresh of `old` into `new` needs reporting for persistence: anything but the
/// expiry, Call-ID and CSeq changed, the expiry was shortened, or the reported expiry would fall
/// short of the real one by more than a tenth of the registration's duration. A device that
/// refreshes every few seconds is thus written behind a few times an hour, not every time; after
/// a restart its binding lasts at most 10 % less than it should, and it refreshes before that.
fn needs_report(old: &Binding, new: &Binding, reported_unix: u64, now: Instant) -> bool {
    let same_flow = old.contact == new.contact
        && old.q_milli == new.q_milli
        && old.instance == new.instance
        && old.reg_id == new.reg_id
        && old.user_agent == new.user_agent
        && old.source.transport == new.source.transport
        && old.source.peer == new.source.peer
        && old.source.local == new.source.local
        && old.source.connection == new.source.connection;
    let duration = new.expires_at.saturating_duration_since(now).as_secs();
    !same_flow
        || new.expires_unix < reported_unix
        || new.expires_unix - reported_unix > duration / 10
}

impl Shard {
    fn record(&mut self, change: LocationChange) {
        if self.overflowed {
            return;
        }
        if self.changes.len() >= MAX_PENDING_CHANGES_PER_SHARD {
            self.changes = Vec::new();
            self.overflowed = true;
            return;
        }
        self.changes.push(change);
    }

    fn removed(&mut self, binding: Binding, reason: RemovalReason) {
        self.record(LocationChange::Removed { binding, reason });
    }

    /// Removes the bindings of `aor` that expired at `now`, and the AoR if none is left.
    fn purge_expired(&mut self, aor: &str, now: Instant) {
        let Some(entry) = self.aors.get_mut(aor) else {
            return;
        };
        if entry.bindings.iter().all(|b| b.expires_at > now) {
            return;
        }
        let mut expired = Vec::new();
        let bindings = std::mem::take(&mut entry.bindings);
        let meta = std::mem::take(&mut entry.meta);
        for (b, m) in bindings.into_iter().zip(meta) {
            if b.expires_at > now {
                entry.bindings.push(b);
                entry.meta.push(m);
            } else {
                expired.push(b);
            }
        }
        let empty = entry.bindings.is_empty();
        self.bindings -= expired.len();
        for b in expired {
            self.removed(b, RemovalReason::Expired);
        }
        if empty {
            self.aors.remove(aor);
        }
    }

    /// Arms the AoR's wake-up at its earliest expiry unless an earlier one is armed already (that
    /// one re-arms when it fires).
    fn schedule(&mut self, aor: &Arc<str>) {
        let Some(entry) = self.aors.get_mut(aor) else {
            return;
        };
        let Some(earliest) = entry.bindings.iter().map(|b| b.expires_at).min() else {
            return;
        };
        if entry.wake.is_some_and(|w| w <= earliest) {
            return;
        }
        entry.wake = Some(earliest);
        self.wakeups.push(Reverse((earliest, Arc::clone(aor))));
        // Lazy deletion leaves dead entries behind; rebuild when they dominate.
        if self.wakeups.len() > 2 * self.aors.len() + 64 {
            self.wakeups = self
                .aors
                .iter()
                .filter_map(|(k, e)| e.wake.map(|w| Reverse((w, Arc::clone(k)))))
                .collect();
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.wakeups.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, aor))) = self.wakeups.pop() else {
                break;
            };
            let live = self.aors.get(&aor).is_some_and(|e| e.wake == Some(at));
            if !live {
                continue;
            }
            if let Some(entry) = self.aors.get_mut(&aor) {
                entry.wake = None;
            }
            self.purge_expired(&aor, now);
            self.schedule(&aor);
        }
    }
}

/// Why a REGISTER is refused: the status, reason phrase and optional Min-Expires.
#[derive(Debug)]
struct Reject {
    status: u16,
    reason: &'static str,
    min_expires: Option<u32>,
}

impl Reject {
    fn new(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            min_expires: None,
        }
    }

    fn into_response(self, req: &Request) -> Response {
        let mut resp = Response::for_request(req, self.status, Some(self.reason));
        if let Some(min) = self.min_expires {
            resp.headers.push(HeaderName::MinExpires, min.to_string());
        }
        resp
    }
}

/// One Contact of a REGISTER, validated.
struct Requested {
    contact: Box<str>,
    uri_key: UriKey,
    /// After clamping; 0 removes.
    expires: u32,
    q_milli: u16,
    instance: Option<Box<str>>,
    reg_id: Option<u32>,
}

impl Requested {
    /// Whether this Contact names the existing binding `b` (module doc, "Binding identity").
    /// `b_hash` is the [`key_hash`] of `b`'s Contact URI key, `hash` that of this Contact's: the
    /// stored URI is parsed only when they are equal.
    fn matches(&self, b: &Binding, b_hash: u64, hash: u64) -> bool {
        match (&self.instance, &b.instance) {
            (Some(mine), Some(theirs)) => mine == theirs && self.reg_id == b.reg_id,
            _ => {
                b.reg_id.is_none()
                    && self.reg_id.is_none()
                    && b_hash == hash
                    // The same serialised URI is the same key (a refresh, nearly always):
                    // only a different spelling needs the stored URI parsed.
                    && (b.contact == self.contact
                        || UriKey::of_stored(&b.contact).as_ref() == Some(&self.uri_key))
            }
        }
    }
}

/// What a REGISTER asks for.
enum Update {
    /// No Contact: a query; the 200 lists the bindings (RFC 3261 §10.2.3).
    Query,
    /// `Contact: *` with `Expires: 0`.
    RemoveAll,
    Set(Vec<Requested>),
}

impl Registrar {
    pub fn new(config: RegistrarConfig) -> Self {
        Self {
            config,
            shards: (0..SHARDS)
                .map(|_| PaddedShard(Mutex::new(Shard::default())))
                .collect(),
            connections: (0..CONNECTION_SHARDS)
                .map(|_| Mutex::new(FastMap::default()))
                .collect(),
        }
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    fn shard(&self, aor: &str) -> &Mutex<Shard> {
        // SHARDS is a power of two; the mask keeps the index in range.
        &self.shards[(stable_hash(aor) as usize) & (SHARDS - 1)].0
    }

    fn connection_shard(&self, id: ConnectionId) -> &Mutex<ConnectionIndex> {
        &self.connections[(id.0 as usize) % CONNECTION_SHARDS]
    }

    /// Processes an authenticated REGISTER (RFC 3261 §10.3 steps 4–8, RFC 5626 §6, RFC 5627 §6)
    /// and returns the final response to send: 200 listing every current binding of the AoR with
    /// its remaining seconds, 400 (malformed Contact, wildcard misuse, bad q), 403 (To names
    /// another user, too many contacts), 404 (To is not in a local domain), 423 with
    /// Min-Expires, or 500 "Out of order CSeq". Nothing changes unless the answer is 200.
    ///
    /// The caller has authenticated the request (`who`) and checked its Request-URI; the To
    /// user part must be `who`'s user name or extension, and the To host must satisfy
    /// `is_local_host`. The response has no To tag; the caller adds one.
    pub fn handle_register(
        &self,
        now: Instant,
        unix_now: u64,
        req: &Request,
        source: &Source,
        who: &Authenticated,
        is_local_host: &dyn Fn(&Host) -> bool,
    ) -> Response {
        let Ok(to) = req.to_header() else {
            return Reject::new(400, "Bad To header").into_response(req);
        };
        self.handle_register_to(now, unix_now, req, &to, source, who, is_local_host)
    }

    /// [`Self::handle_register`] with the request's To header parsed already.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_register_to(
        &self,
        now: Instant,
        unix_now: u64,
        req: &Request,
        to: &NameAddr,
        source: &Source,
        who: &Authenticated,
        is_local_host: &dyn Fn(&Host) -> bool,
    ) -> Response {
        match self.register(now, unix_now, req, to, source, who, is_local_host) {
            Ok(resp) => resp,
            Err(reject) => {
                tracing::debug!(
                    user = who.user(),
                    status = reject.status,
                    reason = reject.reason,
                    "REGISTER refused"
                );
                reject.into_response(req)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        now: Instant,
        unix_now: u64,
        req: &Request,
        to: &NameAddr,
        source: &Source,
        who: &Authenticated,
        is_local_host: &dyn Fn(&Host) -> bool,
    ) -> Result<Response, Reject> {
        if req.method != Method::Register {
            return Err(Reject::new(500, "Not a REGISTER"));
        }
        // RFC 3261 §10.3 steps 4–5: the AoR must be ours and the user may only register itself.
        let Uri::Sip(to_uri) = &to.uri else {
            return Err(Reject::new(404, "Not our domain"));
        };
        if !is_local_host(&to_uri.host) {
            return Err(Reject::new(404, "Not our domain"));
        }
        let Some(to_user) = to_uri.user_unescaped() else {
            return Err(Reject::new(404, "No user in To"));
        };
        if to_user != who.user() && Some(to_user.as_str()) != who.extension() {
            return Err(Reject::new(403, "Not allowed to register this AoR"));
        }
        let call_id = req.call_id().trim();
        if call_id.is_empty() {
            return Err(Reject::new(400, "Missing Call-ID"));
        }
        let cseq = req.cseq().map_err(|_| Reject::new(400, "Bad CSeq"))?.seq;
        let first_hop = req.headers.values(&HeaderName::Via).count() == 1;
        let update = self.parse_contacts(req, first_hop)?;
        let supports = |tag: &str| {
            req.headers
                .values(&HeaderName::Supported)
                .any(|t| t.eq_ignore_ascii_case(tag))
        };
        let uses_outbound =
            matches!(&update, Update::Set(list) if list.iter().any(|r| r.reg_id.is_some()));
        let user_agent = req
            .headers
            .get(&HeaderName::UserAgent)
            .map(|ua| truncate(ua.trim()));

        let mut guard = self.shard(who.user()).lock();
        let shard = &mut *guard;
        shard.purge_expired(who.user(), now);
        let aor: Arc<str> = match shard.aors.get_key_value(who.user()) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::clone(&who.user),
        };
        match update {
            Update::Query => {}
            Update::RemoveAll => {
                let existing = shard.aors.get(&aor).map_or(&[][..], |e| &e.bindings[..]);
                // RFC 3261 §10.3 step 6: the wildcard too obeys the Call-ID/CSeq rule.
                if existing
                    .iter()
                    .any(|b| &*b.call_id == call_id && cseq <= b.cseq)
                {
                    return Err(Reject::new(500, "Out of order CSeq"));
                }
                if let Some(entry) = shard.aors.remove(&aor) {
                    shard.bindings -= entry.bindings.len();
                    for b in entry.bindings {
                        shard.removed(b, RemovalReason::Unregistered);
                    }
                }
            }
            Update::Set(list) => {
                let new = NewBindingFields {
                    aor: &aor,
                    now,
                    unix_now,
                    call_id,
                    cseq,
                    source,
                    user_agent,
                };
                self.apply(shard, list, &new)?;
            }
        }

        let mut resp = Response::for_request(req, 200, None);
        if let Some(entry) = shard.aors.get(&aor) {
            let gruu_domain = supports("gruu").then_some(self.config.domain.as_str());
            let mut order: Vec<&Binding> = entry.bindings.iter().collect();
            order.sort_by_key(|b| (Reverse(b.q_milli), Reverse(b.expires_at)));
            for b in order {
                resp.headers
                    .push(HeaderName::Contact, b.contact_header(now, gruu_domain));
            }
        }
        drop(guard);
        // RFC 5626 §6: tell the UA its flow is used for outbound.
        if uses_outbound && supports("outbound") {
            resp.headers.push(HeaderName::Require, "outbound");
        }
        if unix_now > 0 {
            resp.headers.push(HeaderName::Date, date::rfc1123(unix_now));
        }
        tracing::debug!(user = who.user(), "REGISTER accepted");
        Ok(resp)
    }

    /// RFC 3261 §10.3 step 6–7 checks that need no state: wildcard rules, expiry (423, clamp),
    /// q, instance and reg-id syntax.
    fn parse_contacts(&self, req: &Request, first_hop: bool) -> Result<Update, Reject> {
        let cfg = &self.config;
        let expires_header = req.headers.get(&HeaderName::Expires).map(str::trim);
        let header_expires = expires_header.map(contact::parse_delta_seconds);
        let mut star = false;
        let mut count = 0usize;
        let mut list = Vec::new();
        for value in req.headers.values(&HeaderName::Contact) {
            if value.is_empty() {
                continue;
            }
            count += 1;
            let addr = match ContactValue::parse(value) {
                Ok(ContactValue::Star) => {
                    star = true;
                    continue;
                }
                Ok(ContactValue::Addr(addr)) => addr,
                Err(_) => return Err(Reject::new(400, "Bad Contact")),
            };
            let Uri::Sip(uri) = &addr.uri else {
                return Err(Reject::new(400, "Unsupported Contact URI scheme"));
            };
            let params = &addr.params;
            let requested_expires = match params.get("expires") {
                Some(Some(v)) => contact::parse_delta_seconds(v.trim()),
                Some(None) => None,
                None => header_expires.flatten(),
            };
            let mut expires = requested_expires.unwrap_or(cfg.default_expires);
            if expires > 0 && expires < cfg.min_expires {
                return Err(Reject {
                    status: 423,
                    reason: "Interval Too Brief",
                    min_expires: Some(cfg.min_expires),
                });
            }
            expires = expires.min(cfg.max_expires);
            let q_milli = match params.get("q") {
                None => 1000,
                Some(v) => v
                    .and_then(|v| contact::parse_q(v.trim()))
                    .ok_or_else(|| Reject::new(400, "Bad q value"))?,
            };
            let instance = match params.get("+sip.instance") {
                None => None,
                Some(v) => Some(Box::from(
                    v.and_then(contact::parse_instance)
                        .ok_or_else(|| Reject::new(400, "Bad +sip.instance"))?,
                )),
            };
            let reg_id = match params.get("reg-id") {
                None => None,
                Some(v) => Some(
                    v.and_then(|v| contact::parse_reg_id(v.trim()))
                        .ok_or_else(|| Reject::new(400, "Bad reg-id"))?,
                ),
            };
            // RFC 5626 §6: reg-id means nothing without an instance, and only the first hop
            // (this registrar is the edge proxy) can own the flow.
            let reg_id = reg_id.filter(|_| instance.is_some() && first_hop);
            list.push(Requested {
                contact: uri.to_string().into_boxed_str(),
                uri_key: UriKey::of(uri),
                expires,
                q_milli,
                instance,
                reg_id,
            });
        }
        if star {
            // RFC 3261 §10.2.2: `*` only alone and only with Expires: 0.
            if count != 1 || header_expires != Some(Some(0)) {
                return Err(Reject::new(400, "Invalid wildcard Contact"));
            }
            return Ok(Update::RemoveAll);
        }
        if list.is_empty() {
            return Ok(Update::Query);
        }
        if list.iter().filter(|r| r.reg_id.is_some()).count() > 1 {
            // RFC 5626 §6: one flow per REGISTER.
            return Err(Reject::new(400, "More than one Contact with reg-id"));
        }
        if list.iter().filter(|r| r.expires > 0).count() > cfg.max_contacts_per_aor {
            return Err(Reject::new(403, "Too many contacts"));
        }
        Ok(Update::Set(list))
    }

    /// RFC 3261 §10.3 steps 7–8 for a Contact list, all or nothing.
    fn apply(
        &self,
        shard: &mut Shard,
        list: Vec<Requested>,
        new: &NewBindingFields<'_>,
    ) -> Result<(), Reject> {
        let aor = new.aor;
        let hashes: Vec<u64> = list.iter().map(|r| key_hash(Some(&r.uri_key))).collect();
        // Check first: a 500 must leave every binding as it was.
        if let Some(entry) = shard.aors.get(aor) {
            for (r, &hash) in list.iter().zip(&hashes) {
                for (b, m) in entry.bindings.iter().zip(&entry.meta) {
                    if &*b.call_id == new.call_id && new.cseq <= b.cseq && r.matches(b, m.key, hash)
                    {
                        return Err(Reject::new(500, "Out of order CSeq"));
                    }
                }
            }
        }

        let mut entry = shard.aors.remove(aor).unwrap_or(AorEntry {
            bindings: Vec::new(),
            meta: Vec::new(),
            wake: None,
        });
        let before = entry.bindings.len();
        let mut slots = std::mem::take(&mut entry.bindings);
        let mut meta = std::mem::take(&mut entry.meta);
        let mut touched = vec![false; slots.len()];
        // Touched bindings whose new state is reported for persistence.
        let mut report = vec![false; slots.len()];
        let mut removed: Vec<(Binding, RemovalReason)> = Vec::new();
        for (r, hash) in list.into_iter().zip(hashes) {
            let at = slots
                .iter()
                .zip(&meta)
                .position(|(b, m)| r.matches(b, m.key, hash));
            if r.expires == 0 {
                if let Some(i) = at {
                    meta.remove(i);
                    touched.remove(i);
                    report.remove(i);
                    removed.push((slots.remove(i), RemovalReason::Unregistered));
                }
                continue;
            }
            let binding = new.binding(r);
            match at {
                Some(i) => {
                    let old = std::mem::replace(&mut slots[i], binding);
                    report[i] |= needs_report(&old, &slots[i], meta[i].reported_unix, new.now);
                    if old.contact != slots[i].contact {
                        removed.push((old, RemovalReason::Replaced));
                    }
                    meta[i].key = hash;
                    touched[i] = true;
                }
                None => {
                    slots.push(binding);
                    meta.push(Meta {
                        key: hash,
                        reported_unix: 0,
                    });
                    touched.push(true);
                    report.push(true);
                }
            }
        }
        // Too many: evict untouched bindings, soonest expiry first (parse_contacts has ensured
        // that the touched ones alone fit).
        while slots.len() > self.config.max_contacts_per_aor {
            let victim = slots
                .iter()
                .enumerate()
                .filter(|(i, _)| !touched[*i])
                .min_by_key(|(_, b)| b.expires_at)
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            touched.remove(i);
            report.remove(i);
            meta.remove(i);
            removed.push((slots.remove(i), RemovalReason::Evicted));
        }

        for (b, reason) in removed {
            shard.removed(b, reason);
        }
        for ((b, m), _) in slots
            .iter()
            .zip(meta.iter_mut())
            .zip(&report)
            .filter(|(_, r)| **r)
        {
            shard.record(LocationChange::Upserted(b.clone()));
            m.reported_unix = b.expires_unix;
            if let Some(conn) = b.source.connection {
                let mut index = self.connection_shard(conn).lock();
                let aors = index.entry(conn).or_default();
                if !aors.iter().any(|a| Arc::ptr_eq(a, aor) || **a == **aor) {
                    aors.push(Arc::clone(aor));
                }
            }
        }
        shard.bindings = shard.bindings - before + slots.len();
        if !slots.is_empty() {
            slots.shrink_to_fit();
            meta.shrink_to_fit();
            entry.bindings = slots;
            entry.meta = meta;
            shard.aors.insert(Arc::clone(aor), entry);
            shard.schedule(aor);
        }
        Ok(())
    }

    /// Live bindings of `aor` (the canonical user name), highest q first, then the most recently
    /// refreshed first (RFC 3261 §16.6 forks in this order).
    pub fn lookup(&self, aor: &str, now: Instant) -> Vec<Binding> {
        let shard = self.shard(aor).lock();
        let mut out: Vec<Binding> = shard
            .aors
            .get(aor)
            .map(|e| {
                e.bindings
                    .iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        drop(shard);
        out.sort_by_key(|b| (Reverse(b.q_milli), Reverse(b.expires_at)));
        out
    }

    /// The live binding a public GRUU names (RFC 5627 §5.1): `user` is the GRUU's user part
    /// (the AoR key), `gr` its `gr` parameter value (escaped or not). Among several flows of
    /// one instance, the most recently refreshed wins.
    pub fn lookup_gruu(&self, user: &str, gr: &str, now: Instant) -> Option<Binding> {
        let gr = contact::unescape(gr);
        let shard = self.shard(user).lock();
        shard
            .aors
            .get(user)?
            .bindings
            .iter()
            .filter(|b| b.expires_at > now)
            .filter(|b| {
                b.gr()
                    .is_some_and(|g| g.as_bytes().eq_ignore_ascii_case(&gr))
            })
            .max_by_key(|b| b.expires_at)
            .cloned()
    }

    /// Expires every binding whose time is up at `now` (each emits
    /// `LocationChange::Removed { reason: Expired }`). A spurious call does nothing.
    pub fn handle_timeout(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock();
            if shard
                .wakeups
                .peek()
                .is_some_and(|Reverse((at, _))| *at <= now)
            {
                shard.handle_timeout(now);
            }
        }
    }

    /// The earliest instant at which [`Registrar::handle_timeout`] has work (possibly a little
    /// early, never late), or `None` with no bindings. Locks each shard briefly; call it after
    /// inputs, not in a tight loop.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.shards
            .iter()
            .filter_map(|s| s.0.lock().wakeups.peek().map(|Reverse((at, _))| *at))
            .min()
    }

    /// Moves the queued location changes into `out`, oldest first within a shard. A
    /// [`LocationChange::Resync`] comes first when changes were dropped.
    pub fn drain_changes(&self, out: &mut Vec<LocationChange>) {
        let start = out.len();
        let mut resync = false;
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock();
            resync |= std::mem::take(&mut shard.overflowed);
            // Take the Vec rather than append from it: an idle queue should not keep the
            // capacity of its largest burst.
            out.extend(std::mem::take(&mut shard.changes));
        }
        if resync {
            out.insert(start, LocationChange::Resync);
        }
    }

    /// Reloads persisted bindings at start. Each binding's remaining time is recomputed from
    /// `expires_unix - unix_now` (capped at `max_expires`); expired ones are dropped with a
    /// `Removed { Expired }` change. Connections did not survive the restart: outbound
    /// bindings over connection-oriented transports are dropped (`Removed { FlowClosed }`; the
    /// UA registers a new flow), others keep their peer address with `connection = None`.
    pub fn restore(&self, now: Instant, unix_now: u64, bindings: Vec<Binding>) {
        for mut b in bindings {
            let mut shard = self.shard(&b.aor).lock();
            let remaining = b.expires_unix.saturating_sub(unix_now);
            if remaining == 0 {
                shard.removed(b, RemovalReason::Expired);
                continue;
            }
            if b.is_outbound() && b.source.transport.is_reliable() {
                shard.removed(b, RemovalReason::FlowClosed);
                continue;
            }
            let remaining = remaining.min(u64::from(self.config.max_expires));
            b.expires_at = now + Duration::from_secs(remaining);
            b.source.connection = None;
            b.source.received_at = now;
            b.user_agent = b.user_agent.map(|ua| truncate(&ua));
            let aor = match shard.aors.get_key_value(&*b.aor) {
                Some((key, _)) => Arc::clone(key),
                None => Arc::clone(&b.aor),
            };
            b.aor = Arc::clone(&aor);
            let entry = shard
                .aors
                .entry(Arc::clone(&aor))
                .or_insert_with(|| AorEntry {
                    bindings: Vec::new(),
                    meta: Vec::new(),
                    wake: None,
                });
            let key = UriKey::of_stored(&b.contact);
            let hash = key_hash(key.as_ref());
            let same = entry.bindings.iter().zip(&entry.meta).position(|(x, m)| {
                match (&x.instance, &b.instance) {
                    (Some(_), Some(_)) => x.instance == b.instance && x.reg_id == b.reg_id,
                    _ => {
                        x.reg_id.is_none()
                            && b.reg_id.is_none()
                            && key.is_some()
                            && m.key == hash
                            && UriKey::of_stored(&x.contact) == key
                    }
                }
            });
            match same {
                Some(i) if entry.bindings[i].expires_at >= b.expires_at => {}
                Some(i) => {
                    entry.meta[i] = Meta::reported(hash, &b);
                    entry.bindings[i] = b;
                }
                None => {
                    entry.meta.push(Meta::reported(hash, &b));
                    entry.meta.shrink_to_fit();
                    entry.bindings.push(b);
                    entry.bindings.shrink_to_fit();
                    shard.bindings += 1;
                }
            }
            shard.schedule(&aor);
        }
    }

    /// A connection closed (RFC 5626 §6 flow failure): outbound bindings whose flow it was are
    /// removed (`Removed { FlowClosed }`); other bindings registered over it keep their Contact
    /// and address but forget the connection. Call it after the last message read from that
    /// connection has been handled.
    pub fn connection_closed(&self, id: ConnectionId, now: Instant) {
        let Some(aors) = self.connection_shard(id).lock().remove(&id) else {
            return;
        };
        for aor in aors {
            let mut guard = self.shard(&aor).lock();
            let shard = &mut *guard;
            shard.purge_expired(&aor, now);
            let Some(entry) = shard.aors.get_mut(&aor) else {
                continue;
            };
            let mut closed = Vec::new();
            let mut i = 0;
            while i < entry.bindings.len() {
                let b = &mut entry.bindings[i];
                if b.source.connection == Some(id) {
                    if b.is_outbound() {
                        closed.push(entry.bindings.remove(i));
                        entry.meta.remove(i);
                        continue;
                    }
                    b.source.connection = None;
                }
                i += 1;
            }
            if closed.is_empty() {
                continue;
            }
            entry.bindings.shrink_to_fit();
            entry.meta.shrink_to_fit();
            if entry.bindings.is_empty() {
                shard.aors.remove(&aor);
            }
            shard.bindings -= closed.len();
            for b in closed {
                shard.removed(b, RemovalReason::FlowClosed);
            }
        }
    }

    /// Removes every binding of `aor` (e.g. the user was deleted); returns how many there were.
    pub fn remove_aor(&self, aor: &str) -> usize {
        let mut shard = self.shard(aor).lock();
        let Some(entry) = shard.aors.remove(aor) else {
            return 0;
        };
        let n = entry.bindings.len();
        shard.bindings -= n;
        for b in entry.bindings {
            shard.removed(b, RemovalReason::Unregistered);
        }
        n
    }

    /// Number of bindings held (including any due to expire at the next `handle_timeout`).
    pub fn count(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().bindings).sum()
    }

    /// Every binding held, in no particular order (for persistence resyncs and admin views).
    pub fn snapshot(&self) -> Vec<Binding> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.0.lock();
            out.extend(shard.aors.values().flat_map(|e| e.bindings.iter().cloned()));
        }
        out
    }

    /// Estimated heap and inline bytes held by the location map (bindings, their strings, map
    /// and heap slots, queued changes, the connection index). Ignores allocator overhead.
    pub fn memory_estimate(&self) -> usize {
        use std::mem::size_of;
        let mut total = size_of::<Self>() + SHARDS * size_of::<PaddedShard>();
        for shard in self.shards.iter() {
            let shard = shard.0.lock();
            // hashbrown: one slot plus one control byte per bucket.
            total += shard.aors.capacity() * (size_of::<(Arc<str>, AorEntry)>() + 1);
            total += shard.wakeups.capacity() * size_of::<Reverse<(Instant, Arc<str>)>>();
            total += shard.changes.capacity() * size_of::<LocationChange>();
            for (aor, entry) in &shard.aors {
                total += 2 * size_of::<usize>() + aor.len(); // the Arc allocation
                total += entry.bindings.capacity() * size_of::<Binding>();
                total += entry.meta.capacity() * size_of::<Meta>();
                total += entry.bindings.iter().map(binding_heap_bytes).sum::<usize>();
            }
        }
        for index in self.connections.iter() {
            let index = index.lock();
            total += index.capacity() * (size_of::<(ConnectionId, Vec<Arc<str>>)>() + 1);
            total += index
                .values()
                .map(|v| v.capacity() * size_of::<Arc<str>>())
                .sum::<usize>();
        }
        total
    }
}

/// Heap bytes owned by one binding's own strings (the AoR is shared and counted once).
fn binding_heap_bytes(b: &Binding) -> usize {
    b.contact.len()
        + b.call_id.len()
        + b.instance.as_ref().map_or(0, |s| s.len())
        + b.user_agent.as_ref().map_or(0, |s| s.len())
}

/// Per-request fields shared by every binding a REGISTER creates.
struct NewBindingFields<'a> {
    aor: &'a Arc<str>,
    now: Instant,
    unix_now: u64,
    call_id: &'a str,
    cseq: u32,
    source: &'a Source,
    user_agent: Option<Box<str>>,
}

impl NewBindingFields<'_> {
    /// The binding a Contact creates.
    fn binding(&self, r: Requested) -> Binding {
        Binding {
            aor: Arc::clone(self.aor),
            contact: r.contact,
            expires_at: self.now + Duration::from_secs(u64::from(r.expires)),
            expires_unix: self.unix_now.saturating_add(u64::from(r.expires)),
            q_milli: r.q_milli,
            call_id: Box::from(self.call_id),
            cseq: self.cseq,
            instance: r.instance,
            reg_id: r.reg_id,
            source: *self.source,
            user_agent: self.user_agent.clone(),
        }
    }
}

/// A hash of a Contact URI key (`None`: a stored Contact that does not parse, which matches
/// nothing by URI). Equal keys hash alike; a collision only costs a parse to confirm.
fn key_hash(key: Option<&UriKey>) -> u64 {
    stable_hash(&key)
}

/// Caps a User-Agent at [`MAX_USER_AGENT_LEN`] bytes, on a character boundary.
/// Appends `n` in decimal.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

fn truncate(s: &str) -> Box<str> {
    let mut end = s.len().min(MAX_USER_AGENT_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Box::from(&s[..end])
}

#[cfg(test)]
mod tests;
