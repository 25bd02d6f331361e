//! RFC 3264 offer/answer for a B2BUA that anchors media: rewriting an SDP so that media flows
//! through the relay, versioning the `o=` line we send on each leg, checking an answer against
//! its offer, and intersecting codec lists.

use std::net::IpAddr;

use crate::error::SdpError;
use crate::model::{Codec, Connection, Media, Origin, SessionDescription};
use crate::query::parse_rtcp;

/// ICE attributes (RFC 8839 §5) dropped when the relay answers for an endpoint: the relay is
/// not an ICE agent, and candidates would reveal the far end's addresses.
const ICE_ATTRIBUTES: &[&str] = &[
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
];

fn is_ice(name: &str) -> bool {
    ICE_ATTRIBUTES.iter().any(|i| name.eq_ignore_ascii_case(i))
}

/// The `o=` line we send on one call leg, and what we last sent with it.
///
/// RFC 3264 §8: every SDP sent in a session (offers and answers alike) carries the same
/// username and session id; the version goes up by one when, and only when, the description
/// changed. Keep one per leg for the whole dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginState {
    username: String,
    session_id: u64,
    version: u64,
    last_sent: Option<Vec<u8>>,
}

impl OriginState {
    /// A leg's origin with username `-` (RFC 8866 §5.2: no user id). `session_id` should be
    /// unique, e.g. from the caller's seeded random source; the first version equals it, as
    /// RFC 8866 §5.2 suggests both start from an NTP-like value.
    pub fn new(session_id: u64) -> Self {
        Self {
            username: "-".to_owned(),
            session_id,
            version: session_id,
            last_sent: None,
        }
    }

    /// The same with a user name; one without a space or control character, else `-`.
    pub fn with_username(mut self, username: &str) -> Self {
        let ok = !username.is_empty()
            && !username
                .chars()
                .any(|c| c.is_whitespace() || c.is_control());
        self.username = if ok { username } else { "-" }.to_owned();
        self
    }

    /// The session id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The version of the last SDP stamped (or the first one to be).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Sets `sdp`'s `o=` to this leg's, with `address`, bumping the version if the description
    /// differs from the last one stamped (RFC 3264 §8). Call it on every SDP sent on the leg,
    /// after its last change.
    pub fn stamp(&mut self, sdp: &mut SessionDescription, address: IpAddr) {
        self.stamp_to_bytes(sdp, address);
    }

    /// [`stamp`](Self::stamp), returning the serialised description to send, so that the
    /// caller does not serialise it again.
    pub fn stamp_to_bytes(&mut self, sdp: &mut SessionDescription, address: IpAddr) -> Vec<u8> {
        let session_id = self.session_id.to_string();
        sdp.origin = Origin::new(&self.username, &session_id, self.version, address);
        let bytes = sdp.to_bytes();
        match &self.last_sent {
            Some(last) if *last == bytes => bytes,
            None => {
                self.last_sent = Some(bytes.clone());
                bytes
            }
            Some(_) => {
                // Wraps only after 2^64 changes, which no dialog sees.
                self.version = self.version.wrapping_add(1);
                sdp.origin.session_version = self.version;
                let bytes = sdp.to_bytes();
                self.last_sent = Some(bytes.clone());
                bytes
            }
        }
    }
}

/// Rewrites `sdp` so that media flows through the relay at `relay_ip`.
///
/// For each media `i` with a non-zero port: the port becomes `relay_ports[i]` (no port count);
/// its `a=rtcp` becomes the relay port + 1 (RFC 3605; dropped if that overflows); a stream held
/// the RFC 2543 way keeps a media-level `c=` with the unspecified address, so the hold reaches
/// the other leg. A media without a (non-zero) relay port is disabled (port 0). Disabled streams
/// stay disabled and lose `a=rtcp`. The session `c=` becomes `relay_ip`, other media-level
/// `c=` are dropped, ICE attributes are removed at both levels, and the `o=` line is stamped
/// by `origin` (see [`OriginState::stamp`]). Payload types, `a=rtpmap`, `a=fmtp` (including
/// RFC 4733 telephone-event) and every other line are kept.
pub fn rewrite_for_relay(
    sdp: &SessionDescription,
    relay_ip: IpAddr,
    relay_ports: &[u16],
    origin: &mut OriginState,
) -> SessionDescription {
    let mut out = relayed(sdp, relay_ip, relay_ports);
    origin.stamp(&mut out, relay_ip);
    out
}

/// [`rewrite_for_relay`], serialised: the body to send (serialised once).
pub fn rewrite_for_relay_to_bytes(
    sdp: &SessionDescription,
    relay_ip: IpAddr,
    relay_ports: &[u16],
    origin: &mut OriginState,
) -> Vec<u8> {
    let mut out = relayed(sdp, relay_ip, relay_ports);
    origin.stamp_to_bytes(&mut out, relay_ip)
}

/// The rewrite of [`rewrite_for_relay`] without the `o=` stamp.
fn relayed(sdp: &SessionDescription, relay_ip: IpAddr, relay_ports: &[u16]) -> SessionDescription {
    let mut out = sdp.clone();
    out.connection = Some(Connection::from(relay_ip));
    out.attributes.retain(|a| !is_ice(&a.name));
    let unspecified = Connection::from(match relay_ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    });
    for (i, m) in out.media.iter_mut().enumerate() {
        let held = sdp.legacy_hold(i);
        m.attributes.retain(|a| !is_ice(&a.name));
        m.other.retain(|l| l.kind != 'c');
        m.connection = None;
        let relay_port = relay_ports.get(i).copied().filter(|&p| p != 0);
        match relay_port {
            Some(port) if m.port != 0 => {
                m.port = port;
                m.port_count = None;
                if held {
                    m.connection = Some(unspecified.clone());
                }
                rewrite_rtcp(m, relay_ip, port);
            }
            _ => {
                m.port = 0;
                m.attributes
                    .retain(|a| !a.name.eq_ignore_ascii_case("rtcp"));
            }
        }
    }
    out
}

fn rewrite_rtcp(m: &mut Media, relay_ip: IpAddr, port: u16) {
    let Some(rtcp_port) = port.checked_add(1) else {
        m.attributes
            .retain(|a| !a.name.eq_ignore_ascii_case("rtcp"));
        return;
    };
    for a in m
        .attributes
        .iter_mut()
        .filter(|a| a.name.eq_ignore_ascii_case("rtcp"))
    {
        let with_address = a
            .value
            .as_deref()
            .and_then(parse_rtcp)
            .is_some_and(|(_, c)| c.is_some());
        a.value = Some(if with_address {
            let c = Connection::from(relay_ip);
            format!("{rtcp_port} {} {} {}", c.net_type, c.addr_type, c.address)
        } else {
            rtcp_port.to_string()
        });
    }
}

/// Checks an answer against its offer (RFC 3264 §6, §6.1): as many `m=` lines; a stream
/// disabled in the offer stays disabled; an accepted stream has the offer's media type, a
/// unicast address if the offer's was unicast, and at least one format from the offer (an RTP
/// payload type of the offer, or a renumbered dynamic one with the same encoding).
///
/// Not checked, on purpose: extra formats in the answer (allowed by §6.1), the transport
/// protocol, and direction rules (§6.1 MUSTs that real UAs break on hold; the relay can
/// enforce direction itself).
pub fn check_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<(), SdpError> {
    if offer.media.len() != answer.media.len() {
        return Err(SdpError::MediaCountMismatch {
            offer: offer.media.len(),
            answer: answer.media.len(),
        });
    }
    for (i, (o, a)) in offer.media.iter().zip(&answer.media).enumerate() {
        if o.port == 0 {
            if a.port != 0 {
                return Err(SdpError::DisabledStreamAccepted { media: i });
            }
            continue;
        }
        if a.port == 0 {
            continue;
        }
        if !o.kind.eq_ignore_ascii_case(&a.kind) {
            return Err(SdpError::MediaTypeMismatch { media: i });
        }
        let offered_unicast = offer
            .media_connection(i)
            .is_some_and(|s| !s.ip().is_multicast());
        if offered_unicast
            && answer
                .media_connection(i)
                .is_some_and(|s| s.ip().is_multicast())
        {
            return Err(SdpError::MulticastAnswer { media: i });
        }
        let common = if o.is_rtp() && a.is_rtp() {
            let offered = offer.codecs(i);
            answer
                .codecs(i)
                .iter()
                .any(|c| offered.iter().any(|d| compatible(c, d)))
        } else {
            a.formats
                .iter()
                .any(|f| o.formats.iter().any(|g| f.eq_ignore_ascii_case(g)))
        };
        if !common {
            return Err(SdpError::NoCommonFormat { media: i });
        }
    }
    Ok(())
}

/// The same encoding, or the same payload type where one side does not name it.
fn compatible(a: &Codec, b: &Codec) -> bool {
    a.same_encoding(b)
        || (a.payload_type == b.payload_type && (a.name.is_empty() || b.name.is_empty()))
}

/// True for formats that carry no media of their own: RFC 4733 events and RFC 3389 comfort
/// noise. A stream offering only these has nothing to talk with.
fn is_auxiliary(c: &Codec) -> bool {
    c.name.eq_ignore_ascii_case("telephone-event") || c.name.eq_ignore_ascii_case("CN")
}

/// Keeps, in each media section of `offer`, the formats that the first media section of the
/// same type in `supported` also has: RTP codecs by encoding (name case-insensitive, clock
/// rate, channels), other formats by name. Payload type numbers stay the offer's (RFC 3264 §6.1
/// SHOULD), and `a=rtpmap`/`a=fmtp`/`a=rtcp-fb` of dropped payload types go. telephone-event
/// and CN are kept when both sides have them, but a stream left with nothing else is disabled
/// (port 0, its formats untouched), as is one with no match or no counterpart in `supported`.
pub fn intersect(offer: &SessionDescription, supported: &SessionDescription) -> SessionDescription {
    let mut out = offer.clone();
    for (i, m) in out.media.iter_mut().enumerate() {
        if m.port == 0 {
            continue;
        }
        let Some(j) = supported
            .media
            .iter()
            .position(|s| s.kind.eq_ignore_ascii_case(&m.kind))
        else {
            m.port = 0;
            continue;
        };
        let (kept, useful) = if m.is_rtp() && supported.media[j].is_rtp() {
            let ours = supported.codecs(j);
            let kept: Vec<Codec> = offer
                .codecs(i)
                .into_iter()
                .filter(|c| ours.iter().any(|o| c.same_encoding(o)))
                .collect();
            let useful = kept.iter().any(|c| !is_auxiliary(c));
            (
                kept.into_iter()
                    .map(|c| c.payload_type.to_string())
                    .collect::<Vec<_>>(),
                useful,
            )
        } else {
            let ours = &supported.media[j].formats;
            let kept: Vec<String> = m
                .formats
                .iter()
                .filter(|f| ours.iter().any(|o| o.eq_ignore_ascii_case(f)))
                .cloned()
                .collect();
            let useful = !kept.is_empty();
            (kept, useful)
        };
        if !useful {
            m.port = 0;
            continue;
        }
        if m.is_rtp() {
            m.attributes.retain(|a| {
                let per_payload = ["rtpmap", "fmtp", "rtcp-fb"]
                    .iter()
                    .any(|n| a.name.eq_ignore_ascii_case(n));
                if !per_payload {
                    return true;
                }
                let pt = a
                    .value
                    .as_deref()
                    .and_then(|v| v.split_ascii_whitespace().next())
                    .unwrap_or("");
                pt == "*" || kept.iter().any(|k| k == pt)
            });
        }
        m.formats = kept;
    }
    out
}
