//! The serialiser: CRLF line ends and RFC 8866 §5 line order.
//!
//! Written with `push_str` into one `String` rather than through `fmt`: the B2BUA serialises a
//! description for every offer and answer it relays, and `write!` per field cost more than the
//! rest of the rewrite.

use std::fmt;

use crate::model::{Attribute, Connection, Line, SessionDescription};
use crate::parse::{media_rank, session_rank};

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_to(&mut out);
        f.write_str(&out)
    }
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"));
}

/// Appends `k=value` and CRLF.
fn line(out: &mut String, kind: char, value: &str) {
    out.push(kind);
    out.push('=');
    out.push_str(value);
    out.push_str("\r\n");
}

fn connection(out: &mut String, c: &Connection) {
    out.push_str("c=");
    out.push_str(&c.net_type);
    out.push(' ');
    out.push_str(&c.addr_type);
    out.push(' ');
    out.push_str(&c.address);
    out.push_str("\r\n");
}

fn attributes(out: &mut String, attributes: &[Attribute]) {
    for a in attributes {
        out.push_str("a=");
        out.push_str(&a.name);
        if let Some(v) = &a.value {
            out.push(':');
            out.push_str(v);
        }
        out.push_str("\r\n");
    }
}

fn others(out: &mut String, lines: &[Line], pick: impl Fn(char) -> bool) {
    for l in lines.iter().filter(|l| pick(l.kind)) {
        line(out, l.kind, &l.value);
    }
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
        self.write_to(&mut out);
        out.into_bytes()
    }

    /// Appends the serialised description to `out`.
    pub fn write_to(&self, out: &mut String) {
        let o = &self.origin;
        out.push_str("v=0\r\no=");
        out.push_str(&o.username);
        out.push(' ');
        out.push_str(&o.session_id);
        out.push(' ');
        push_u64(out, o.session_version);
        out.push(' ');
        out.push_str(&o.net_type);
        out.push(' ');
        out.push_str(&o.addr_type);
        out.push(' ');
        out.push_str(&o.address);
        out.push_str("\r\n");
        line(out, 's', &self.session_name);
        others(out, &self.other, |k| session_rank(k) <= 3);
        if let Some(c) = &self.connection {
            connection(out, c);
        }
        for b in &self.bandwidths {
            line(out, 'b', b);
        }
        for t in &self.times {
            line(out, 't', &t.value);
            for r in &t.repeats {
                line(out, 'r', r);
            }
        }
        others(out, &self.other, |k| matches!(session_rank(k), 4 | 5));
        attributes(out, &self.attributes);
        others(out, &self.other, |k| session_rank(k) == 6);

        for m in &self.media {
            out.push_str("m=");
            out.push_str(&m.kind);
            out.push(' ');
            push_u64(out, u64::from(m.port));
            if let Some(n) = m.port_count {
                out.push('/');
                push_u64(out, u64::from(n));
            }
            out.push(' ');
            out.push_str(&m.proto);
            for f in &m.formats {
                out.push(' ');
                out.push_str(f);
            }
            out.push_str("\r\n");
            others(out, &m.other, |k| media_rank(k) == 0);
            if let Some(c) = &m.connection {
                connection(out, c);
            }
            others(out, &m.other, |k| media_rank(k) == 1);
            for b in &m.bandwidths {
                line(out, 'b', b);
            }
            others(out, &m.other, |k| media_rank(k) == 2);
            attributes(out, &m.attributes);
            others(out, &m.other, |k| media_rank(k) == 3);
        }
    }
}
