//! Calls between users: a B2BUA that rings every device of the callee and anchors the media.
//!
//! # Shape
//!
//! Each call is two independent dialogs joined by a `Call` (`b2bua.rs`) object: leg A, where
//! the caller's device is the UAC and we are the UAS, and leg B, where we are the UAC towards the
//! callee's device that answered. Before the answer, leg B is a set of *branches*, one INVITE
//! client transaction per registered device, all ringing at once; the first 2xx wins and the
//! others get CANCEL with `Reason: SIP;cause=200;text="Call completed elsewhere"`. Each leg has
//! its own Call-ID, tags and CSeq; the dialogs come from [`confab_sip::dialog`].
//!
//! Media is anchored on a relay reached through the [`MediaRelay`] trait (the binary implements
//! it over `confab-media`): every SDP that crosses the call is rewritten so that RTP and RTCP go
//! to relay ports (offer/answer per RFC 3264; codecs are whatever the two phones agree on, since
//! offer and answer are forwarded otherwise unchanged), and the relay is told where each phone
//! said it receives. The allocation is released exactly once, however the call ends.
//!
//! # Flow of a call
//!
//! 1. [`crate::Endpoint`] authenticates the INVITE (407), checks flood limits (503) and loops
//!    (482, 483) and calls `CallManager::route`: the Request-URI is resolved to a user
//!    ([`crate::UserDirectory::lookup_user`]; 404), a GRUU to its one device
//!    ([`crate::Registrar::lookup_gruu`]), a user to its bindings ([`crate::Registrar::lookup`];
//!    480 when there are none; 486 for a call to oneself with no other device).
//! 2. `Call::start` allocates relay ports (when the INVITE has an offer),
//!    sends one INVITE per device to the flow the device registered from (NAT: never to the
//!    Contact host) and arms the no-answer timer.
//! 3. Provisional responses reach the caller (early media SDP rewritten); the first 2xx is
//!    answered by ACK (or, for a late offer, once the caller's ACK brings the answer), the 2xx
//!    goes to the caller and is retransmitted until its ACK (RFC 3261 §13.3.1.4).
//! 4. In-dialog requests (BYE, re-INVITE, UPDATE, INFO) are passed to the other leg; their
//!    answers come back (`Reply::Later`, then a `CallOutput::Respond`).
//! 5. Timers: no-answer, 2xx retransmission and ACK give-up, session timers (RFC 4028) per leg,
//!    the media-inactivity check, the client transactions of the call.
//!
//! # Seams for the next features
//!
//! - **No answer → voicemail / forward**: `NoAnswer` and `Call::no_answer_decision` in
//!   `b2bua.rs` (marked `SEAM(no-answer)`).
//! - **Call forwarding (unconditional, busy), hunt groups**: target selection is in
//!   `CallManager::route` (`SEAM(routing)`): it turns a Request-URI into a list of
//!   [`crate::registrar::Binding`]s; policy in data can replace or extend that list. A 3xx from a
//!   device is reported as 480 today (`SEAM(forwarding)` in `fail_ringing`).
//! - **Transfer (REFER)**: in-dialog REFER is answered 405 in `Call::handle_request`
//!   (`SEAM(transfer)`); a transfer replaces one leg's peer while keeping the media allocation.
//!
//! # Choices
//!
//! - Each branch has its own Call-ID and From tag, so a device registered twice (two flows,
//!   same UA) never sees a merged request (RFC 3261 §8.2.2.2).
//! - A CANCEL to a branch waits for its first provisional response (RFC 3261 §9.1).
//! - Session timers (RFC 4028) run per leg. Leg A gets one when the caller supports or asks for
//!   it (refresher as it asked, else the caller); leg B when the device's 2xx has
//!   Session-Expires. Where we are the refresher we send UPDATE without SDP when the peer allows
//!   UPDATE, else a re-INVITE repeating our last SDP. An UPDATE without SDP is a refresh we
//!   answer ourselves; everything else is relayed. 422 when Session-Expires < `min_se`.
//! - Offer collisions: a re-INVITE or offering UPDATE while another offer/answer (or an
//!   unacknowledged 2xx) is in progress anywhere in the call gets 491, or 500 with Retry-After
//!   when the same leg has one pending (RFC 3261 §14.2).
//! - Provisional responses to a relayed re-INVITE are not passed on (no 100rel).
//! - A 2xx that loses the race, or arrives after the call ended, is acknowledged and hung up.
//!
//! # Concurrency and lock order
//!
//! `CallManager` (this file) is shared by the transport threads (`&self` everywhere). Calls live in
//! shards (a `parking_lot::Mutex` each) chosen by the call's key; an index, sharded by Call-ID,
//! maps every Call-ID of a call (leg A's and each branch's) to that key. Lock order:
//! **call shard → index shard → leaves** (the record queue, the flood limiter, the id source).
//! A look-up takes the index shard, copies the key and releases it before taking the call shard.
//! The only call-out made under a call shard lock is to the [`MediaRelay`]. The endpoint's
//! transaction shards are never held while calling in here: calls return `CallOutput`s that
//! the endpoint applies afterwards.

mod b2bua;
mod limits;
pub mod media;
pub mod record;
mod sdp;
mod util;

use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_sip::transaction::{Timers, TransactionKey};
use confab_sip::{
    Destination, HeaderName, Request, Response, Source, Transmit, TransportKind, Uri,
};
use parking_lot::Mutex;
use tracing::{info, warn};

pub use self::media::{
    FakeMediaRelay, FakeRemote, Leg, LegMediaStats, MediaAllocation, MediaError, MediaId,
    MediaRelay, MediaStats,
};
pub use self::record::{CallRecord, CallState, CallSummary, Disposition, EndReason};

pub(crate) use self::b2bua::Reply;
use self::b2bua::{contact_instance, Call, Setup};
use self::limits::FloodLimiter;
pub(crate) use self::util::has_our_via;
use self::util::{secs, strip_visual, IdSource};
use crate::config::{CallConfig, CoreConfig};
use crate::directory::UserDirectory;
use crate::hash::FastMap;
use crate::registrar::{Authenticated, Registrar};

const SHARDS: usize = 16;
/// Call records kept for [`CallManager::drain_records`]; beyond it the oldest are dropped.
const MAX_QUEUED_RECORDS: usize = 100_000;
/// Most devices one call rings.
const MAX_BRANCHES: usize = 16;

/// What the call core needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) domain: String,
    pub(crate) timers: Timers,
    pub(crate) calls: CallConfig,
    pub(crate) advertised: Vec<(TransportKind, SocketAddr)>,
    /// For flows on wildcard sockets without an advertised address: the first advertised IP,
    /// else the first configured local IP (non-loopback first).
    pub(crate) fallback_ip: Option<IpAddr>,
}

/// Identifies a call inside the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CallKey(u64);

/// What a call wants done, applied by the endpoint after the call's lock is released.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, moved once
pub(crate) enum CallOutput {
    /// A request (or an ACK, or a 2xx retransmission) to send as is.
    Send(Transmit),
    /// A response for one of the endpoint's server transactions.
    Respond {
        key: TransactionKey,
        response: Response,
        destination: Destination,
    },
}

/// The surroundings of a call during one input.
pub(crate) struct Env<'a> {
    pub(crate) now: Instant,
    pub(crate) unix_ms: u64,
    pub(crate) settings: &'a Settings,
    pub(crate) media: &'a dyn MediaRelay,
    pub(crate) ids: &'a IdSource,
    pub(crate) limiter: &'a FloodLimiter,
    pub(crate) out: &'a mut Vec<CallOutput>,
    pub(crate) records: &'a mut Vec<CallRecord>,
    /// Ended calls whose relay statistics come with [`MediaRelay::finish_release`], by record id.
    pub(crate) media_pending: &'a Mutex<FastMap<String, MediaId>>,
}

/// A deadline in a shard's heap; stale when the call's deadline moved (checked when popped).
#[derive(Debug, PartialEq, Eq)]
struct TimerEntry {
    at: Instant,
    key: CallKey,
}

impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TimerEntry {
    /// Reversed, so the heap pops the earliest.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.cmp(&self.at).then(other.key.cmp(&self.key))
    }
}

#[derive(Debug, Default)]
struct CallShard {
    calls: FastMap<CallKey, Call>,
    timers: BinaryHeap<TimerEntry>,
}

/// The wall clock as seen through `handle_message`'s `unix_now` seconds: the offset between
/// Unix milliseconds and the monotonic clock is the largest lower bound any observation gives,
/// which converges to millisecond precision as messages arrive at varied sub-second phases.
#[derive(Debug)]
struct WallClock {
    epoch: Instant,
    offset_ms: AtomicI64,
}

impl WallClock {
    fn observe(&self, now: Instant, unix_secs: u64) {
        let mono = now.saturating_duration_since(self.epoch).as_millis() as i64;
        let candidate = (unix_secs as i64).saturating_mul(1000) - mono;
        self.offset_ms.fetch_max(candidate, Ordering::Relaxed);
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        if offset == i64::MIN {
            return 0;
        }
        let mono = now.saturating_duration_since(self.epoch).as_millis() as i64;
        offset.saturating_add(mono).max(0) as u64
    }
}

/// Everything the call router needs from the endpoint for one INVITE.
pub(crate) struct Incoming<'a> {
    pub(crate) now: Instant,
    pub(crate) invite: &'a Request,
    pub(crate) who: &'a Authenticated,
    pub(crate) source: &'a Source,
    pub(crate) server_key: TransactionKey,
    pub(crate) respond_to: Destination,
    pub(crate) local_tag: String,
}

/// The call core. See the [module docs](self).
pub(crate) struct CallManager {
    settings: Settings,
    media: Arc<dyn MediaRelay>,
    shards: Box<[Mutex<CallShard>]>,
    index: Box<[Mutex<FastMap<String, CallKey>>]>,
    hasher: foldhash::fast::RandomState,
    next_key: AtomicU64,
    live: AtomicUsize,
    ids: IdSource,
    records: Mutex<VecDeque<CallRecord>>,
    /// See [`Env::media_pending`]; filled in when the ended record is drained.
    media_pending: Mutex<FastMap<String, MediaId>>,
    limiter: FloodLimiter,
    clock: WallClock,
    next_sweep: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for CallManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallManager")
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CallManager {
    pub(crate) fn new(config: &CoreConfig, media: Arc<dyn MediaRelay>, epoch: Instant) -> Self {
        let c = &config.calls;
        Self {
            settings: Settings {
                domain: config.domain.trim().to_ascii_lowercase(),
                timers: config.timers,
                calls: c.clone(),
                advertised: config.advertised.clone(),
                fallback_ip: config
                    .advertised
                    .iter()
                    .map(|(_, a)| a.ip())
                    .chain(
                        config
                            .local_ips
                            .iter()
                            .copied()
                            .filter(|ip| !ip.is_loopback()),
                    )
                    .chain(config.local_ips.iter().copied())
                    .find(|ip| !ip.is_unspecified()),
            },
            media,
            shards: (0..SHARDS)
                .map(|_| Mutex::new(CallShard::default()))
                .collect(),
            index: (0..SHARDS)
                .map(|_| Mutex::new(FastMap::default()))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            next_key: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            ids: IdSource::new(config.rng_seed),
            records: Mutex::new(VecDeque::new()),
            media_pending: Mutex::new(FastMap::default()),
            limiter: FloodLimiter::new(
                c.invites_per_second_per_source,
                c.invite_burst_per_source,
                c.max_ringing_per_source,
            ),
            clock: WallClock {
                epoch,
                offset_ms: AtomicI64::new(i64::MIN),
            },
            next_sweep: Mutex::new(None),
        }
    }

    /// Notes the wall clock that came with an input (for the records' Unix milliseconds).
    pub(crate) fn observe_clock(&self, now: Instant, unix_secs: u64) {
        self.clock.observe(now, unix_secs);
    }

    fn shard(&self, key: CallKey) -> &Mutex<CallShard> {
        &self.shards[(key.0 as usize) % SHARDS]
    }

    fn index_shard(&self, call_id: &str) -> &Mutex<FastMap<String, CallKey>> {
        &self.index[(self.hasher.hash_one(call_id) as usize) % SHARDS]
    }

    fn lookup(&self, call_id: &str) -> Option<CallKey> {
        self.index_shard(call_id).lock().get(call_id).copied()
    }

    /// Whether `call_id` belongs to a call of ours.
    pub(crate) fn owns(&self, call_id: &str) -> bool {
        self.lookup(call_id).is_some()
    }

    /// Live calls (ringing, active, or ended and draining).
    pub(crate) fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The per-source rate limit of new INVITEs; false: answer 503 with [`Self::retry_after`].
    pub(crate) fn admit_invite(&self, ip: IpAddr, now: Instant) -> bool {
        self.limiter.admit_invite(ip, now)
    }

    pub(crate) fn retry_after(&self) -> u64 {
        secs(self.settings.calls.retry_after)
    }

    fn push_records(&self, records: Vec<CallRecord>) {
        if records.is_empty() {
            return;
        }
        let mut q = self.records.lock();
        for r in records {
            if q.len() >= MAX_QUEUED_RECORDS {
                if let Some(old) = q.pop_front() {
                    self.complete_media(old);
                }
                warn!("call record queue full; oldest record dropped");
            }
            q.push_back(r);
        }
    }

    /// Moves the queued call records into `out`, oldest first.
    pub(crate) fn drain_records(&self, out: &mut Vec<CallRecord>) {
        let drained: Vec<CallRecord> = self.records.lock().drain(..).collect();
        out.extend(drained.into_iter().map(|r| self.complete_media(r)));
    }

    /// Fills in the relay statistics of an ended call's record released with
    /// [`MediaRelay::release_later`].
    fn complete_media(&self, mut record: CallRecord) -> CallRecord {
        if record.state == CallState::Ended {
            let pending = {
                let mut p = self.media_pending.lock();
                if p.is_empty() {
                    None
                } else {
                    p.remove(&record.id)
                }
            };
            if let Some(id) = pending {
                record.media = self.media.finish_release(id);
            }
        }
        record
    }

    /// Calls ringing or active.
    pub(crate) fn active_calls(&self) -> Vec<CallSummary> {
        let mut v: Vec<CallSummary> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .calls
                    .values()
                    .filter(|c| !c.is_ended())
                    .map(Call::summary)
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort_by(|a, b| a.start_unix_ms.cmp(&b.start_unix_ms).then(a.id.cmp(&b.id)));
        v
    }

    /// A record for an attempt refused before any device rang.
    fn refused(
        &self,
        inc: &Incoming<'_>,
        callee: Option<String>,
        dialled: &str,
        resp: Response,
    ) -> Result<(), Response> {
        let now_ms = self.clock.unix_ms(inc.now);
        let status = resp.status.0;
        self.push_records(vec![CallRecord {
            id: self.ids.record_id(),
            caller: inc.who.user().to_owned(),
            caller_device: format!("{}", inc.source.peer),
            callee_dialled: dialled.to_owned(),
            callee,
            devices_tried: Vec::new(),
            answered_by: None,
            start_unix_ms: now_ms,
            answer_unix_ms: None,
            end_unix_ms: Some(now_ms),
            state: CallState::Ended,
            disposition: Some(Disposition::of_status(status)),
            final_status: Some(status),
            end_reason: Some(EndReason::NotRouted),
            media: None,
            sip_call_id: inc.invite.call_id().to_owned(),
        }]);
        info!(caller = %inc.who.user(), callee = %dialled, status, "call not routed");
        Err(resp)
    }

    /// Routes an authenticated initial INVITE (the endpoint did the request checks). `Ok`: the
    /// call rings and will answer the INVITE's server transaction through [`CallOutput`]s;
    /// `Err`: the final response to send now.
    ///
    /// SEAM(routing): target selection. Forwarding rules, hunt groups and trunks replace or
    /// extend the binding list built here.
    pub(crate) fn route(
        &self,
        inc: Incoming<'_>,
        users: &dyn UserDirectory,
        registrar: &Registrar,
        out: &mut Vec<CallOutput>,
    ) -> Result<(), Response> {
        let _flush = media::FlushOnDrop(&*self.media);
        let req = inc.invite;
        let tag = inc.local_tag.clone();
        let reply = |status: u16, reason: Option<&str>| {
            let mut r = Response::for_request(req, status, reason);
            util::set_to_tag(&mut r, &tag);
            r
        };
        let dialled = req.uri.to_string();
        // RFC 3261 §8.2.2.2: the same request arriving again by another path.
        if self.owns(req.call_id()) {
            return Err(reply(482, Some("Merged Request")));
        }
        let (name, gr) = match &req.uri {
            Uri::Sip(u) => (
                u.user_unescaped(),
                u.params.get("gr").flatten().map(str::to_owned),
            ),
            Uri::Tel(t) => (Some(strip_visual(&t.number)), None),
            Uri::Other { .. } => (None, None),
        };
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return self.refused(&inc, None, &dialled, reply(404, None));
        };
        let Some(callee) = users.lookup_user(&name) else {
            return self.refused(&inc, None, &dialled, reply(404, None));
        };
        let mut targets = match gr.as_deref() {
            // RFC 5627 §5.1: a GRUU reaches the one instance it names.
            Some(gr) => registrar
                .lookup_gruu(&callee.user, gr, inc.now)
                .into_iter()
                .collect(),
            None => registrar.lookup(&callee.user, inc.now),
        };
        // One branch per device: an instance registered over several flows rings once.
        let mut seen_instances: Vec<String> = Vec::new();
        targets.retain(|b| match &b.instance {
            Some(i) if seen_instances.iter().any(|s| s == &**i) => false,
            Some(i) => {
                seen_instances.push(i.to_string());
                true
            }
            None => true,
        });
        // A call to oneself rings the other devices, never the calling one.
        if callee.user == inc.who.user() {
            let before = targets.len();
            let instance = contact_instance(req);
            let contact_uri = req
                .headers
                .values(&HeaderName::Contact)
                .next()
                .and_then(|v| confab_sip::NameAddr::parse(v).ok())
                .map(|n| n.uri.to_string());
            targets.retain(|b| {
                let same_instance =
                    instance.is_some() && b.instance.as_deref() == instance.as_deref();
                let same_flow =
                    b.source.peer == inc.source.peer && b.source.transport == inc.source.transport;
                let same_contact = contact_uri.as_deref() == Some(&*b.contact);
                !(same_instance || same_flow || same_contact)
            });
            if targets.is_empty() && before > 0 {
                return self.refused(&inc, Some(callee.user), &dialled, reply(486, None));
            }
        }
        targets.truncate(MAX_BRANCHES);
        if targets.is_empty() {
            return self.refused(&inc, Some(callee.user), &dialled, reply(480, None));
        }
        if self.len() >= self.settings.calls.max_calls {
            let mut r = reply(503, Some("Too many calls"));
            r.headers
                .push(HeaderName::RetryAfter, self.retry_after().to_string());
            return self.refused(&inc, Some(callee.user), &dialled, r);
        }

        let key = CallKey(self.next_key.fetch_add(1, Ordering::Relaxed));
        let to_uri = match gr {
            Some(_) => dialled.clone(),
            None => b2bua::sip_uri(&b2bua::escape_user(&callee.user), &self.settings.domain),
        };
        let setup = Setup {
            record_id: self.ids.record_id(),
            invite: req,
            server_key: inc.server_key,
            source: inc.source,
            respond_to: inc.respond_to,
            local_tag: inc.local_tag,
            caller: inc.who.user().to_owned(),
            caller_display: None,
            callee: callee.user,
            dialled,
            to_uri,
            targets,
        };
        let mut records = Vec::new();
        let result = {
            let mut shard = self.shard(key).lock();
            let mut env = self.env(inc.now, out, &mut records);
            match Call::start(&mut env, setup) {
                Ok(call) => {
                    let ids = call.call_ids();
                    if let Some(at) = call.poll_timeout() {
                        shard.timers.push(TimerEntry { at, key });
                    }
                    shard.calls.insert(key, call);
                    self.live.fetch_add(1, Ordering::Relaxed);
                    for id in ids {
                        self.index_shard(&id).lock().insert(id, key);
                    }
                    Ok(())
                }
                Err(resp) => Err(resp),
            }
        };
        self.push_records(records);
        result
    }

    fn env<'a>(
        &'a self,
        now: Instant,
        out: &'a mut Vec<CallOutput>,
        records: &'a mut Vec<CallRecord>,
    ) -> Env<'a> {
        Env {
            now,
            unix_ms: self.clock.unix_ms(now),
            settings: &self.settings,
            media: &*self.media,
            ids: &self.ids,
            limiter: &self.limiter,
            out,
            records,
            media_pending: &self.media_pending,
        }
    }

    /// After input to call `key`: drops it if finished (returning its Call-IDs to unindex), else
    /// recomputes its deadline and schedules it if it moved.
    fn settle(
        &self,
        shard: &mut CallShard,
        key: CallKey,
        now: Instant,
        before: Option<Instant>,
    ) -> Vec<String> {
        let Some(call) = shard.calls.get_mut(&key) else {
            return Vec::new();
        };
        if call.is_finished(now) {
            let ids = call.call_ids();
            shard.calls.remove(&key);
            self.live.fetch_sub(1, Ordering::Relaxed);
            return ids;
        }
        call.update_deadline();
        if let Some(at) = call.poll_timeout() {
            if before != Some(at) {
                shard.timers.push(TimerEntry { at, key });
            }
        }
        Vec::new()
    }

    fn unindex(&self, ids: Vec<String>) {
        for id in ids {
            self.index_shard(&id).lock().remove(&id);
        }
    }

    /// Runs `f` on the call that owns `call_id`, then settles it.
    fn with_call<R>(
        &self,
        now: Instant,
        call_id: &str,
        out: &mut Vec<CallOutput>,
        f: impl FnOnce(&mut Call, &mut Env<'_>) -> R,
    ) -> Option<R> {
        let key = self.lookup(call_id)?;
        let _flush = media::FlushOnDrop(&*self.media);
        let mut records = Vec::new();
        let (result, removed) = {
            let mut shard = self.shard(key).lock();
            let call = shard.calls.get_mut(&key)?;
            let span = call.span().clone();
            let _enter = span.enter();
            let before = call.poll_timeout();
            let mut env = self.env(now, out, &mut records);
            let result = f(call, &mut env);
            let removed = self.settle(&mut shard, key, now, before);
            (result, removed)
        };
        self.unindex(removed);
        self.push_records(records);
        Some(result)
    }

    /// A CANCEL matched the INVITE server transaction `invite` (the endpoint answered it 200).
    pub(crate) fn handle_cancel(
        &self,
        now: Instant,
        cancel: &Request,
        invite: &TransactionKey,
        out: &mut Vec<CallOutput>,
    ) {
        self.with_call(now, cancel.call_id(), out, |call, env| {
            call.handle_cancel(env, cancel, invite)
        });
    }

    /// An ACK no INVITE server transaction absorbed: the ACK for one of our 2xx. False when no
    /// call knows it (a stray ACK).
    pub(crate) fn handle_ack(
        &self,
        now: Instant,
        ack: &Request,
        out: &mut Vec<CallOutput>,
    ) -> bool {
        self.with_call(now, ack.call_id(), out, |call, env| {
            call.handle_ack(env, ack)
        })
        .is_some()
    }

    /// A request with a To tag for one of our calls. `None`: no call has its Call-ID.
    pub(crate) fn handle_request(
        &self,
        now: Instant,
        req: &Request,
        server_key: TransactionKey,
        respond_to: Destination,
        out: &mut Vec<CallOutput>,
    ) -> Option<Reply> {
        self.with_call(now, req.call_id(), out, |call, env| {
            call.handle_request(env, req, server_key, respond_to)
        })
    }

    /// A response; false when it matches no client transaction of any call (stray).
    pub(crate) fn handle_response(
        &self,
        now: Instant,
        resp: Response,
        out: &mut Vec<CallOutput>,
    ) -> bool {
        let call_id = resp.call_id().to_owned();
        self.with_call(now, &call_id, out, |call, env| {
            call.handle_response(env, resp)
        })
        .unwrap_or(false)
    }

    /// Fires the timers of every call due at `now`.
    pub(crate) fn handle_timeout(&self, now: Instant, out: &mut Vec<CallOutput>) {
        let _flush = media::FlushOnDrop(&*self.media);
        for shard in self.shards.iter() {
            let mut records = Vec::new();
            let mut removed = Vec::new();
            {
                let mut shard = shard.lock();
                let mut due = Vec::new();
                while shard.timers.peek().is_some_and(|t| t.at <= now) {
                    if let Some(t) = shard.timers.pop() {
                        due.push(t);
                    }
                }
                for TimerEntry { at, key } in due {
                    let Some(call) = shard.calls.get_mut(&key) else {
                        continue;
                    };
                    if call.poll_timeout() != Some(at) {
                        continue; // stale: the deadline moved
                    }
                    let span = call.span().clone();
                    let _enter = span.enter();
                    let mut env = self.env(now, out, &mut records);
                    call.handle_timeout(&mut env);
                    removed.extend(self.settle(&mut shard, key, now, None));
                }
            }
            if !removed.is_empty() {
                self.unindex(removed);
            }
            self.push_records(records);
        }
        let mut sweep = self.next_sweep.lock();
        if sweep.is_none_or(|at| at <= now) {
            *sweep = Some(now + Duration::from_secs(10));
            drop(sweep);
            self.limiter.handle_timeout(now);
        }
    }

    /// The earliest deadline of any call (may be early; never late).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.shards
            .iter()
            .filter_map(|s| s.lock().timers.peek().map(|t| t.at))
            .min()
    }
}
