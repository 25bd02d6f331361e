//! The session description model (RFC 8866 §5) and small accessors.
//!
//! Fields the B2BUA reads or rewrites are typed; every other line is kept verbatim in `other`
//! so that re-serialising an SDP keeps what we do not understand.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One session description. `v=` is not stored: RFC 8866 §5.1 defines only version 0, the
/// parser refuses anything else and the serialiser writes `v=0`.
///
/// Parsed values never hold CR, LF or NUL; code that builds or edits one must keep it so
/// (and must not put a typed letter such as `m` or `a` in `other`), or the bytes written will
/// not be the description meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=` (RFC 8866 §5.2).
    pub origin: Origin,
    /// `s=` (RFC 8866 §5.3). May be empty (RFC 5118 mult-ip-in-sdp has `s=`); a missing
    /// `s=` parses as `-`.
    pub session_name: String,
    /// Session-level `c=` (RFC 8866 §5.7).
    pub connection: Option<Connection>,
    /// Session-level `b=` values, verbatim (`AS:64`).
    pub bandwidths: Vec<String>,
    /// `t=` lines with their `r=` lines (RFC 8866 §5.9, §5.10). A missing `t=` parses as `0 0`.
    pub times: Vec<Time>,
    /// Session-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    /// `m=` sections, in order; the index is the RFC 3264 stream index.
    pub media: Vec<Media>,
    /// Every other session-level line (`i= u= e= p= z= k=`, unknown letters), in RFC 8866 §5
    /// order; lines of one type keep their relative order.
    pub other: Vec<Line>,
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// User name, `-` when there is none.
    pub username: String,
    /// Session id, kept as text: only compared, never computed with.
    pub session_id: String,
    /// RFC 3264 §8: increases by one with every changed SDP sent in the session.
    pub session_version: u64,
    /// `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// An address or a host name.
    pub address: String,
}

/// `c=<nettype> <addrtype> <connection-address>` (RFC 8866 §5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// An address (multicast ones may carry `/ttl[/count]`) or a host name, verbatim.
    pub address: String,
}

/// A `t=` line and the `r=` lines that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Time {
    /// `<start> <stop>`, verbatim.
    pub value: String,
    /// `r=` values, verbatim.
    pub repeats: Vec<String>,
}

/// One `m=` section (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, `application`, `image`, `text`, `message`...
    pub kind: String,
    /// Transport port; 0 disables the stream (RFC 3264 §5.1, §6, §8.2).
    pub port: u16,
    /// The `/<number of ports>` suffix, if present.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, `udptl`...
    pub proto: String,
    /// Formats: RTP payload type numbers for RTP protocols, verbatim tokens otherwise.
    pub formats: Vec<String>,
    /// The first media-level `c=`; further ones (layered multicast) stay in `other`.
    pub connection: Option<Connection>,
    /// Media-level `b=` values, verbatim.
    pub bandwidths: Vec<String>,
    /// Media-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    /// Every other media-level line (`i=`, extra `c=`, `k=`, unknown letters), in RFC 8866
    /// §5 order; lines of one type keep their relative order.
    pub other: Vec<Line>,
}

/// `a=<name>[:<value>]` (RFC 8866 §5.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute name (`rtpmap`, `sendonly`...).
    pub name: String,
    /// Everything after the first `:`, verbatim; `None` for a property attribute.
    pub value: Option<String>,
}

/// A line kept verbatim: its type letter and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The type letter (any ASCII letter).
    pub kind: char,
    /// Everything after `=`.
    pub value: String,
}

/// RFC 3264 §5.1 stream direction; sendrecv when no attribute says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv`, the default.
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

/// One RTP payload format of a media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// RTP payload type, 0-127.
    pub payload_type: u8,
    /// Encoding name as written (`PCMU`, `opus`, `telephone-event`); empty for a dynamic
    /// payload type without `a=rtpmap`.
    pub name: String,
    /// RTP clock rate in Hz; 0 when unknown.
    pub clock_rate: u32,
    /// Audio channels when given (`opus/48000/2`); `None` means one.
    pub channels: Option<u8>,
    /// The `a=fmtp` parameters, verbatim (`0-16` for telephone-event).
    pub fmtp: Option<String>,
}

impl SessionDescription {
    /// A session with no media: `s=-`, `t=0 0`, no connection.
    pub fn new(origin: Origin) -> Self {
        Self {
            origin,
            session_name: "-".to_owned(),
            connection: None,
            bandwidths: Vec::new(),
            times: vec![Time {
                value: "0 0".to_owned(),
                repeats: Vec::new(),
            }],
            attributes: Vec::new(),
            media: Vec::new(),
            other: Vec::new(),
        }
    }

    /// First session-level attribute with this name (ASCII case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        find_attribute(&self.attributes, name)
    }
}

impl Origin {
    /// `o=<username> <session_id> <version> IN IP4|IP6 <address>`.
    pub fn new(username: &str, session_id: &str, session_version: u64, address: IpAddr) -> Self {
        let conn = Connection::from(address);
        Self {
            username: username.to_owned(),
            session_id: session_id.to_owned(),
            session_version,
            net_type: conn.net_type,
            addr_type: conn.addr_type,
            address: conn.address,
        }
    }
}

impl Connection {
    /// The address as an IP address: `None` for a host name, a network type other than `IN`,
    /// or an address that does not match its address type (RFC 8866 §5.7, RFC 5118 §4.6).
    /// A multicast `/ttl[/count]` suffix is ignored.
    pub fn ip(&self) -> Option<IpAddr> {
        if !self.net_type.eq_ignore_ascii_case("IN") {
            return None;
        }
        let address = self.address.split('/').next().unwrap_or_default();
        if self.addr_type.eq_ignore_ascii_case("IP4") {
            address.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        } else if self.addr_type.eq_ignore_ascii_case("IP6") {
            address.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            None
        }
    }
}

impl From<IpAddr> for Connection {
    fn from(ip: IpAddr) -> Self {
        let addr_type = match ip {
            IpAddr::V4(_) => "IP4",
            IpAddr::V6(_) => "IP6",
        };
        let address = match ip {
            // Hand-written for IPv4: this runs for every relayed description.
            IpAddr::V4(v4) => {
                let mut s = String::with_capacity(15);
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        s.push('.');
                    }
                    if octet >= 100 {
                        s.push(char::from(b'0' + octet / 100));
                    }
                    if octet >= 10 {
                        s.push(char::from(b'0' + octet / 10 % 10));
                    }
                    s.push(char::from(b'0' + octet % 10));
                }
                s
            }
            IpAddr::V6(v6) => v6.to_string(),
        };
        Self {
            net_type: "IN".to_owned(),
            addr_type: addr_type.to_owned(),
            address,
        }
    }
}

impl Media {
    /// A media section with no connection and no attributes.
    pub fn new(kind: &str, port: u16, proto: &str, formats: &[&str]) -> Self {
        Self {
            kind: kind.to_owned(),
            port,
            port_count: None,
            proto: proto.to_owned(),
            formats: formats.iter().map(|f| (*f).to_owned()).collect(),
            connection: None,
            bandwidths: Vec::new(),
            attributes: Vec::new(),
            other: Vec::new(),
        }
    }

    /// True for RTP-based protocols (`RTP/AVP`, `UDP/TLS/RTP/SAVPF`...), whose formats are
    /// payload type numbers (RFC 8866 §5.14).
    pub fn is_rtp(&self) -> bool {
        self.proto.split('/').any(|p| p.eq_ignore_ascii_case("RTP"))
    }

    /// First media-level attribute with this name (ASCII case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        find_attribute(&self.attributes, name)
    }

    /// True if the media section has an attribute with this name.
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attribute(name).is_some()
    }

    /// The media-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_of(&self.attributes)
    }

    /// Replaces any media-level direction attribute with `direction` (appended last).
    pub fn set_direction(&mut self, direction: Direction) {
        self.attributes
            .retain(|a| Direction::from_name(&a.name).is_none());
        self.attributes.push(Attribute::flag(direction.as_str()));
    }
}

impl Attribute {
    /// `a=<name>:<value>`.
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            value: Some(value.to_owned()),
        }
    }

    /// `a=<name>` (a property attribute).
    pub fn flag(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            value: None,
        }
    }
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction named by an attribute name (ASCII case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::SendRecv,
            Self::SendOnly,
            Self::RecvOnly,
            Self::Inactive,
        ]
        .into_iter()
        .find(|d| name.eq_ignore_ascii_case(d.as_str()))
    }

    /// The direction seen from the other end: sendonly and recvonly swap (RFC 3264 §6.1).
    pub fn reversed(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            other => other,
        }
    }

    /// True if this end sends media.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    /// True if this end receives media.
    pub fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }
}

impl Codec {
    /// Same encoding: name (ASCII case-insensitive, RFC 4855 §3), clock rate and channel count
    /// (absent meaning one, RFC 8866 §6.6). Never true for an unnamed codec.
    pub fn same_encoding(&self, other: &Self) -> bool {
        !self.name.is_empty()
            && self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels.unwrap_or(1) == other.channels.unwrap_or(1)
    }
}

pub(crate) fn find_attribute<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
    attributes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

pub(crate) fn direction_of(attributes: &[Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .find_map(|a| Direction::from_name(&a.name))
}
