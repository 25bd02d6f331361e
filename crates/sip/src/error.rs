//! One error type for the crate, sorted by who is at fault, each knowing its SIP answer.

/// Why bytes did not parse as a SIP message, or a header value did not parse as its type.
///
/// The `Display` text is short and is used as the reason phrase of the 400 response, so it must
/// say what is wrong ("Bad CSeq: method does not match request line").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    /// Human-readable reason, suitable for a SIP reason phrase (no CR/LF).
    pub reason: String,
}

impl ParseError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

/// Errors of the SIP layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Did not parse. Requests get a 400 with the reason; responses are dropped.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] ParseError),
}

impl Error {
    /// The status code to answer a request with, or `None` for a silent drop.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::InvalidMessage(_) => Some(400),
        }
    }
}
