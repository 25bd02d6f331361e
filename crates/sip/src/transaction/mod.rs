//! RFC 3261 §17 transaction state machines, sans-IO.
//!
//! Four machines, one per RFC figure: [`ClientInvite`] (Figure 5), [`ClientNonInvite`]
//! (Figure 6), [`ServerInvite`] (Figure 7) and [`ServerNonInvite`] (Figure 8). The INVITE
//! machines follow RFC 6026: a 2xx moves them to an "Accepted" state (Timers L and M) instead of
//! terminating them, so retransmitted INVITEs are absorbed and retransmitted 2xx reach the TU.
//!
//! None of them reads a clock, sleeps or sends anything. Each follows the quinn-proto contract:
//!
//! 1. feed input with a `handle_*` method (`handle_request`, `handle_response`, `handle_ack`,
//!    `handle_timeout`) or a command (`respond`), always with the current `now`; instants passed
//!    to one transaction never go backwards;
//! 2. then drain `poll_transmit` (messages to hand to the transport, in order) and `poll_event`
//!    (what the transaction user must learn) until they return `None`;
//! 3. then ask `poll_timeout` for the next deadline and call `handle_timeout` at or after it. A
//!    call before any deadline does nothing, so spurious wake-ups are harmless;
//! 4. drop the transaction once `is_terminated` returns true (after draining).
//!
//! Matching a message to its transaction is [`TransactionKey`]'s job (RFC 3261 §17.1.3,
//! §17.2.3); [`TransactionTable`] is a small map that also drives the timers of many.

mod client_invite;
mod client_non_invite;
mod key;
mod server_invite;
mod server_non_invite;
mod table;

use std::time::{Duration, Instant};

use crate::header::HeaderName;
use crate::message::{Method, Request};

pub use client_invite::ClientInvite;
pub use client_non_invite::ClientNonInvite;
pub use key::TransactionKey;
pub use server_invite::{AckOutcome, ServerInvite};
pub use server_non_invite::ServerNonInvite;
pub use table::{Transaction, TransactionTable};

/// The RFC 3261 timer base values (§17.1.1.1, Table 4).
///
/// Every other timer derives from these: A, E and G start at T1; B, F, H, J, L and M last 64*T1;
/// E and G back off to at most T2; I and K last T4; D is fixed at 32 s. Reliable transports use
/// zero for D, I, J and K and never retransmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum duration a message remains in the network (default 5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64*T1: Timers B, F, H, J (unreliable), L and M.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// The initial value of `timer` on a transport (RFC 3261 Table 4, RFC 6026 §8.4, §8.11), or
    /// `None` where the RFC does not run it at all (retransmission timers on reliable transports).
    pub fn initial(&self, timer: Timer, reliable: bool) -> Option<Duration> {
        let zero_if_reliable = |d: Duration| if reliable { Duration::ZERO } else { d };
        match timer {
            Timer::A | Timer::E | Timer::G => (!reliable).then_some(self.t1),
            Timer::B | Timer::F | Timer::H | Timer::L | Timer::M => {
                Some(self.transaction_timeout())
            }
            // RFC 3261 §17.1.1.2: "at least 32 seconds for unreliable transports".
            Timer::D => Some(zero_if_reliable(Duration::from_secs(32))),
            Timer::I | Timer::K => Some(zero_if_reliable(self.t4)),
            Timer::J => Some(zero_if_reliable(self.transaction_timeout())),
        }
    }
}

/// The transaction timers, named as in RFC 3261 §17 (A–K) and RFC 6026 §8.4, §8.11 (L, M).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// INVITE client: request retransmission (doubles, no cap).
    A,
    /// INVITE client: transaction timeout in Calling.
    B,
    /// INVITE client: wait for final response retransmissions in Completed.
    D,
    /// Non-INVITE client: request retransmission (doubles, capped at T2).
    E,
    /// Non-INVITE client: transaction timeout.
    F,
    /// INVITE server: final response retransmission (doubles, capped at T2).
    G,
    /// INVITE server: wait for ACK.
    H,
    /// INVITE server: wait for ACK retransmissions in Confirmed.
    I,
    /// Non-INVITE server: wait for request retransmissions in Completed.
    J,
    /// Non-INVITE client: wait for response retransmissions in Completed.
    K,
    /// INVITE server: wait for INVITE retransmissions in Accepted (RFC 6026).
    L,
    /// INVITE client: wait for 2xx retransmissions in Accepted (RFC 6026).
    M,
}

impl Timer {
    const ALL: [Self; 12] = [
        Self::A,
        Self::B,
        Self::D,
        Self::E,
        Self::F,
        Self::G,
        Self::H,
        Self::I,
        Self::J,
        Self::K,
        Self::L,
        Self::M,
    ];

    fn index(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
            Self::D => 2,
            Self::E => 3,
            Self::F => 4,
            Self::G => 5,
            Self::H => 6,
            Self::I => 7,
            Self::J => 8,
            Self::K => 9,
            Self::L => 10,
            Self::M => 11,
        }
    }
}

/// One optional deadline per named timer; the earliest is what `poll_timeout` reports.
#[derive(Debug, Clone, Default)]
struct Deadlines([Option<Instant>; 12]);

impl Deadlines {
    /// Arms `timer` to fire `after` from `now`. A deadline too far to represent never fires.
    fn arm(&mut self, timer: Timer, now: Instant, after: Duration) {
        self.0[timer.index()] = now.checked_add(after);
    }

    fn disarm(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    fn clear(&mut self) {
        self.0 = [None; 12];
    }

    /// Whether `timer` is armed and due at `now`; disarms it if so (a timer fires once).
    fn take_due(&mut self, timer: Timer, now: Instant) -> bool {
        let slot = &mut self.0[timer.index()];
        if slot.is_some_and(|at| at <= now) {
            *slot = None;
            true
        } else {
            false
        }
    }

    /// The earliest armed deadline and its timer.
    fn next(&self) -> Option<(Timer, Instant)> {
        Timer::ALL
            .iter()
            .filter_map(|&t| self.0[t.index()].map(|at| (t, at)))
            .min_by_key(|&(_, at)| at)
    }
}

/// What a client transaction tells its transaction user (RFC 3261 §17.1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionEvent {
    /// A 1xx response (RFC 3261 §17.1.1.2, §17.1.2.2).
    Provisional(crate::message::Response),
    /// A final response. For an INVITE client in the Accepted state (RFC 6026 §8.4) every further
    /// 2xx — a retransmission or another fork's answer — is reported again, because the TU must
    /// ACK each one.
    Final(crate::message::Response),
    /// Timer B or F fired before a final response (client; the TU treats it as a 408), or
    /// Timer H fired before the ACK (INVITE server, RFC 3261 §17.2.1).
    TimedOut,
    /// The transport reported a failure (RFC 3261 §17.1.4, §17.2.4); the transaction is over.
    TransportError,
}

/// The state of a transaction, named as in the RFC 3261 §17 figures and RFC 6026.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionState {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

/// Builds the hop-by-hop ACK for a non-2xx final response or a CANCEL for `req`
/// (RFC 3261 §17.1.1.3 and §9.1): same Request-URI, Call-ID, From, CSeq number and Route set, a
/// single Via equal to the request's top Via, and `to` as the To header.
///
/// Works from the header text so it needs no header parsing and cannot fail.
fn hop_by_hop_request(req: &Request, method: Method, to: Option<&str>) -> Request {
    let mut out = Request {
        method: method.clone(),
        uri: req.uri.clone(),
        headers: crate::header::Headers::new(),
        body: bytes::Bytes::new(),
    };
    if let Some(via) = req.headers.values(&HeaderName::Via).next() {
        out.headers.push(HeaderName::Via, via);
    }
    for name in [HeaderName::Route, HeaderName::MaxForwards, HeaderName::From] {
        for value in req.headers.get_all(&name) {
            out.headers.push(name.clone(), value);
        }
    }
    if let Some(to) = to.or_else(|| req.headers.get(&HeaderName::To)) {
        out.headers.push(HeaderName::To, to);
    }
    out.headers.push(HeaderName::CallId, req.call_id());
    // CSeq = 1*DIGIT LWS Method (RFC 3261 §20.16): the number is the first token.
    let seq = req
        .headers
        .get(&HeaderName::CSeq)
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0");
    let method = method.as_str();
    let mut cseq = String::with_capacity(seq.len() + 1 + method.len());
    cseq.push_str(seq);
    cseq.push(' ');
    cseq.push_str(method);
    out.headers.push(HeaderName::CSeq, cseq);
    out
}
