//! One call: leg A (the caller's dialog; we are its UAS), the branches that alert the callee's
//! devices (we are their UAC), and leg B (the answering device's dialog).
//!
//! A [`Call`] is a sans-IO state machine driven by its [`super::CallManager`] under the call's
//! shard lock: `handle_*` with the current instant, then the outputs are in `env.out`, then
//! [`Call::poll_timeout`] says when [`Call::handle_timeout`] is due.
//!
//! The phases are types ([`Ringing`], [`Active`], [`Ended`]), each holding only the timers that
//! run in it. Offer/answer state lives in the relays, pending ACKs and the media allocation.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_sdp::OriginState;
use confab_sip::dialog::Dialog;
use confab_sip::transaction::{
    ClientInvite, ClientNonInvite, TransactionEvent, TransactionKey, TransactionState,
};
use confab_sip::{
    Destination, HeaderName, Headers, Method, NameAddr, Request, Response, Source, Transmit,
    TransportKind, Uri,
};
use tracing::{debug, info, warn};

use super::media::{Leg, MediaAllocation};
use super::record::{CallRecord, CallState, CallSummary, Disposition, EndReason};
use super::sdp::{self, Sdp};
use super::util::{
    allows, answer_template, copy_failure_headers, expiry_margin, flow_destination, min_se,
    push_socket_addr, push_u64, response_rank, secs, session_expires, set_to_tag, supports,
    u64_string, warning, Local, Refresher, DIALOG_ALLOW,
};
use super::{CallOutput, Env};
use crate::registrar::Binding;

const SERVER: &str = "Confab";
/// How long a refresh waits when an offer/answer is in progress (RFC 3261 §14.1).
const GLARE_RETRY: Duration = Duration::from_secs(2);
/// The Reason of the CANCELs to the devices that lost (RFC 3326; RFC 3261 §16.7 step 10 use).
const COMPLETED_ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";

/// What the caller's INVITE asked of the session timer on leg A, and what we granted
/// (RFC 4028 §9).
#[derive(Debug, Clone, Copy)]
struct Terms {
    interval: Duration,
    we_refresh: bool,
    /// The peer supports RFC 4028: our 2xx says `Require: timer`.
    require: bool,
}

/// RFC 4028 §9: the UAS side. `None`: no session timer on this leg (the peer neither supports
/// it nor asked for it).
fn terms_as_uas(req: &Request, env: &Env<'_>) -> Option<Terms> {
    let supported = supports(&req.headers, "timer");
    let se = session_expires(&req.headers);
    if !supported && se.is_none() {
        return None;
    }
    let floor = env
        .settings
        .calls
        .min_se
        .max(Duration::from_secs(min_se(&req.headers).unwrap_or(0)));
    let interval = se
        .map(|(s, _)| Duration::from_secs(s))
        .unwrap_or(env.settings.calls.session_expires)
        .max(floor);
    let we_refresh = match se.and_then(|(_, r)| r) {
        Some(Refresher::Uac) => false,
        Some(Refresher::Uas) => true,
        // RFC 4028 §9: the UAS picks; the UAC refreshes when it supports the extension.
        None => !supported,
    };
    Some(Terms {
        interval,
        we_refresh,
        require: supported,
    })
}

/// RFC 4028 §7.2: the UAC side, from a 2xx. No Session-Expires: no session expiration.
fn terms_as_uac(resp: &Response) -> Option<Terms> {
    let (s, r) = session_expires(&resp.headers)?;
    Some(Terms {
        interval: Duration::from_secs(s.max(1)),
        we_refresh: r != Some(Refresher::Uas),
        require: false,
    })
}

/// The session timer of one leg (RFC 4028 §10).
#[derive(Debug, Clone, Copy)]
struct SessionTimer {
    interval: Duration,
    we_refresh: bool,
    /// When we send the next refresh (we refresh; `None` while one is in flight).
    refresh_at: Option<Instant>,
    /// When the session is over without a refresh: the full interval when we refresh, the
    /// interval minus min(32 s, interval/3) when the peer does.
    expires_at: Instant,
}

impl SessionTimer {
    fn start(now: Instant, t: Terms) -> Self {
        if t.we_refresh {
            Self {
                interval: t.interval,
                we_refresh: true,
                refresh_at: Some(now + t.interval / 2),
                expires_at: now + t.interval,
            }
        } else {
            Self {
                interval: t.interval,
                we_refresh: false,
                refresh_at: None,
                expires_at: now + t.interval.saturating_sub(expiry_margin(t.interval)),
            }
        }
    }

    /// The Session-Expires value when we are the UAS of the refreshing transaction.
    fn header_as_uas(&self) -> String {
        self.header(if self.we_refresh { "uas" } else { "uac" })
    }

    /// The Session-Expires value when we are the UAC of the transaction.
    fn header_as_uac(&self) -> String {
        self.header(if self.we_refresh { "uac" } else { "uas" })
    }

    /// `delta-seconds;refresher=who`.
    fn header(&self, who: &str) -> String {
        let mut v = String::with_capacity(32);
        push_u64(&mut v, secs(self.interval));
        v.push_str(";refresher=");
        v.push_str(who);
        v
    }
}

/// One established side of the call.
#[derive(Debug)]
struct Peer {
    dialog: Dialog,
    /// Where requests and ACKs to the device go: the flow it used (NAT traversal).
    destination: Destination,
    local: Local,
    allows_update: bool,
    timer: Option<SessionTimer>,
    /// The last SDP we sent on this leg; a refresh re-INVITE repeats it (RFC 3264 §8).
    last_sdp: Option<Bytes>,
    /// The last ACK we sent, by the CSeq of its INVITE; re-sent for retransmitted 2xx.
    last_ack: Option<(u32, Bytes)>,
}

/// The caller's side.
#[derive(Debug)]
struct LegA {
    peer: Peer,
    server_key: TransactionKey,
    /// What answering the caller's INVITE needs of it ([`answer_template`]).
    invite: Request,
    respond_to: Destination,
    /// The caller's offer (`None`: late offer, the callee offers in its 2xx).
    offer: Option<Sdp>,
    terms: Option<Terms>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cancel {
    No,
    /// Wanted before any provisional response (RFC 3261 §9.1: send it once one arrives).
    Wanted(Option<String>),
    Sent,
}

/// The longest session interval a device's 422 can make us ask for (RFC 4028 sets no bound;
/// a day is far past any phone's).
const MAX_RETRY_MIN_SE_SECS: u64 = 86_400;

/// One alerted device.
#[derive(Debug)]
struct Branch {
    contact: String,
    key: TransactionKey,
    /// Holds our INVITE ([`ClientInvite::request`]) for the whole life of the branch.
    txn: ClientInvite,
    destination: Destination,
    local: Local,
    provisional: bool,
    cancel: Cancel,
    final_status: Option<u16>,
    answered: bool,
    /// The ACK we sent for this branch's 2xx (the winner's, or a loser's before its BYE).
    ack: Option<Bytes>,
    /// The device answered 422 once and the INVITE went again with its Min-SE.
    retried_422: bool,
}

impl Branch {
    fn done(&self) -> bool {
        self.final_status.is_some() || self.answered
    }

    fn invite(&self) -> &Request {
        self.txn.request()
    }
}

#[derive(Debug)]
enum Txn {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

impl Txn {
    fn handle_response(&mut self, now: Instant, r: Response) {
        match self {
            Self::Invite(t) => t.handle_response(now, r),
            Self::NonInvite(t) => t.handle_response(now, r),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Self::Invite(t) => t.handle_timeout(now),
            Self::NonInvite(t) => t.handle_timeout(now),
        }
    }
    fn poll_transmit(&mut self) -> Option<Request> {
        match self {
            Self::Invite(t) => t.poll_transmit(),
            Self::NonInvite(t) => t.poll_transmit(),
        }
    }
    fn poll_event(&mut self) -> Option<TransactionEvent> {
        match self {
            Self::Invite(t) => t.poll_event(),
            Self::NonInvite(t) => t.poll_event(),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::Invite(t) => t.poll_timeout(),
            Self::NonInvite(t) => t.poll_timeout(),
        }
    }
    fn is_terminated(&self) -> bool {
        match self {
            Self::Invite(t) => t.is_terminated(),
            Self::NonInvite(t) => t.is_terminated(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// CANCEL to a branch.
    Cancel,
    /// BYE to a leg (or to a device whose 2xx lost the race).
    Bye,
    /// A request forwarded for the relay with this id.
    Relay(u64),
    /// Our own session refresh (RFC 4028 §10).
    Refresh,
    /// A branch INVITE answered 422 and sent again: kept only so that a retransmitted 422
    /// is ACKed again.
    Superseded,
}

/// A client transaction of the call other than the branch INVITEs.
#[derive(Debug)]
struct ClientTx {
    key: TransactionKey,
    leg: Leg,
    method: Method,
    cseq: u32,
    txn: Txn,
    destination: Destination,
    purpose: Purpose,
    /// A 2xx arrived already (later ones are retransmissions: re-ACK only).
    answered: bool,
}

/// A request from one leg forwarded to the other, waiting for the far side's final response.
#[derive(Debug)]
struct Relay {
    id: u64,
    from: Leg,
    method: Method,
    server_key: TransactionKey,
    /// What answering the request needs of it ([`answer_template`]).
    request: Request,
    respond_to: Destination,
    /// The originator's request carried an offer.
    offer: bool,
    far_cseq: u32,
    client_key: TransactionKey,
}

/// A 2xx we sent for an INVITE, retransmitted until its ACK (RFC 3261 §13.3.1.4).
#[derive(Debug)]
struct PendingAck {
    leg: Leg,
    cseq: u32,
    response: Bytes,
    destination: Destination,
    interval: Duration,
    next: Instant,
    give_up: Instant,
    /// Late offer: the far leg's 2xx (to our INVITE with this CSeq) held the offer, and our ACK
    /// to it carries the answer this ACK brings; `offer` is what the far leg offered.
    forward: Option<(u32, Sdp)>,
}

/// Devices are alerted; no 2xx yet.
#[derive(Debug)]
pub(crate) struct Ringing {
    no_answer_at: Instant,
    /// The best final response so far (RFC 3261 §16.7 step 6).
    best: Option<(u16, Option<Response>)>,
    last_provisional: Option<u16>,
}

/// Answered: both dialogs exist; media flows through the relay.
#[derive(Debug)]
pub(crate) struct Active {
    answered_at: Instant,
    media_check_at: Option<Instant>,
}

/// Over: the record is written and the ports released; the call only waits for its last
/// transactions to finish.
#[derive(Debug)]
pub(crate) struct Ended {
    linger_until: Instant,
}

#[derive(Debug)]
enum Phase {
    Ringing(Ringing),
    Active(Active),
    Ended(Ended),
}

/// What the call answers to an in-dialog request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Answer now with this.
    Now(Response),
    /// The call answers later through a [`CallOutput::Respond`].
    Later,
}

/// What [`Call::start`] needs.
pub(crate) struct Setup<'a> {
    pub(crate) record_id: String,
    pub(crate) invite: &'a Request,
    pub(crate) server_key: TransactionKey,
    pub(crate) source: &'a Source,
    pub(crate) respond_to: Destination,
    pub(crate) local_tag: String,
    pub(crate) caller: String,
    pub(crate) caller_display: Option<String>,
    pub(crate) callee: String,
    pub(crate) dialled: String,
    /// The To URI of the INVITEs to the devices.
    pub(crate) to_uri: String,
    pub(crate) targets: Vec<Binding>,
}

/// The decision point when nobody answered in time.
///
/// SEAM(no-answer): forwarding on no answer and voicemail plug in here: a policy looked up for
/// the callee returns where the call goes next (a new target set, a voicemail leg) instead of
/// `Reject`. Today every call ends with 480.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoAnswer {
    Reject,
}

/// One call. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Call {
    span: tracing::Span,
    a: LegA,
    branches: Vec<Branch>,
    winner: Option<usize>,
    b: Option<Peer>,
    phase: Phase,
    media: Option<MediaAllocation>,
    origin_a: OriginState,
    origin_b: OriginState,
    txns: Vec<ClientTx>,
    relays: Vec<Relay>,
    pending_acks: Vec<PendingAck>,
    next_relay: u64,
    /// The last offer/answer put every stream on hold or inactive: silence is expected.
    silent: bool,
    record: CallRecord,
    /// Counted in the per-source ringing limit until it stops ringing.
    ringing_source: Option<IpAddr>,
    /// [`Call::poll_timeout`], as of the last [`Call::update_deadline`].
    deadline: Option<Instant>,
}

/// A request-line + headers response to `req` with our To tag and Server.
fn reply_to(req: &Request, status: u16, reason: Option<&str>, tag: &str) -> Response {
    let mut r = Response::for_request(req, status, reason);
    set_to_tag(&mut r, tag);
    r.headers.push(HeaderName::Server, SERVER);
    r
}

/// Sets the body; an SDP unless the headers already name another type (INFO pass-through).
fn with_body(headers: &mut Headers, body: &mut Bytes, content: Option<Bytes>) {
    if let Some(s) = content {
        if headers.get(&HeaderName::ContentType).is_none() {
            headers.push(HeaderName::ContentType, "application/sdp");
        }
        *body = s;
    }
}

/// The user part of a SIP URI, %-escaping what RFC 3261 §25.1 does not allow there.
pub(crate) fn escape_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        let ok = b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b);
        if ok {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
    out
}

impl Call {
    /// Starts ringing every target. `Err` is the final answer to the INVITE (the call does not
    /// exist); a record for it is in `env.records` and nothing stays allocated.
    pub(crate) fn start(env: &mut Env<'_>, s: Setup<'_>) -> Result<Self, Response> {
        let span =
            tracing::info_span!("call", id = %s.record_id, caller = %s.caller, callee = %s.dialled);
        let _enter = span.clone().entered();
        let inv = s.invite;
        let mut record = CallRecord {
            id: s.record_id.clone(),
            caller: s.caller.clone(),
            caller_device: caller_device(inv, s.source),
            callee_dialled: s.dialled.clone(),
            callee: Some(s.callee.clone()),
            devices_tried: Vec::new(),
            answered_by: None,
            start_unix_ms: env.unix_ms,
            answer_unix_ms: None,
            end_unix_ms: None,
            state: CallState::Ringing,
            disposition: None,
            final_status: None,
            end_reason: None,
            media: None,
            sip_call_id: inv.call_id().to_owned(),
        };
        let refuse = |env: &mut Env<'_>, record: &mut CallRecord, resp: Response| {
            record.state = CallState::Ended;
            record.end_unix_ms = Some(env.unix_ms);
            record.final_status = Some(resp.status.0);
            record.disposition = Some(Disposition::of_status(resp.status.0));
            record.end_reason = Some(EndReason::NotRouted);
            env.records.push(record.clone());
            info!(status = resp.status.0, reason = %resp.reason, "call refused");
            Err(resp)
        };
        let tag = s.local_tag.as_str();

        // RFC 4028 §5: too small a session interval gets 422 with our Min-SE.
        if let Some((se, _)) = session_expires(&inv.headers) {
            if Duration::from_secs(se) < env.settings.calls.min_se {
                let mut r = reply_to(inv, 422, None, tag);
                r.headers.push(
                    HeaderName::MinSe,
                    secs(env.settings.calls.min_se).to_string(),
                );
                return refuse(env, &mut record, r);
            }
        }
        // RFC 3261 §12.1.1: the dialog needs the caller's Contact.
        let dialog_a = match Dialog::new_uas(inv, tag, true) {
            Ok(d) => d,
            Err(e) => {
                let r = reply_to(inv, 400, Some(&e.to_string()), tag);
                return refuse(env, &mut record, r);
            }
        };
        // RFC 3261 §13.3.1.1: an offer we cannot read gets 488.
        let offer = if inv.body.is_empty() {
            None
        } else {
            match sdp::parse(&inv.body) {
                Ok(o) => Some(o),
                Err(e) => {
                    let mut r = reply_to(inv, 488, Some(&e.0), tag);
                    r.headers
                        .push(HeaderName::Warning, warning(&env.settings.domain, &e.0));
                    return refuse(env, &mut record, r);
                }
            }
        };
        let source_ip = s.source.peer.ip().to_canonical();
        if !env.limiter.start_ringing(source_ip, env.now) {
            let mut r = reply_to(inv, 503, Some("Too many calls ringing"), tag);
            r.headers.push(
                HeaderName::RetryAfter,
                secs(env.settings.calls.retry_after).to_string(),
            );
            return refuse(env, &mut record, r);
        }
        let mut origin_b = sdp::origin(env.ids.u64());
        let (media, body_b) = match &offer {
            Some(o) => match env.media.allocate(o.streams()) {
                Ok(m) => {
                    for (i, (rtp, rtcp)) in o.remotes().into_iter().enumerate() {
                        env.media.set_remote(m.id, Leg::A, i, rtp, rtcp);
                    }
                    let body = o.rewrite(m.relay_ip, &m.b_ports, &mut origin_b);
                    (Some(m), Some(body))
                }
                Err(e) => {
                    env.limiter.stop_ringing(source_ip);
                    warn!(error = %e, "no media relay ports");
                    let mut r = reply_to(inv, 503, Some("Media relay unavailable"), tag);
                    r.headers.push(HeaderName::RetryAfter, "5");
                    return refuse(env, &mut record, r);
                }
            },
            None => (None, None),
        };

        let local_a = Local::new(s.source.transport, s.source.local, env.settings);
        let a = LegA {
            peer: Peer {
                dialog: dialog_a,
                destination: flow_destination(s.source),
                local: local_a,
                allows_update: allows(&inv.headers, "UPDATE"),
                timer: None,
                last_sdp: None,
                last_ack: None,
            },
            server_key: s.server_key,
            invite: answer_template(inv),
            respond_to: s.respond_to,
            offer,
            terms: terms_as_uas(inv, env),
        };
        let mut call = Self {
            span: span.clone(),
            a,
            branches: Vec::new(),
            winner: None,
            b: None,
            phase: Phase::Ringing(Ringing {
                no_answer_at: env.now + env.settings.calls.no_answer_timeout,
                best: None,
                last_provisional: None,
            }),
            media,
            origin_a: sdp::origin(env.ids.u64()),
            origin_b,
            txns: Vec::new(),
            relays: Vec::new(),
            pending_acks: Vec::new(),
            next_relay: 1,
            silent: false,
            record,
            ringing_source: Some(source_ip),
            deadline: None,
        };

        // RFC 3261 §16.3 step 3 / §16.6 step 3: one hop fewer on leg B.
        let max_forwards = inv.max_forwards().unwrap_or(70).saturating_sub(1).min(70);
        let display = s
            .caller_display
            .clone()
            .or_else(|| inv.from_header().ok().and_then(|f| f.display));
        let from_uri = sip_uri(&escape_user(&s.caller), &env.settings.domain);
        for binding in &s.targets {
            call.add_branch(
                env,
                binding,
                &from_uri,
                display.as_deref(),
                &s.to_uri,
                max_forwards,
                body_b.clone(),
            );
        }
        if call.branches.is_empty() {
            // Every Contact was unusable.
            let r = reply_to(inv, 480, None, tag);
            call.end(env, EndReason::NotRouted, Some(480));
            return Err(r);
        }
        info!(devices = call.branches.len(), "ringing");
        env.records.push(call.record.clone());
        call.update_deadline();
        Ok(call)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_branch(
        &mut self,
        env: &mut Env<'_>,
        binding: &Binding,
        from_uri: &str,
        display: Option<&str>,
        to_uri: &str,
        max_forwards: u32,
        body: Option<Bytes>,
    ) {
        let Ok(uri) = Uri::parse(&binding.contact) else {
            warn!(contact = %binding.contact, "unusable Contact in binding");
            return;
        };
        let local = Local::new(binding.source.transport, binding.source.local, env.settings);
        let branch = env.ids.branch();
        let mut h = Headers::new();
        h.push(HeaderName::Via, local.via(&branch));
        h.push(HeaderName::MaxForwards, u64_string(u64::from(max_forwards)));
        let tag = env.ids.tag();
        let mut from = String::with_capacity(
            display.map_or(0, |d| d.len() + 3) + from_uri.len() + tag.len() + 7,
        );
        if let Some(d) = display {
            from.push('"');
            from.push_str(d);
            from.push_str("\" ");
        }
        from.push('<');
        from.push_str(from_uri);
        from.push_str(">;tag=");
        from.push_str(&tag);
        h.push(HeaderName::From, from);
        let mut to = String::with_capacity(to_uri.len() + 2);
        to.push('<');
        to.push_str(to_uri);
        to.push('>');
        h.push(HeaderName::To, to);
        h.push(HeaderName::CallId, env.ids.call_id(&env.settings.domain));
        h.push(HeaderName::CSeq, "1 INVITE");
        h.push(HeaderName::Contact, local.contact());
        h.push(HeaderName::Allow, DIALOG_ALLOW);
        h.push(HeaderName::Supported, "timer");
        // RFC 4028 §7.1: ask for a session timer on leg B too.
        let interval = self
            .a
            .terms
            .map_or(env.settings.calls.session_expires, |t| t.interval);
        h.push(HeaderName::SessionExpires, u64_string(secs(interval)));
        h.push(
            HeaderName::MinSe,
            u64_string(secs(env.settings.calls.min_se)),
        );
        h.push(HeaderName::UserAgent, SERVER);
        let mut req = Request {
            method: Method::Invite,
            uri,
            headers: h,
            body: Bytes::new(),
        };
        with_body(&mut req.headers, &mut req.body, body);
        let Ok(key) = TransactionKey::client_for_request(&req) else {
            return;
        };
        let destination = flow_destination(&binding.source);
        let mut txn = ClientInvite::new(env.now, req, destination.transport, env.settings.timers);
        while let Some(r) = txn.poll_transmit() {
            send(env, destination, &r);
        }
        debug!(contact = %binding.contact, to = %destination.addr, transport = %destination.transport, "alerting device");
        let contact = binding.contact.to_string();
        self.record.devices_tried.push(contact.clone());
        self.branches.push(Branch {
            contact,
            key,
            txn,
            destination,
            local,
            provisional: false,
            cancel: Cancel::No,
            final_status: None,
            answered: false,
            ack: None,
            retried_422: false,
        });
    }

    /// Every Call-ID of the call: leg A's, then one per branch.
    pub(crate) fn call_ids(&self) -> Vec<String> {
        std::iter::once(self.a.invite.call_id().to_owned())
            .chain(
                self.branches
                    .iter()
                    .map(|b| b.invite().call_id().to_owned()),
            )
            .collect()
    }

    /// Which leg a Call-ID belongs to.
    fn leg_of(&self, call_id: &str) -> Leg {
        if call_id == self.a.invite.call_id() {
            Leg::A
        } else {
            Leg::B
        }
    }

    fn peer(&self, leg: Leg) -> Option<&Peer> {
        match leg {
            Leg::A => Some(&self.a.peer),
            Leg::B => self.b.as_ref(),
        }
    }

    fn peer_mut(&mut self, leg: Leg) -> Option<&mut Peer> {
        match leg {
            Leg::A => Some(&mut self.a.peer),
            Leg::B => self.b.as_mut(),
        }
    }

    fn origin(&mut self, leg: Leg) -> &mut OriginState {
        match leg {
            Leg::A => &mut self.origin_a,
            Leg::B => &mut self.origin_b,
        }
    }

    pub(crate) fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    pub(crate) fn is_ringing(&self) -> bool {
        matches!(self.phase, Phase::Ringing(_))
    }

    /// Whether the call is over and nothing of it is left to absorb.
    pub(crate) fn is_finished(&self, now: Instant) -> bool {
        let Phase::Ended(e) = &self.phase else {
            return false;
        };
        now >= e.linger_until
            || (self.branches.iter().all(|b| b.txn.is_terminated())
                && self.txns.is_empty()
                && self.pending_acks.is_empty())
    }

    pub(crate) fn summary(&self) -> CallSummary {
        CallSummary {
            id: self.record.id.clone(),
            caller: self.record.caller.clone(),
            callee_dialled: self.record.callee_dialled.clone(),
            callee: self.record.callee.clone(),
            state: self.record.state,
            start_unix_ms: self.record.start_unix_ms,
            answer_unix_ms: self.record.answer_unix_ms,
            ringing_devices: if self.is_ringing() {
                self.branches.iter().filter(|b| !b.done()).count()
            } else {
                0
            },
            answered_by: self.record.answered_by.clone(),
        }
    }

    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    // -----------------------------------------------------------------------------------------
    // Sending.

    /// Sends a new request in leg `leg`'s dialog in a client transaction of its own.
    fn send_in_dialog(
        &mut self,
        env: &mut Env<'_>,
        leg: Leg,
        method: Method,
        body: Option<Bytes>,
        extra: Vec<(HeaderName, String)>,
        purpose: Purpose,
    ) -> Option<TransactionKey> {
        let branch = env.ids.branch();
        let min_se = secs(env.settings.calls.min_se);
        let peer = self.peer_mut(leg)?;
        let mut req = peer.dialog.request(method.clone());
        req.headers
            .push_front(HeaderName::Via, peer.local.via(&branch));
        req.headers.push(HeaderName::MaxForwards, "70");
        if matches!(method, Method::Invite | Method::Update) {
            req.headers.push(HeaderName::Contact, peer.local.contact());
            req.headers.push(HeaderName::Allow, DIALOG_ALLOW);
            req.headers.push(HeaderName::Supported, "timer");
            if let Some(t) = &peer.timer {
                req.headers
                    .push(HeaderName::SessionExpires, t.header_as_uac());
                req.headers.push(HeaderName::MinSe, u64_string(min_se));
            }
        }
        for (name, value) in extra {
            req.headers.push(name, value);
        }
        with_body(&mut req.headers, &mut req.body, body);
        let destination = peer.destination;
        let cseq = peer.dialog.local_cseq;
        let key = TransactionKey::client_for_request(&req).ok()?;
        let mut txn = if method == Method::Invite {
            Txn::Invite(ClientInvite::new(
                env.now,
                req,
                destination.transport,
                env.settings.timers,
            ))
        } else {
            Txn::NonInvite(ClientNonInvite::new(
                env.now,
                req,
                destination.transport,
                env.settings.timers,
            ))
        };
        while let Some(r) = txn.poll_transmit() {
            send(env, destination, &r);
        }
        self.txns.push(ClientTx {
            key: key.clone(),
            leg,
            method,
            cseq,
            txn,
            destination,
            purpose,
            answered: false,
        });
        Some(key)
    }

    /// The ACK for a 2xx to our INVITE with CSeq `cseq` on `leg` (RFC 3261 §13.2.2.4).
    fn send_ack(&mut self, env: &mut Env<'_>, leg: Leg, cseq: u32, body: Option<Bytes>) {
        let branch = env.ids.branch();
        let Some(peer) = self.peer_mut(leg) else {
            return;
        };
        let mut ack = peer.dialog.ack(cseq);
        ack.headers
            .push_front(HeaderName::Via, peer.local.via(&branch));
        ack.headers.push(HeaderName::MaxForwards, "70");
        with_body(&mut ack.headers, &mut ack.body, body);
        let bytes = Bytes::from(ack.to_bytes());
        peer.last_ack = Some((cseq, bytes.clone()));
        let destination = peer.destination;
        if leg == Leg::B && cseq == 1 {
            if let Some(w) = self.winner {
                self.branches[w].ack = Some(bytes.clone());
            }
        }
        env.out
            .push(CallOutput::Send(Transmit { destination, bytes }));
    }

    /// BYE to every established leg but `except`.
    fn hang_up(&mut self, env: &mut Env<'_>, except: Option<Leg>) {
        let a_up = matches!(self.phase, Phase::Active(_));
        if a_up && except != Some(Leg::A) {
            self.send_in_dialog(env, Leg::A, Method::Bye, None, Vec::new(), Purpose::Bye);
        }
        if self.b.is_some() && except != Some(Leg::B) {
            self.send_in_dialog(env, Leg::B, Method::Bye, None, Vec::new(), Purpose::Bye);
        }
    }

    /// A response to the caller's INVITE.
    fn respond_a(&mut self, env: &mut Env<'_>, resp: Response) {
        env.out.push(CallOutput::Respond {
            key: self.a.server_key.clone(),
            response: resp,
            destination: self.a.respond_to,
        });
    }

    fn reply_a(&self, status: u16, reason: Option<&str>) -> Response {
        reply_to(
            &self.a.invite,
            status,
            reason,
            &self.a.peer.dialog.local_tag,
        )
    }

    /// Ends the call: releases the media ports, writes the record, answers what is pending.
    /// Idempotent. BYEs are the caller's business ([`Call::hang_up`]).
    fn end(&mut self, env: &mut Env<'_>, reason: EndReason, status: Option<u16>) {
        if self.is_ended() {
            return;
        }
        if let Some(ip) = self.ringing_source.take() {
            env.limiter.stop_ringing(ip);
        }
        if let Some(m) = self.media.take() {
            if env.media.release_later(m.id) {
                // Filled in when this call's last record is drained.
                self.record.media = None;
                env.media_pending
                    .lock()
                    .insert(self.record.id.clone(), m.id);
            } else {
                self.record.media = env.media.release(m.id);
            }
        }
        for relay in std::mem::take(&mut self.relays) {
            let status = if relay.method == Method::Invite {
                487
            } else {
                481
            };
            let r = reply_to(&relay.request, status, None, "");
            env.out.push(CallOutput::Respond {
                key: relay.server_key,
                response: r,
                destination: relay.respond_to,
            });
        }
        self.pending_acks = Vec::new();
        self.a.peer.timer = None;
        if let Some(b) = &mut self.b {
            b.timer = None;
        }
        let answered = self.record.answer_unix_ms.is_some();
        if self.record.final_status.is_none() {
            self.record.final_status = status;
        }
        self.record.disposition = Some(if answered {
            Disposition::Answered
        } else if reason == EndReason::CallerCancelled {
            Disposition::Cancelled
        } else {
            Disposition::of_status(self.record.final_status.unwrap_or(500))
        });
        self.record.state = CallState::Ended;
        self.record.end_unix_ms = Some(env.unix_ms);
        self.record.end_reason = Some(reason);
        let t = env.settings.timers;
        self.phase = Phase::Ended(Ended {
            linger_until: env.now + t.transaction_timeout() + t.t4 + Duration::from_secs(32),
        });
        info!(reason = %reason, status = ?self.record.final_status, disposition = ?self.record.disposition, "call ended");
        // The last snapshot: nothing reads the record of an ended call again.
        let stub = ended_stub(&self.record);
        env.records.push(std::mem::replace(&mut self.record, stub));
        // Only retransmission absorption is left (the branches' and our other client
        // transactions, the ACKs we sent, the dialogs to acknowledge a 2xx still in flight):
        // what built offers, answers and refreshes goes now, warm, rather than when the call
        // is dropped ~32 s later.
        self.a.offer = None;
        self.a.peer.last_sdp = None;
        if let Some(b) = &mut self.b {
            b.last_sdp = None;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Ringing.

    /// Cancels branch `i` (RFC 3261 §9.1), now or once it sent a provisional response.
    fn cancel_branch(&mut self, env: &mut Env<'_>, i: usize, reason: Option<String>) {
        let b = &mut self.branches[i];
        if b.done() || b.cancel != Cancel::No {
            return;
        }
        if !b.provisional {
            b.cancel = Cancel::Wanted(reason);
            return;
        }
        self.send_cancel(env, i, reason);
    }

    fn send_cancel(&mut self, env: &mut Env<'_>, i: usize, reason: Option<String>) {
        let b = &mut self.branches[i];
        let mut cancel = b.txn.cancel_request();
        if let Some(r) = reason {
            cancel.headers.push(HeaderName::Reason, r);
        }
        b.cancel = Cancel::Sent;
        let Ok(key) = TransactionKey::client_for_request(&cancel) else {
            return;
        };
        let destination = b.destination;
        let cseq = 1;
        let mut txn =
            ClientNonInvite::new(env.now, cancel, destination.transport, env.settings.timers);
        while let Some(r) = txn.poll_transmit() {
            send(env, destination, &r);
        }
        debug!(contact = %b.contact, "CANCEL sent");
        self.txns.push(ClientTx {
            key,
            leg: Leg::B,
            method: Method::Cancel,
            cseq,
            txn: Txn::NonInvite(txn),
            destination,
            purpose: Purpose::Cancel,
            answered: false,
        });
    }

    fn cancel_all_but(&mut self, env: &mut Env<'_>, keep: Option<usize>, reason: Option<&str>) {
        for i in 0..self.branches.len() {
            if Some(i) != keep {
                self.cancel_branch(env, i, reason.map(str::to_owned));
            }
        }
    }

    fn drive_branch(&mut self, env: &mut Env<'_>, i: usize) {
        let b = &mut self.branches[i];
        let destination = b.destination;
        let mut events = Vec::new();
        while let Some(r) = b.txn.poll_transmit() {
            send(env, destination, &r);
        }
        while let Some(e) = b.txn.poll_event() {
            events.push(e);
        }
        for e in events {
            match e {
                TransactionEvent::Provisional(r) => self.on_branch_provisional(env, i, r),
                TransactionEvent::Final(r) if r.status.is_success() => {
                    self.on_branch_answer(env, i, r)
                }
                TransactionEvent::Final(r) => {
                    let status = r.status.0;
                    if status == 422 && self.retry_after_422(env, i, &r) {
                        continue;
                    }
                    self.on_branch_failure(env, i, status, Some(r))
                }
                // RFC 3261 §16.7 step 2 (treated like the proxy does): a branch that timed out
                // or could not be reached counts as 408.
                _ => self.on_branch_failure(env, i, 408, None),
            }
        }
    }

    /// RFC 4028 §7.4, as the UAC of leg B: a 422 names the device's Min-SE, larger than the
    /// interval we asked for; the INVITE goes again, once, with that interval (a new branch
    /// and the next CSeq). The answered transaction stays, to ACK a retransmitted 422. False:
    /// the 422 is an ordinary failure of the branch.
    fn retry_after_422(&mut self, env: &mut Env<'_>, i: usize, r: &Response) -> bool {
        let b = &self.branches[i];
        if b.retried_422 || !matches!(b.cancel, Cancel::No) || !self.is_ringing() {
            return false;
        }
        let Some(min) = min_se(&r.headers) else {
            return false;
        };
        let asked = session_expires(&b.invite().headers).map(|(secs, _)| secs);
        if asked.is_some_and(|a| min <= a) || min > MAX_RETRY_MIN_SE_SECS {
            return false;
        }
        let Ok(cseq) = b.invite().cseq() else {
            return false;
        };
        let mut req = b.invite().clone();
        req.headers
            .set(HeaderName::Via, b.local.via(&env.ids.branch()));
        req.headers.set(
            HeaderName::CSeq,
            format!("{} INVITE", cseq.seq.saturating_add(1)),
        );
        req.headers.set(HeaderName::SessionExpires, u64_string(min));
        req.headers.set(HeaderName::MinSe, u64_string(min));
        let Ok(key) = TransactionKey::client_for_request(&req) else {
            return false;
        };
        let destination = b.destination;
        let mut txn = ClientInvite::new(env.now, req, destination.transport, env.settings.timers);
        while let Some(m) = txn.poll_transmit() {
            send(env, destination, &m);
        }
        debug!(contact = %b.contact, min_se = min, "device wants a longer session interval (422): INVITE again");
        let b = &mut self.branches[i];
        let answered = std::mem::replace(&mut b.txn, txn);
        let answered_key = std::mem::replace(&mut b.key, key);
        b.retried_422 = true;
        self.txns.push(ClientTx {
            key: answered_key,
            leg: Leg::B,
            method: Method::Invite,
            cseq: cseq.seq,
            txn: Txn::Invite(answered),
            destination,
            purpose: Purpose::Superseded,
            answered: false,
        });
        true
    }

    fn on_branch_provisional(&mut self, env: &mut Env<'_>, i: usize, r: Response) {
        let b = &mut self.branches[i];
        b.provisional = true;
        let done = b.done();
        if let Cancel::Wanted(reason) = b.cancel.clone() {
            self.send_cancel(env, i, reason);
            return;
        }
        if r.status.0 == 100 || !self.is_ringing() || done {
            return;
        }
        // Early media (RFC 3261 §13.2.1, RFC 3960): the device's answer, anchored.
        let mut body = None;
        if let (Some(offer), Some(m), false) = (&self.a.offer, &self.media, r.body.is_empty()) {
            if let Ok(answer) = sdp::parse(&r.body) {
                if sdp::check_answer(offer, &answer).is_ok() {
                    for (s, (rtp, rtcp)) in answer.remotes().into_iter().enumerate() {
                        env.media.set_remote(m.id, Leg::B, s, rtp, rtcp);
                    }
                    let (ip, ports) = (m.relay_ip, m.a_ports.clone());
                    body = Some(answer.rewrite(ip, &ports, &mut self.origin_a));
                }
            }
        }
        let status = r.status.0;
        let Phase::Ringing(ringing) = &mut self.phase else {
            return;
        };
        if body.is_none() && ringing.last_provisional == Some(status) {
            return;
        }
        ringing.last_provisional = Some(status);
        let mut resp = self.reply_a(status, Some(&r.reason));
        resp.headers
            .push(HeaderName::Contact, self.a.peer.local.contact());
        resp.headers.push(HeaderName::Allow, DIALOG_ALLOW);
        if body.is_some() {
            self.a.peer.last_sdp = body.clone();
        }
        with_body(&mut resp.headers, &mut resp.body, body);
        self.respond_a(env, resp);
    }

    /// A device's 2xx after the call was answered elsewhere or ended: ACK it, then BYE it
    /// (RFC 3261 §13.2.2.4).
    fn ack_and_bye(&mut self, env: &mut Env<'_>, i: usize, r: &Response) {
        let b = &mut self.branches[i];
        b.answered = true;
        let Ok(mut d) = Dialog::new_uac(b.invite(), r) else {
            return;
        };
        let mut ack = d.ack(1);
        ack.headers
            .push_front(HeaderName::Via, b.local.via(&env.ids.branch()));
        ack.headers.push(HeaderName::MaxForwards, "70");
        let bytes = Bytes::from(ack.to_bytes());
        b.ack = Some(bytes.clone());
        env.out.push(CallOutput::Send(Transmit {
            destination: b.destination,
            bytes,
        }));
        let mut bye = d.request(Method::Bye);
        bye.headers
            .push_front(HeaderName::Via, b.local.via(&env.ids.branch()));
        bye.headers.push(HeaderName::MaxForwards, "70");
        bye.headers.push(HeaderName::Reason, COMPLETED_ELSEWHERE);
        let Ok(key) = TransactionKey::client_for_request(&bye) else {
            return;
        };
        let destination = b.destination;
        let mut txn =
            ClientNonInvite::new(env.now, bye, destination.transport, env.settings.timers);
        while let Some(req) = txn.poll_transmit() {
            send(env, destination, &req);
        }
        debug!(contact = %b.contact, "late 2xx acknowledged and hung up");
        self.txns.push(ClientTx {
            key,
            leg: Leg::B,
            method: Method::Bye,
            cseq: d.local_cseq,
            txn: Txn::NonInvite(txn),
            destination,
            purpose: Purpose::Bye,
            answered: false,
        });
    }

    fn on_branch_answer(&mut self, env: &mut Env<'_>, i: usize, r: Response) {
        // A retransmitted 2xx: the same ACK again (RFC 3261 §13.2.2.4).
        if let Some(ack) = &self.branches[i].ack {
            env.out.push(CallOutput::Send(Transmit {
                destination: self.branches[i].destination,
                bytes: ack.clone(),
            }));
            return;
        }
        if self.winner == Some(i) {
            // Late offer: our ACK waits for the caller's answer.
            return;
        }
        if self.winner.is_some() || !self.is_ringing() {
            self.ack_and_bye(env, i, &r);
            return;
        }
        let Ok(dialog) = Dialog::new_uac(self.branches[i].invite(), &r) else {
            warn!("2xx without a usable Contact; branch dropped");
            self.ack_and_bye(env, i, &r);
            self.on_branch_failure(env, i, 502, None);
            return;
        };
        let late = self.a.offer.is_none();
        // The SDP of the 2xx: the answer to the caller's offer, or (late offer) the device's
        // offer, for which we allocate now.
        let parsed = if r.body.is_empty() {
            Err(sdp::SdpRefused("No SDP in 2xx".to_owned()))
        } else {
            sdp::parse(&r.body)
        };
        let parsed = match (&self.a.offer, parsed) {
            (Some(offer), Ok(answer)) => sdp::check_answer(offer, &answer).map(|()| answer),
            (_, p) => p,
        };
        let sdp_b = match parsed {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e.0, "unusable SDP in 2xx; device hung up");
                self.ack_and_bye(env, i, &r);
                self.on_branch_failure(env, i, 488, None);
                return;
            }
        };
        if late {
            match env.media.allocate(sdp_b.streams()) {
                Ok(m) => self.media = Some(m),
                Err(e) => {
                    warn!(error = %e, "no media relay ports");
                    self.ack_and_bye(env, i, &r);
                    self.on_branch_failure(env, i, 503, None);
                    return;
                }
            }
        }
        let Some(m) = &self.media else {
            return;
        };
        for (s, (rtp, rtcp)) in sdp_b.remotes().into_iter().enumerate() {
            env.media.set_remote(m.id, Leg::B, s, rtp, rtcp);
        }
        let (ip, ports) = (m.relay_ip, m.a_ports.clone());
        let body_a = sdp_b.rewrite(ip, &ports, &mut self.origin_a);
        self.silent = sdp_b.is_silent();

        self.winner = Some(i);
        let branch = &mut self.branches[i];
        branch.answered = true;
        let terms_b = terms_as_uac(&r);
        self.b = Some(Peer {
            dialog,
            destination: branch.destination,
            local: branch.local.clone(),
            allows_update: allows(&r.headers, "UPDATE"),
            timer: terms_b.map(|t| SessionTimer::start(env.now, t)),
            last_sdp: {
                let body = &branch.invite().body;
                (!body.is_empty()).then(|| body.clone())
            },
            last_ack: None,
        });
        self.record.answered_by = Some(branch.contact.clone());
        info!(contact = %branch.contact, "answered");
        if !late {
            self.send_ack(env, Leg::B, 1, None);
        }
        // RFC 3261 §16.7 step 10 in spirit, with the RFC 3326 Reason phones show.
        self.cancel_all_but(env, Some(i), Some(COMPLETED_ELSEWHERE));

        // The 2xx to the caller, with leg A's session timer (RFC 4028 §9).
        let mut resp = self.reply_a(r.status.0, Some(&r.reason));
        resp.headers
            .push(HeaderName::Contact, self.a.peer.local.contact());
        resp.headers.push(HeaderName::Allow, DIALOG_ALLOW);
        resp.headers.push(HeaderName::Supported, "timer");
        if let Some(t) = self.a.terms {
            let timer = SessionTimer::start(env.now, t);
            resp.headers
                .push(HeaderName::SessionExpires, timer.header_as_uas());
            if t.require {
                resp.headers.push(HeaderName::Require, "timer");
            }
            self.a.peer.timer = Some(timer);
        }
        self.a.peer.last_sdp = Some(body_a.clone());
        with_body(&mut resp.headers, &mut resp.body, Some(body_a));
        self.a.peer.dialog.confirm();
        let cseq = self.a.invite.cseq().map_or(1, |c| c.seq);
        self.expect_ack(
            env,
            Leg::A,
            cseq,
            &resp,
            self.a.respond_to,
            late.then_some((1, sdp_b)),
        );
        self.respond_a(env, resp);

        if let Some(ip) = self.ringing_source.take() {
            env.limiter.stop_ringing(ip);
        }
        self.phase = Phase::Active(Active {
            answered_at: env.now,
            media_check_at: env
                .settings
                .calls
                .media_timeout
                .map(|t| env.now + media_check_interval(t)),
        });
        self.record.state = CallState::Active;
        self.record.answer_unix_ms = Some(env.unix_ms);
        self.record.final_status = Some(r.status.0);
        env.records.push(self.record.clone());
    }

    /// Starts the RFC 3261 §13.3.1.4 retransmission of a 2xx we send on `leg`.
    fn expect_ack(
        &mut self,
        env: &mut Env<'_>,
        leg: Leg,
        cseq: u32,
        resp: &Response,
        destination: Destination,
        forward: Option<(u32, Sdp)>,
    ) {
        let t = env.settings.timers;
        self.pending_acks.push(PendingAck {
            leg,
            cseq,
            response: Bytes::from(resp.to_bytes()),
            destination,
            interval: t.t1,
            next: env.now + t.t1,
            give_up: env.now + t.transaction_timeout(),
            forward,
        });
    }

    fn on_branch_failure(&mut self, env: &mut Env<'_>, i: usize, status: u16, r: Option<Response>) {
        let b = &mut self.branches[i];
        if b.final_status.is_some() {
            return;
        }
        b.final_status = Some(status);
        let contact = b.contact.clone();
        let Phase::Ringing(ringing) = &mut self.phase else {
            return;
        };
        debug!(contact = %contact, status, "device declined");
        let better = ringing
            .best
            .as_ref()
            .is_none_or(|(s, _)| response_rank(status) < response_rank(*s));
        if better {
            ringing.best = Some((status, r));
        }
        // RFC 3261 §16.7 step 5: a 6xx ends the search; the other devices stop ringing.
        if status >= 600 {
            let reason = format!("SIP;cause={status}");
            self.cancel_all_but(env, None, Some(&reason));
        }
        if self.branches.iter().all(Branch::done) {
            self.fail_ringing(env);
        }
    }

    /// Every device answered with a failure: the best response goes to the caller.
    fn fail_ringing(&mut self, env: &mut Env<'_>) {
        let Phase::Ringing(ringing) = &mut self.phase else {
            return;
        };
        let (status, from) = ringing.best.take().unwrap_or((480, None));
        // RFC 3261 §16.7 step 6: a 503 becomes 500. We do not follow redirections: a 3xx is
        // reported as 480 (SEAM(forwarding): recursion on 3xx would go here).
        let out_status = match status {
            503 => 500,
            300..=399 => 480,
            s => s,
        };
        let reason = from
            .as_ref()
            .filter(|r| r.status.0 == out_status)
            .map(|r| r.reason.clone());
        let mut resp = self.reply_a(out_status, reason.as_deref());
        if let Some(from) = &from {
            copy_failure_headers(from, &mut resp);
        }
        self.respond_a(env, resp);
        let why = if matches!(out_status, 408 | 480) {
            EndReason::NoAnswer
        } else {
            EndReason::Rejected
        };
        self.end(env, why, Some(out_status));
    }

    /// The no-answer timer fired.
    fn no_answer(&mut self, env: &mut Env<'_>) {
        match self.no_answer_decision() {
            NoAnswer::Reject => {
                info!("no answer");
                self.cancel_all_but(env, None, None);
                let resp = self.reply_a(480, Some("No Answer"));
                self.respond_a(env, resp);
                self.end(env, EndReason::NoAnswer, Some(480));
            }
        }
    }

    /// SEAM(no-answer): see [`NoAnswer`].
    fn no_answer_decision(&self) -> NoAnswer {
        NoAnswer::Reject
    }

    /// The caller cancelled (CANCEL, or BYE on the early dialog) before an answer: 487 to its
    /// INVITE, CANCEL to every device (RFC 3261 §9.2, §16.10). After an answer: no effect.
    pub(crate) fn handle_cancel(
        &mut self,
        env: &mut Env<'_>,
        cancel: &Request,
        invite: &TransactionKey,
    ) {
        if *invite != self.a.server_key {
            // A CANCEL for a re-INVITE we relay: cancel the forwarded one (RFC 3261 §9.1).
            if let Some(relay) = self.relays.iter().find(|r| r.server_key == *invite) {
                let key = relay.client_key.clone();
                if let Some(tx) = self.txns.iter().find(|t| t.key == key) {
                    if let Txn::Invite(t) = &tx.txn {
                        if t.state() == TransactionState::Proceeding {
                            let c = t.cancel_request();
                            let destination = tx.destination;
                            if let Ok(k) = TransactionKey::client_for_request(&c) {
                                let mut txn = ClientNonInvite::new(
                                    env.now,
                                    c,
                                    destination.transport,
                                    env.settings.timers,
                                );
                                while let Some(r) = txn.poll_transmit() {
                                    send(env, destination, &r);
                                }
                                let leg = tx.leg;
                                self.txns.push(ClientTx {
                                    key: k,
                                    leg,
                                    method: Method::Cancel,
                                    cseq: 0,
                                    txn: Txn::NonInvite(txn),
                                    destination,
                                    purpose: Purpose::Cancel,
                                    answered: false,
                                });
                            }
                        }
                    }
                }
            }
            return;
        }
        if !self.is_ringing() {
            debug!("late CANCEL ignored");
            return;
        }
        info!("caller cancelled");
        let resp = self.reply_a(487, None);
        self.respond_a(env, resp);
        let reason = cancel.headers.get(&HeaderName::Reason).map(str::to_owned);
        self.cancel_all_but(env, None, reason.as_deref());
        self.end(env, EndReason::CallerCancelled, Some(487));
    }

    // -----------------------------------------------------------------------------------------
    // Responses and timers.

    /// A response to one of our client transactions; false if none matches.
    pub(crate) fn handle_response(&mut self, env: &mut Env<'_>, resp: Response) -> bool {
        let Ok(key) = TransactionKey::client(&resp) else {
            return false;
        };
        if let Some(i) = self.branches.iter().position(|b| b.key == key) {
            self.branches[i].txn.handle_response(env.now, resp);
            self.drive_branch(env, i);
            return true;
        }
        if let Some(tx) = self.txns.iter_mut().find(|t| t.key == key) {
            tx.txn.handle_response(env.now, resp);
            self.drive_txn(env, &key);
            return true;
        }
        false
    }

    fn drive_txn(&mut self, env: &mut Env<'_>, key: &TransactionKey) {
        let Some(tx) = self.txns.iter_mut().find(|t| t.key == *key) else {
            return;
        };
        let destination = tx.destination;
        let mut events = Vec::new();
        while let Some(r) = tx.txn.poll_transmit() {
            send(env, destination, &r);
        }
        while let Some(e) = tx.txn.poll_event() {
            events.push(e);
        }
        let (leg, purpose, method, cseq) = (tx.leg, tx.purpose, tx.method.clone(), tx.cseq);
        for e in events {
            // A retransmitted 2xx to one of our INVITEs: the same ACK again.
            if let TransactionEvent::Final(r) = &e {
                if r.status.is_success() && method == Method::Invite {
                    let Some(tx) = self.txns.iter_mut().find(|t| t.key == *key) else {
                        continue;
                    };
                    if tx.answered {
                        if let Some((c, ack)) = self.peer(leg).and_then(|p| p.last_ack.clone()) {
                            if c == cseq {
                                env.out.push(CallOutput::Send(Transmit {
                                    destination,
                                    bytes: ack,
                                }));
                            }
                        }
                        continue;
                    }
                    tx.answered = true;
                }
            }
            match purpose {
                Purpose::Cancel | Purpose::Bye | Purpose::Superseded => {}
                Purpose::Relay(id) => self.on_relay_event(env, id, e),
                Purpose::Refresh => self.on_refresh_event(env, leg, &method, cseq, e),
            }
        }
        self.txns.retain(|t| !t.txn.is_terminated());
    }

    /// Fires every timer due at `now`.
    pub(crate) fn handle_timeout(&mut self, env: &mut Env<'_>) {
        let now = env.now;
        for i in 0..self.branches.len() {
            if self.branches[i]
                .txn
                .poll_timeout()
                .is_some_and(|at| at <= now)
            {
                self.branches[i].txn.handle_timeout(now);
                self.drive_branch(env, i);
            }
        }
        let due: Vec<TransactionKey> = self
            .txns
            .iter()
            .filter(|t| t.txn.poll_timeout().is_some_and(|at| at <= now))
            .map(|t| t.key.clone())
            .collect();
        for key in due {
            if let Some(tx) = self.txns.iter_mut().find(|t| t.key == key) {
                tx.txn.handle_timeout(now);
            }
            self.drive_txn(env, &key);
        }
        self.txns.retain(|t| !t.txn.is_terminated());

        // RFC 3261 §13.3.1.4: retransmit our 2xx until the ACK; give up at 64*T1.
        let mut gave_up = None;
        for p in &mut self.pending_acks {
            if p.give_up <= now {
                gave_up = Some(p.leg);
            } else if p.next <= now {
                env.out.push(CallOutput::Send(Transmit {
                    destination: p.destination,
                    bytes: p.response.clone(),
                }));
                p.interval = (p.interval * 2).min(env.settings.timers.t2);
                p.next = now + p.interval;
            }
        }
        if let Some(leg) = gave_up {
            warn!(leg = %leg, "no ACK for our 2xx; ending the call");
            let forwards: Vec<u32> = self
                .pending_acks
                .iter()
                .filter_map(|p| p.forward.as_ref().map(|(c, _)| *c))
                .collect();
            let far = leg.other();
            for cseq in forwards {
                // The far leg's 2xx must be acknowledged before its BYE.
                self.send_ack(env, far, cseq, None);
            }
            self.pending_acks.clear();
            self.hang_up(env, None);
            self.end(env, EndReason::AckTimeout, None);
            return;
        }

        match &mut self.phase {
            Phase::Ringing(r) if r.no_answer_at <= now => self.no_answer(env),
            Phase::Active(a) if a.media_check_at.is_some_and(|at| at <= now) => {
                let answered_at = a.answered_at;
                let timeout = env.settings.calls.media_timeout;
                a.media_check_at = timeout.map(|t| now + media_check_interval(t));
                if let (Some(timeout), Some(m), false) = (timeout, &self.media, self.silent) {
                    let last = env
                        .media
                        .stats(m.id)
                        .and_then(|s| s.last_packet())
                        .map_or(answered_at, |l| l.max(answered_at));
                    if now.saturating_duration_since(last) >= timeout {
                        warn!(silent_for = ?now.saturating_duration_since(last), "no media; ending the call");
                        self.hang_up(env, None);
                        self.end(env, EndReason::MediaTimeout, None);
                        return;
                    }
                }
            }
            _ => {}
        }

        // RFC 4028 §10: refresh when we are the refresher, hang up when the peer was and did not.
        for leg in [Leg::A, Leg::B] {
            let Some(timer) = self.peer(leg).and_then(|p| p.timer) else {
                continue;
            };
            if timer.expires_at <= now {
                warn!(leg = %leg, "session timer expired; ending the call");
                self.hang_up(env, None);
                self.end(env, EndReason::SessionExpired, None);
                return;
            }
            if timer.refresh_at.is_some_and(|at| at <= now) {
                self.send_refresh(env, leg);
            }
        }
    }

    /// The earliest deadline of the call, as of the last [`Call::update_deadline`].
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Recomputes [`Call::poll_timeout`]; the manager calls it after every input to the call.
    pub(crate) fn update_deadline(&mut self) {
        self.deadline = self.next_deadline();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let phase = match &self.phase {
            Phase::Ringing(r) => Some(r.no_answer_at),
            Phase::Active(a) => a.media_check_at,
            Phase::Ended(e) => Some(e.linger_until),
        };
        fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, None) => a,
                (None, b) => b,
            }
        }
        let mut at = phase;
        for b in &self.branches {
            at = earliest(at, b.txn.poll_timeout());
        }
        for t in &self.txns {
            at = earliest(at, t.txn.poll_timeout());
        }
        for p in &self.pending_acks {
            at = earliest(at, Some(p.next.min(p.give_up)));
        }
        for t in [self.a.peer.timer, self.b.as_ref().and_then(|p| p.timer)]
            .into_iter()
            .flatten()
        {
            at = earliest(at, earliest(t.refresh_at, Some(t.expires_at)));
        }
        at
    }

    // -----------------------------------------------------------------------------------------
    // In-dialog requests.

    /// An ACK for a 2xx of ours (RFC 3261 §13.3.1.4, §17.2.1 passes it to the TU).
    pub(crate) fn handle_ack(&mut self, env: &mut Env<'_>, ack: &Request) {
        let leg = self.leg_of(ack.call_id());
        let Some(peer) = self.peer_mut(leg) else {
            return;
        };
        if peer.dialog.handle_request(ack).is_err() {
            return;
        }
        let Ok(cseq) = ack.cseq().map(|c| c.seq) else {
            return;
        };
        let Some(pos) = self
            .pending_acks
            .iter()
            .position(|p| p.leg == leg && p.cseq == cseq)
        else {
            return; // a retransmitted ACK
        };
        let pending = self.pending_acks.remove(pos);
        debug!(leg = %leg, cseq, "ACK received");
        let Some((far_cseq, offer)) = pending.forward else {
            return;
        };
        // Late offer: this ACK holds the answer to the far leg's offer; our ACK carries it on.
        let far = leg.other();
        let answer = sdp::parse(&ack.body).and_then(|a| sdp::check_answer(&offer, &a).map(|()| a));
        match (answer, &self.media) {
            (Ok(answer), Some(m)) => {
                for (s, (rtp, rtcp)) in answer.remotes().into_iter().enumerate() {
                    env.media.set_remote(m.id, leg, s, rtp, rtcp);
                }
                let (ip, ports) = (m.relay_ip, ports_facing(m, far));
                self.silent = answer.is_silent();
                let body = answer.rewrite(ip, &ports, self.origin(far));
                if let Some(p) = self.peer_mut(far) {
                    p.last_sdp = Some(body.clone());
                }
                self.send_ack(env, far, far_cseq, Some(body));
            }
            (answer, _) => {
                let why = answer.err().map_or_else(|| "no media".to_owned(), |e| e.0);
                warn!(error = %why, "unusable answer in ACK; ending the call");
                self.send_ack(env, far, far_cseq, None);
                self.hang_up(env, None);
                self.end(env, EndReason::BadSdp, None);
            }
        }
    }

    /// A request inside one of the call's dialogs (To tag present, Call-ID of a leg).
    pub(crate) fn handle_request(
        &mut self,
        env: &mut Env<'_>,
        req: &Request,
        server_key: TransactionKey,
        respond_to: Destination,
    ) -> Reply {
        let leg = self.leg_of(req.call_id());
        let plain = |status: u16| Reply::Now(reply_to(req, status, None, ""));
        if self.is_ended() {
            // Our BYE and theirs crossed: agree.
            return plain(if req.method == Method::Bye { 200 } else { 481 });
        }
        let Some(peer) = self.peer_mut(leg) else {
            // A device's early dialog, or a device that lost the race.
            return plain(481);
        };
        if let Err(e) = peer.dialog.handle_request(req) {
            let status = e.status().unwrap_or(400);
            return Reply::Now(reply_to(req, status, Some(&e.to_string()), ""));
        }
        let ringing = self.is_ringing();
        match req.method {
            Method::Bye if ringing => {
                // RFC 3261 §15: the caller may end its early dialog with BYE.
                info!("caller hung up while ringing");
                let resp = self.reply_a(487, None);
                self.respond_a(env, resp);
                self.cancel_all_but(env, None, None);
                self.end(env, EndReason::CallerCancelled, Some(487));
                plain(200)
            }
            Method::Bye => {
                info!(leg = %leg, "hang-up");
                self.hang_up(env, Some(leg));
                let why = if leg == Leg::A {
                    EndReason::CallerHangup
                } else {
                    EndReason::CalleeHangup
                };
                self.end(env, why, None);
                plain(200)
            }
            Method::Options => {
                let mut r = reply_to(req, 200, None, "");
                r.headers.push(HeaderName::Allow, DIALOG_ALLOW);
                Reply::Now(r)
            }
            // RFC 3261 §14.1: no re-INVITE before the initial one completed.
            Method::Invite | Method::Update | Method::Info if ringing => {
                let mut r = reply_to(req, 500, Some("Not Answered Yet"), "");
                r.headers.push(HeaderName::RetryAfter, "1");
                Reply::Now(r)
            }
            Method::Invite | Method::Update => {
                self.offer_request(env, leg, req, server_key, respond_to)
            }
            Method::Info => self.relay_request(env, leg, req, server_key, respond_to, false),
            // We never send reliable provisionals (no 100rel), so no PRACK can match.
            Method::Prack => plain(481),
            // SEAM(transfer): REFER (RFC 3515) and its NOTIFYs get handled here.
            Method::Refer | Method::Notify | Method::Subscribe | Method::Message => {
                let mut r = reply_to(req, 405, None, "");
                r.headers.push(HeaderName::Allow, DIALOG_ALLOW);
                Reply::Now(r)
            }
            _ => {
                let mut r = reply_to(req, 501, None, "");
                r.headers.push(HeaderName::Allow, DIALOG_ALLOW);
                Reply::Now(r)
            }
        }
    }

    /// Whether a new offer from `leg` collides with one in progress (RFC 3261 §14.1/§14.2,
    /// RFC 3311 §5.2): 491 when the other side (or we) started it, 500 when `leg` itself has one
    /// pending.
    fn glare(&self, leg: Leg) -> Option<u16> {
        for r in &self.relays {
            if r.method == Method::Invite || (r.method == Method::Update && r.offer) {
                return Some(if r.from == leg { 500 } else { 491 });
            }
        }
        let refreshing = self
            .txns
            .iter()
            .any(|t| t.purpose == Purpose::Refresh && !t.answered && !t.txn.is_terminated());
        // RFC 3261 §14.1: an INVITE transaction is in progress until its 2xx is acknowledged;
        // no new one may start in either direction (of either leg, since we would relay it).
        if refreshing || !self.pending_acks.is_empty() {
            return Some(491);
        }
        None
    }

    /// re-INVITE or UPDATE: hold, resume, codec change or refresh. With an offer it is passed
    /// through to the other leg with the SDP anchored; an UPDATE without one is a session refresh
    /// answered here; a re-INVITE without one asks the other leg for an offer.
    fn offer_request(
        &mut self,
        env: &mut Env<'_>,
        leg: Leg,
        req: &Request,
        server_key: TransactionKey,
        respond_to: Destination,
    ) -> Reply {
        let has_offer = !req.body.is_empty();
        if let Some(status) = self
            .glare(leg)
            .filter(|_| has_offer || req.method == Method::Invite)
        {
            let mut r = reply_to(req, status, None, "");
            if status == 500 {
                // RFC 3261 §14.2: a Retry-After between 0 and 10 seconds.
                r.headers.push(HeaderName::RetryAfter, "2");
            }
            debug!(leg = %leg, status, "offer collision");
            return Reply::Now(r);
        }
        // RFC 4028 §5: 422 when the interval is below our minimum.
        if let Some((se, _)) = session_expires(&req.headers) {
            if Duration::from_secs(se) < env.settings.calls.min_se {
                let mut r = reply_to(req, 422, None, "");
                r.headers.push(
                    HeaderName::MinSe,
                    secs(env.settings.calls.min_se).to_string(),
                );
                return Reply::Now(r);
            }
        }
        if req.method == Method::Update && !has_offer {
            // RFC 4028 §7.4 / RFC 3311: a refresh without SDP; nothing for the other leg.
            let mut r = reply_to(req, 200, None, "");
            self.grant_refresh(env, leg, req, &mut r);
            r.headers
                .push(HeaderName::Contact, self.a_or_b_contact(leg));
            return Reply::Now(r);
        }
        self.relay_request(env, leg, req, server_key, respond_to, has_offer)
    }

    fn a_or_b_contact(&self, leg: Leg) -> String {
        self.peer(leg)
            .map(|p| p.local.contact())
            .unwrap_or_default()
    }

    /// Renews `leg`'s session timer from its refreshing request and puts our terms in `resp`.
    fn grant_refresh(&mut self, env: &mut Env<'_>, leg: Leg, req: &Request, resp: &mut Response) {
        let terms = terms_as_uas(req, env);
        let Some(peer) = self.peer_mut(leg) else {
            return;
        };
        peer.timer = terms.map(|t| SessionTimer::start(env.now, t));
        if let (Some(t), Some(timer)) = (terms, &peer.timer) {
            resp.headers
                .push(HeaderName::SessionExpires, timer.header_as_uas());
            if t.require {
                resp.headers.push(HeaderName::Require, "timer");
            }
        }
    }

    /// Forwards a request from `leg` to the other leg; answered when the other leg answers.
    fn relay_request(
        &mut self,
        env: &mut Env<'_>,
        leg: Leg,
        req: &Request,
        server_key: TransactionKey,
        respond_to: Destination,
        has_offer: bool,
    ) -> Reply {
        let far = leg.other();
        if self.peer(far).is_none() {
            return Reply::Now(reply_to(req, 500, None, ""));
        }
        let mut body = None;
        let mut extra = Vec::new();
        if req.method == Method::Info {
            // SIP INFO (RFC 6086; DTMF as application/dtmf-relay): passed through untouched.
            for name in [
                "Content-Type",
                "Content-Disposition",
                "Info-Package",
                "Event",
            ] {
                let h = HeaderName::parse(name);
                for v in req.headers.get_all(&h) {
                    extra.push((h.clone(), v.to_owned()));
                }
            }
            if !req.body.is_empty() {
                body = Some(req.body.clone());
            }
        } else if has_offer {
            let offer = match sdp::parse(&req.body) {
                Ok(o) => o,
                Err(e) => {
                    let mut r = reply_to(req, 488, Some(&e.0), "");
                    r.headers
                        .push(HeaderName::Warning, warning(&env.settings.domain, &e.0));
                    return Reply::Now(r);
                }
            };
            if self.media.is_none() {
                match env.media.allocate(offer.streams()) {
                    Ok(m) => self.media = Some(m),
                    Err(_) => {
                        let mut r = reply_to(req, 503, Some("Media relay unavailable"), "");
                        r.headers.push(HeaderName::RetryAfter, "5");
                        return Reply::Now(r);
                    }
                }
            }
            let Some(m) = &self.media else {
                return Reply::Now(reply_to(req, 500, None, ""));
            };
            for (s, (rtp, rtcp)) in offer.remotes().into_iter().enumerate() {
                env.media.set_remote(m.id, leg, s, rtp, rtcp);
            }
            let (ip, ports) = (m.relay_ip, ports_facing(m, far));
            self.silent = offer.is_silent();
            let rewritten = offer.rewrite(ip, &ports, self.origin(far));
            if let Some(p) = self.peer_mut(far) {
                p.last_sdp = Some(rewritten.clone());
            }
            body = Some(rewritten);
        }
        let id = self.next_relay;
        self.next_relay += 1;
        let Some(client_key) = self.send_in_dialog(
            env,
            far,
            req.method.clone(),
            body,
            extra,
            Purpose::Relay(id),
        ) else {
            return Reply::Now(reply_to(req, 500, None, ""));
        };
        let far_cseq = self.peer(far).map_or(0, |p| p.dialog.local_cseq);
        debug!(method = %req.method, from = %leg, offer = has_offer, "relayed");
        self.relays.push(Relay {
            id,
            from: leg,
            method: req.method.clone(),
            server_key,
            request: answer_template(req),
            respond_to,
            offer: has_offer,
            far_cseq,
            client_key,
        });
        Reply::Later
    }

    fn on_relay_event(&mut self, env: &mut Env<'_>, id: u64, e: TransactionEvent) {
        let Some(pos) = self.relays.iter().position(|r| r.id == id) else {
            return;
        };
        match e {
            // A relayed re-INVITE's progress (180, 183...) goes back to the side that sent it,
            // as a proxy would pass it; without a body: an SDP in an unreliable provisional
            // is not an answer the other leg could rely on (no 100rel yet).
            TransactionEvent::Provisional(r) => {
                let relay = &self.relays[pos];
                if relay.method == Method::Invite && r.status.0 > 100 {
                    let response = reply_to(&relay.request, r.status.0, Some(&r.reason), "");
                    Self::respond_relay(env, relay, response);
                }
            }
            TransactionEvent::Final(r) if r.status.is_success() => {
                let relay = self.relays.remove(pos);
                self.relay_success(env, relay, r);
            }
            TransactionEvent::Final(r) => {
                let relay = self.relays.remove(pos);
                let status = r.status.0;
                self.relay_failure(env, relay, status, Some(r));
            }
            _ => {
                let relay = self.relays.remove(pos);
                self.relay_failure(env, relay, 408, None);
            }
        }
    }

    fn relay_success(&mut self, env: &mut Env<'_>, relay: Relay, r: Response) {
        let x = relay.from;
        let y = x.other();
        if let Some(p) = self.peer_mut(y) {
            p.dialog.handle_response(&relay.method, &r);
            if relay.method != Method::Info {
                // The request refreshed leg y's session (RFC 4028 §7.2).
                if let Some(t) = terms_as_uac(&r) {
                    p.timer = Some(SessionTimer::start(env.now, t));
                }
            }
        }
        let mut resp = reply_to(&relay.request, r.status.0, Some(&r.reason), "");
        if relay.method == Method::Info {
            if let Some(ct) = r.headers.get(&HeaderName::ContentType) {
                resp.headers.push(HeaderName::ContentType, ct);
                resp.body = r.body.clone();
            }
            Self::respond_relay(env, &relay, resp);
            return;
        }
        // The SDP of the far side's 2xx: the answer to the relayed offer, or its own offer.
        let sdp_y = if r.body.is_empty() {
            Err(sdp::SdpRefused("No SDP in 2xx".to_owned()))
        } else {
            sdp::parse(&r.body)
        };
        let (body, forward) = match (sdp_y, &self.media) {
            (Ok(s), Some(m)) => {
                for (i, (rtp, rtcp)) in s.remotes().into_iter().enumerate() {
                    env.media.set_remote(m.id, y, i, rtp, rtcp);
                }
                let (ip, ports) = (m.relay_ip, ports_facing(m, x));
                if relay.offer {
                    self.silent = s.is_silent();
                }
                let body = s.rewrite(ip, &ports, self.origin(x));
                let forward = (!relay.offer).then_some((relay.far_cseq, s));
                (Some(body), forward)
            }
            (Err(_), _) if relay.method == Method::Update && !relay.offer => (None, None),
            (sdp_y, _) => {
                let why = sdp_y.err().map_or_else(|| "no media".to_owned(), |e| e.0);
                warn!(error = %why, "unusable SDP from the far side; ending the call");
                if relay.method == Method::Invite {
                    self.send_ack(env, y, relay.far_cseq, None);
                }
                let mut resp = reply_to(&relay.request, 488, Some(&why), "");
                resp.headers
                    .push(HeaderName::Warning, warning(&env.settings.domain, &why));
                Self::respond_relay(env, &relay, resp);
                self.hang_up(env, None);
                self.end(env, EndReason::BadSdp, None);
                return;
            }
        };
        if relay.method == Method::Invite && forward.is_none() {
            self.send_ack(env, y, relay.far_cseq, None);
        }
        resp.headers
            .push(HeaderName::Contact, self.a_or_b_contact(x));
        resp.headers.push(HeaderName::Allow, DIALOG_ALLOW);
        resp.headers.push(HeaderName::Supported, "timer");
        self.grant_refresh(env, x, &relay.request, &mut resp);
        if let (Some(b), Some(p)) = (&body, self.peer_mut(x)) {
            p.last_sdp = Some(b.clone());
        }
        with_body(&mut resp.headers, &mut resp.body, body);
        if relay.method == Method::Invite {
            let cseq = relay.request.cseq().map_or(0, |c| c.seq);
            self.expect_ack(env, x, cseq, &resp, relay.respond_to, forward);
        }
        Self::respond_relay(env, &relay, resp);
    }

    fn relay_failure(&mut self, env: &mut Env<'_>, relay: Relay, status: u16, r: Option<Response>) {
        let mut resp = reply_to(
            &relay.request,
            status,
            r.as_ref().map(|r| r.reason.as_str()),
            "",
        );
        if let Some(r) = &r {
            copy_failure_headers(r, &mut resp);
        }
        Self::respond_relay(env, &relay, resp);
        // RFC 5057 §5.1: 481 and 408 end the dialog usage; the call cannot go on.
        if matches!(status, 408 | 481) {
            warn!(status, "far leg is gone; ending the call");
            let far = relay.from.other();
            self.hang_up(env, (status == 481).then_some(far));
            self.end(env, EndReason::LegFailed, None);
        }
    }

    fn respond_relay(env: &mut Env<'_>, relay: &Relay, response: Response) {
        env.out.push(CallOutput::Respond {
            key: relay.server_key.clone(),
            response,
            destination: relay.respond_to,
        });
    }

    /// RFC 4028 §10: our refresh of `leg` — UPDATE without SDP when the peer allows it, else a
    /// re-INVITE repeating the last SDP we sent.
    fn send_refresh(&mut self, env: &mut Env<'_>, leg: Leg) {
        let busy = !self.relays.is_empty()
            || !self.pending_acks.is_empty()
            || self.txns.iter().any(|t| t.purpose == Purpose::Refresh);
        let now = env.now;
        let Some(peer) = self.peer_mut(leg) else {
            return;
        };
        let Some(timer) = &mut peer.timer else {
            return;
        };
        if busy {
            timer.refresh_at = Some(now + GLARE_RETRY);
            return;
        }
        timer.refresh_at = None;
        let (method, body) = if peer.allows_update {
            (Method::Update, None)
        } else {
            (Method::Invite, peer.last_sdp.clone())
        };
        debug!(leg = %leg, method = %method, "session refresh");
        self.send_in_dialog(env, leg, method, body, Vec::new(), Purpose::Refresh);
    }

    fn on_refresh_event(
        &mut self,
        env: &mut Env<'_>,
        leg: Leg,
        method: &Method,
        cseq: u32,
        e: TransactionEvent,
    ) {
        let now = env.now;
        match e {
            TransactionEvent::Final(r) if r.status.is_success() => {
                if *method == Method::Invite {
                    self.send_ack(env, leg, cseq, None);
                    if let (Ok(answer), Some(m)) = (sdp::parse(&r.body), &self.media) {
                        for (i, (rtp, rtcp)) in answer.remotes().into_iter().enumerate() {
                            env.media.set_remote(m.id, leg, i, rtp, rtcp);
                        }
                    }
                }
                if let Some(p) = self.peer_mut(leg) {
                    p.dialog.handle_response(method, &r);
                    // RFC 4028 §7.2: the answer's Session-Expires sets the new interval; with
                    // none, the peer has turned the timer off.
                    p.timer = terms_as_uac(&r).map(|t| SessionTimer::start(now, t));
                }
            }
            TransactionEvent::Final(r) if matches!(r.status.0, 408 | 481) => {
                self.hang_up(env, (r.status.0 == 481).then_some(leg));
                self.end(env, EndReason::LegFailed, None);
            }
            TransactionEvent::Final(r) => {
                let status = r.status.0;
                if let Some(p) = self.peer_mut(leg) {
                    if matches!(status, 405 | 501) && *method == Method::Update {
                        // Not an UPDATE peer after all: the next try is a re-INVITE.
                        p.allows_update = false;
                    }
                    if let Some(t) = &mut p.timer {
                        t.refresh_at = Some(now + GLARE_RETRY);
                    }
                }
            }
            TransactionEvent::TimedOut | TransactionEvent::TransportError => {
                self.hang_up(env, None);
                self.end(env, EndReason::LegFailed, None);
            }
            _ => {}
        }
    }
}

/// The relay ports that face `leg` (where `leg` sends its media).
fn ports_facing(m: &MediaAllocation, leg: Leg) -> Vec<u16> {
    match leg {
        Leg::A => m.a_ports.clone(),
        Leg::B => m.b_ports.clone(),
    }
}

fn media_check_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

fn send(env: &mut Env<'_>, destination: Destination, req: &Request) {
    env.out.push(CallOutput::Send(Transmit {
        destination,
        bytes: Bytes::from(req.to_bytes()),
    }));
}

fn caller_device(inv: &Request, source: &Source) -> String {
    let transport = match source.transport {
        TransportKind::Udp => "udp",
        TransportKind::Tcp => "tcp",
        TransportKind::Tls => "tls",
        TransportKind::Ws => "ws",
        TransportKind::Wss => "wss",
    };
    let mut s = String::with_capacity(80);
    s.push_str(transport);
    s.push(':');
    push_socket_addr(&mut s, source.peer);
    if let Some(ua) = inv.headers.get(&HeaderName::UserAgent) {
        let ua: String = ua.chars().filter(|c| !c.is_control()).take(64).collect();
        s.push(' ');
        s.push_str(&ua);
    }
    s
}

/// The caller's `+sip.instance`, if its Contact has one (RFC 5626 §4.1).
pub(crate) fn contact_instance(req: &Request) -> Option<String> {
    let v = req.headers.values(&HeaderName::Contact).next()?;
    let n = NameAddr::parse(v).ok()?;
    let inst = n.params.get("+sip.instance").flatten()?;
    Some(inst.trim_matches('"').to_owned())
}

/// `sip:user@host` (`user` already escaped).
pub(crate) fn sip_uri(user: &str, host: &str) -> String {
    let mut u = String::with_capacity(5 + user.len() + host.len());
    u.push_str("sip:");
    u.push_str(user);
    u.push('@');
    u.push_str(host);
    u
}

/// What an ended call keeps of its record once the last snapshot is out: its state, no
/// strings.
fn ended_stub(r: &CallRecord) -> CallRecord {
    CallRecord {
        id: String::new(),
        caller: String::new(),
        caller_device: String::new(),
        callee_dialled: String::new(),
        callee: None,
        devices_tried: Vec::new(),
        answered_by: None,
        start_unix_ms: r.start_unix_ms,
        answer_unix_ms: r.answer_unix_ms,
        end_unix_ms: r.end_unix_ms,
        state: r.state,
        disposition: r.disposition,
        final_status: r.final_status,
        end_reason: r.end_reason,
        media: None,
        sip_call_id: String::new(),
    }
}
