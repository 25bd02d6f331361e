//! Failed-authentication counting per source address, and temporary bans.
//!
//! Every failed digest verification (wrong password, unknown user, replayed nonce) counts against
//! the source IP. After `max_failures` failures inside one `window` the address is banned for
//! `duration`: the endpoint then drops everything it sends without an answer. Time is an input
//! (`now`); nothing here reads a clock.
//!
//! The table is sharded by address so transport threads rarely meet on one lock, and bounded so
//! a flood of spoofed UDP sources cannot grow it without limit.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::hash::FastMap;
use parking_lot::Mutex;

const SHARDS: usize = 16;
/// Upper bound on tracked addresses per shard. When a shard is full, entries that are neither
/// banned nor recent are evicted first; if every entry is live the new failure is not tracked
/// (the attacker already controls that many addresses, and bans already cover them).
const MAX_ENTRIES_PER_SHARD: usize = 8192;

/// What a recorded failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; the address is not banned (yet). Holds the failures in the current window.
    Counted(u32),
    /// This failure crossed the limit: the address is banned until the given instant.
    Banned(Instant),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
    /// Whether a drop during the current ban was already logged (warn once per ban).
    drop_logged: bool,
}

impl Entry {
    /// The instant after which the entry carries no information.
    fn expires(&self, window: Duration) -> Instant {
        let counted = self.window_start + window;
        match self.banned_until {
            Some(until) => until.max(counted),
            None => counted,
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    entries: FastMap<IpAddr, Entry>,
}

/// Per-address failure counters and bans. `Send + Sync`; every method takes `&self`.
#[derive(Debug)]
pub struct BanList {
    max_failures: u32,
    window: Duration,
    duration: Duration,
    shards: Box<[Mutex<Shard>]>,
    /// Number of tracked addresses, so the common case (nobody failing) costs one atomic load.
    tracked: AtomicUsize,
    /// Earliest instant at which some entry may expire (`None`: nothing tracked).
    next_sweep: Mutex<Option<Instant>>,
    hasher: std::collections::hash_map::RandomState,
}

impl BanList {
    /// `max_failures == 0` disables banning (failures are still not tracked).
    pub fn new(max_failures: u32, window: Duration, duration: Duration) -> Self {
        Self {
            max_failures,
            window,
            duration,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            tracked: AtomicUsize::new(0),
            next_sweep: Mutex::new(None),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<Shard> {
        // The modulo keeps the index in bounds whatever the hash.
        &self.shards[(self.hasher.hash_one(ip) as usize) % self.shards.len()]
    }

    /// Whether `ip` is banned at `now`. The second value is true the first time this is asked
    /// during a ban, so the caller can log the ban once rather than once per dropped message.
    pub fn check(&self, ip: IpAddr, now: Instant) -> BanCheck {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return BanCheck::Allowed;
        }
        let mut shard = self.shard(&ip).lock();
        match shard.entries.get_mut(&ip) {
            Some(Entry {
                banned_until: Some(until),
                drop_logged,
                ..
            }) if now < *until => {
                let first = !*drop_logged;
                *drop_logged = true;
                BanCheck::Banned {
                    until: *until,
                    first_drop: first,
                }
            }
            _ => BanCheck::Allowed,
        }
    }

    /// Whether `ip` is banned at `now` (no logging bookkeeping).
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let shard = self.shard(&ip).lock();
        shard
            .entries
            .get(&ip)
            .and_then(|e| e.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Counts one failed authentication from `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> FailureOutcome {
        if self.max_failures == 0 {
            return FailureOutcome::Counted(0);
        }
        let outcome;
        let expires;
        {
            let mut shard = self.shard(&ip).lock();
            if !shard.entries.contains_key(&ip) && shard.entries.len() >= MAX_ENTRIES_PER_SHARD {
                let window = self.window;
                let before = shard.entries.len();
                shard.entries.retain(|_, e| e.expires(window) > now);
                let removed = before - shard.entries.len();
                self.tracked.fetch_sub(removed, Ordering::Relaxed);
                if shard.entries.len() >= MAX_ENTRIES_PER_SHARD {
                    return FailureOutcome::Counted(0);
                }
            }
            let entry = shard.entries.entry(ip).or_insert_with(|| {
                self.tracked.fetch_add(1, Ordering::Relaxed);
                Entry {
                    window_start: now,
                    failures: 0,
                    banned_until: None,
                    drop_logged: false,
                }
            });
            if let Some(until) = entry.banned_until {
                if now < until {
                    // Already banned (a request that was in flight when the ban began).
                    return FailureOutcome::Banned(until);
                }
                entry.banned_until = None;
                entry.failures = 0;
                entry.window_start = now;
            }
            if now.saturating_duration_since(entry.window_start) >= self.window {
                entry.window_start = now;
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            if entry.failures >= self.max_failures {
                let until = now + self.duration;
                entry.banned_until = Some(until);
                entry.drop_logged = false;
                entry.failures = 0;
                entry.window_start = now;
                outcome = FailureOutcome::Banned(until);
            } else {
                outcome = FailureOutcome::Counted(entry.failures);
            }
            expires = entry.expires(self.window);
        }
        let mut next = self.next_sweep.lock();
        *next = Some(next.map_or(expires, |n| n.min(expires)));
        outcome
    }

    /// Forgets the failures of `ip` (after a successful authentication from it). Bans stay.
    pub fn record_success(&self, ip: IpAddr) {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut shard = self.shard(&ip).lock();
        if let Some(e) = shard.entries.get(&ip) {
            if e.banned_until.is_none() {
                shard.entries.remove(&ip);
                self.tracked.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops expired counters and lifted bans. Returns the addresses whose ban was lifted.
    pub fn handle_timeout(&self, now: Instant) -> Vec<IpAddr> {
        {
            let next = self.next_sweep.lock();
            match *next {
                Some(at) if at <= now => {}
                _ => return Vec::new(),
            }
        }
        let mut lifted = Vec::new();
        let mut earliest: Option<Instant> = None;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let before = shard.entries.len();
            let window = self.window;
            shard.entries.retain(|ip, e| {
                if let Some(until) = e.banned_until {
                    if until <= now {
                        lifted.push(*ip);
                        e.banned_until = None;
                    }
                }
                let exp = e.expires(window);
                if exp > now {
                    earliest = Some(earliest.map_or(exp, |x| x.min(exp)));
                    true
                } else {
                    false
                }
            });
            self.tracked
                .fetch_sub(before - shard.entries.len(), Ordering::Relaxed);
        }
        *self.next_sweep.lock() = earliest;
        lifted
    }

    /// When [`BanList::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        *self.next_sweep.lock()
    }

    /// Addresses banned at `now`.
    pub fn banned(&self, now: Instant) -> Vec<(IpAddr, Instant)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            for (ip, e) in shard.lock().entries.iter() {
                if let Some(until) = e.banned_until.filter(|u| *u > now) {
                    out.push((*ip, until));
                }
            }
        }
        out
    }
}

/// Answer of [`BanList::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanCheck {
    Allowed,
    Banned { until: Instant, first_drop: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bans_after_max_failures_within_window_then_lifts() {
        let t0 = Instant::now();
        let bans = BanList::new(3, Duration::from_secs(60), Duration::from_secs(300));
        let a = ip("192.0.2.1");
        assert_eq!(bans.record_failure(a, t0), FailureOutcome::Counted(1));
        assert_eq!(
            bans.record_failure(a, t0 + Duration::from_secs(1)),
            FailureOutcome::Counted(2)
        );
        assert_eq!(bans.check(a, t0), BanCheck::Allowed);
        let until = t0 + Duration::from_secs(302);
        assert_eq!(
            bans.record_failure(a, t0 + Duration::from_secs(2)),
            FailureOutcome::Banned(until)
        );
        assert_eq!(
            bans.check(a, t0 + Duration::from_secs(3)),
            BanCheck::Banned {
                until,
                first_drop: true
            }
        );
        assert_eq!(
            bans.check(a, t0 + Duration::from_secs(4)),
            BanCheck::Banned {
                until,
                first_drop: false
            }
        );
        assert_eq!(bans.check(ip("192.0.2.2"), t0), BanCheck::Allowed);
        assert_eq!(bans.check(a, until), BanCheck::Allowed);
        assert_eq!(bans.handle_timeout(until), vec![a]);
        assert_eq!(bans.poll_timeout(), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t0 = Instant::now();
        let bans = BanList::new(2, Duration::from_secs(10), Duration::from_secs(300));
        let a = ip("2001:db8::1");
        assert_eq!(bans.record_failure(a, t0), FailureOutcome::Counted(1));
        assert_eq!(bans.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(
            bans.record_failure(a, t0 + Duration::from_secs(11)),
            FailureOutcome::Counted(1)
        );
        assert!(bans.handle_timeout(t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(bans.poll_timeout(), None);
        assert_eq!(
            bans.record_failure(a, t0 + Duration::from_secs(31)),
            FailureOutcome::Counted(1)
        );
    }

    #[test]
    fn success_clears_counter() {
        let t0 = Instant::now();
        let bans = BanList::new(2, Duration::from_secs(10), Duration::from_secs(300));
        let a = ip("192.0.2.9");
        bans.record_failure(a, t0);
        bans.record_success(a);
        assert_eq!(bans.record_failure(a, t0), FailureOutcome::Counted(1));
    }
}
