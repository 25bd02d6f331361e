//! A map of live transactions by key that also drives their timers.

use std::collections::hash_map::{self, HashMap};
use std::time::Instant;

use super::{ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite, TransactionKey};

/// What [`TransactionTable`] needs from a transaction: its timers and whether it is over.
pub trait Transaction {
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn is_terminated(&self) -> bool;
}

macro_rules! impl_transaction {
    ($($t:ty),*) => {$(
        impl Transaction for $t {
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$t>::poll_timeout(self)
            }
            fn is_terminated(&self) -> bool {
                <$t>::is_terminated(self)
            }
        }
    )*};
}

impl_transaction!(ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite);

/// Live transactions of one kind by [`TransactionKey`].
///
/// Feed input through [`TransactionTable::update`], which drops a transaction that terminated;
/// drive timers with [`TransactionTable::poll_timeout`] and [`TransactionTable::handle_timeout`].
/// Both scan the whole table: fine for thousands of entries, a timer wheel can replace it later.
/// The caller bounds the table's size (ARCHITECTURE.md: limits per source).
#[derive(Debug)]
pub struct TransactionTable<T> {
    entries: HashMap<TransactionKey, T>,
}

impl<T> Default for TransactionTable<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<T: Transaction> TransactionTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &TransactionKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Adds a transaction, returning the one it replaced, if any.
    pub fn insert(&mut self, key: TransactionKey, transaction: T) -> Option<T> {
        self.entries.insert(key, transaction)
    }

    pub fn get(&self, key: &TransactionKey) -> Option<&T> {
        self.entries.get(key)
    }

    pub fn get_mut(&mut self, key: &TransactionKey) -> Option<&mut T> {
        self.entries.get_mut(key)
    }

    pub fn remove(&mut self, key: &TransactionKey) -> Option<T> {
        self.entries.remove(key)
    }

    pub fn iter(&self) -> hash_map::Iter<'_, TransactionKey, T> {
        self.entries.iter()
    }

    /// Runs `f` on the transaction with this key (feed it input and drain its output inside `f`),
    /// then drops it if it terminated. `None` if no transaction has the key.
    pub fn update<R>(&mut self, key: &TransactionKey, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let transaction = self.entries.get_mut(key)?;
        let result = f(transaction);
        if transaction.is_terminated() {
            self.entries.remove(key);
        }
        Some(result)
    }

    /// Fires the timers of every transaction due at `now`, calling `drain` on each of them so
    /// the caller can take their transmissions and events, then drops every terminated one.
    pub fn handle_timeout(&mut self, now: Instant, mut drain: impl FnMut(&TransactionKey, &mut T)) {
        for (key, transaction) in &mut self.entries {
            if transaction.poll_timeout().is_some_and(|at| at <= now) {
                transaction.handle_timeout(now);
                drain(key, transaction);
            }
        }
        self.entries.retain(|_, t| !t.is_terminated());
    }

    /// The earliest deadline of any transaction.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(Transaction::poll_timeout)
            .min()
    }
}
