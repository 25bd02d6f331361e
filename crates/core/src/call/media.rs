//! What the call core needs from the media plane: the [`MediaRelay`] trait, which the binary
//! implements over `confab-media` (core never depends on it), and [`FakeMediaRelay`], an
//! in-memory implementation for tests that counts allocations so a test can assert that no call
//! leaks relay ports.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Identifies one allocation (one call's relay session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaId(pub u64);

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// The two sides of a call: `A` faces the caller, `B` the callee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    A,
    B,
}

impl Leg {
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "a",
            Self::B => "b",
        })
    }
}

/// Relay ports reserved for one call. For stream `i` (the i-th m-line), `a_ports[i]` is the RTP
/// port leg A sends to and `b_ports[i]` the one leg B sends to; RTCP uses the port above each
/// (RFC 3550 §11), unless the phones multiplex it (RFC 5761).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaAllocation {
    pub id: MediaId,
    /// The address both phones send to (the relay's public address).
    pub relay_ip: IpAddr,
    pub a_ports: Vec<u16>,
    pub b_ports: Vec<u16>,
}

/// What one leg sent to the relay, as the relay measured it (and as RTCP reported it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegMediaStats {
    /// RTP and RTCP packets received from this leg.
    pub packets: u64,
    pub bytes: u64,
    /// RTP packets lost on the way from this leg (RFC 3550 A.3; negative with duplicates).
    pub lost: i64,
    /// Interarrival jitter of this leg's RTP (RFC 3550 A.8), if measured.
    pub jitter: Option<Duration>,
    /// When the last packet from this leg arrived (dead-media detection).
    pub last_packet: Option<Instant>,
}

/// Statistics of one allocation: `a` is what the caller sent (the A→B direction), `b` what the
/// callee sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaStats {
    pub a: LegMediaStats,
    pub b: LegMediaStats,
}

impl MediaStats {
    /// The latest packet from either leg.
    pub fn last_packet(&self) -> Option<Instant> {
        self.a.last_packet.max(self.b.last_packet)
    }
}

/// Why the relay could not allocate. Calls that need media then fail with 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// No free ports (or the configured session limit is reached).
    #[error("relay ports exhausted")]
    Exhausted,
    /// The relay is not running or refused for another reason.
    #[error("media relay unavailable: {0}")]
    Unavailable(String),
}

/// The media relay as the call core drives it. Implementations must be quick and must not block
/// on IO for long: they are called with a call's lock held (the only call-out under a lock; see
/// the lock order in [`crate::call`]).
pub trait MediaRelay: Send + Sync {
    /// Reserve relay ports for one call: for each of `streams` m-lines, an RTP/RTCP port pair
    /// facing leg A and one facing leg B.
    fn allocate(&self, streams: usize) -> Result<MediaAllocation, MediaError>;
    /// Where leg `leg` said (in its SDP) it receives stream `stream`. The relay latches to the
    /// real source of the packets anyway (symmetric RTP, for phones behind NAT).
    fn set_remote(
        &self,
        id: MediaId,
        leg: Leg,
        stream: usize,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
    );
    /// Packets, bytes, loss and jitter per direction, and the last packet per leg.
    fn stats(&self, id: MediaId) -> Option<MediaStats>;
    /// Frees the ports and returns the final statistics. The call core calls it exactly once
    /// per allocation, however the call ends.
    fn release(&self, id: MediaId) -> Option<MediaStats>;
    /// Like [`release`](Self::release), but without waiting for the final statistics: the
    /// ports are freed shortly after (at the latest after the next [`flush`](Self::flush)).
    /// True when the relay does this; the call core then collects the statistics with
    /// [`finish_release`](Self::finish_release) when it hands out the call's last record.
    /// False (the default): the call core calls `release` instead.
    fn release_later(&self, _id: MediaId) -> bool {
        false
    }
    /// The final statistics of a [`release_later`](Self::release_later); called exactly once
    /// per such release. May wait briefly for the relay to have finished.
    fn finish_release(&self, _id: MediaId) -> Option<MediaStats> {
        None
    }
    /// The call core is done with one message or timer turn: a relay that defers the wake-up
    /// of its workers for `allocate` and `set_remote` delivers what it deferred now, so that
    /// all the changes of one message cost one wake-up. The call core calls it after every
    /// entry point that may have touched media.
    fn flush(&self) {}
}

/// Calls [`MediaRelay::flush`] when dropped (after any shard lock taken later is released).
pub(crate) struct FlushOnDrop<'a>(pub(crate) &'a dyn MediaRelay);

impl Drop for FlushOnDrop<'_> {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// One remote address as the fake relay recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeRemote {
    pub leg: Leg,
    pub stream: usize,
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
}

#[derive(Debug, Default)]
struct FakeSession {
    streams: usize,
    remotes: Vec<FakeRemote>,
    stats: MediaStats,
}

/// An in-memory [`MediaRelay`] for tests: hands out ports from `relay_ip`, remembers the remote
/// addresses it was given, reports statistics a test sets, and counts live allocations.
#[derive(Debug)]
pub struct FakeMediaRelay {
    relay_ip: IpAddr,
    next: AtomicU64,
    sessions: Mutex<HashMap<MediaId, FakeSession>>,
    fail: Mutex<Option<MediaError>>,
    allocations: AtomicU64,
    releases: AtomicU64,
}

impl FakeMediaRelay {
    pub fn new(relay_ip: IpAddr) -> Self {
        Self {
            relay_ip,
            next: AtomicU64::new(1),
            sessions: Mutex::new(HashMap::new()),
            fail: Mutex::new(None),
            allocations: AtomicU64::new(0),
            releases: AtomicU64::new(0),
        }
    }

    /// Allocations not yet released.
    pub fn live(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Allocations made since creation.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }

    /// Releases since creation.
    pub fn releases(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }

    /// The live allocation ids.
    pub fn ids(&self) -> Vec<MediaId> {
        let mut v: Vec<MediaId> = self.sessions.lock().keys().copied().collect();
        v.sort();
        v
    }

    /// Every remote address set on `id`, in order.
    pub fn remotes(&self, id: MediaId) -> Vec<FakeRemote> {
        self.sessions
            .lock()
            .get(&id)
            .map(|s| s.remotes.clone())
            .unwrap_or_default()
    }

    /// Makes the next allocations fail with `error` (`None`: succeed again).
    pub fn fail_with(&self, error: Option<MediaError>) {
        *self.fail.lock() = error;
    }

    /// Sets what `stats` reports for `id` (e.g. the last packet instants).
    pub fn set_stats(&self, id: MediaId, stats: MediaStats) {
        if let Some(s) = self.sessions.lock().get_mut(&id) {
            s.stats = stats;
        }
    }
}

impl MediaRelay for FakeMediaRelay {
    fn allocate(&self, streams: usize) -> Result<MediaAllocation, MediaError> {
        if let Some(e) = self.fail.lock().clone() {
            return Err(e);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = MediaId(n);
        // Ports: 20000 + 100*n + 4*i (A) and +2 (B); distinct per call and stream for tests.
        let base = 20_000u64 + (n % 400) * 100;
        let a_ports = (0..streams).map(|i| (base + 4 * i as u64) as u16).collect();
        let b_ports = (0..streams)
            .map(|i| (base + 4 * i as u64 + 2) as u16)
            .collect();
        self.sessions.lock().insert(
            id,
            FakeSession {
                streams,
                ..FakeSession::default()
            },
        );
        self.allocations.fetch_add(1, Ordering::Relaxed);
        Ok(MediaAllocation {
            id,
            relay_ip: self.relay_ip,
            a_ports,
            b_ports,
        })
    }

    fn set_remote(
        &self,
        id: MediaId,
        leg: Leg,
        stream: usize,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
    ) {
        if let Some(s) = self.sessions.lock().get_mut(&id) {
            if stream < s.streams {
                s.remotes.push(FakeRemote {
                    leg,
                    stream,
                    rtp,
                    rtcp,
                });
            }
        }
    }

    fn stats(&self, id: MediaId) -> Option<MediaStats> {
        self.sessions.lock().get(&id).map(|s| s.stats.clone())
    }

    fn release(&self, id: MediaId) -> Option<MediaStats> {
        let s = self.sessions.lock().remove(&id)?;
        self.releases.fetch_add(1, Ordering::Relaxed);
        Some(s.stats)
    }
}
