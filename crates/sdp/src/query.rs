//! What the B2BUA asks of a parsed SDP: where to send RTP and RTCP, which direction, which
//! codecs. All take a media index and answer "nothing" for an index out of range.

use std::net::{IpAddr, SocketAddr};

use crate::model::{direction_of, Codec, Connection, Direction, Media, SessionDescription};

impl SessionDescription {
    /// Where RTP for media `index` goes: the media-level `c=`, else the session-level one
    /// (RFC 8866 §5.7), with the `m=` port.
    ///
    /// `None` if the index is out of range, the stream is disabled (port 0, RFC 3264 §5.1),
    /// the address is a host name or does not match its address type, or it is the
    /// unspecified address (`0.0.0.0`/`::`, an RFC 2543 hold: see [`Self::legacy_hold`]).
    pub fn media_connection(&self, index: usize) -> Option<SocketAddr> {
        let m = self.media.get(index)?;
        if m.port == 0 {
            return None;
        }
        let ip = self.effective_ip(m)?;
        (!ip.is_unspecified()).then_some(SocketAddr::new(ip, m.port))
    }

    /// Where RTCP for media `index` goes: `a=rtcp:<port> [IN IP4|IP6 <address>]` (RFC 3605
    /// §2.1), else the RTP port + 1 at the RTP address (RFC 3550 §11, RFC 3264 §5.1).
    ///
    /// A malformed `a=rtcp` is ignored. `a=rtcp-mux` (RFC 5761) is not looked at: whether RTCP
    /// shares the RTP port is for offer and answer together to decide.
    pub fn rtcp_address(&self, index: usize) -> Option<SocketAddr> {
        let rtp = self.media_connection(index)?;
        let m = self.media.get(index)?;
        if let Some((port, address)) = m
            .attribute("rtcp")
            .and_then(|a| parse_rtcp(a.value.as_deref()?))
        {
            let ip = match address {
                Some(c) => c.ip()?,
                None => rtp.ip(),
            };
            if port == 0 || ip.is_unspecified() {
                return None;
            }
            return Some(SocketAddr::new(ip, port));
        }
        Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?))
    }

    /// The direction of media `index` (RFC 3264 §5.1): its own direction attribute, else the
    /// session's, else sendrecv. An RFC 2543 hold (`c=0.0.0.0`) is not folded in: ask
    /// [`Self::legacy_hold`].
    pub fn direction(&self, index: usize) -> Direction {
        self.media
            .get(index)
            .and_then(Media::direction)
            .or_else(|| direction_of(&self.attributes))
            .unwrap_or_default()
    }

    /// True if media `index` is put on hold the RFC 2543 way, with a connection address of
    /// `0.0.0.0` (RFC 3264 §8.4; `::` is treated alike): send nothing to it.
    ///
    /// Not when ICE is in use (`a=ice-ufrag` at either level): Trickle ICE (RFC 8838, RFC 8840)
    /// writes `0.0.0.0` and port 9 for "no candidate yet", and ICE agents hold with direction
    /// attributes.
    pub fn legacy_hold(&self, index: usize) -> bool {
        let Some(m) = self.media.get(index).filter(|m| m.port != 0) else {
            return false;
        };
        let ice = m.has_attribute("ice-ufrag") || self.attribute("ice-ufrag").is_some();
        !ice && self.effective_ip(m).is_some_and(|ip| ip.is_unspecified())
    }

    /// The RTP payload formats of media `index`, in `m=` order (the offerer's preference,
    /// RFC 3264 §5.1), named from `a=rtpmap` or, for static payload types without one, from
    /// RFC 3551 §6. A dynamic payload type without `a=rtpmap` has an empty name and clock
    /// rate 0. Empty for non-RTP media.
    pub fn codecs(&self, index: usize) -> Vec<Codec> {
        let Some(m) = self.media.get(index).filter(|m| m.is_rtp()) else {
            return Vec::new();
        };
        // One pass over the attributes, indexed by payload type: the m= line may be long.
        let mut rtpmap: [Option<&str>; 128] = [None; 128];
        let mut fmtp: [Option<&str>; 128] = [None; 128];
        for a in &m.attributes {
            let table = if a.name.eq_ignore_ascii_case("rtpmap") {
                &mut rtpmap
            } else if a.name.eq_ignore_ascii_case("fmtp") {
                &mut fmtp
            } else {
                continue;
            };
            let Some((pt, rest)) = a.value.as_deref().and_then(|v| v.split_once(' ')) else {
                continue;
            };
            if let Some(slot) = pt.parse::<usize>().ok().and_then(|pt| table.get_mut(pt)) {
                // RFC 8866 §6.6: one rtpmap per payload type; the first one wins.
                slot.get_or_insert(rest.trim_ascii());
            }
        }
        let mut codecs = Vec::with_capacity(m.formats.len().min(128));
        for f in &m.formats {
            let Some(pt) = f.parse::<u8>().ok().filter(|&pt| pt < 128) else {
                continue;
            };
            let (name, clock_rate, channels) = rtpmap[usize::from(pt)]
                .and_then(parse_rtpmap)
                .or_else(|| static_payload(pt))
                .unwrap_or(("", 0, None));
            codecs.push(Codec {
                payload_type: pt,
                name: name.to_owned(),
                clock_rate,
                channels,
                fmtp: fmtp[usize::from(pt)].map(str::to_owned),
            });
        }
        codecs
    }

    fn effective_ip(&self, m: &Media) -> Option<IpAddr> {
        m.connection.as_ref().or(self.connection.as_ref())?.ip()
    }
}

/// `<encoding name>/<clock rate>[/<encoding parameters>]` (RFC 8866 §6.6). Lenient: a name
/// without a clock rate (RFC 4475 sdp01 has `a=rtpmap:31 LPC`) still names the payload type,
/// with clock rate 0, because the sender meant that name rather than the static one.
fn parse_rtpmap(value: &str) -> Option<(&str, u32, Option<u8>)> {
    let mut f = value.split('/');
    let name = f.next()?.trim_ascii();
    let clock = match f.next() {
        Some(c) => c.trim_ascii().parse().ok()?,
        None => 0,
    };
    let channels = f.next().and_then(|c| c.trim_ascii().parse().ok());
    (!name.is_empty()).then_some((name, clock, channels))
}

/// `a=rtcp:<port> [<nettype> <addrtype> <connection-address>]` (RFC 3605 §2.1).
pub(crate) fn parse_rtcp(value: &str) -> Option<(u16, Option<Connection>)> {
    let mut f = value.split_ascii_whitespace();
    let port = f.next()?;
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port.parse().ok()?;
    match (f.next(), f.next(), f.next()) {
        (None, ..) => Some((port, None)),
        (Some(n), Some(t), Some(a)) => Some((
            port,
            Some(Connection {
                net_type: n.to_owned(),
                addr_type: t.to_owned(),
                address: a.to_owned(),
            }),
        )),
        _ => None,
    }
}

/// RFC 3551 §6, tables 4 and 5: the statically assigned payload types.
fn static_payload(pt: u8) -> Option<(&'static str, u32, Option<u8>)> {
    Some(match pt {
        0 => ("PCMU", 8000, None),
        3 => ("GSM", 8000, None),
        4 => ("G723", 8000, None),
        5 => ("DVI4", 8000, None),
        6 => ("DVI4", 16000, None),
        7 => ("LPC", 8000, None),
        8 => ("PCMA", 8000, None),
        // RFC 3551 §4.5.2: G.722 is clocked at 8000 Hz although it samples at 16 kHz.
        9 => ("G722", 8000, None),
        10 => ("L16", 44100, Some(2)),
        11 => ("L16", 44100, None),
        12 => ("QCELP", 8000, None),
        13 => ("CN", 8000, None),
        14 => ("MPA", 90000, None),
        15 => ("G728", 8000, None),
        16 => ("DVI4", 11025, None),
        17 => ("DVI4", 22050, None),
        18 => ("G729", 8000, None),
        25 => ("CelB", 90000, None),
        26 => ("JPEG", 90000, None),
        28 => ("nv", 90000, None),
        31 => ("H261", 90000, None),
        32 => ("MPV", 90000, None),
        33 => ("MP2T", 90000, None),
        34 => ("H263", 90000, None),
        _ => return None,
    })
}
