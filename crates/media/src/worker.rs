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

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pool::PortPair;
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
        legs: Box<[PortPair; 2]>,
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
    Shutdown,
}

const WAKE_TOKEN: u64 = u64::MAX;
/// Commands handled per wake-up before the loop turns back to packets.
const COMMANDS_PER_TURN: usize = 256;
const GEN_MASK: u32 = (1 << 30) - 1;
/// How long a worker keeps collecting commands without eventfd wake-ups after a turn that
/// found some (see [`Worker::handle_commands`]). Bounds the delay of a fire-and-forget command
/// under load (a new session's first packets wait that long in its socket buffer at most).
const COMMAND_LINGER: Duration = Duration::from_millis(5);

fn token(slot: u32, generation: u32, leg: Leg, channel: Channel) -> u64 {
    (u64::from(slot) << 32)
        | (u64::from(generation & GEN_MASK) << 2)
        | ((leg.index() as u64) << 1)
        | u64::from(channel == Channel::Rtcp)
}

fn untoken(t: u64) -> (usize, u32, Leg, Channel) {
    let leg = if t & 2 == 0 { Leg::A } else { Leg::B };
    let channel = if t & 1 == 0 {
        Channel::Rtp
    } else {
        Channel::Rtcp
    };
    (
        (t >> 32) as usize,
        ((t as u32) >> 2) & GEN_MASK,
        leg,
        channel,
    )
}

struct Entry {
    id: SessionId,
    relay: RelaySession,
    legs: Box<[PortPair; 2]>,
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

#[derive(Default)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

pub(crate) struct Worker {
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
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    by_id: HashMap<SessionId, u32>,
    recv: RecvBatch,
    send: SendBatch,
    /// Sockets that filled a whole batch (edge-triggered: no new edge will come for what is
    /// still queued), served again next turn after the ready ones.
    again: Vec<u64>,
    again_next: Vec<u64>,
}

impl Worker {
    pub(crate) fn new(
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
            recv: RecvBatch::new(),
            send: SendBatch::new(),
            again: Vec::new(),
            again_next: Vec::new(),
        })
    }

    /// Runs until a `Shutdown` command or until every command sender is gone. Dropping the
    /// worker closes every socket it still owns and returns the ports to the pool.
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

    fn handle_readable(&mut self, t: u64) {
        let (slot, generation, leg, channel) = untoken(t);
        let Some(entry) = self
            .slots
            .get_mut(slot)
            .filter(|s| s.generation & GEN_MASK == generation)
            .and_then(|s| s.entry.as_mut())
        else {
            return; // released earlier in this turn
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
                Command::Shutdown => return (n + 1, true),
            }
        }
        (COMMANDS_PER_TURN, false)
    }

    fn entry_mut(&mut self, id: SessionId) -> Option<&mut Entry> {
        let slot = *self.by_id.get(&id)?;
        self.slots.get_mut(slot as usize)?.entry.as_mut()
    }

    fn add(&mut self, id: SessionId, legs: Box<[PortPair; 2]>) -> io::Result<()> {
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let entry = Entry {
            id,
            relay: RelaySession::new(self.latch.clone()),
            legs,
            dest: [[None; 2]; 2],
        };
        let generation = self.slots[slot as usize].generation;
        let mut added = Vec::with_capacity(4);
        for leg in [Leg::A, Leg::B] {
            for channel in [Channel::Rtp, Channel::Rtcp] {
                let fd = entry.fd(leg, channel);
                if let Err(e) = self
                    .epoll
                    .add(fd, token(slot, generation, leg, channel), true)
                {
                    for fd in added {
                        let _ = self.epoll.delete(fd);
                    }
                    self.free_slots.push(slot);
                    return Err(e);
                }
                added.push(fd);
            }
        }
        self.slots[slot as usize].entry = Some(entry);
        self.by_id.insert(id, slot);
        Ok(())
    }

    fn remove(&mut self, id: SessionId) -> Option<SessionStats> {
        let slot = self.by_id.remove(&id)?;
        let s = self.slots.get_mut(slot as usize)?;
        let entry = s.entry.take()?;
        // Stale tokens of this slot (later in this epoll batch) no longer match.
        s.generation = s.generation.wrapping_add(1);
        let stats = entry.relay.stats();
        // Closing a socket removes it from the epoll set (no descriptor is ever duplicated),
        // so no EPOLL_CTL_DEL: four system calls fewer per session.
        drop(entry); // closes the sockets, then returns the ports
        self.free_slots.push(slot);
        self.session_count.fetch_sub(1, Ordering::Relaxed);
        Some(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_collide_with_wake() {
        for (slot, generation) in [(0, 0), (7, 3), (u32::MAX - 1, GEN_MASK)] {
            for leg in [Leg::A, Leg::B] {
                for channel in [Channel::Rtp, Channel::Rtcp] {
                    let t = token(slot, generation, leg, channel);
                    assert_ne!(t, WAKE_TOKEN);
                    assert_eq!(untoken(t), (slot as usize, generation, leg, channel));
                }
            }
        }
    }
}
