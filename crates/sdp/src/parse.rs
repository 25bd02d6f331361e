//! The parser: strict on the lines the B2BUA relies on (`v= o= c= t= m=`, RFC 8866 §9 grammar),
//! lenient on everything else (unknown letters and attributes are kept, RFC 8866 §5 order is
//! not enforced within a section). Bounded before any work grows with the input.

use crate::error::SdpError;
use crate::model::{Attribute, Connection, Line, Media, Origin, SessionDescription, Time};

/// Largest body accepted, in bytes. A WebRTC offer with many candidates is about 10 KiB.
pub const MAX_BYTES: usize = 64 * 1024;
/// Most lines accepted (counted as line feeds).
pub const MAX_LINES: usize = 1024;
/// Most `m=` sections accepted.
pub const MAX_MEDIA: usize = 64;

/// Where a kept session-level line goes on output, RFC 8866 §5:
/// `v o s [i u e p] c b t r [z k] a [unknown]`.
pub(crate) fn session_rank(kind: char) -> u8 {
    match kind {
        'i' => 0,
        'u' => 1,
        'e' => 2,
        'p' => 3,
        'z' => 4,
        'k' => 5,
        _ => 6,
    }
}

/// Where a kept media-level line goes on output: `m [i] c [c] b [k] a [unknown]`.
pub(crate) fn media_rank(kind: char) -> u8 {
    match kind {
        'i' => 0,
        'c' => 1,
        'k' => 2,
        _ => 3,
    }
}

pub(crate) fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    if body.len() > MAX_BYTES {
        return Err(SdpError::TooLarge);
    }
    if body.iter().filter(|&&b| b == b'\n').count() > MAX_LINES {
        return Err(SdpError::TooManyLines);
    }
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;

    // RFC 8866 §5 says CRLF, but also that parsers SHOULD accept a bare LF.
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim_ascii().is_empty())
        .map(|(no, l)| split_line(no, l));

    match lines.next() {
        None => return Err(SdpError::Empty),
        Some(first) => {
            let (_, kind, value) = first?;
            if kind != 'v' {
                return Err(SdpError::Missing('v'));
            }
            if value.trim_ascii() != "0" {
                return Err(SdpError::UnsupportedVersion);
            }
        }
    }

    let mut origin = None;
    let mut session_name = None;
    let mut connection = None;
    let mut bandwidths = Vec::new();
    let mut times: Vec<Time> = Vec::new();
    let mut attributes = Vec::new();
    let mut other = Vec::new();
    let mut media: Vec<Media> = Vec::new();

    for line in lines {
        let (no, kind, value) = line?;
        if kind == 'm' {
            if media.len() == MAX_MEDIA {
                return Err(SdpError::TooManyMedia);
            }
            media.push(parse_media(no, value)?);
            continue;
        }
        let index = media.len().wrapping_sub(1);
        if let Some(m) = media.last_mut() {
            match kind {
                'v' | 'o' | 's' | 't' | 'r' => {
                    return Err(SdpError::Misplaced { kind, media: index })
                }
                'c' => {
                    let c = parse_connection(no, value)?;
                    if m.connection.is_none() {
                        m.connection = Some(c);
                    } else {
                        // RFC 8866 §5.7: several c= per media only for layered multicast.
                        m.other.push(Line {
                            kind,
                            value: value.to_owned(),
                        });
                    }
                }
                'b' => m.bandwidths.push(parse_bandwidth(no, value)?),
                'a' => m.attributes.push(parse_attribute(no, value)?),
                _ => m.other.push(Line {
                    kind,
                    value: value.to_owned(),
                }),
            }
            continue;
        }
        match kind {
            'v' => return Err(SdpError::Duplicate { kind, line: no }),
            'o' => {
                if origin.is_some() {
                    return Err(SdpError::Duplicate { kind, line: no });
                }
                origin = Some(parse_origin(no, value)?);
            }
            's' => {
                if session_name.is_some() {
                    return Err(SdpError::Duplicate { kind, line: no });
                }
                session_name = Some(value.to_owned());
            }
            'c' => {
                if connection.is_some() {
                    return Err(SdpError::Duplicate { kind, line: no });
                }
                connection = Some(parse_connection(no, value)?);
            }
            'b' => bandwidths.push(parse_bandwidth(no, value)?),
            't' => {
                let mut fields = value.split_ascii_whitespace();
                let ok = fields.next().is_some_and(is_digits)
                    && fields.next().is_some_and(is_digits)
                    && fields.next().is_none();
                if !ok {
                    return Err(SdpError::BadField { kind, line: no });
                }
                times.push(Time {
                    value: value.to_owned(),
                    repeats: Vec::new(),
                });
            }
            'r' => match times.last_mut() {
                Some(t) => t.repeats.push(value.to_owned()),
                None => return Err(SdpError::BadField { kind, line: no }),
            },
            'a' => attributes.push(parse_attribute(no, value)?),
            _ => other.push(Line {
                kind,
                value: value.to_owned(),
            }),
        }
    }

    let origin = origin.ok_or(SdpError::Missing('o'))?;
    if times.is_empty() {
        // Lenient: some UAs leave t= out; "0 0" is the only value SIP uses (RFC 3264 §5).
        times.push(Time {
            value: "0 0".to_owned(),
            repeats: Vec::new(),
        });
    }
    // Keep the stored order equal to the output order, so that parse(to_bytes(x)) == x.
    other.sort_by_key(|l: &Line| session_rank(l.kind));
    for (i, m) in media.iter_mut().enumerate() {
        m.other.sort_by_key(|l| media_rank(l.kind));
        // RFC 8866 §5.7: c= at session level or in every media section. A disabled stream
        // (port 0) is not used, so a missing address does it no harm (RFC 3264 §6).
        if m.port != 0 && m.connection.is_none() && connection.is_none() {
            return Err(SdpError::MissingConnection { media: i });
        }
    }
    Ok(SessionDescription {
        origin,
        session_name: session_name.unwrap_or_else(|| "-".to_owned()),
        connection,
        bandwidths,
        times,
        attributes,
        media,
        other,
    })
}

/// `<letter>=<value>`, RFC 8866 §5: exactly one case-significant letter, no space around `=`.
fn split_line(no: usize, line: &str) -> Result<(usize, char, &str), SdpError> {
    let bytes = line.as_bytes();
    if bytes.len() < 2 || !bytes[0].is_ascii_alphabetic() || bytes[1] != b'=' {
        return Err(SdpError::BadLine { line: no });
    }
    // Text fields exclude NUL, CR and LF (RFC 8866 §9 `text`); a CR here was not a line end.
    if bytes.iter().any(|&b| b == 0 || b == b'\r') {
        return Err(SdpError::BadLine { line: no });
    }
    // The first two bytes are ASCII, so index 2 is a char boundary.
    Ok((no, char::from(bytes[0]), &line[2..]))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Decimal digits only: `u16::from_str` would also take a leading `+`.
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if is_digits(s) {
        s.parse().ok()
    } else {
        None
    }
}

fn parse_origin(no: usize, value: &str) -> Result<Origin, SdpError> {
    let bad = || SdpError::BadField {
        kind: 'o',
        line: no,
    };
    let mut f = value.split_ascii_whitespace();
    let mut next = || f.next().map(str::to_owned).ok_or_else(bad);
    let origin = Origin {
        username: next()?,
        session_id: next()?,
        session_version: {
            let v = next()?;
            digits(&v).ok_or_else(bad)?
        },
        net_type: next()?,
        addr_type: next()?,
        address: next()?,
    };
    if f.next().is_some() {
        return Err(bad());
    }
    Ok(origin)
}

fn parse_connection(no: usize, value: &str) -> Result<Connection, SdpError> {
    let mut f = value.split_ascii_whitespace();
    match (f.next(), f.next(), f.next(), f.next()) {
        (Some(n), Some(t), Some(a), None) => Ok(Connection {
            net_type: n.to_owned(),
            addr_type: t.to_owned(),
            address: a.to_owned(),
        }),
        _ => Err(SdpError::BadField {
            kind: 'c',
            line: no,
        }),
    }
}

/// `b=<bwtype>:<bandwidth>` (RFC 8866 §5.8), kept verbatim once it has that shape.
fn parse_bandwidth(no: usize, value: &str) -> Result<String, SdpError> {
    match value.split_once(':') {
        Some((t, _)) if !t.trim_ascii().is_empty() => Ok(value.to_owned()),
        _ => Err(SdpError::BadField {
            kind: 'b',
            line: no,
        }),
    }
}

/// `a=<name>[:<value>]` (RFC 8866 §5.13). The name is trimmed; the value is kept verbatim.
fn parse_attribute(no: usize, value: &str) -> Result<Attribute, SdpError> {
    let (name, value) = match value.split_once(':') {
        Some((n, v)) => (n, Some(v.to_owned())),
        None => (value, None),
    };
    let name = name.trim_ascii();
    if name.is_empty() {
        return Err(SdpError::BadField {
            kind: 'a',
            line: no,
        });
    }
    Ok(Attribute {
        name: name.to_owned(),
        value,
    })
}

/// `m=<media> <port>[/<number of ports>] <proto> <fmt> ...` (RFC 8866 §5.14).
fn parse_media(no: usize, value: &str) -> Result<Media, SdpError> {
    let bad = || SdpError::BadField {
        kind: 'm',
        line: no,
    };
    let mut f = value.split_ascii_whitespace();
    let kind = f.next().ok_or_else(bad)?;
    let port_field = f.next().ok_or_else(bad)?;
    let proto = f.next().ok_or_else(bad)?;
    let (port, port_count) = match port_field.split_once('/') {
        Some((p, n)) => (digits(p).ok_or_else(bad)?, Some(digits(n).ok_or_else(bad)?)),
        None => (digits(port_field).ok_or_else(bad)?, None),
    };
    let formats: Vec<String> = f.map(str::to_owned).collect();
    let media = Media {
        kind: kind.to_owned(),
        port,
        port_count,
        proto: proto.to_owned(),
        formats,
        connection: None,
        bandwidths: Vec::new(),
        attributes: Vec::new(),
        other: Vec::new(),
    };
    // RFC 8866 §5.14 wants at least one format; tolerate none on a disabled stream, which some
    // UAs send when rejecting (RFC 3264 §6 says to keep one).
    if media.formats.is_empty() && port != 0 {
        return Err(bad());
    }
    // RTP formats are payload type numbers, 0-127 (RFC 3550 §5.1: a 7-bit field).
    if media.is_rtp()
        && !media
            .formats
            .iter()
            .all(|p| digits::<u8>(p).is_some_and(|p| p < 128))
    {
        return Err(bad());
    }
    Ok(media)
}
