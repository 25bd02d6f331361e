//! Property tests: generated URIs, Via values and name-addrs print (`Display`) to text that
//! parses back to the same value (RFC 3261 §19.1, §20.42, §25.1 grammar).

use std::net::{Ipv4Addr, Ipv6Addr};

use confab_sip::{Host, NameAddr, Params, SipUri, TelUri, Uri, Via};
use proptest::prelude::*;

/// Strings over `alphabet`, optionally with %-escapes mixed in.
fn chars(alphabet: &'static str, min: usize, max: usize) -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        4 => proptest::sample::select(alphabet.chars().collect::<Vec<_>>()).prop_map(String::from),
        1 => (0u8..=255).prop_map(|b| format!("%{b:02X}")),
    ];
    proptest::collection::vec(unit, min..=max).prop_map(|v| v.concat())
}

const UNRESERVED: &str = "abcXYZ019-_.!~*'()";
const USER: &str = "abcXYZ019-_.!~*'()&=+$,;?/";
const PASSWORD: &str = "abcXYZ019-_.!~*'()&=+$,";
const PARAM: &str = "abcXYZ019-_.!~*'()[]/:&+$";
const HEADER: &str = "abcXYZ019-_.!~*'()[]/?:+$";
const TOKEN: &str = "abcXYZ019-.!%*_+`'~";

fn domain() -> impl Strategy<Value = String> {
    let label = "[a-z]([a-z0-9-]{0,6}[a-z0-9])?";
    proptest::collection::vec(label, 1..4).prop_map(|v| v.join("."))
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        domain().prop_map(Host::Domain),
        any::<[u8; 4]>().prop_map(|o| Host::Ipv4(Ipv4Addr::from(o))),
        any::<[u16; 8]>().prop_map(|s| Host::Ipv6(Ipv6Addr::from(s))),
    ]
}

fn uri_params() -> impl Strategy<Value = Params> {
    proptest::collection::vec(
        (chars(PARAM, 1, 8), proptest::option::of(chars(PARAM, 0, 8))),
        0..4,
    )
    .prop_map(Params)
}

fn sip_uri() -> impl Strategy<Value = SipUri> {
    (
        any::<bool>(),
        proptest::option::of((
            chars(USER, 1, 10),
            proptest::option::of(chars(PASSWORD, 0, 6)),
        )),
        host(),
        proptest::option::of(any::<u16>()),
        uri_params(),
        proptest::collection::vec((chars(HEADER, 1, 6), chars(HEADER, 0, 6)), 0..3),
    )
        .prop_map(|(secure, userinfo, host, port, params, headers)| {
            let (user, password) = match userinfo {
                Some((u, p)) => (Some(u), p),
                None => (None, None),
            };
            SipUri {
                secure,
                user,
                password,
                host,
                port,
                params,
                headers,
            }
        })
}

fn uri() -> impl Strategy<Value = Uri> {
    prop_oneof![
        4 => sip_uri().prop_map(Uri::Sip),
        1 => ("\\+?[0-9][0-9().-]{0,12}", uri_params()).prop_map(|(number, params)| Uri::Tel(TelUri { number, params })),
        1 => ("[a-z][a-z0-9+.-]{0,6}", chars(UNRESERVED, 1, 12))
            .prop_filter("known schemes parse to their own variants", |(s, _)| !["sip", "sips", "tel"].contains(&s.as_str()))
            .prop_map(|(scheme, rest)| Uri::Other { scheme, rest }),
    ]
}

/// Header parameters: token names, values a token or a quoted string (kept with quotes).
fn header_params() -> impl Strategy<Value = Params> {
    let value = prop_oneof![
        "[a-zA-Z0-9.!%*_+`'~-]{1,8}",
        "[ a-zA-Z0-9,;:<>@=/]{0,8}".prop_map(|q| format!("\"{q}\"")),
    ];
    proptest::collection::vec(
        (
            proptest::string::string_regex("[a-zA-Z0-9.!%*_+`'~-]{1,8}").expect("regex"),
            proptest::option::of(value),
        ),
        0..4,
    )
    .prop_map(Params)
}

fn via() -> impl Strategy<Value = Via> {
    (
        "UDP|TCP|TLS|WS|WSS|SCTP",
        host(),
        proptest::option::of(any::<u16>()),
        header_params(),
    )
        .prop_map(|(transport, host, port, params)| Via {
            transport,
            host,
            port,
            params,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn uri_display_parses_back(u in uri()) {
        let text = u.to_string();
        prop_assert_eq!(Uri::parse(&text), Ok(u), "{}", text);
    }

    #[test]
    fn via_display_parses_back(v in via()) {
        let text = v.to_string();
        prop_assert_eq!(Via::parse(&text), Ok(v), "{}", text);
    }

    #[test]
    fn name_addr_display_parses_back(
        display in proptest::option::of("[ a-zA-Z0-9,;:<>@]{0,10}"),
        u in uri(),
        params in header_params(),
    ) {
        let n = NameAddr { display, uri: u, params };
        let text = n.to_string();
        prop_assert_eq!(NameAddr::parse(&text), Ok(n), "{}", text);
    }

    #[test]
    fn token_alphabet_is_what_the_parser_accepts(name in chars(TOKEN, 1, 8)) {
        // Method and header names accept every token character, %-escapes included.
        let text = format!("SIP/2.0/UDP h;{name}");
        prop_assert!(Via::parse(&text).is_ok(), "{}", text);
    }
}
