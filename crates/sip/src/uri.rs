//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), with IPv6 references (RFC 5118).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::header::Params;
use crate::ParseError;

/// Any URI that may appear in a Request-URI or a name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    Tel(TelUri),
    /// Any other absolute URI (`http:`, `urn:`...), kept verbatim after the scheme.
    Other {
        scheme: String,
        rest: String,
    },
}

/// `sip:` or `sips:` URI. `user` and `password` are kept in their escaped wire form so they
/// re-serialise untouched; use [`SipUri::user_unescaped`] to compare user parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
    /// `?name=value&...` headers, escaped wire form.
    pub headers: Vec<(String, String)>,
}

/// `tel:` URI (RFC 3966): the number and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    pub number: String,
    pub params: Params,
}

/// The host part of a SIP URI or Via.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, lower-cased by the parser (host names compare case-insensitively).
    Domain(String),
    Ipv4(Ipv4Addr),
    /// Written `[..]` on the wire.
    Ipv6(Ipv6Addr),
}

impl Uri {
    /// Parses an absolute URI.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        crate::parse::uri(s)
    }

    /// The SIP/SIPS URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Self::Sip(u) => Some(u),
            _ => None,
        }
    }
}

impl SipUri {
    /// The user part with %-escapes decoded (RFC 3261 §19.1.4 compares it decoded).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user.as_deref().map(crate::parse::unescape)
    }

    /// The `transport` URI parameter, lower-cased.
    pub fn transport_param(&self) -> Option<String> {
        self.params
            .get("transport")
            .flatten()
            .map(|t| t.to_ascii_lowercase())
    }
}

/// Writes a URI as its `Display` does, with `write_str` calls only (no formatting machinery:
/// the serialiser writes a Request-URI for every request sent).
pub(crate) fn write_uri<W: fmt::Write + ?Sized>(w: &mut W, uri: &Uri) -> fmt::Result {
    match uri {
        Uri::Sip(u) => write_sip_uri(w, u),
        Uri::Tel(t) => {
            w.write_str("tel:")?;
            w.write_str(&t.number)?;
            write_params(w, &t.params)
        }
        Uri::Other { scheme, rest } => {
            w.write_str(scheme)?;
            w.write_str(":")?;
            w.write_str(rest)
        }
    }
}

fn write_sip_uri<W: fmt::Write + ?Sized>(w: &mut W, u: &SipUri) -> fmt::Result {
    w.write_str(if u.secure { "sips:" } else { "sip:" })?;
    if let Some(user) = &u.user {
        w.write_str(user)?;
        if let Some(pw) = &u.password {
            w.write_str(":")?;
            w.write_str(pw)?;
        }
        w.write_str("@")?;
    }
    write_host(w, &u.host)?;
    if let Some(port) = u.port {
        w.write_str(":")?;
        write_decimal(w, u32::from(port))?;
    }
    write_params(w, &u.params)?;
    for (i, (name, value)) in u.headers.iter().enumerate() {
        w.write_str(if i == 0 { "?" } else { "&" })?;
        w.write_str(name)?;
        w.write_str("=")?;
        w.write_str(value)?;
    }
    Ok(())
}

/// `;name` or `;name=value` for each parameter (as `Params`' `Display`).
pub(crate) fn write_params<W: fmt::Write + ?Sized>(w: &mut W, params: &Params) -> fmt::Result {
    for (name, value) in &params.0 {
        w.write_str(";")?;
        w.write_str(name)?;
        if let Some(v) = value {
            w.write_str("=")?;
            w.write_str(v)?;
        }
    }
    Ok(())
}

/// A host as its `Display` writes it.
pub(crate) fn write_host<W: fmt::Write + ?Sized>(w: &mut W, host: &Host) -> fmt::Result {
    match host {
        Host::Domain(d) => w.write_str(d),
        Host::Ipv4(a) => {
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    w.write_str(".")?;
                }
                write_decimal(w, u32::from(octet))?;
            }
            Ok(())
        }
        Host::Ipv6(a) => write!(w, "[{a}]"),
    }
}

/// `n` in decimal, as `{}` writes it.
pub(crate) fn write_decimal<W: fmt::Write + ?Sized>(w: &mut W, mut n: u32) -> fmt::Result {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        // A digit: n % 10 < 10.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits are UTF-8.
    w.write_str(std::str::from_utf8(&digits[i..]).unwrap_or(""))
}

/// Room for the text of a `Display` before it reaches the `Formatter` (see [`buffered`]).
const TEXT_BUFFER: usize = 512;

/// Text built on the stack; a write that does not fit fails (and so does every later one).
struct StackText {
    buf: [u8; TEXT_BUFFER],
    len: usize,
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Runs `write` into a stack buffer, then hands the text to `f` in one `write_str`.
///
/// `to_string` starts from an empty String that every `write_str` grows; one write sizes it
/// once instead (a value is written in a dozen pieces). Text too long for the buffer is written
/// to `f` directly, piece by piece.
pub(crate) fn buffered(
    f: &mut fmt::Formatter<'_>,
    write: impl Fn(&mut dyn fmt::Write) -> fmt::Result,
) -> fmt::Result {
    let mut text = StackText {
        buf: [0; TEXT_BUFFER],
        len: 0,
    };
    // Whole `str`s only were copied in, so the bytes are UTF-8.
    match write(&mut text)
        .ok()
        .and_then(|()| std::str::from_utf8(text.buf.get(..text.len)?).ok())
    {
        Some(s) => f.write_str(s),
        None => write(f),
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        buffered(f, |w| write_uri(w, self))
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        buffered(f, |w| write_sip_uri(w, self))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_host(f, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_beyond_the_stack_buffer_and_with_flags() {
        let long = "x".repeat(TEXT_BUFFER + 10);
        let text = format!("sip:{long}@example.com;p={long}");
        let u = Uri::parse(&text).unwrap();
        assert_eq!(u.to_string(), text);
        // Width and fill were never applied to URIs; still not.
        let short = Uri::parse("sip:a@example.com").unwrap();
        assert_eq!(format!("[{short:>30}]"), "[sip:a@example.com]");
        assert_eq!(
            format!("{}", Host::Ipv4("192.0.2.1".parse().unwrap())),
            "192.0.2.1"
        );
        assert_eq!(
            format!("{}", Host::Ipv6("2001:db8::1".parse().unwrap())),
            "[2001:db8::1]"
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "sip:alice@atlanta.com",
            "sips:alice:pw@atlanta.com:5061;transport=tcp;lr?subject=project%20x&priority=urgent",
            "sip:[2001:db8::10]:5070",
            "sip:ted@[::ffff:192.0.2.2]",
            "sip:192.0.2.1;maddr=239.255.255.1;ttl=15",
            "sip:user;par=u%40example.net@example.com",
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
            "tel:+1-201-555-0123;phone-context=example.com",
            "nobodyKnowsThisScheme:totallyopaquecontent",
            "soap.beep://192.0.2.103:3002",
        ] {
            let u = Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(u.to_string(), s);
            assert_eq!(Uri::parse(&u.to_string()).unwrap(), u);
        }
    }

    #[test]
    fn normalises_scheme_and_host_case() {
        let u = Uri::parse("SIP:Alice@AtLanTa.COM").unwrap();
        assert_eq!(u.to_string(), "sip:Alice@atlanta.com");
    }

    #[test]
    fn escaped_user_compares_decoded() {
        let Uri::Sip(u) = Uri::parse("sip:%75se%72@example.com").unwrap() else {
            panic!("sip")
        };
        assert_eq!(u.user.as_deref(), Some("%75se%72"));
        assert_eq!(u.user_unescaped().as_deref(), Some("user"));
        assert!(u.transport_param().is_none());
        assert!(Uri::parse("tel:123").unwrap().as_sip().is_none());
    }
}
