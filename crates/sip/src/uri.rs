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

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sip(u) => u.fmt(f),
            Self::Tel(t) => write!(f, "tel:{}{}", t.number, t.params),
            Self::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(pw) = &self.password {
                write!(f, ":{pw}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "{}", self.params)?;
        for (i, (name, value)) in self.headers.iter().enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => f.write_str(d),
            Self::Ipv4(a) => write!(f, "{a}"),
            Self::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
