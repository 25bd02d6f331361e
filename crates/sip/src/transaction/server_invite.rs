//! The INVITE server transaction (RFC 3261 §17.2.1, Figure 7, as amended by RFC 6026 §8.5–8.7).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Deadlines, Timer, Timers, TransactionEvent, TransactionState};
use crate::header::HeaderName;
use crate::message::{Request, Response};
use crate::transport::TransportKind;

/// Answers one INVITE, absorbs its retransmissions and, for a 300–699 answer, waits for the ACK.
///
/// Created in Proceeding with a 100 (Trying) already queued: RFC 3261 §17.2.1 requires one unless
/// the TU answers within 200 ms, and sending it at once costs less than a timer. A retransmitted
/// INVITE re-sends the latest provisional response. A 300–699 final is retransmitted by Timer G
/// (T1, doubling, capped at T2; UDP only) until the ACK arrives or Timer H (64*T1) gives up; after
/// the ACK, Timer I (T4 on UDP, zero on reliable transports) absorbs ACK retransmissions. A 2xx
/// moves to Accepted (RFC 6026 §8.6): the TU retransmits the 2xx itself through `respond`, INVITE
/// retransmissions are absorbed, and Timer L (64*T1) ends the transaction.
///
/// See the [module docs](super) for the calling contract.
#[derive(Debug)]
#[must_use = "a transaction does nothing unless driven"]
pub struct ServerInvite {
    timers: Timers,
    reliable: bool,
    state: State,
    deadlines: Deadlines,
    transmits: VecDeque<Response>,
    events: VecDeque<TransactionEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// `last` is the latest provisional response, re-sent for each INVITE retransmission.
    Proceeding {
        last: Response,
    },
    /// A 300–699 was sent; `retransmit` is the next Timer G interval.
    Completed {
        last: Response,
        retransmit: Duration,
    },
    /// The ACK arrived.
    Confirmed,
    /// A 2xx was sent (RFC 6026).
    Accepted,
    Terminated,
}

/// What the caller does with an ACK that matched an INVITE server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum AckOutcome {
    /// The ACK for our non-2xx final response, or a retransmission of it: consumed here.
    Absorbed,
    /// The transaction sent a 2xx (RFC 6026 §8.7): the ACK belongs to the TU (the dialog).
    PassToTransactionUser,
}

impl ServerInvite {
    /// Creates the transaction for `invite`, which arrived at `now` over `transport`, and queues
    /// a 100 (Trying) for it (RFC 3261 §17.2.1, §8.2.6.1: no To tag, Timestamp copied).
    pub fn new(now: Instant, invite: &Request, transport: TransportKind, timers: Timers) -> Self {
        let _ = now;
        let mut trying = Response::for_request(invite, 100, None);
        for value in invite.headers.get_all(&HeaderName::Timestamp) {
            trying.headers.push(HeaderName::Timestamp, value);
        }
        let mut transmits = VecDeque::new();
        transmits.push_back(trying.clone());
        Self {
            timers,
            reliable: transport.is_reliable(),
            state: State::Proceeding { last: trying },
            deadlines: Deadlines::default(),
            transmits,
            events: VecDeque::new(),
        }
    }

    /// A retransmission of the INVITE arrived: re-send the latest provisional (Proceeding) or the
    /// final response (Completed); absorb it otherwise (RFC 3261 §17.2.1, RFC 6026 §8.6). It must
    /// not reach the TU.
    pub fn handle_request(&mut self, now: Instant) {
        let _ = now;
        match &self.state {
            State::Proceeding { last } | State::Completed { last, .. } => {
                self.transmits.push_back(last.clone());
            }
            State::Confirmed | State::Accepted | State::Terminated => {}
        }
    }

    /// An ACK matched this transaction (same [`super::TransactionKey`] as the INVITE).
    ///
    /// In Completed it stops Timers G and H and starts Timer I (RFC 3261 §17.2.1).
    pub fn handle_ack(&mut self, now: Instant) -> AckOutcome {
        match self.state {
            State::Completed { .. } => {
                self.deadlines.clear();
                if self.reliable {
                    // Timer I is zero on reliable transports.
                    self.state = State::Terminated;
                } else {
                    self.deadlines.arm(Timer::I, now, self.timers.t4);
                    self.state = State::Confirmed;
                }
                AckOutcome::Absorbed
            }
            State::Accepted => AckOutcome::PassToTransactionUser,
            // An ACK before any final response is bogus; one in Confirmed is a retransmission.
            State::Proceeding { .. } | State::Confirmed | State::Terminated => AckOutcome::Absorbed,
        }
    }

    /// The TU answers.
    ///
    /// In Proceeding: a provisional is sent and remembered; a 2xx is sent and moves to Accepted
    /// (Timer L); a 300–699 is sent and moves to Completed (Timers G and H). In Accepted, 2xx
    /// retransmissions from the TU are sent (RFC 6026 §8.7). Anything else is discarded.
    pub fn respond(&mut self, now: Instant, response: Response) {
        match self.state {
            State::Proceeding { .. } => {
                if response.status.is_provisional() {
                    self.transmits.push_back(response.clone());
                    self.state = State::Proceeding { last: response };
                } else if response.status.is_success() {
                    // Not kept: the TU retransmits its 2xx (RFC 6026), so no copy is needed.
                    self.transmits.push_back(response);
                    self.deadlines
                        .arm(Timer::L, now, self.timers.transaction_timeout());
                    self.state = State::Accepted;
                } else {
                    self.transmits.push_back(response.clone());
                    // RFC 3261 §17.2.1: Timer G only on unreliable transports, Timer H always.
                    if !self.reliable {
                        self.deadlines.arm(Timer::G, now, self.timers.t1);
                    }
                    self.deadlines
                        .arm(Timer::H, now, self.timers.transaction_timeout());
                    self.state = State::Completed {
                        last: response,
                        retransmit: self.timers.t1,
                    };
                }
            }
            State::Accepted => {
                if response.status.is_success() {
                    self.transmits.push_back(response);
                }
            }
            State::Completed { .. } | State::Confirmed | State::Terminated => {}
        }
    }

    /// Fires every timer due at `now`. Calling it early or twice does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadlines.take_due(Timer::H, now) {
            if matches!(self.state, State::Completed { .. }) {
                // RFC 3261 §17.2.1: no ACK; the TU learns of the failure.
                self.events.push_back(TransactionEvent::TimedOut);
                self.terminate();
            }
            return;
        }
        if self.deadlines.take_due(Timer::G, now) {
            if let State::Completed { last, retransmit } = &mut self.state {
                // RFC 3261 §17.2.1: G doubles, capped at T2.
                self.transmits.push_back(last.clone());
                *retransmit = retransmit.saturating_mul(2).min(self.timers.t2);
                let next = *retransmit;
                self.deadlines.arm(Timer::G, now, next);
            }
        }
        if self.deadlines.take_due(Timer::I, now) || self.deadlines.take_due(Timer::L, now) {
            self.terminate();
        }
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.deadlines.clear();
    }

    /// The transport failed to send a response (RFC 3261 §17.2.4): tell the TU, terminate.
    pub fn handle_transport_error(&mut self) {
        if self.state != State::Terminated {
            self.events.push_back(TransactionEvent::TransportError);
            self.terminate();
        }
    }

    /// The next response to send: the 100 (Trying), the TU's responses and retransmissions.
    pub fn poll_transmit(&mut self) -> Option<Response> {
        self.transmits.pop_front()
    }

    /// The next event for the transaction user: [`TransactionEvent::TimedOut`] when Timer H
    /// fired, or [`TransactionEvent::TransportError`].
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
            State::Proceeding { .. } => TransactionState::Proceeding,
            State::Completed { .. } => TransactionState::Completed,
            State::Confirmed => TransactionState::Confirmed,
            State::Accepted => TransactionState::Accepted,
            State::Terminated => TransactionState::Terminated,
        }
    }

    /// True once the transaction is over; drain `poll_transmit`/`poll_event`, then drop it.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }
}
