//! One relay worker thread: an epoll loop over the sockets of the sessions it owns.
//!
//! Per readable socket and wake-up: one `recvmmsg` of up to [`BATCH`](crate::sys::BATCH)
//! datagrams, one `Instant::now()`, the sans-IO verdict per datagram, one `sendmmsg` of the
//! forwarded ones out of the other leg's socket, straight from the receive buffers. No
//! allocation, lock, channel or task per packet. Commands from the control API arrive on a
//! bounded channel with an eventfd wake-up, between batches.
//!
//! Sockets are edge-triggered (a level-triggered set re-polls every socket read in the last
//! turn, a cost per packet); a socket that fills a whole batch is served again next turn.
//! Under load the worker pauses for `MediaConfig::coalesce` between turns, so that each
//! wake-up finds many datagrams: on this kind of virtual machine a wake-up costs more than a
//! datagram (see `crates/media/bench/media.sh`).
//!
//! Sessions end by parking their port pairs (see [`crate::pool`]): the sockets stay open and
//! registered, and the worker reads and discards whatever reaches them until an allocation
//! claims them for a new session on this worker. An epoll token names a port, not a session,
//! so parking and reuse change only the worker's table, never the epoll set.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pool::{state, Acquired, Parked, PortPair, Ports};
use crate::relay::{
    Channel, DropReason, LatchConfig, Leg, RelaySession, RemoteMedia, SessionStats, Verdict,
};
use crate::sys::{self, Epoll, EventFd, RawAddr, RecvBatch, SendBatch};
use crate::{SessionId, COALESCE_MIN_PACKETS};

/// Requests from the control API. Those that answer carry their own reply channel
/// (capacity 1); `Add` and a `SetRemote` without a reply are fire-and-forget, so the caller's
/// thread does not wait for the worker (a round trip costs two context switches).
pub(crate) enum Command {
    Add {
        id: SessionId,
        legs: [Acquired; 2],
    },
    SetRemote {
        id: SessionId,
        leg: Leg,
        remote: RemoteMedia,
        reply: Option<SyncSender<bool>>,
    },
    Stats {
        id: SessionId,
        reply: SyncSender<Option<SessionStats>>,
    },
    Release {
        id: SessionId,
        reply: SyncSender<Option<SessionStats>>,
    },
    /// Close every parked pair (their ports go back to the free queue), then answer.
    Evict {
        reply: SyncSender<()>,
    },
    Shutdown,
}

const WAKE_TOKEN: u64 = u64::MAX;
/// Commands handled per wake-up before the loop turns back to packets.
const COMMANDS_PER_TURN: usize = 256;
/// How long a worker keeps collecting commands without eventfd wake-ups after a turn that
/// found some (see [`Worker::handle_commands`]). Bounds the delay of a fire-and-forget command
/// under load (a new session's first packets wait that long in its socket buffer at most).
const COMMAND_LINGER: Duration = Duration::from_millis(5);
/// Tries of the parked-socket state machine per readiness event (each retry means an
/// allocating thread changed the state meanwhile).
const STATE_RETRIES: usize = 4;

/// A socket's epoll token: its port (RTP even, RTCP odd). Stable while the socket lives, so a
/// pair moves between sessions and the parking list without `epoll_ctl`.
fn token(port: u16) -> u64 {
    u64::from(port)
}

fn channel_of(port: u16) -> Channel {
    if port & 1 == 0 {
        Channel::Rtp
    } else {
        Channel::Rtcp
    }
}

/// What a pair of the range is to this worker.
#[derive(Debug, Default)]
enum PairUse {
    /// Not this worker's (free, bound by another worker, or closed).
    #[default]
    Idle,
    /// A leg of the session in `slot`.
    Session { slot: u32, leg: Leg },
    /// Parked here (or claimed by an allocation whose `Add` has not arrived yet).
    Parked(PortPair),
}

fn set_pair(pairs: &mut Vec<PairUse>, index: usize, what: PairUse) {
    if index >= pairs.len() {
        pairs.resize_with(index + 1, PairUse::default);
    }
    pairs[index] = what;
}

struct Entry {
    id: SessionId,
    relay: RelaySession,
    legs: [PortPair; 2],
    /// The kernel form of each (leg, channel) destination, converted when it changes.
    dest: [[Option<(SocketAddr, RawAddr)>; 2]; 2],
}

impl Entry {
    fn fd(&self, leg: Leg, channel: Channel) -> i32 {
        let pair = &self.legs[leg.index()];
        match channel {
            Channel::Rtp => sys::raw(&pair.rtp),
            Channel::Rtcp => sys::raw(&pair.rtcp),
        }
    }
}

pub(crate) struct Worker {
    /// This worker's index: its list of parked pairs in the pool.
    index: usize,
    ports: Arc<Ports>,
    epoll: Epoll,
    commands: Receiver<Command>,
    wake: Arc<EventFd>,
    /// Set by a sender that has written (or need not write) the eventfd; cleared here before
    /// the queue is drained, so a command queued meanwhile is seen without another wake-up.
    pending: Arc<AtomicBool>,
    session_count: Arc<AtomicUsize>,
    latch: LatchConfig,
    coalesce: Duration,
    /// Datagrams read in the current turn.
    turn_packets: usize,
    /// While set, `pending` stays set and the worker polls the command queue at this time.
    linger_until: Option<Instant>,
    slots: Vec<Option<Entry>>,
    free_slots: Vec<u32>,
    by_id: HashMap<SessionId, u32>,
    /// Indexed by pair ([`Ports::index`]); grown on demand.
    pairs: Vec<PairUse>,
    recv: RecvBatch,
    send: SendBatch,
    /// Sockets that filled a whole batch (edge-triggered: no new edge will come for what is
    /// still queued), served again next turn after the ready ones.
    again: Vec<u64>,
    again_next: Vec<u64>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: usize,
        ports: Arc<Ports>,
        commands: Receiver<Command>,
        wake: Arc<EventFd>,
        pending: Arc<AtomicBool>,
        session_count: Arc<AtomicUsize>,
        latch: LatchConfig,
        coalesce: Duration,
    ) -> io::Result<Self> {
        let epoll = Epoll::new(1024)?;
        epoll.add(wake.raw(), WAKE_TOKEN, false)?;
        Ok(Self {
            index,
            ports,
            epoll,
            commands,
            wake,
            pending,
            session_count,
            latch,
            coalesce,
            turn_packets: 0,
            linger_until: None,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::new(),
            pairs: Vec::new(),
            recv: RecvBatch::new(),
            send: SendBatch::new(),
            again: Vec::new(),
            again_next: Vec::new(),
        })
    }

    /// Runs until a `Shutdown` command or until every command sender is gone. Dropping the
    /// worker closes every socket it still owns (sessions' and parked) and returns the ports to
    /// the pool.
    pub(crate) fn run(mut self) {
        loop {
            let timeout = if !self.again.is_empty() {
                0
            } else if let Some(at) = self.linger_until {
                // Rounded up: waking a little late only delays commands, never spins.
                let left = at.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(1000) as i32
            } else {
                -1
            };
            // Last turn's leftovers are served after this turn's ready sockets.
            std::mem::swap(&mut self.again, &mut self.again_next);
            let ready = match self.epoll.wait(timeout) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "media worker: epoll_wait failed; stopping");
                    return;
                }
            };
            let mut woken = false;
            for i in 0..ready {
                let t = self.epoll.token(i);
                if t == WAKE_TOKEN {
                    woken = true;
                } else {
                    self.handle_readable(t);
                }
            }
            // Bounded: each socket's queue (its receive buffer) bounds how often it comes back.
            for i in 0..self.again_next.len() {
                let t = self.again_next[i];
                self.handle_readable(t);
            }
            self.again_next.clear();
            if woken || self.linger_until.is_some_and(|at| Instant::now() >= at) {
                if self.handle_commands() {
                    return;
                }
            }
            if !self.coalesce.is_zero() && self.turn_packets >= COALESCE_MIN_PACKETS {
                std::thread::sleep(self.coalesce);
            }
            self.turn_packets = 0;
        }
    }

    /// A readable socket: relayed if it is a session's, discarded if it is parked. The token
    /// is looked up afresh, so a token queued before a release or a reuse (later in an epoll
    /// batch, or in `again`) reaches whatever the port is now: reading it is always right.
    fn handle_readable(&mut self, t: u64) {
        let Ok(port) = u16::try_from(t) else {
            return;
        };
        let channel = channel_of(port);
        let Some(index) = self.ports.index(port) else {
            return;
        };
        match self.pairs.get(index) {
            Some(&PairUse::Session { slot, leg }) => self.relay(t, slot as usize, leg, channel),
            Some(PairUse::Parked(pair)) => {
                let fd = match channel {
                    Channel::Rtp => sys::raw(&pair.rtp),
                    Channel::Rtcp => sys::raw(&pair.rtcp),
                };
                self.discard(t, index, fd);
            }
            Some(PairUse::Idle) | None => {}
        }
    }

    fn relay(&mut self, t: u64, slot: usize, leg: Leg, channel: Channel) {
        let Some(entry) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let n = match self.recv.recv(entry.fd(leg, channel)) {
            Ok(n) => n,
            Err(e) => {
                // A socket error is reported once (and cleared); datagrams may still be queued.
                tracing::debug!(error = %e, session = %entry.id, "media receive error");
                self.again.push(t);
                return;
            }
        };
        if n == sys::BATCH {
            self.again.push(t);
        }
        if n == 0 {
            return;
        }
        self.turn_packets += n;
        let now = Instant::now();
        let out = leg.other();
        for i in 0..n {
            let packet = self.recv.get(i);
            let source = match (packet.truncated, packet.source) {
                (false, Some(source)) => source,
                (true, _) => {
                    entry.relay.note_dropped(leg, DropReason::Truncated);
                    continue;
                }
                (false, None) => {
                    entry.relay.note_dropped(leg, DropReason::Malformed);
                    continue;
                }
            };
            if let Verdict::Forward(to) =
                entry
                    .relay
                    .handle_packet(now, leg, channel, source, packet.data)
            {
                let cached = &mut entry.dest[out.index()][channel as usize];
                let raw = match cached {
                    Some((addr, raw)) if *addr == to => raw,
                    _ => &cached.insert((to, RawAddr::new(to))).1,
                };
                self.send.push(i, raw);
            }
        }
        let failed = self.send.flush(entry.fd(out, channel), &self.recv);
        if failed > 0 {
            entry.relay.note_send_failed(leg, failed as u64);
        }
    }

    /// A parked socket is readable: read and discard (stale datagrams of an ended call, or
    /// strays), unless an allocation has claimed the pair. Then the datagrams are the next
    /// session's: they stay queued and the worker notes that it owes the socket a read (it
    /// reads it when the session's `Add` arrives; no new edge will come for them).
    ///
    /// The claim and this read exclude each other through the pair's state: the worker reads
    /// only in `DISCARDING`, entered from `PARKED`, and a claim succeeds only from `PARKED`.
    /// So every datagram discarded here was read before the claim, before the pair's port
    /// could be offered to anyone.
    fn discard(&mut self, t: u64, index: usize, fd: i32) {
        let state = self.ports.state(index);
        for _ in 0..STATE_RETRIES {
            match state.compare_exchange(
                state::PARKED,
                state::DISCARDING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let got = self.recv.recv(fd);
                    state.store(state::PARKED, Ordering::Release);
                    match got {
                        Ok(n) => {
                            self.turn_packets += n;
                            self.ports.note_stale(n);
                            if n == sys::BATCH {
                                self.again.push(t);
                            }
                        }
                        Err(_) => self.again.push(t),
                    }
                    return;
                }
                Err(current) if current & state::CLAIMED != 0 => {
                    if state
                        .compare_exchange(
                            current,
                            current | state::MISSED,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok()
                    {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// Handles queued commands; true on `Shutdown` or when the engine is gone.
    ///
    /// After a turn that found commands the worker lingers for [`COMMAND_LINGER`] with
    /// `pending` still set, so that senders skip the eventfd and what they queue meanwhile is
    /// picked up in one go when the linger ends: under a steady flow of calls a worker wakes
    /// about once per linger for commands instead of once per command. Requests that wait for
    /// an answer write the eventfd anyway.
    fn handle_commands(&mut self) -> bool {
        self.wake.drain();
        let (found, stop) = self.drain_commands();
        if stop {
            return true;
        }
        if found == 0 {
            // Idle: the next sender wakes us. A command queued just before the store saw
            // `pending` set and did not write the eventfd: look once more.
            self.pending.store(false, Ordering::SeqCst);
            let (found, stop) = self.drain_commands();
            if stop {
                return true;
            }
            if found == 0 {
                self.linger_until = None;
                return false;
            }
            self.pending.store(true, Ordering::SeqCst);
        }
        let now = Instant::now();
        self.linger_until = Some(if found >= COMMANDS_PER_TURN {
            now // more may be queued: come back after the next round of packets
        } else {
            now + COMMAND_LINGER
        });
        false
    }

    /// Up to [`COMMANDS_PER_TURN`] queued commands: how many, and whether to stop.
    fn drain_commands(&mut self) -> (usize, bool) {
        for n in 0..COMMANDS_PER_TURN {
            let command = match self.commands.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => return (n, false),
                Err(TryRecvError::Disconnected) => return (n, true),
            };
            match command {
                Command::Add { id, legs } => {
                    if let Err(error) = self.add(id, legs) {
                        // The sockets are closed and the ports freed (the legs were dropped);
                        // later commands for this session find nothing.
                        tracing::warn!(%error, session = %id, "media worker could not poll a session");
                        self.session_count.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Command::SetRemote {
                    id,
                    leg,
                    remote,
                    reply,
                } => {
                    let found = self
                        .entry_mut(id)
                        .map(|e| e.relay.set_remote(leg, remote))
                        .is_some();
                    if let Some(reply) = reply {
                        let _ = reply.send(found);
                    }
                }
                Command::Stats { id, reply } => {
                    let _ = reply.send(self.entry_mut(id).map(|e| e.relay.stats()));
                }
                Command::Release { id, reply } => {
                    let _ = reply.send(self.remove(id));
                }
                Command::Evict { reply } => {
                    self.evict_parked();
                    let _ = reply.send(());
                }
                Command::Shutdown => return (n + 1, true),
            }
        }
        (COMMANDS_PER_TURN, false)
    }

    fn entry_mut(&mut self, id: SessionId) -> Option<&mut Entry> {
        let slot = *self.by_id.get(&id)?;
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Takes a claimed parked pair out of the table for a session. Datagrams the worker left
    /// queued while the pair was claimed are read next turn.
    fn unpark(&mut self, port: u16) -> Option<PortPair> {
        let index = self.ports.index(port)?;
        let slot = self.pairs.get_mut(index)?;
        if !matches!(slot, PairUse::Parked(_)) {
            return None;
        }
        let PairUse::Parked(pair) = std::mem::take(slot) else {
            return None;
        };
        let was = self.ports.state(index).swap(state::IDLE, Ordering::AcqRel);
        if was & state::MISSED != 0 {
            self.again.push(token(port));
            self.again.push(token(port + 1));
        }
        Some(pair)
    }

    fn add(&mut self, id: SessionId, legs: [Acquired; 2]) -> io::Result<()> {
        // Both pairs in hand first: a reused one comes out of the parking table.
        let mut error = None;
        let mut fresh = [false; 2];
        let mut pairs: [Option<PortPair>; 2] = [None, None];
        for (i, acquired) in legs.into_iter().enumerate() {
            match acquired {
                Acquired::Bound(pair) => {
                    fresh[i] = true;
                    pairs[i] = Some(pair);
                }
                Acquired::Parked(Parked { rtp_port, .. }) => match self.unpark(rtp_port) {
                    Some(pair) => pairs[i] = Some(pair),
                    None => error = Some(io::Error::other("claimed pair missing from its worker")),
                },
            }
        }
        // New sockets join the epoll set under their ports' tokens (reused ones are in it).
        'register: for (pair, _) in pairs.iter().zip(fresh).filter(|(_, f)| *f) {
            let Some(pair) = pair else { continue };
            for (fd, port) in pair
                .fds()
                .into_iter()
                .zip([pair.rtp_port(), pair.rtp_port() + 1])
            {
                if error.is_some() {
                    break 'register;
                }
                if let Err(e) = self.epoll.add(fd, token(port), true) {
                    error = Some(e);
                }
            }
        }
        let legs = match (error, pairs) {
            (None, [Some(a), Some(b)]) => [a, b],
            (error, pairs) => {
                // Closing a socket takes it out of the epoll set (no descriptor is duplicated).
                for pair in pairs.into_iter().flatten() {
                    if let Some(index) = self.ports.index(pair.rtp_port()) {
                        set_pair(&mut self.pairs, index, PairUse::Idle);
                    }
                    drop(pair);
                }
                return Err(error.unwrap_or_else(|| io::Error::other("incomplete session")));
            }
        };
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        for (leg, pair) in [Leg::A, Leg::B].into_iter().zip(&legs) {
            if let Some(index) = self.ports.index(pair.rtp_port()) {
                set_pair(&mut self.pairs, index, PairUse::Session { slot, leg });
            }
        }
        // A new relay state: latching, statistics and remote addresses start afresh.
        self.slots[slot as usize] = Some(Entry {
            id,
            relay: RelaySession::new(self.latch.clone()),
            legs,
            dest: [[None; 2]; 2],
        });
        self.by_id.insert(id, slot);
        Ok(())
    }

    /// Ends a session: its pairs are parked (sockets kept open and polled, their datagrams
    /// discarded) or, beyond the cap, closed. Either way its ports stop counting as the
    /// session's before this returns.
    fn remove(&mut self, id: SessionId) -> Option<SessionStats> {
        let slot = self.by_id.remove(&id)?;
        let entry = self.slots.get_mut(slot as usize)?.take()?;
        let stats = entry.relay.stats();
        let now = Instant::now();
        let mut closing: [Option<PortPair>; 2] = [None, None];
        {
            let mut pool = self.ports.lock();
            for (pair, close) in entry.legs.into_iter().zip(&mut closing) {
                let Some(index) = self.ports.index(pair.rtp_port()) else {
                    *close = Some(pair);
                    continue;
                };
                let parked = Parked {
                    rtp_port: pair.rtp_port(),
                    at: now,
                    fds: pair.fds(),
                };
                // The state is set before the pair is listed: an allocation claims only
                // listed pairs, under this lock.
                self.ports
                    .state(index)
                    .store(state::PARKED, Ordering::Release);
                if pool.park(self.index, parked, self.ports.cap) {
                    set_pair(&mut self.pairs, index, PairUse::Parked(pair));
                } else {
                    self.ports
                        .state(index)
                        .store(state::IDLE, Ordering::Release);
                    set_pair(&mut self.pairs, index, PairUse::Idle);
                    *close = Some(pair);
                }
            }
        }
        // Closed outside the lock: returning a lease takes it. No EPOLL_CTL_DEL: closing a
        // socket removes it from the epoll set (no descriptor is ever duplicated).
        drop(closing);
        self.free_slots.push(slot);
        self.session_count.fetch_sub(1, Ordering::Relaxed);
        Some(stats)
    }

    /// Closes every parked pair of this worker that no allocation has claimed.
    fn evict_parked(&mut self) {
        let listed = self.ports.lock().take_parked(self.index);
        for parked in listed {
            let Some(index) = self.ports.index(parked.rtp_port) else {
                continue;
            };
            if let Some(slot) = self.pairs.get_mut(index) {
                if matches!(slot, PairUse::Parked(_)) {
                    self.ports
                        .state(index)
                        .store(state::IDLE, Ordering::Release);
                    drop(std::mem::take(slot)); // closes; the lease frees the ports
                }
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Off the pool's list first, so no allocation can claim a pair closed here; the
        // sessions' and claimed pairs close with the tables.
        self.evict_parked();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_ports_and_never_collide_with_wake() {
        for port in [0u16, 20000, 20001, u16::MAX] {
            assert_ne!(token(port), WAKE_TOKEN);
            assert_eq!(u16::try_from(token(port)), Ok(port));
        }
        assert_eq!(channel_of(20000), Channel::Rtp);
        assert_eq!(channel_of(20001), Channel::Rtcp);
    }
}
