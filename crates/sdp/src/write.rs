//! The serialiser: CRLF line ends and RFC 8866 §5 line order.

use std::fmt::{self, Write};

use crate::model::{Attribute, Connection, Line, SessionDescription};
use crate::parse::{media_rank, session_rank};

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} {} {} {}\r\n",
            o.username, o.session_id, o.session_version, o.net_type, o.addr_type, o.address
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        others(f, &self.other, |k| session_rank(k) <= 3)?;
        if let Some(c) = &self.connection {
            connection(f, c)?;
        }
        for b in &self.bandwidths {
            write!(f, "b={b}\r\n")?;
        }
        for t in &self.times {
            write!(f, "t={}\r\n", t.value)?;
            for r in &t.repeats {
                write!(f, "r={r}\r\n")?;
            }
        }
        others(f, &self.other, |k| matches!(session_rank(k), 4 | 5))?;
        attributes(f, &self.attributes)?;
        others(f, &self.other, |k| session_rank(k) == 6)?;

        for m in &self.media {
            write!(f, "m={} {}", m.kind, m.port)?;
            if let Some(n) = m.port_count {
                write!(f, "/{n}")?;
            }
            write!(f, " {}", m.proto)?;
            for fmt in &m.formats {
                write!(f, " {fmt}")?;
            }
            f.write_str("\r\n")?;
            others(f, &m.other, |k| media_rank(k) == 0)?;
            if let Some(c) = &m.connection {
                connection(f, c)?;
            }
            others(f, &m.other, |k| media_rank(k) == 1)?;
            for b in &m.bandwidths {
                write!(f, "b={b}\r\n")?;
            }
            others(f, &m.other, |k| media_rank(k) == 2)?;
            attributes(f, &m.attributes)?;
            others(f, &m.other, |k| media_rank(k) == 3)?;
        }
        Ok(())
    }
}

fn connection(f: &mut fmt::Formatter<'_>, c: &Connection) -> fmt::Result {
    write!(f, "c={} {} {}\r\n", c.net_type, c.addr_type, c.address)
}

fn attributes(f: &mut fmt::Formatter<'_>, attributes: &[Attribute]) -> fmt::Result {
    for a in attributes {
        match &a.value {
            Some(v) => write!(f, "a={}:{v}\r\n", a.name)?,
            None => write!(f, "a={}\r\n", a.name)?,
        }
    }
    Ok(())
}

fn others(f: &mut fmt::Formatter<'_>, lines: &[Line], pick: impl Fn(char) -> bool) -> fmt::Result {
    for l in lines.iter().filter(|l| pick(l.kind)) {
        f.write_char(l.kind)?;
        write!(f, "={}\r\n", l.value)?;
    }
    Ok(())
}

impl SessionDescription {
    /// The body to send: CRLF line ends, RFC 8866 §5 line order, `v=0` first.
    ///
    /// Whatever [`parse`](Self::parse) returned serialises to bytes that parse back equal.
    pub fn to_bytes(&self) -> Vec<u8> {
        let lines = 8
            + self.attributes.len()
            + self
                .media
                .iter()
                .map(|m| 2 + m.attributes.len())
                .sum::<usize>();
        let mut out = String::with_capacity(lines * 32);
        // Writing into a String cannot fail.
        let _ = write!(out, "{self}");
        out.into_bytes()
    }
}
