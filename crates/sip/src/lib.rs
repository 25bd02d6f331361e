//! Confab's SIP protocol layer: message model, parser and serializer (RFC 3261, RFC 4475,
//! RFC 5118), transaction state machines (RFC 3261 §17) and digest authentication (RFC 7616,
//! RFC 8760).
//!
//! This crate does no IO and reads no clock: time enters as an `Instant` argument, bytes enter as
//! slices and leave as `Vec<u8>`/`Bytes`. It depends on no async runtime, so it can be fuzzed and
//! tested deterministically.

pub mod auth;
pub mod dialog;
mod error;
pub mod framing;
pub mod header;
pub mod message;
mod parse;
pub mod transaction;
pub mod transport;
pub mod uri;

pub use error::{Error, ParseError};
pub use header::{CSeq, ContactValue, Header, HeaderName, Headers, NameAddr, Params, Via};
pub use message::{Message, Method, Request, Response, StatusCode};
pub use transport::{ConnectionId, Destination, Source, Transmit, TransportKind};
pub use uri::{Host, SipUri, TelUri, Uri};
