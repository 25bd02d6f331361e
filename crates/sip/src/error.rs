//! One error type for the crate, sorted by who is at fault, each knowing its SIP answer.

/// Why bytes did not parse as a SIP message, or a header value did not parse as its type.
///
/// The `Display` text is short and is used as the reason phrase of the error response, so it
/// says what is wrong ("CSeq method does not match request method"). `status` is the response
/// code a request that failed this way gets: 400 unless the RFC names another (505 for a SIP
/// version other than 2.0, RFC 3261 §21.5.6 and RFC 4475 §3.1.2.16; 513 for an oversized
/// message, §21.5.8).
/// A response that fails to parse is dropped whatever the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    /// Human-readable reason, suitable for a SIP reason phrase (no CR/LF).
    pub reason: String,
    /// The status code to answer a request with (400 by default).
    pub status: u16,
}

impl ParseError {
    /// A parse error answered with 400 Bad Request.
    pub fn new(reason: impl Into<String>) -> Self {
        Self::with_status(400, reason)
    }

    /// A parse error answered with `status` (e.g. 505 Version Not Supported).
    pub fn with_status(status: u16, reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            status,
        }
    }
}

/// Errors of the SIP layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Did not parse. Requests get the error's status with its reason; responses are dropped.
    #[error("invalid message: {0}")]
    InvalidMessage(#[from] ParseError),
}

impl Error {
    /// The status code to answer a request with, or `None` for a silent drop.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::InvalidMessage(e) => Some(e.status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_status_is_400() {
        let e = ParseError::new("Missing Call-ID");
        assert_eq!(e.status, 400);
        assert_eq!(e.to_string(), "Missing Call-ID");
        assert_eq!(
            Error::from(ParseError::with_status(505, "Version Not Supported")).status(),
            Some(505)
        );
    }
}
