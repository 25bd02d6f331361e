//! The relay's control API: start worker threads, allocate and release sessions.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::pool::{self, Acquired, PortPool, Ports, Shortage};
use crate::relay::{LatchConfig, Leg, RemoteMedia, SessionStats};
use crate::sys::{self, EventFd};
use crate::worker::{Command, Worker};
use crate::Error;

/// How the relay binds, advertises and spreads its work.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// Address the relay sockets bind to.
    pub bind_ip: IpAddr,
    /// Address written into SDP (`c=`) for the relay's ports; differs from `bind_ip` behind a
    /// 1:1 NAT or when binding the wildcard address.
    pub advertise_ip: IpAddr,
    /// Inclusive port range; RTP takes the even ports, RTCP the odd port above each.
    pub port_min: u16,
    pub port_max: u16,
    /// Worker threads; 0 means one per available core.
    pub workers: usize,
    /// Commands that may wait for each worker before callers block.
    pub command_queue: usize,
    pub latch: LatchConfig,
    /// Under load, a worker that has just relayed at least [`COALESCE_MIN_PACKETS`] datagrams
    /// pauses this long before polling again, so that the next turn finds many datagrams
    /// queued instead of waking for a few (a wake-up costs more than a datagram on a virtual
    /// machine). Adds at most this much latency, and only under load; zero turns it off.
    /// Default 200 µs: 1 % of a 20 ms packet interval.
    pub coalesce: Duration,
    /// A released session's port pairs are parked: their sockets stay open and bound (and
    /// polled: whatever reaches them is discarded, see [`MediaEngine::stale_datagrams`]) so
    /// that a later session reuses them instead of creating and binding new sockets, the
    /// costliest part of a call's relay set-up and tear-down. A parked pair is reused only
    /// after this long, so that a late packet of the ended call does not reach (and latch) the
    /// next one, unless no free port is left. Default 2 s.
    pub park_cooling: Duration,
    /// Most port pairs parked at once (over all workers); a release beyond that closes the
    /// sockets as without parking. Zero turns parking off. Default 4,096 pairs (8,192 open
    /// sockets). Lowered at start to an eighth of the process's soft `RLIMIT_NOFILE` (a quarter
    /// of the descriptors), so that parked sockets never starve SIP connections or the
    /// database; if new sockets still fail for lack of descriptors, parked pairs are reused
    /// (or closed) instead.
    pub park_max_pairs: usize,
}

/// See [`MediaConfig::coalesce`].
pub const COALESCE_MIN_PACKETS: usize = 16;

impl Default for MediaConfig {
    fn default() -> Self {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Self {
            bind_ip: localhost,
            advertise_ip: localhost,
            port_min: 20000,
            port_max: 29999,
            workers: 0,
            command_queue: 1024,
            latch: LatchConfig::default(),
            coalesce: Duration::from_micros(200),
            park_cooling: Duration::from_secs(2),
            park_max_pairs: 4096,
        }
    }
}

/// Names a relayed session; carries the index of the worker that owns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    fn worker(self) -> usize {
        (self.0 & 0xff) as usize
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}.{}", self.0 >> 8, self.0 & 0xff)
    }
}

/// The RTP/RTCP relay: worker threads, each an epoll loop owning the sockets of its sessions.
///
/// Calling contract: every method is synchronous, may be called from any thread (clone the
/// engine freely: clones share the workers), and waits only for the owning worker to reach its
/// next batch boundary (micro- to milliseconds). The engine stops when the last clone and the
/// last [`MediaSession`] are dropped; stopping closes every socket (parked ones too) and frees
/// every port.
///
/// Port pairs of ended sessions are parked for reuse (see [`MediaConfig::park_cooling`]).
/// A parked pair stays with the worker that polled its session and is reused only by a session
/// placed on that worker, so its epoll registration never moves; when the free ports run out
/// and no single worker has two pairs to give, the workers close their parked pairs first.
#[derive(Clone)]
pub struct MediaEngine {
    inner: Arc<Inner>,
}

struct WorkerHandle {
    commands: SyncSender<Command>,
    wake: Arc<EventFd>,
    /// True while the worker has a wake-up coming (see [`MediaEngine::post`]).
    pending: Arc<AtomicBool>,
    /// True when commands were queued without a wake-up ([`MediaEngine::flush`] owes one).
    deferred: AtomicBool,
    sessions: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

struct Inner {
    config: MediaConfig,
    ports: Arc<Ports>,
    workers: Vec<WorkerHandle>,
    next_id: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.commands.send(Command::Shutdown);
            w.wake.wake();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaEngine")
            .field("bind_ip", &self.inner.config.bind_ip)
            .field(
                "ports",
                &(self.inner.config.port_min..=self.inner.config.port_max),
            )
            .field("workers", &self.inner.workers.len())
            .finish()
    }
}

impl MediaEngine {
    /// Checks the configuration and starts the workers.
    pub fn start(config: MediaConfig) -> Result<Self, Error> {
        if config.bind_ip.is_ipv4() != config.advertise_ip.is_ipv4()
            && !config.bind_ip.is_unspecified()
        {
            return Err(Error::Config(
                "bind_ip and advertise_ip are of different families",
            ));
        }
        let count = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(256);
        // Parked sockets must not take the descriptors that SIP connections, the database
        // and live calls need: at most an eighth of the soft limit (two per pair).
        let park_cap = sys::open_files_limit().map_or(config.park_max_pairs, |limit| {
            config
                .park_max_pairs
                .min(usize::try_from(limit / 8).unwrap_or(usize::MAX))
        });
        let ports = Arc::new(Ports::new(
            PortPool::new(config.port_min, config.port_max, count)?,
            config.park_cooling,
            park_cap,
        ));
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let (commands, receiver) = mpsc::sync_channel(config.command_queue.max(1));
            let wake = Arc::new(EventFd::new()?);
            let sessions = Arc::new(AtomicUsize::new(0));
            let pending = Arc::new(AtomicBool::new(false));
            let worker = Worker::new(
                i,
                Arc::clone(&ports),
                receiver,
                Arc::clone(&wake),
                Arc::clone(&pending),
                Arc::clone(&sessions),
                config.latch.clone(),
                config.coalesce,
            )?;
            let thread = std::thread::Builder::new()
                .name(format!("confab-media-{i}"))
                .spawn(move || worker.run())?;
            workers.push(WorkerHandle {
                commands,
                wake,
                pending,
                deferred: AtomicBool::new(false),
                sessions,
                thread: Some(thread),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                ports,
                workers,
                next_id: AtomicU64::new(1),
            }),
        })
    }

    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    /// Takes two RTP/RTCP port pairs (leg A faces the caller, leg B the callee) on the calling
    /// thread, parked ones that have cooled if the least busy worker has them, else newly bound
    /// ones, and hands them to that worker without waiting for it: datagrams that arrive before
    /// the worker polls the sockets wait in their receive buffers. A reused pair is drained of
    /// what it received while parked first. The returned guard releases the session when
    /// dropped.
    pub fn allocate(&self) -> Result<MediaSession, Error> {
        self.allocate_with(true)
    }

    /// [`allocate`](Self::allocate) without waking the worker: the session is polled after the
    /// next [`flush`](Self::flush) (or any other command to the same worker). For a caller
    /// that makes several changes in a row and then flushes once.
    pub fn allocate_deferred(&self) -> Result<MediaSession, Error> {
        self.allocate_with(false)
    }

    fn allocate_with(&self, wake: bool) -> Result<MediaSession, Error> {
        let least_busy = self
            .inner
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.sessions.load(Ordering::Relaxed))
            .map_or(0, |(i, _)| i);
        let (worker, legs) = self.acquire_legs(least_busy)?;
        let (a_port, b_port) = (legs[0].rtp_port(), legs[1].rtp_port());
        let serial = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id = SessionId((serial << 8) | worker as u64);
        // Counted here (the worker uncounts a session it fails to poll), so that the count and
        // the choice of the least busy worker do not lag behind the queue.
        self.inner.workers[worker]
            .sessions
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.post(id, Command::Add { id, legs }, wake) {
            self.inner.workers[worker]
                .sessions
                .fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
        let ip = self.inner.config.advertise_ip;
        Ok(MediaSession {
            engine: self.clone(),
            id,
            a: SocketAddr::new(ip, a_port),
            b: SocketAddr::new(ip, b_port),
            released: false,
        })
    }

    /// Two pairs for a session and the worker they belong to (`preferred` if it can have them).
    fn acquire_legs(&self, preferred: usize) -> Result<(usize, [Acquired; 2]), Error> {
        let ports = &self.inner.ports;
        let ip = self.inner.config.bind_ip;
        for round in 0..2 {
            let chosen = ports.lock().choose_worker(preferred);
            let worker = match chosen {
                Ok(w) => w,
                Err(Shortage::Scattered) if round == 0 => {
                    // Rare: the range is full and the parked pairs are spread one per worker.
                    self.evict_parked()?;
                    continue;
                }
                Err(_) => break,
            };
            let now = Instant::now();
            let acquired =
                pool::acquire(ports, worker, ip, now).and_then(|a| {
                    match pool::acquire(ports, worker, ip, now) {
                        Ok(b) => Ok([a, b]),
                        Err(e) => {
                            pool::give_back(ports, worker, a);
                            Err(e)
                        }
                    }
                });
            match acquired {
                Ok(legs) => {
                    pool::drain(ports, &legs);
                    return Ok((worker, legs));
                }
                // No descriptor left for a new socket, and parked ones hold some: close them.
                Err(Error::Io(e))
                    if round == 0 && sys::out_of_descriptors(&e) && ports.parked_pairs() > 0 =>
                {
                    self.evict_parked()?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ports.lock().no_free_ports())
    }

    /// Has every worker with parked pairs close them (their ports go back to the free queue).
    fn evict_parked(&self) -> Result<(), Error> {
        tracing::debug!(
            parked = self.inner.ports.parked_pairs(),
            "media: closing parked port pairs to make room"
        );
        for (i, w) in self.inner.workers.iter().enumerate() {
            if self.inner.ports.lock().parked_on(i) == 0 {
                continue;
            }
            let (reply, answer) = mpsc::sync_channel(1);
            w.commands
                .send(Command::Evict { reply })
                .map_err(|_| Error::Stopped)?;
            w.pending.store(true, Ordering::SeqCst);
            w.wake.wake();
            answer.recv().map_err(|_| Error::Stopped)?;
        }
        Ok(())
    }

    /// Allocates one session per media stream (m-line) of a call, all or nothing: if one fails,
    /// those allocated before it are released.
    pub fn allocate_streams(&self, streams: usize) -> Result<Vec<MediaSession>, Error> {
        (0..streams).map(|_| self.allocate()).collect()
    }

    /// [`allocate_streams`](Self::allocate_streams) without waking the workers; see
    /// [`allocate_deferred`](Self::allocate_deferred).
    pub fn allocate_streams_deferred(&self, streams: usize) -> Result<Vec<MediaSession>, Error> {
        (0..streams).map(|_| self.allocate_deferred()).collect()
    }

    /// Takes a leg's SDP address (and payload types). Latching may later override the address.
    pub fn set_remote(&self, id: SessionId, leg: Leg, remote: RemoteMedia) -> Result<(), Error> {
        self.request(id, |reply| Command::SetRemote {
            id,
            leg,
            remote,
            reply: Some(reply),
        })?
        .then_some(())
        .ok_or(Error::UnknownSession(id))
    }

    /// [`set_remote`](Self::set_remote) without waiting for the worker: it applies before any
    /// later command for the session, and an unknown session is ignored. Fails only when the
    /// engine has stopped.
    pub fn set_remote_nowait(
        &self,
        id: SessionId,
        leg: Leg,
        remote: RemoteMedia,
    ) -> Result<(), Error> {
        self.post_set_remote(id, leg, remote, true)
    }

    /// [`set_remote_nowait`](Self::set_remote_nowait) without waking the worker: it applies
    /// after the next [`flush`](Self::flush) (or any other command to the same worker).
    pub fn set_remote_deferred(
        &self,
        id: SessionId,
        leg: Leg,
        remote: RemoteMedia,
    ) -> Result<(), Error> {
        self.post_set_remote(id, leg, remote, false)
    }

    fn post_set_remote(
        &self,
        id: SessionId,
        leg: Leg,
        remote: RemoteMedia,
        wake: bool,
    ) -> Result<(), Error> {
        let command = Command::SetRemote {
            id,
            leg,
            remote,
            reply: None,
        };
        self.post(id, command, wake)
    }

    /// Wakes every worker that has deferred commands queued (one eventfd write each at most,
    /// none if a wake-up is already coming).
    pub fn flush(&self) {
        for w in &self.inner.workers {
            if w.deferred.load(Ordering::SeqCst)
                && w.deferred.swap(false, Ordering::SeqCst)
                && !w.pending.swap(true, Ordering::SeqCst)
            {
                w.wake.wake();
            }
        }
    }

    /// A snapshot of the session's statistics; `last_packet_at` per leg tells dead media.
    pub fn stats(&self, id: SessionId) -> Result<SessionStats, Error> {
        self.request(id, |reply| Command::Stats { id, reply })?
            .ok_or(Error::UnknownSession(id))
    }

    /// Ends the session: when this returns its port pairs are parked for reuse (or, beyond
    /// [`MediaConfig::park_max_pairs`], closed and back in the free range) and no longer count
    /// in [`allocated_ports`](Self::allocated_ports). Returns the final statistics.
    pub fn release(&self, id: SessionId) -> Result<SessionStats, Error> {
        self.request(id, |reply| Command::Release { id, reply })?
            .ok_or(Error::UnknownSession(id))
    }

    /// Ends the session without waiting: its pairs are parked (or closed) once the worker gets
    /// to it, after the next [`flush`](Self::flush) (or any other wake-up of that
    /// worker); the final statistics come from [`PendingRelease::wait`].
    pub fn release_deferred(&self, id: SessionId) -> Result<PendingRelease, Error> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.post(id, Command::Release { id, reply }, false)?;
        Ok(PendingRelease {
            engine: self.clone(),
            id,
            answer,
        })
    }

    /// Ports (RTP and RTCP) of live sessions: two per leg, from allocation until release.
    /// Parked pairs do not count (see [`parked_pairs`](Self::parked_pairs)): zero means no
    /// session holds a port, although parked sockets may still be bound.
    pub fn allocated_ports(&self) -> usize {
        self.inner.ports.session_ports()
    }

    /// Port pairs of ended sessions kept open for reuse (two bound sockets each).
    pub fn parked_pairs(&self) -> usize {
        self.inner.ports.parked_pairs()
    }

    /// Datagrams that reached a parked pair (late packets of ended calls, strays) and were
    /// discarded, since the engine started.
    pub fn stale_datagrams(&self) -> u64 {
        self.inner.ports.stale()
    }

    /// Live sessions over all workers.
    pub fn session_count(&self) -> usize {
        self.inner
            .workers
            .iter()
            .map(|w| w.sessions.load(Ordering::Relaxed))
            .sum()
    }

    /// Writes the eventfd of the session's worker even if a wake-up is already coming.
    fn kick(&self, id: SessionId) {
        if let Some(w) = self.inner.workers.get(id.worker()) {
            w.pending.store(true, Ordering::SeqCst);
            w.wake.wake();
        }
    }

    /// Queues a command for the session's worker. The eventfd is written only by the sender
    /// that finds no wake-up already coming: commands queued before the worker drains its
    /// queue share one wake-up.
    ///
    /// With `wake` false the command waits for the next [`flush`](Self::flush) or for any
    /// wake-up of the same worker.
    fn post(&self, id: SessionId, command: Command, wake: bool) -> Result<(), Error> {
        let worker = self
            .inner
            .workers
            .get(id.worker())
            .ok_or(Error::UnknownSession(id))?;
        worker.commands.send(command).map_err(|_| Error::Stopped)?;
        if !wake {
            worker.deferred.store(true, Ordering::SeqCst);
        } else if !worker.pending.swap(true, Ordering::SeqCst) {
            worker.wake.wake();
        }
        Ok(())
    }

    fn request<T>(
        &self,
        id: SessionId,
        command: impl FnOnce(SyncSender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.inner
            .workers
            .get(id.worker())
            .ok_or(Error::UnknownSession(id))?
            .commands
            .send(command(reply))
            .map_err(|_| Error::Stopped)?;
        // A waiting caller does not wait out a worker's linger (see `Worker::handle_commands`).
        self.kick(id);
        answer.recv().map_err(|_| Error::Stopped)
    }
}

/// A release under way; see [`MediaEngine::release_deferred`].
#[derive(Debug)]
pub struct PendingRelease {
    engine: MediaEngine,
    id: SessionId,
    answer: mpsc::Receiver<Option<SessionStats>>,
}

impl PendingRelease {
    /// The final statistics, waiting for the worker if it has not released the session yet
    /// (waking it if the release is still deferred).
    pub fn wait(self) -> Result<SessionStats, Error> {
        let answer = match self.answer.try_recv() {
            Ok(answer) => answer,
            Err(mpsc::TryRecvError::Disconnected) => return Err(Error::Stopped),
            Err(mpsc::TryRecvError::Empty) => {
                self.engine.kick(self.id);
                self.answer.recv().map_err(|_| Error::Stopped)?
            }
        };
        answer.ok_or(Error::UnknownSession(self.id))
    }
}

/// A relayed session's ports; releases the session (parking or closing its sockets) when
/// dropped, however the call ends.
#[must_use = "dropping the session releases its ports"]
pub struct MediaSession {
    engine: MediaEngine,
    id: SessionId,
    a: SocketAddr,
    b: SocketAddr,
    released: bool,
}

impl fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaSession")
            .field("id", &self.id)
            .field("a", &self.a)
            .field("b", &self.b)
            .finish()
    }
}

impl MediaSession {
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The relay's RTP address for a leg, to write into the SDP sent to that leg's phone
    /// (`c=` and `m=` port); its RTCP port is one above.
    pub fn local(&self, leg: Leg) -> SocketAddr {
        match leg {
            Leg::A => self.a,
            Leg::B => self.b,
        }
    }

    pub fn a_port(&self) -> u16 {
        self.a.port()
    }

    pub fn b_port(&self) -> u16 {
        self.b.port()
    }

    pub fn set_remote(&self, leg: Leg, remote: RemoteMedia) -> Result<(), Error> {
        self.engine.set_remote(self.id, leg, remote)
    }

    /// See [`MediaEngine::set_remote_nowait`].
    pub fn set_remote_nowait(&self, leg: Leg, remote: RemoteMedia) -> Result<(), Error> {
        self.engine.set_remote_nowait(self.id, leg, remote)
    }

    /// See [`MediaEngine::set_remote_deferred`].
    pub fn set_remote_deferred(&self, leg: Leg, remote: RemoteMedia) -> Result<(), Error> {
        self.engine.set_remote_deferred(self.id, leg, remote)
    }

    pub fn stats(&self) -> Result<SessionStats, Error> {
        self.engine.stats(self.id)
    }

    /// Releases now and returns the final statistics.
    pub fn release(mut self) -> Result<SessionStats, Error> {
        self.released = true;
        self.engine.release(self.id)
    }

    /// See [`MediaEngine::release_deferred`].
    pub fn release_deferred(mut self) -> Result<PendingRelease, Error> {
        self.released = true;
        self.engine.release_deferred(self.id)
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.engine.release(self.id);
        }
    }
}
