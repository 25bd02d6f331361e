//! RFC 3261 §17 transaction state machines, sans-IO.
