//! The one place the call core touches SDP: parse a body, read where a leg receives media, and
//! rewrite a description so media flows through the relay. A thin layer over `confab-sdp`, so
//! the call state machine never sees SDP syntax.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use confab_sdp::{Direction, OriginState, SessionDescription};

/// A parsed session description (an offer or an answer).
#[derive(Debug, Clone)]
pub(crate) struct Sdp(SessionDescription);

/// A body that is not usable SDP; the text fits a reason phrase (488, RFC 3261 §13.3.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SdpRefused(pub(crate) String);

/// Parses an SDP body.
pub(crate) fn parse(body: &[u8]) -> Result<Sdp, SdpRefused> {
    let sdp = SessionDescription::parse(body).map_err(|e| SdpRefused(e.to_string()))?;
    if sdp.media.is_empty() {
        return Err(SdpRefused("No m= line".to_owned()));
    }
    Ok(Sdp(sdp))
}

/// RFC 3264 §6: whether `answer` may answer `offer`.
pub(crate) fn check_answer(offer: &Sdp, answer: &Sdp) -> Result<(), SdpRefused> {
    confab_sdp::check_answer(&offer.0, &answer.0).map_err(|e| SdpRefused(e.to_string()))
}

/// The `o=` state of the descriptions we send on one leg (RFC 3264 §8).
pub(crate) fn origin(session_id: u64) -> OriginState {
    OriginState::new(session_id).with_username("confab")
}

impl Sdp {
    /// Number of m-lines (streams).
    pub(crate) fn streams(&self) -> usize {
        self.0.media.len()
    }

    /// For each stream: where its sender wants RTP and RTCP (`None` for a disabled or held
    /// stream).
    pub(crate) fn remotes(&self) -> Vec<(Option<SocketAddr>, Option<SocketAddr>)> {
        (0..self.streams())
            .map(|i| (self.0.media_connection(i), self.0.rtcp_address(i)))
            .collect()
    }

    /// Whether no stream flows in either direction (every stream inactive, disabled or held):
    /// media silence is then expected, not a sign of a dead call.
    pub(crate) fn is_silent(&self) -> bool {
        (0..self.streams()).all(|i| {
            self.0.media.get(i).is_some_and(|m| m.port == 0)
                || self.0.legacy_hold(i)
                || self.0.direction(i) == Direction::Inactive
        })
    }

    /// The description with every connection address and port replaced by the relay's
    /// (`ports[i]` for stream `i`; streams beyond `ports` are disabled), ICE removed, and the
    /// `o=` line of the leg it is sent on. Codecs, telephone-event and directions are kept:
    /// forwarding the offer and the answer unchanged otherwise makes the negotiated codecs the
    /// intersection of both sides (no transcoding).
    pub(crate) fn rewrite(
        &self,
        relay_ip: IpAddr,
        ports: &[u16],
        origin: &mut OriginState,
    ) -> Bytes {
        Bytes::from(confab_sdp::rewrite_for_relay_to_bytes(
            &self.0, relay_ip, ports, origin,
        ))
    }
}
