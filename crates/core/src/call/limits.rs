//! Flood limits per source address: new INVITEs per second (a token bucket) and calls ringing at
//! once. Both refuse with 503 and Retry-After (RFC 3261 §21.5.4), before any work that grows
//! with the input.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::hash::FastMap;
use parking_lot::Mutex;

const SHARDS: usize = 16;
/// Entries idle this long (full bucket, nothing ringing) are forgotten.
const IDLE: Duration = Duration::from_secs(60);
/// Tracked sources per shard; beyond it new sources are refused (a spoofed-source flood).
const MAX_SOURCES_PER_SHARD: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct SourceState {
    /// Tokens in thousandths.
    tokens_milli: u64,
    refilled: Instant,
    ringing: u32,
}

/// Per-source counters, sharded by address.
#[derive(Debug)]
pub(crate) struct FloodLimiter {
    shards: Box<[Mutex<FastMap<IpAddr, SourceState>>]>,
    hasher: std::collections::hash_map::RandomState,
    /// New INVITEs per second per source; 0 disables the rate limit.
    rate: u32,
    burst: u32,
    /// Calls ringing at once per source; 0 disables the limit.
    max_ringing: u32,
}

impl FloodLimiter {
    pub(crate) fn new(rate: u32, burst: u32, max_ringing: u32) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(FastMap::default()))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            rate,
            burst: burst.max(1),
            max_ringing,
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<FastMap<IpAddr, SourceState>> {
        &self.shards[(self.hasher.hash_one(ip) as usize) % SHARDS]
    }

    fn entry<'a>(
        &self,
        map: &'a mut FastMap<IpAddr, SourceState>,
        ip: IpAddr,
        now: Instant,
    ) -> Option<&'a mut SourceState> {
        if !map.contains_key(&ip) && map.len() >= MAX_SOURCES_PER_SHARD {
            return None;
        }
        let burst = u64::from(self.burst) * 1000;
        let s = map.entry(ip).or_insert(SourceState {
            tokens_milli: burst,
            refilled: now,
            ringing: 0,
        });
        let elapsed = now.saturating_duration_since(s.refilled);
        let add = elapsed.as_millis() as u64 * u64::from(self.rate);
        s.tokens_milli = s.tokens_milli.saturating_add(add).min(burst);
        s.refilled = now;
        Some(s)
    }

    /// A new INVITE from `ip`: takes a token. False: over the rate.
    pub(crate) fn admit_invite(&self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let mut map = self.shard(&ip).lock();
        let Some(s) = self.entry(&mut map, ip, now) else {
            return false;
        };
        if s.tokens_milli >= 1000 {
            s.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }

    /// A call from `ip` starts ringing. False: too many ring already (nothing counted).
    pub(crate) fn start_ringing(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.shard(&ip).lock();
        let max = self.max_ringing;
        let Some(s) = self.entry(&mut map, ip, now) else {
            return false;
        };
        if max != 0 && s.ringing >= max {
            return false;
        }
        s.ringing += 1;
        true
    }

    /// A call from `ip` stopped ringing (answered or ended).
    pub(crate) fn stop_ringing(&self, ip: IpAddr) {
        if let Some(s) = self.shard(&ip).lock().get_mut(&ip) {
            s.ringing = s.ringing.saturating_sub(1);
        }
    }

    /// Forgets idle sources.
    pub(crate) fn handle_timeout(&self, now: Instant) {
        let burst = u64::from(self.burst) * 1000;
        for shard in self.shards.iter() {
            shard.lock().retain(|_, s| {
                s.ringing > 0
                    || (now.saturating_duration_since(s.refilled) < IDLE && s.tokens_milli < burst)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_rate() {
        let l = FloodLimiter::new(2, 3, 1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::now();
        assert!((0..3).all(|_| l.admit_invite(ip, t)));
        assert!(!l.admit_invite(ip, t));
        assert!(l.admit_invite(ip, t + Duration::from_millis(500)));
        assert!(!l.admit_invite(ip, t + Duration::from_millis(500)));
        assert!(l.start_ringing(ip, t));
        assert!(!l.start_ringing(ip, t));
        l.stop_ringing(ip);
        assert!(l.start_ringing(ip, t));
    }
}
