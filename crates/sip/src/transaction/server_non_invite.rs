//! The non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8).

use std::collections::VecDeque;
use std::time::Instant;

use super::{Deadlines, Timer, Timers, TransactionEvent, TransactionState};
use crate::message::{Request, Response};
use crate::transport::TransportKind;

/// Answers one non-INVITE request and absorbs its retransmissions.
///
/// Created in Trying when the request arrives (the TU gets the request from the caller, not from
/// here). Retransmissions of the request are fed to `handle_request`: ignored in Trying, answered
/// with the last provisional in Proceeding and with the final response in Completed. Timer J (64*T1
/// on UDP, zero on reliable transports) ends the transaction after the final response.
///
/// See the [module docs](super) for the calling contract.
#[derive(Debug)]
#[must_use = "a transaction does nothing unless driven"]
pub struct ServerNonInvite {
    timers: Timers,
    reliable: bool,
    state: State,
    deadlines: Deadlines,
    transmits: VecDeque<Response>,
    events: VecDeque<TransactionEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Trying,
    Proceeding { last: Response },
    Completed { last: Response },
    Terminated,
}

impl ServerNonInvite {
    /// Creates the transaction for `request`, which arrived at `now` over `transport`.
    pub fn new(now: Instant, request: &Request, transport: TransportKind, timers: Timers) -> Self {
        // Nothing to keep from the request: responses are built by the TU.
        let _ = (now, request);
        Self {
            timers,
            reliable: transport.is_reliable(),
            state: State::Trying,
            deadlines: Deadlines::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// A retransmission of the request arrived (RFC 3261 §17.2.2): re-send the last response, if
    /// any. The retransmission must not reach the TU.
    pub fn handle_request(&mut self, now: Instant) {
        let _ = now;
        match &self.state {
            State::Proceeding { last } | State::Completed { last } => {
                self.transmits.push_back(last.clone());
            }
            State::Trying | State::Terminated => {}
        }
    }

    /// The TU answers. Provisional responses are sent while no final one was; the first final
    /// response is sent and completes the transaction; anything later is discarded (§17.2.2).
    pub fn respond(&mut self, now: Instant, response: Response) {
        match self.state {
            State::Trying | State::Proceeding { .. } => {
                if response.status.is_provisional() {
                    self.transmits.push_back(response.clone());
                    self.state = State::Proceeding { last: response };
                } else if self.reliable {
                    // Timer J is zero on reliable transports: nothing to keep a copy for.
                    self.transmits.push_back(response);
                    self.state = State::Terminated;
                } else {
                    self.transmits.push_back(response.clone());
                    self.deadlines
                        .arm(Timer::J, now, self.timers.transaction_timeout());
                    self.state = State::Completed { last: response };
                }
            }
            State::Completed { .. } | State::Terminated => {}
        }
    }

    /// Fires every timer due at `now`. Calling it early or twice does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadlines.take_due(Timer::J, now) {
            self.terminate();
        }
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.deadlines.clear();
    }

    /// The transport failed to send a response (RFC 3261 §17.2.4, after trying the §18.2.2
    /// alternatives): tell the TU, terminate.
    pub fn handle_transport_error(&mut self) {
        if self.state != State::Terminated {
            self.events.push_back(TransactionEvent::TransportError);
            self.terminate();
        }
    }

    /// The next response to send.
    pub fn poll_transmit(&mut self) -> Option<Response> {
        self.transmits.pop_front()
    }

    /// The next event for the transaction user (only [`TransactionEvent::TransportError`]).
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
            State::Trying => TransactionState::Trying,
            State::Proceeding { .. } => TransactionState::Proceeding,
            State::Completed { .. } => TransactionState::Completed,
            State::Terminated => TransactionState::Terminated,
        }
    }

    /// True once the transaction is over; drain `poll_transmit`, then drop it.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }
}
