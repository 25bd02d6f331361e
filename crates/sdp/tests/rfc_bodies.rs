//! The SDP bodies of the RFC 4475 and RFC 5118 torture messages in `shared/testdata`.

mod common;

use std::net::SocketAddr;

use common::{body_of, testdata_dir};
use confab_sdp::SessionDescription;

fn body(path: &str) -> Vec<u8> {
    let file = testdata_dir().join(path);
    let message = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    body_of(&message).to_vec()
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().expect("test address"))
}

/// RFC 4475 §3.3.15 (sdp01): the SDP is fine; the message is refused for its Accept header.
#[test]
fn rfc4475_sdp01() {
    let bytes = body("rfc4475/sdp01.dat");
    let sdp = SessionDescription::parse(&bytes).unwrap();
    assert_eq!(sdp.to_bytes(), bytes, "round trip byte for byte");
    assert_eq!(sdp.origin.username, "mhandley");
    assert_eq!(sdp.media.len(), 2);
    assert_eq!(sdp.media_connection(0), addr("192.0.2.5:49217"));
    assert_eq!(sdp.media_connection(1), addr("192.0.2.5:3227"));
    let audio: Vec<_> = sdp.codecs(0).into_iter().map(|c| c.name).collect();
    assert_eq!(audio, ["PCMU", "QCELP"]);
    assert_eq!(
        sdp.codecs(1)[0].name,
        "LPC",
        "a=rtpmap wins over the RFC 3551 name (H261)"
    );
}

/// RFC 5118 §4.6 (ipv6-in-sdp): IP6 session connection, G726-32 named by rtpmap on static PT 2.
#[test]
fn rfc5118_ipv6_in_sdp() {
    let bytes = body("rfc5118/ipv6-in-sdp");
    let sdp = SessionDescription::parse(&bytes).unwrap();
    assert_eq!(sdp.to_bytes(), bytes);
    assert_eq!(sdp.origin.addr_type, "IP6");
    assert_eq!(sdp.media_connection(0), addr("[2001:db8::20]:6000"));
    assert_eq!(sdp.rtcp_address(0), addr("[2001:db8::20]:6001"));
    assert_eq!(sdp.media_connection(1), addr("[2001:db8::20]:6024"));
    assert_eq!(sdp.codecs(0)[0].name, "G726-32");
    assert_eq!(sdp.codecs(1)[0].clock_rate, 90000);
}

/// RFC 5118 §4.7 (mult-ip-in-sdp): empty s=, a host name in o=, one IP4 and one IP6 stream.
#[test]
fn rfc5118_mult_ip_in_sdp() {
    let bytes = body("rfc5118/mult-ip-in-sdp");
    let sdp = SessionDescription::parse(&bytes).unwrap();
    assert_eq!(sdp.to_bytes(), bytes);
    assert_eq!(sdp.session_name, "");
    assert_eq!(sdp.origin.address, "host.example.com");
    assert_eq!(sdp.media_connection(0), addr("192.0.2.1:22334"));
    assert_eq!(sdp.media_connection(1), addr("[2001:db8::1]:6024"));
}

/// Every RFC 4475/5118 message with an SDP body parses; no other body panics the parser.
#[test]
fn every_torture_body_is_handled() {
    let mut sdp_bodies = 0;
    for dir in ["rfc4475", "rfc5118"] {
        let Ok(entries) = std::fs::read_dir(testdata_dir().join(dir)) else {
            panic!("missing test data in {}", testdata_dir().display());
        };
        for entry in entries {
            let message = std::fs::read(entry.unwrap().path()).unwrap();
            let Some(at) = message.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let body = &message[at + 4..];
            if body.starts_with(b"v=0") {
                sdp_bodies += 1;
            }
            // Most bodies are not SDP; the result does not matter, not panicking does.
            let _ = SessionDescription::parse(body);
        }
    }
    assert!(sdp_bodies >= 3);
}
