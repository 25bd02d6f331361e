//! SDP for Confab's B2BUA: the session description model, parser and serialiser (RFC 8866,
//! RFC 4566 grammar, RFC 5118 IPv6), RFC 3264 offer/answer checks, and the rewrite that
//! anchors media on the relay (RFC 3605 `a=rtcp`, RFC 4733 telephone-event kept intact).
//!
//! Pure and synchronous: no IO, no clock, no randomness (the caller supplies session ids).
//! Parsing is bounded ([`MAX_BYTES`], [`MAX_LINES`], [`MAX_MEDIA`]) and never panics; every
//! refusal is an [`SdpError`] whose text fits a 488 reason phrase.
//!
//! Calling contract for one call leg:
//! 1. [`SessionDescription::parse`] the body of an offer or answer (refuse with
//!    [`SdpError::status`] on error);
//! 2. read it with [`SessionDescription::media_connection`], [`SessionDescription::rtcp_address`],
//!    [`SessionDescription::direction`], [`SessionDescription::codecs`] to program the relay;
//! 3. on an answer, [`check_answer`] against the offer it answers;
//! 4. [`rewrite_for_relay`] with the relay's address and ports and the *other* leg's
//!    [`OriginState`], and send [`SessionDescription::to_bytes`] there.
//!
//! ```
//! use confab_sdp::{rewrite_for_relay, OriginState, SessionDescription};
//!
//! let body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
//!              m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
//! let offer = SessionDescription::parse(body)?;
//! assert_eq!(offer.media_connection(0), Some("192.0.2.1:4000".parse().unwrap()));
//! let mut callee_leg = OriginState::new(42);
//! let out = rewrite_for_relay(&offer, "127.0.0.1".parse().unwrap(), &[20000], &mut callee_leg);
//! assert_eq!(out.media_connection(0), Some("127.0.0.1:20000".parse().unwrap()));
//! assert_eq!(out.codecs(0), offer.codecs(0));
//! # Ok::<(), confab_sdp::SdpError>(())
//! ```
//!
//! Not done here: ICE, DTLS and SDES are passed through or dropped, never negotiated; no
//! bundling (RFC 9143) or simulcast logic; `a=charset` other than UTF-8 is not supported.

mod error;
mod model;
mod offer_answer;
mod parse;
mod query;
mod write;

pub use error::SdpError;
pub use model::{
    Attribute, Codec, Connection, Direction, Line, Media, Origin, SessionDescription, Time,
};
pub use offer_answer::{
    check_answer, intersect, rewrite_for_relay, rewrite_for_relay_to_bytes, OriginState,
};
pub use parse::{MAX_BYTES, MAX_LINES, MAX_MEDIA};

impl SessionDescription {
    /// Parses an SDP body (RFC 8866 §5, §9), with CRLF or LF line ends.
    ///
    /// Refused: non-UTF-8, over the bounds, lines not shaped `<letter>=<value>`, `v=` missing
    /// or not first or not 0, a missing `o=`, malformed `o= c= b= t= m=` (RTP payload types
    /// must be 0-127), a used stream with no `c=`. Accepted and kept: unknown letters and
    /// attributes, a missing `s=` (read as `-`) or `t=` (read as `0 0`), blank lines.
    pub fn parse(body: &[u8]) -> Result<Self, SdpError> {
        parse::parse(body)
    }
}

impl std::str::FromStr for SessionDescription {
    type Err = SdpError;

    fn from_str(s: &str) -> Result<Self, SdpError> {
        Self::parse(s.as_bytes())
    }
}
