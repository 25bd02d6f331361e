//! The relay's port range: even RTP ports, each with RTCP on the odd port above it.
//!
//! A pair of the range is in one of three states:
//! - **free**: no socket; in the free queue, handed out least recently used first, so a late
//!   packet of an ended call is unlikely to reach the next call on the same port;
//! - **leased to a session**: its two sockets are bound and polled by the session's worker;
//! - **parked**: the session ended but its sockets stay open, bound and registered with the
//!   worker's epoll (whatever arrives is read and discarded as stale), so that a later session
//!   on the same worker can take them without creating, binding and closing sockets (the kernel's
//!   socket set-up and tear-down dominate a call's relay cost). A pair is reused only after it has
//!   been parked for [`Ports::cooling`] (a late packet of the ended call must not latch the
//!   next one), unless the free queue has run out.
//!
//! Parked pairs still count as leased from the range: [`PortPool::leased`] covers sessions'
//! pairs, parked pairs and pairs on their way to a worker; [`Ports::session_ports`] leaves the
//! parked ones out.
//!
//! Who owns what: the sockets of a parked pair belong to the worker that parked it (its table,
//! its epoll registration); the pool holds only their description ([`Parked`]). An allocating
//! thread claims a parked pair under the pool lock and through the pair's [`PairState`], then
//! drains its queued datagrams and hands it back to the same worker with the new session.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sys;
use crate::Error;

/// A parked pair as the pool knows it; the sockets themselves stay with the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parked {
    pub(crate) rtp_port: u16,
    /// When the session using it ended.
    pub(crate) at: Instant,
    /// RTP and RTCP descriptors, for draining by the thread that claims the pair. They stay
    /// open while the pair is listed here or claimed: the owning worker closes a parked pair
    /// only after taking it off the list under the lock (eviction, shutdown).
    pub(crate) fds: [RawFd; 2],
}

/// What [`PortPool::pick`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// A parked pair of the requested worker, now claimed.
    Parked(Parked),
    /// A free port pair to bind, now leased.
    Free(u16),
}

/// Why [`PortPool::choose_worker`] found no worker that can take a session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Shortage {
    /// Free and parked pairs together would do, but no single worker has enough of them: the
    /// workers must close their parked pairs (their ports go back to the free queue).
    Scattered,
    /// Fewer than two pairs are free or parked.
    Exhausted,
}

/// The bookkeeping of the range; see the module documentation.
#[derive(Debug)]
pub(crate) struct PortPool {
    free: VecDeque<u16>,
    /// Pairs out of the free queue: sessions', parked and in transit.
    leased: usize,
    /// Per worker, parked pairs in the order they were parked (oldest first).
    parked: Vec<VecDeque<Parked>>,
    parked_total: usize,
    min: u16,
    max: u16,
}

impl PortPool {
    pub(crate) fn new(min: u16, max: u16, workers: usize) -> Result<Self, Error> {
        let first = min
            .checked_add(min % 2)
            .ok_or(Error::Config("port_min too high"))?;
        let free: VecDeque<u16> = (first..max).step_by(2).collect();
        if free.len() < 2 {
            return Err(Error::Config(
                "the port range holds fewer than two RTP/RTCP pairs",
            ));
        }
        Ok(Self {
            free,
            leased: 0,
            parked: (0..workers.max(1)).map(|_| VecDeque::new()).collect(),
            parked_total: 0,
            min,
            max,
        })
    }

    /// The first RTP port of the range (even).
    fn first(&self) -> u16 {
        self.min + self.min % 2
    }

    pub(crate) fn free_len(&self) -> usize {
        self.free.len()
    }

    pub(crate) fn parked_total(&self) -> usize {
        self.parked_total
    }

    pub(crate) fn parked_on(&self, worker: usize) -> usize {
        self.parked.get(worker).map_or(0, VecDeque::len)
    }

    pub(crate) fn no_free_ports(&self) -> Error {
        Error::NoFreePorts {
            min: self.min,
            max: self.max,
        }
    }

    /// The worker a new session goes to: `preferred` (the least busy) if its parked pairs and
    /// the free queue give two pairs, else the worker with the most parked pairs if that does.
    pub(crate) fn choose_worker(&self, preferred: usize) -> Result<usize, Shortage> {
        let enough = |w: usize| self.parked_on(w) + self.free.len() >= 2;
        if enough(preferred) {
            return Ok(preferred);
        }
        if let Some(w) = (0..self.parked.len())
            .filter(|&w| enough(w))
            .max_by_key(|&w| self.parked_on(w))
        {
            return Ok(w);
        }
        if self.parked_total + self.free.len() >= 2 {
            Err(Shortage::Scattered)
        } else {
            Err(Shortage::Exhausted)
        }
    }

    /// One pair for a session on `worker`, in this order: a parked pair of that worker that has
    /// cooled (oldest first); a free port (when `use_free`); any parked pair of that worker,
    /// oldest first, cooled or not (the range has run out). `claim` takes a parked pair for
    /// good or refuses it (its worker is reading it right now); a refused pair stays parked.
    pub(crate) fn pick(
        &mut self,
        worker: usize,
        now: Instant,
        cooling: Duration,
        use_free: bool,
        mut claim: impl FnMut(&Parked) -> bool,
    ) -> Option<Pick> {
        let cooled = |p: &Parked| now.saturating_duration_since(p.at) >= cooling;
        let parked = self.parked.get_mut(worker)?;
        let mut found = None;
        for (i, p) in parked.iter().enumerate() {
            if !cooled(p) {
                break; // oldest first: the rest are younger
            }
            if claim(p) {
                found = Some(i);
                break;
            }
        }
        if found.is_none() {
            if use_free {
                if let Some(port) = self.free.pop_front() {
                    self.leased += 1;
                    return Some(Pick::Free(port));
                }
            }
            found = parked.iter().position(&mut claim);
        }
        let taken = parked.remove(found?)?;
        self.parked_total -= 1;
        Some(Pick::Parked(taken))
    }

    /// Parks a pair of `worker` unless `cap` pairs are parked already (then it is to be closed).
    pub(crate) fn park(&mut self, worker: usize, pair: Parked, cap: usize) -> bool {
        let Some(list) = self.parked.get_mut(worker) else {
            return false;
        };
        if self.parked_total >= cap {
            return false;
        }
        // Usually at the back; a pair handed back after a failed allocation keeps its age.
        let at = list.partition_point(|p| p.at <= pair.at);
        list.insert(at, pair);
        self.parked_total += 1;
        true
    }

    /// Takes every parked pair of `worker` off the list (to be closed by the worker).
    pub(crate) fn take_parked(&mut self, worker: usize) -> Vec<Parked> {
        let Some(list) = self.parked.get_mut(worker) else {
            return Vec::new();
        };
        self.parked_total -= list.len();
        list.drain(..).collect()
    }
}

/// A parked pair's claim state, shared by its worker and allocating threads (no lock per
/// stale datagram). Values of [`PairState`]'s atomic.
pub(crate) mod state {
    /// In a session, in transit or unused: nobody reads it as parked.
    pub(crate) const IDLE: u8 = 0;
    /// Parked: the worker discards what arrives; an allocation may claim it.
    pub(crate) const PARKED: u8 = 1;
    /// The worker is reading and discarding (claims wait for the next pair).
    pub(crate) const DISCARDING: u8 = 2;
    /// Claimed by an allocation: what arrives now belongs to the next session.
    pub(crate) const CLAIMED: u8 = 4;
    /// With `CLAIMED`: the worker saw the socket readable and left the datagrams queued.
    pub(crate) const MISSED: u8 = 8;
}

/// One atomic per pair of the range; see [`state`].
pub(crate) type PairState = AtomicU8;

/// The port range shared by the engine (allocation) and its workers (release, parking).
#[derive(Debug)]
pub(crate) struct Ports {
    pool: Mutex<PortPool>,
    states: Box<[PairState]>,
    first: u16,
    /// How long a parked pair waits before it is reused while free ports remain.
    pub(crate) cooling: Duration,
    /// Most pairs parked at once; beyond that a released pair is closed.
    pub(crate) cap: usize,
    /// Datagrams that reached a parked pair and were discarded.
    stale: AtomicU64,
}

impl Ports {
    pub(crate) fn new(pool: PortPool, cooling: Duration, cap: usize) -> Self {
        let first = pool.first();
        let pairs = usize::from(pool.max.saturating_sub(first)) / 2 + 1;
        Self {
            pool: Mutex::new(pool),
            states: (0..pairs).map(|_| PairState::new(state::IDLE)).collect(),
            first,
            cooling,
            cap,
            stale: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, PortPool> {
        // The pool's invariants hold between statements; a panic elsewhere cannot break them.
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The index of the pair a port (RTP or RTCP) of the range belongs to.
    pub(crate) fn index(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.first)?) / 2;
        (i < self.states.len()).then_some(i)
    }

    pub(crate) fn state(&self, index: usize) -> &PairState {
        &self.states[index]
    }

    /// Claims a parked pair for an allocation; fails while its worker is discarding from it.
    fn claim(&self, parked: &Parked) -> bool {
        self.index(parked.rtp_port).is_some_and(|i| {
            self.states[i]
                .compare_exchange(
                    state::PARKED,
                    state::CLAIMED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        })
    }

    /// Ports (RTP and RTCP) of sessions: leased and not parked.
    pub(crate) fn session_ports(&self) -> usize {
        let pool = self.lock();
        (pool.leased - pool.parked_total) * 2
    }

    pub(crate) fn parked_pairs(&self) -> usize {
        self.lock().parked_total()
    }

    pub(crate) fn note_stale(&self, datagrams: usize) {
        if datagrams > 0 {
            self.stale.fetch_add(datagrams as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn stale(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }
}

/// A leased pair; the ports go back to the free queue when this is dropped.
#[derive(Debug)]
struct PortLease {
    ports: Arc<Ports>,
    rtp_port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut pool = self.ports.lock();
        pool.leased -= 1;
        pool.free.push_back(self.rtp_port);
    }
}

/// A bound RTP/RTCP socket pair. Field order matters: the sockets close before the lease
/// returns their ports to the pool. Never dropped under the pool lock (the lease takes it).
#[derive(Debug)]
pub(crate) struct PortPair {
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: UdpSocket,
    lease: PortLease,
}

impl PortPair {
    pub(crate) fn rtp_port(&self) -> u16 {
        self.lease.rtp_port
    }

    pub(crate) fn fds(&self) -> [RawFd; 2] {
        [sys::raw(&self.rtp), sys::raw(&self.rtcp)]
    }
}

/// One leg's pair for a new session.
#[derive(Debug)]
pub(crate) enum Acquired {
    /// Freshly bound; the worker registers it.
    Bound(PortPair),
    /// Parked on the session's worker, claimed and drained.
    Parked(Parked),
}

impl Acquired {
    pub(crate) fn rtp_port(&self) -> u16 {
        match self {
            Self::Bound(pair) => pair.rtp_port(),
            Self::Parked(p) => p.rtp_port,
        }
    }
}

/// One pair for a session on `worker` (see [`PortPool::pick`] for the order). Free ports that
/// another process holds are skipped (and go to the back of the queue); each is tried at most
/// once. A reused pair must then go through [`drain`] before its port is handed out.
pub(crate) fn acquire(
    ports: &Arc<Ports>,
    worker: usize,
    ip: IpAddr,
    now: Instant,
) -> Result<Acquired, Error> {
    let free = ports.lock().free_len();
    // Set when the process has no descriptor left for new sockets: parked pairs only.
    let mut out_of_fds: Option<io::Error> = None;
    for attempt in 0..=free {
        let use_free = attempt < free && out_of_fds.is_none();
        let pick = ports
            .lock()
            .pick(worker, now, ports.cooling, use_free, |p| ports.claim(p));
        match pick {
            None => break,
            Some(Pick::Parked(parked)) => return Ok(Acquired::Parked(parked)),
            Some(Pick::Free(rtp_port)) => {
                let lease = PortLease {
                    ports: Arc::clone(ports),
                    rtp_port,
                };
                let bind = |port: u16| sys::bind_udp(SocketAddr::new(ip, port));
                match bind(rtp_port).and_then(|rtp| Ok((rtp, bind(rtp_port + 1)?))) {
                    Ok((rtp, rtcp)) => return Ok(Acquired::Bound(PortPair { rtp, rtcp, lease })),
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                    Err(e) if sys::out_of_descriptors(&e) => out_of_fds = Some(e),
                    Err(e) => return Err(Error::Io(e)),
                }
            }
        }
    }
    Err(match out_of_fds {
        Some(e) => Error::Io(e),
        None => ports.lock().no_free_ports(),
    })
}

/// Discards whatever the sockets of the session's reused pairs queued while parked (what the
/// worker had not read yet when they were claimed). Called before the ports can reach any
/// SDP: what arrives afterwards is the new session's.
pub(crate) fn drain(ports: &Ports, legs: &[Acquired; 2]) {
    let mut fds = [-1; 4];
    let mut n = 0;
    for leg in legs {
        if let Acquired::Parked(parked) = leg {
            fds[n..n + 2].copy_from_slice(&parked.fds);
            n += 2;
        }
    }
    if n > 0 {
        ports.note_stale(sys::discard_queued_all(&fds[..n]));
    }
}

/// Undoes [`acquire`] when the session cannot be completed: a bound pair is closed, a claimed
/// parked pair goes back to its worker's list with its age.
pub(crate) fn give_back(ports: &Ports, worker: usize, acquired: Acquired) {
    match acquired {
        Acquired::Bound(pair) => drop(pair),
        Acquired::Parked(parked) => {
            let mut pool = ports.lock();
            // Cap and list as when it was parked: it was taken off a moment ago.
            if pool.park(worker, parked, usize::MAX) {
                if let Some(i) = ports.index(parked.rtp_port) {
                    ports.states[i].store(state::PARKED, Ordering::Release);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(rtp_port: u16, at: Instant) -> Parked {
        Parked {
            rtp_port,
            at,
            fds: [-1, -1],
        }
    }

    #[test]
    fn pairs_are_even_and_inside_the_range() {
        let p = PortPool::new(20001, 20010, 1).unwrap();
        assert_eq!(Vec::from(p.free), [20002, 20004, 20006, 20008]);
        assert!(PortPool::new(20000, 20002, 1).is_err());
        assert!(PortPool::new(65535, 65535, 1).is_err());
    }

    /// Leases every free pair (as sessions would) and parks the given ones at `at`.
    fn pool_with_parked(workers: usize, parked_ports: &[(usize, u16, Instant)]) -> PortPool {
        let mut pool = PortPool::new(20000, 20009, workers).unwrap(); // 5 pairs
        for &(worker, port, at) in parked_ports {
            let i = pool.free.iter().position(|&p| p == port).unwrap();
            pool.free.remove(i);
            pool.leased += 1;
            assert!(pool.park(worker, parked(port, at), 4096));
        }
        pool
    }

    #[test]
    fn cooled_parked_pairs_come_first_then_free_ports_then_the_rest_oldest_first() {
        let t0 = Instant::now();
        let cooling = Duration::from_secs(2);
        let mut pool = pool_with_parked(1, &[(0, 20000, t0), (0, 20002, t0 + cooling)]);
        let now = t0 + cooling + Duration::from_millis(1);
        let take = |pool: &mut PortPool| pool.pick(0, now, cooling, true, |_| true);
        // 20000 has cooled, 20002 has not (1 ms to go).
        assert_eq!(take(&mut pool), Some(Pick::Parked(parked(20000, t0))));
        // While free ports remain, the young pair stays parked.
        for port in [20004, 20006, 20008] {
            assert_eq!(take(&mut pool), Some(Pick::Free(port)));
        }
        assert_eq!((pool.parked_total, pool.leased), (1, 5));
        // Out of free ports: the young pair is reused rather than failing.
        assert_eq!(
            take(&mut pool),
            Some(Pick::Parked(parked(20002, t0 + cooling)))
        );
        assert_eq!(take(&mut pool), None);
        assert_eq!((pool.parked_total, pool.leased), (0, 5));
    }

    #[test]
    fn exhaustion_takes_parked_pairs_oldest_first() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut pool = pool_with_parked(
            1,
            &[
                (0, 20000, t0),
                (0, 20002, t0 + Duration::from_millis(5)),
                (0, 20004, t0 + Duration::from_millis(9)),
            ],
        );
        let now = t0 + Duration::from_millis(10);
        assert_eq!(
            pool.pick(0, now, hour, true, |_| true),
            Some(Pick::Free(20006))
        );
        assert_eq!(
            pool.pick(0, now, hour, false, |_| true),
            Some(Pick::Parked(parked(20000, t0))),
            "free ports skipped (held by others): parked ones are next"
        );
        assert_eq!(
            pool.pick(0, now, hour, true, |_| true),
            Some(Pick::Free(20008))
        );
        let ports: Vec<_> = std::iter::from_fn(|| pool.pick(0, now, hour, true, |_| true))
            .map(|p| match p {
                Pick::Parked(p) => p.rtp_port,
                Pick::Free(p) => panic!("free {p}"),
            })
            .collect();
        assert_eq!(ports, [20002, 20004]);
    }

    #[test]
    fn a_pair_being_read_by_its_worker_is_skipped_not_waited_for() {
        let t0 = Instant::now();
        let mut pool = pool_with_parked(1, &[(0, 20000, t0), (0, 20002, t0)]);
        let now = t0 + Duration::from_secs(5);
        let busy = |p: &Parked| p.rtp_port != 20000;
        assert_eq!(
            pool.pick(0, now, Duration::ZERO, true, busy),
            Some(Pick::Parked(parked(20002, t0)))
        );
        // The only other cooled pair is busy: a free port rather than a wait.
        assert_eq!(
            pool.pick(0, now, Duration::ZERO, true, busy),
            Some(Pick::Free(20004))
        );
        assert_eq!(pool.parked_on(0), 1);
    }

    #[test]
    fn parked_pairs_serve_only_their_own_worker_and_the_cap_holds() {
        let t0 = Instant::now();
        let mut pool = pool_with_parked(2, &[(1, 20000, t0)]);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            pool.pick(0, later, Duration::ZERO, true, |_| true),
            Some(Pick::Free(20002))
        );
        assert_eq!(pool.parked_on(1), 1);
        // Cap: one parked already, a cap of one refuses the next.
        assert!(!pool.park(0, parked(20002, later), 1));
        assert!(pool.park(0, parked(20002, later), 2));
        assert_eq!(pool.parked_total(), 2);
        let taken = pool.take_parked(1);
        assert_eq!(taken, [parked(20000, t0)]);
        assert_eq!((pool.parked_total(), pool.parked_on(0)), (1, 1));
    }

    #[test]
    fn the_worker_is_chosen_where_two_pairs_can_be_had() {
        let t0 = Instant::now();
        // 5 pairs: 3 parked on worker 1, 2 on worker 0, none free.
        let mut pool = pool_with_parked(
            3,
            &[
                (1, 20000, t0),
                (1, 20002, t0),
                (1, 20004, t0),
                (0, 20006, t0),
                (0, 20008, t0),
            ],
        );
        assert_eq!(pool.choose_worker(0), Ok(0));
        assert_eq!(pool.choose_worker(2), Ok(1), "the one with most parked");
        // One parked pair on each of two workers and nothing free: scattered.
        let _ = pool.take_parked(1);
        pool.parked[0].pop_back();
        pool.parked_total -= 1;
        pool.park(2, parked(20008, t0), 10);
        assert_eq!(pool.choose_worker(0), Err(Shortage::Scattered));
        let _ = pool.take_parked(2);
        assert_eq!(pool.choose_worker(0), Err(Shortage::Exhausted));
    }
}
