//! Hash maps and shard selection for the core's in-memory tables.
//!
//! Every message looks up transactions, calls and bindings by keys that arrive from the network
//! (branches, Call-IDs, AoRs). std's SipHash costs several times more than foldhash on such
//! short keys; foldhash's `RandomState` is seeded per process, so a sender cannot precompute
//! colliding keys.

use std::hash::{BuildHasher, Hash};

/// A `HashMap` with the per-process-seeded fast hasher.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A `HashSet` with the per-process-seeded fast hasher.
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// A deterministic hash for picking a shard or a bucket: the same value in every process
/// (tests rely on stable placement), cheap, and only ever used where a collision costs a
/// comparison, never correctness.
pub(crate) fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    foldhash::fast::FixedState::default().hash_one(value)
}
