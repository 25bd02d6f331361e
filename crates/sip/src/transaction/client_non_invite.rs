//! The non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Deadlines, Timer, Timers, TransactionEvent, TransactionState};
use crate::message::{Request, Response};
use crate::transport::TransportKind;

/// Sends one non-INVITE request (never ACK) and collects its responses.
///
/// Created in Trying, having queued the request for transmission. Over UDP, Timer E retransmits
/// it at T1, 2*T1, 4*T1... capped at T2 (every T2 once a provisional arrived); Timer F gives up
/// after 64*T1 with [`TransactionEvent::TimedOut`]. After the final response, Timer K (T4 on UDP,
/// zero on reliable transports) absorbs its retransmissions.
///
/// See the [module docs](super) for the calling contract.
#[derive(Debug)]
#[must_use = "a transaction does nothing unless driven"]
pub struct ClientNonInvite {
    request: Request,
    timers: Timers,
    reliable: bool,
    state: State,
    deadlines: Deadlines,
    transmits: VecDeque<Request>,
    events: VecDeque<TransactionEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for any response; `retransmit` is the next Timer E interval.
    Trying {
        retransmit: Duration,
    },
    /// A provisional arrived; Timer E now fires every T2 (RFC 3261 §17.1.2.2).
    Proceeding,
    /// Final response received; absorbing retransmissions until Timer K.
    Completed,
    Terminated,
}

impl ClientNonInvite {
    /// Starts the transaction at `now`: the request is queued for `poll_transmit`, Timer F (and
    /// Timer E on unreliable transports) armed.
    pub fn new(now: Instant, request: Request, transport: TransportKind, timers: Timers) -> Self {
        let reliable = transport.is_reliable();
        let mut deadlines = Deadlines::default();
        // RFC 3261 §17.1.2.2: "If an unreliable transport is in use, the client transaction
        // MUST set timer E to fire in T1 seconds"; Timer F is set for every transport.
        if !reliable {
            deadlines.arm(Timer::E, now, timers.t1);
        }
        deadlines.arm(Timer::F, now, timers.transaction_timeout());
        let mut transmits = VecDeque::new();
        transmits.push_back(request.clone());
        Self {
            request,
            timers,
            reliable,
            state: State::Trying {
                retransmit: timers.t1,
            },
            deadlines,
            transmits,
            events: VecDeque::new(),
        }
    }

    /// Feeds a response matched to this transaction (by [`super::TransactionKey::client`]).
    pub fn handle_response(&mut self, now: Instant, response: Response) {
        match self.state {
            State::Trying { .. } | State::Proceeding => {
                if response.status.is_provisional() {
                    // Timer E keeps running; its next firing resets it to T2.
                    self.state = State::Proceeding;
                    self.events
                        .push_back(TransactionEvent::Provisional(response));
                } else {
                    self.events.push_back(TransactionEvent::Final(response));
                    self.complete(now);
                }
            }
            // RFC 3261 §17.1.2.2: retransmitted responses are absorbed in Completed.
            State::Completed | State::Terminated => {}
        }
    }

    fn complete(&mut self, now: Instant) {
        self.deadlines.disarm(Timer::E);
        self.deadlines.disarm(Timer::F);
        if self.reliable {
            // Timer K is zero on reliable transports: terminate at once.
            self.terminate();
        } else {
            self.state = State::Completed;
            self.deadlines.arm(Timer::K, now, self.timers.t4);
        }
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.deadlines.clear();
    }

    /// Fires every timer due at `now`. Calling it early or twice does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Timer F first: at 64*T1 the transaction is over even if Timer E is due too.
        if self.deadlines.take_due(Timer::F, now) {
            if matches!(self.state, State::Trying { .. } | State::Proceeding) {
                self.events.push_back(TransactionEvent::TimedOut);
                self.terminate();
            }
            return;
        }
        if self.deadlines.take_due(Timer::E, now) {
            match self.state {
                State::Trying { retransmit } => {
                    // RFC 3261 §17.1.2.2: E doubles each time, capped at T2.
                    let next = retransmit.saturating_mul(2).min(self.timers.t2);
                    self.state = State::Trying { retransmit: next };
                    self.transmits.push_back(self.request.clone());
                    self.deadlines.arm(Timer::E, now, next);
                }
                State::Proceeding => {
                    // RFC 3261 §17.1.2.2: in Proceeding, E is reset to T2.
                    self.transmits.push_back(self.request.clone());
                    self.deadlines.arm(Timer::E, now, self.timers.t2);
                }
                State::Completed | State::Terminated => {}
            }
        }
        if self.deadlines.take_due(Timer::K, now) {
            self.terminate();
        }
    }

    /// The transport failed to deliver the request (RFC 3261 §17.1.4): tell the TU, terminate.
    pub fn handle_transport_error(&mut self) {
        if self.state != State::Terminated {
            self.events.push_back(TransactionEvent::TransportError);
            self.terminate();
        }
    }

    /// The next request to send: the original, then each retransmission.
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
            State::Trying { .. } => TransactionState::Trying,
            State::Proceeding => TransactionState::Proceeding,
            State::Completed => TransactionState::Completed,
            State::Terminated => TransactionState::Terminated,
        }
    }

    /// True once the transaction is over; drain `poll_transmit`/`poll_event`, then drop it.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// The request this transaction sends.
    pub fn request(&self) -> &Request {
        &self.request
    }
}
