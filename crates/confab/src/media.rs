//! The core's [`MediaRelay`] over the RTP relay engine of `confab-media`.
//!
//! `confab-core` declares what it needs from media as a trait and never depends on the relay;
//! this adapter owns the relay sessions of every call (one per SDP m-line) and releases them
//! when the core says a call's media is done. Dropping a `MediaSession` also releases it, so a
//! forgotten call cannot hold ports once the map entry goes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use confab_core::call::{
    Leg, LegMediaStats, MediaAllocation, MediaError, MediaId, MediaRelay, MediaStats,
};
use confab_media::{
    LegStats, MediaEngine, MediaSession, PendingRelease, RemoteMedia, SessionStats,
};
use parking_lot::Mutex;
use tracing::debug;

pub(crate) struct RelayAdapter {
    engine: MediaEngine,
    advertise: IpAddr,
    next_id: AtomicU64,
    calls: Mutex<HashMap<MediaId, Vec<MediaSession>>>,
    /// Calls released with `release_later`, until the core collects their statistics.
    releasing: Mutex<HashMap<MediaId, Vec<PendingRelease>>>,
}

impl RelayAdapter {
    pub(crate) fn new(engine: MediaEngine, advertise: IpAddr) -> Self {
        Self {
            engine,
            advertise,
            next_id: AtomicU64::new(1),
            calls: Mutex::new(HashMap::new()),
            releasing: Mutex::new(HashMap::new()),
        }
    }
}

fn media_leg(leg: Leg) -> confab_media::Leg {
    match leg {
        Leg::A => confab_media::Leg::A,
        Leg::B => confab_media::Leg::B,
    }
}

/// Sums the per-stream statistics of one call into the core's per-leg view.
fn summarize<'a>(streams: impl Iterator<Item = &'a SessionStats>) -> MediaStats {
    fn add(into: &mut LegMediaStats, from: &LegStats) {
        into.packets += from.rtp.packets;
        into.bytes += from.rtp.bytes;
        into.lost += from.lost;
        into.jitter = into.jitter.max(from.jitter);
        into.last_packet = into.last_packet.max(from.last_packet_at);
    }
    let mut out = MediaStats::default();
    for s in streams {
        add(&mut out.a, &s.a);
        add(&mut out.b, &s.b);
    }
    out
}

impl MediaRelay for RelayAdapter {
    fn allocate(&self, streams: usize) -> Result<MediaAllocation, MediaError> {
        let sessions = self
            .engine
            .allocate_streams_deferred(streams)
            .map_err(|e| match e {
                confab_media::Error::NoFreePorts { .. } => MediaError::Exhausted,
                other => MediaError::Unavailable(other.to_string()),
            })?;
        let id = MediaId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let allocation = MediaAllocation {
            id,
            relay_ip: self.advertise,
            a_ports: sessions.iter().map(MediaSession::a_port).collect(),
            b_ports: sessions.iter().map(MediaSession::b_port).collect(),
        };
        self.calls.lock().insert(id, sessions);
        Ok(allocation)
    }

    fn set_remote(
        &self,
        id: MediaId,
        leg: Leg,
        stream: usize,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
    ) {
        let calls = self.calls.lock();
        let Some(session) = calls.get(&id).and_then(|s| s.get(stream)) else {
            return;
        };
        // Without an address from SDP (held, or port 0) the relay latches to whatever arrives.
        let Some(rtp) = rtp else { return };
        let mut remote = RemoteMedia::new(rtp);
        if let Some(rtcp) = rtcp {
            remote = remote.with_rtcp(rtcp);
        }
        if let Err(error) = session.set_remote_deferred(media_leg(leg), remote) {
            debug!(%id, %error, "relay refused a remote address");
        }
    }

    fn stats(&self, id: MediaId) -> Option<MediaStats> {
        let calls = self.calls.lock();
        let sessions = calls.get(&id)?;
        let stats: Vec<SessionStats> = sessions.iter().filter_map(|s| s.stats().ok()).collect();
        Some(summarize(stats.iter()))
    }

    fn flush(&self) {
        self.engine.flush();
    }

    fn release_later(&self, id: MediaId) -> bool {
        let Some(sessions) = self.calls.lock().remove(&id) else {
            return false;
        };
        let pending: Vec<PendingRelease> = sessions
            .into_iter()
            .filter_map(|s| s.release_deferred().ok())
            .collect();
        self.releasing.lock().insert(id, pending);
        true
    }

    fn finish_release(&self, id: MediaId) -> Option<MediaStats> {
        let pending = self.releasing.lock().remove(&id)?;
        let stats: Vec<SessionStats> = pending.into_iter().filter_map(|p| p.wait().ok()).collect();
        Some(summarize(stats.iter()))
    }

    fn release(&self, id: MediaId) -> Option<MediaStats> {
        let sessions = self.calls.lock().remove(&id)?;
        let stats: Vec<SessionStats> = sessions
            .into_iter()
            .filter_map(|s| s.release().ok())
            .collect();
        Some(summarize(stats.iter()))
    }
}
