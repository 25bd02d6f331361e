//! The INVITE client transaction (RFC 3261 §17.1.1, Figure 5, as amended by RFC 6026 §8.4).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{hop_by_hop_request, Deadlines, Timer, Timers, TransactionEvent, TransactionState};
use crate::header::HeaderName;
use crate::message::{Method, Request, Response};
use crate::transport::TransportKind;

/// Sends one INVITE and collects its responses.
///
/// Created in Calling, having queued the INVITE. Over UDP, Timer A retransmits it at T1, 2*T1,
/// 4*T1... with no cap; Timer B gives up after 64*T1 if no response at all arrived. A provisional
/// response stops both (the TU runs Timer C if it wants one). A 300–699 final is acknowledged by
/// the transaction itself (the ACK comes out of `poll_transmit`) and its retransmissions re-ACKed
/// until Timer D. A 2xx moves to Accepted (RFC 6026) where every further 2xx is passed to the TU,
/// which sends the ACK for 2xx itself, until Timer M.
///
/// See the [module docs](super) for the calling contract.
#[derive(Debug)]
#[must_use = "a transaction does nothing unless driven"]
pub struct ClientInvite {
    request: Request,
    timers: Timers,
    reliable: bool,
    state: State,
    deadlines: Deadlines,
    transmits: VecDeque<Request>,
    events: VecDeque<TransactionEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No response yet; `retransmit` is the next Timer A interval.
    Calling {
        retransmit: Duration,
    },
    Proceeding,
    /// A 300–699 arrived; `ack` is re-sent for each retransmission of it.
    Completed {
        ack: Request,
    },
    /// A 2xx arrived (RFC 6026 §8.4).
    Accepted,
    Terminated,
}

impl ClientInvite {
    /// Starts the transaction at `now`: the INVITE is queued for `poll_transmit`, Timer B (and
    /// Timer A on unreliable transports) armed.
    pub fn new(now: Instant, request: Request, transport: TransportKind, timers: Timers) -> Self {
        let reliable = transport.is_reliable();
        let mut deadlines = Deadlines::default();
        // RFC 3261 §17.1.1.2: Timer A only for unreliable transports, Timer B always.
        if !reliable {
            deadlines.arm(Timer::A, now, timers.t1);
        }
        deadlines.arm(Timer::B, now, timers.transaction_timeout());
        let mut transmits = VecDeque::new();
        transmits.push_back(request.clone());
        Self {
            request,
            timers,
            reliable,
            state: State::Calling {
                retransmit: timers.t1,
            },
            deadlines,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// Feeds a response matched to this transaction (by [`super::TransactionKey::client`]).
    pub fn handle_response(&mut self, now: Instant, response: Response) {
        match &self.state {
            State::Calling { .. } | State::Proceeding => {
                if response.status.is_provisional() {
                    // RFC 3261 §17.1.1.2: no more retransmissions, and Timer B only runs in
                    // Calling.
                    self.deadlines.disarm(Timer::A);
                    self.deadlines.disarm(Timer::B);
                    self.state = State::Proceeding;
                    self.events
                        .push_back(TransactionEvent::Provisional(response));
                } else if response.status.is_success() {
                    self.deadlines.clear();
                    // RFC 6026 §8.4: Accepted, Timer M = 64*T1.
                    self.deadlines
                        .arm(Timer::M, now, self.timers.transaction_timeout());
                    self.state = State::Accepted;
                    self.events.push_back(TransactionEvent::Final(response));
                } else {
                    self.deadlines.clear();
                    let ack = self.ack_for(&response);
                    self.transmits.push_back(ack.clone());
                    self.events.push_back(TransactionEvent::Final(response));
                    if self.reliable {
                        // Timer D is zero on reliable transports.
                        self.state = State::Terminated;
                    } else {
                        self.deadlines.arm(Timer::D, now, Duration::from_secs(32));
                        self.state = State::Completed { ack };
                    }
                }
            }
            State::Completed { ack } => {
                // RFC 3261 §17.1.1.2: a retransmitted final is re-ACKed, not passed up.
                if response.status.is_final() && !response.status.is_success() {
                    self.transmits.push_back(ack.clone());
                }
            }
            State::Accepted => {
                // RFC 6026 §8.4: every 2xx goes to the TU, which ACKs it.
                if response.status.is_success() {
                    self.events.push_back(TransactionEvent::Final(response));
                }
            }
            State::Terminated => {}
        }
    }

    /// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): the INVITE's Request-URI,
    /// Call-ID, From, CSeq number, Route set and top Via (so the same branch), and the response's
    /// To, which carries the UAS's tag.
    fn ack_for(&self, response: &Response) -> Request {
        hop_by_hop_request(
            &self.request,
            Method::Ack,
            response.headers.get(&HeaderName::To),
        )
    }

    /// A CANCEL for this INVITE (RFC 3261 §9.1): same Request-URI, Call-ID, To, From, CSeq
    /// number, Route set and top Via. Send it in a [`super::ClientNonInvite`] of its own, and
    /// only once a provisional response has arrived (§9.1).
    pub fn cancel_request(&self) -> Request {
        hop_by_hop_request(&self.request, Method::Cancel, None)
    }

    /// Fires every timer due at `now`. Calling it early or twice does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadlines.take_due(Timer::B, now) {
            if matches!(self.state, State::Calling { .. }) {
                self.events.push_back(TransactionEvent::TimedOut);
                self.terminate();
            }
            return;
        }
        if self.deadlines.take_due(Timer::A, now) {
            if let State::Calling { retransmit } = self.state {
                // RFC 3261 §17.1.1.2: Timer A doubles, no T2 cap.
                let next = retransmit.saturating_mul(2);
                self.state = State::Calling { retransmit: next };
                self.transmits.push_back(self.request.clone());
                self.deadlines.arm(Timer::A, now, next);
            }
        }
        if self.deadlines.take_due(Timer::D, now) || self.deadlines.take_due(Timer::M, now) {
            self.terminate();
        }
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.deadlines.clear();
    }

    /// The transport failed to deliver the INVITE or ACK (RFC 3261 §17.1.4): tell the TU,
    /// terminate.
    pub fn handle_transport_error(&mut self) {
        if self.state != State::Terminated {
            self.events.push_back(TransactionEvent::TransportError);
            self.terminate();
        }
    }

    /// The next request to send: the INVITE, its retransmissions, and ACKs for non-2xx finals.
    pub fn poll_transmit(&mut self) -> Option<Request> {
        self.transmits.pop_front()
    }

    /// The next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called; `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.next().map(|(_, at)| at)
    }

    /// The next timer to fire and when, for logs and tests.
    pub fn next_timer(&self) -> Option<(Timer, Instant)> {
        self.deadlines.next()
    }

    pub fn state(&self) -> TransactionState {
        match self.state {
            State::Calling { .. } => TransactionState::Calling,
            State::Proceeding => TransactionState::Proceeding,
            State::Completed { .. } => TransactionState::Completed,
            State::Accepted => TransactionState::Accepted,
            State::Terminated => TransactionState::Terminated,
        }
    }

    /// True once the transaction is over; drain `poll_transmit`/`poll_event`, then drop it.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// The INVITE this transaction sends.
    pub fn request(&self) -> &Request {
        &self.request
    }
}
