//! The crate's one error type.
//!
//! Every variant is the peer's fault: either the body did not parse as SDP (RFC 8866 §5, §9)
//! or it parsed but broke an offer/answer rule (RFC 3264 §6). The `Display` text is short,
//! ASCII, free of CR/LF and names no more than a line number or a media index, so the caller
//! can put it in a reason phrase as is: `488 Not Acceptable Here` with "Missing c= for media 0".

/// Why an SDP body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// RFC 8866 §5: SDP is UTF-8 text (RFC 8866 drops the old ISO 8859-1 charset default).
    #[error("Not UTF-8")]
    NotUtf8,
    /// Longer than [`MAX_BYTES`](crate::MAX_BYTES); we refuse before looking at it.
    #[error("SDP too large")]
    TooLarge,
    /// More than [`MAX_LINES`](crate::MAX_LINES) lines.
    #[error("Too many SDP lines")]
    TooManyLines,
    /// More than [`MAX_MEDIA`](crate::MAX_MEDIA) `m=` sections.
    #[error("Too many m= lines")]
    TooManyMedia,
    /// The body holds no lines at all.
    #[error("Empty SDP")]
    Empty,
    /// A line that is not `<letter>=<value>` (RFC 8866 §5: no space around `=`), or that holds
    /// a NUL or a bare CR. `line` counts from 1.
    #[error("Bad line {line}")]
    BadLine {
        /// Line number, from 1.
        line: usize,
    },
    /// A line of a known type whose value does not follow its grammar (RFC 8866 §9).
    #[error("Bad {kind}= line (line {line})")]
    BadField {
        /// The type letter.
        kind: char,
        /// Line number, from 1.
        line: usize,
    },
    /// `v=` other than 0 (RFC 8866 §5.1: there is only version 0).
    #[error("Unsupported SDP version")]
    UnsupportedVersion,
    /// A mandatory line is absent (`v=` first, `o=`).
    #[error("Missing {0}= line")]
    Missing(char),
    /// A session-level line that may appear once appears twice.
    #[error("Duplicate {kind}= line (line {line})")]
    Duplicate {
        /// The type letter.
        kind: char,
        /// Line number of the second occurrence, from 1.
        line: usize,
    },
    /// A session-only line (`v= o= s= t= r=`) inside a media section.
    #[error("Unexpected {kind}= line in media {media}")]
    Misplaced {
        /// The type letter.
        kind: char,
        /// Media index, from 0.
        media: usize,
    },
    /// RFC 8866 §5.7: a media section in use has no `c=` and neither has the session.
    #[error("Missing c= for media {media}")]
    MissingConnection {
        /// Media index, from 0.
        media: usize,
    },
    /// RFC 3264 §6: the answer has exactly as many `m=` lines as the offer.
    #[error("Answer has {answer} m= lines, offer has {offer}")]
    MediaCountMismatch {
        /// `m=` lines in the offer.
        offer: usize,
        /// `m=` lines in the answer.
        answer: usize,
    },
    /// RFC 3264 §6.1: the media type of an answered stream matches the offer's.
    #[error("Media {media} type differs from offer")]
    MediaTypeMismatch {
        /// Media index, from 0.
        media: usize,
    },
    /// RFC 3264 §6: a stream offered with port 0 is answered with port 0.
    #[error("Media {media} was disabled in the offer")]
    DisabledStreamAccepted {
        /// Media index, from 0.
        media: usize,
    },
    /// RFC 3264 §6.1: a unicast stream is answered with a unicast address.
    #[error("Multicast answer for unicast media {media}")]
    MulticastAnswer {
        /// Media index, from 0.
        media: usize,
    },
    /// RFC 3264 §6.1: an accepted stream lists at least one format from the offer.
    #[error("No common format for media {media}")]
    NoCommonFormat {
        /// Media index, from 0.
        media: usize,
    },
}

impl SdpError {
    /// The status a request carrying this SDP is refused with: 488 Not Acceptable Here
    /// (RFC 3261 §21.4.26, used for unacceptable session descriptions, RFC 3261 §13.3.1.1).
    /// An answer in a response cannot be refused with a status; the caller ends the dialog.
    pub fn status(&self) -> u16 {
        488
    }

    /// True if the body did not parse; false if it parsed but broke an offer/answer rule.
    pub fn is_malformed(&self) -> bool {
        !matches!(
            self,
            Self::MediaCountMismatch { .. }
                | Self::MediaTypeMismatch { .. }
                | Self::DisabledStreamAccepted { .. }
                | Self::MulticastAnswer { .. }
                | Self::NoCommonFormat { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_reason_phrases() {
        assert_eq!(
            SdpError::BadField { kind: 'm', line: 7 }.to_string(),
            "Bad m= line (line 7)"
        );
        assert_eq!(
            SdpError::MissingConnection { media: 0 }.to_string(),
            "Missing c= for media 0"
        );
        assert_eq!(SdpError::NotUtf8.to_string(), "Not UTF-8");
        assert_eq!(SdpError::Missing('o').status(), 488);
        assert!(SdpError::NotUtf8.is_malformed());
        assert!(!SdpError::NoCommonFormat { media: 1 }.is_malformed());
    }
}
