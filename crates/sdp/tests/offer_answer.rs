//! Media anchoring (rewrite_for_relay), o= versioning (RFC 3264 §8), answer checks (RFC 3264
//! §6) and codec intersection.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{crlf, BARESIP, HOLD_2543, LINPHONE, PJSIP, SIPP, WEBRTC};
use confab_sdp::{
    check_answer, intersect, rewrite_for_relay, Direction, OriginState, SdpError,
    SessionDescription,
};

fn parse(text: &str) -> SessionDescription {
    SessionDescription::parse(&crlf(text)).expect("sample parses")
}

fn relay() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().expect("test address"))
}

fn text(sdp: &SessionDescription) -> String {
    String::from_utf8(sdp.to_bytes()).unwrap()
}

#[test]
fn rewrite_anchors_every_stream_on_the_relay() {
    let offer = parse(LINPHONE);
    let mut leg = OriginState::new(5000);
    let out = rewrite_for_relay(&offer, relay(), &[20000, 20002], &mut leg);

    assert_eq!(out.media_connection(0), addr("127.0.0.1:20000"));
    assert_eq!(out.media_connection(1), addr("127.0.0.1:20002"));
    // a=rtcp (RFC 3605) follows the relay port.
    assert_eq!(
        out.media[0].attribute("rtcp").unwrap().value.as_deref(),
        Some("20001")
    );
    assert_eq!(out.rtcp_address(1), addr("127.0.0.1:20003"));
    // Payload types, rtpmap and fmtp untouched.
    assert_eq!(out.media[0].formats, offer.media[0].formats);
    assert_eq!(out.codecs(0), offer.codecs(0));
    assert_eq!(out.codecs(1), offer.codecs(1));
    // ICE gone at both levels, nothing else.
    let body = text(&out);
    for ice in ["candidate", "ice-ufrag", "ice-pwd"] {
        assert!(!body.contains(&format!("a={ice}")), "{ice} left in\n{body}");
    }
    assert!(body.contains("a=rtcp-xr:") && body.contains("a=rtcp-fb:97 nack pli"));
    // The far end's addresses do not leak.
    assert!(
        !body.contains("198.51.100.7") && !body.contains("203.0.113.20"),
        "{body}"
    );
    // Our o= line.
    assert_eq!(out.origin.session_id, "5000");
    assert_eq!(out.origin.session_version, 5000);
    assert_eq!(out.origin.address, "127.0.0.1");
    assert_eq!(SessionDescription::parse(&out.to_bytes()).unwrap(), out);
}

#[test]
fn rewrite_keeps_telephone_event_and_drops_media_level_connections() {
    let offer = parse(PJSIP);
    let out = rewrite_for_relay(&offer, relay(), &[30000], &mut OriginState::new(1));
    assert!(out.media[0].connection.is_none());
    assert_eq!(out.connection.as_ref().unwrap().address, "127.0.0.1");
    // a=rtcp with an address keeps the explicit form, now naming the relay.
    assert_eq!(
        out.media[0].attribute("rtcp").unwrap().value.as_deref(),
        Some("30001 IN IP4 127.0.0.1")
    );
    let events: Vec<_> = out
        .codecs(0)
        .into_iter()
        .filter(|c| c.name == "telephone-event")
        .collect();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|c| c.fmtp.as_deref() == Some("0-16")));
    assert_eq!(out.media[0].bandwidths, ["TIAS:64000"]);
}

#[test]
fn rewrite_keeps_disabled_streams_disabled() {
    let mut offer = parse(LINPHONE);
    offer.media[1].port = 0;
    let out = rewrite_for_relay(&offer, relay(), &[20000, 20002], &mut OriginState::new(1));
    assert_eq!(out.media[0].port, 20000);
    assert_eq!(out.media[1].port, 0);
    assert!(!out.media[1].has_attribute("rtcp"));
    // A stream the relay has no port for is disabled rather than pointed at nothing.
    let out = rewrite_for_relay(
        &parse(LINPHONE),
        relay(),
        &[20000],
        &mut OriginState::new(1),
    );
    assert_eq!((out.media[0].port, out.media[1].port), (20000, 0));
}

#[test]
fn rewrite_webrtc_offer() {
    let out = rewrite_for_relay(&parse(WEBRTC), relay(), &[40000], &mut OriginState::new(9));
    let body = text(&out);
    for gone in [
        "a=candidate",
        "a=ice-",
        "a=end-of-candidates",
        "203.0.113.5",
        "2001:db8::5",
    ] {
        assert!(!body.contains(gone), "{gone} left in\n{body}");
    }
    // DTLS and the rest pass through: the relay forwards packets, it is no DTLS endpoint.
    for kept in [
        "a=fingerprint:sha-256",
        "a=setup:actpass",
        "a=rtcp-mux",
        "a=group:BUNDLE 0",
        "a=mid:0",
    ] {
        assert!(body.contains(kept), "{kept} missing\n{body}");
    }
    assert_eq!(
        out.media[0].attribute("rtcp").unwrap().value.as_deref(),
        Some("40001 IN IP4 127.0.0.1")
    );
    assert_eq!(out.media_connection(0), addr("127.0.0.1:40000"));
}

#[test]
fn rewrite_keeps_hold_signals() {
    // sendonly is an attribute: it passes through as is.
    let held = parse(&BARESIP.replace("a=sendrecv", "a=sendonly"));
    let out = rewrite_for_relay(&held, relay(), &[20000], &mut OriginState::new(1));
    assert_eq!(out.direction(0), Direction::SendOnly);
    // An RFC 2543 hold (c=0.0.0.0) stays one on the other leg.
    let out = rewrite_for_relay(
        &parse(HOLD_2543),
        relay(),
        &[20000],
        &mut OriginState::new(1),
    );
    assert!(out.legacy_hold(0));
    assert_eq!(out.media[0].port, 20000);
    assert_eq!(out.connection.as_ref().unwrap().address, "127.0.0.1");
}

#[test]
fn rewrite_ipv4_offer_for_an_ipv6_relay() {
    let v6: IpAddr = "::1".parse().unwrap();
    let out = rewrite_for_relay(&parse(SIPP), v6, &[6000], &mut OriginState::new(1));
    assert_eq!(out.media_connection(0), addr("[::1]:6000"));
    assert_eq!(
        (out.origin.addr_type.as_str(), out.origin.address.as_str()),
        ("IP6", "::1")
    );
    assert!(text(&out).contains("c=IN IP6 ::1\r\n"));
}

#[test]
fn rtcp_port_overflow_drops_the_attribute() {
    let out = rewrite_for_relay(
        &parse(LINPHONE),
        relay(),
        &[65535, 20002],
        &mut OriginState::new(1),
    );
    assert!(!out.media[0].has_attribute("rtcp"));
    assert_eq!(out.rtcp_address(0), None);
}

/// RFC 3264 §8: one o= per leg, its version bumped on change and only then.
#[test]
fn origin_version_increments_on_change_only() {
    let mut leg = OriginState::new(1000).with_username("confab");
    let offer = parse(BARESIP);
    let first = rewrite_for_relay(&offer, relay(), &[20000], &mut leg);
    assert_eq!(first.origin.session_version, 1000);
    assert_eq!(first.origin.username, "confab");

    // The same offer again (a session refresh re-INVITE): same version, same bytes.
    let again = rewrite_for_relay(&offer, relay(), &[20000], &mut leg);
    assert_eq!(again.origin.session_version, 1000);
    assert_eq!(again.to_bytes(), first.to_bytes());

    // The far end bumps its version but changes nothing we send: still no change on our leg.
    let mut bumped = offer.clone();
    bumped.origin.session_version += 1;
    let out = rewrite_for_relay(&bumped, relay(), &[20000], &mut leg);
    assert_eq!(out.origin.session_version, 1000);

    // Hold: changed, so version + 1.
    let held = parse(&BARESIP.replace("a=sendrecv", "a=sendonly"));
    let out = rewrite_for_relay(&held, relay(), &[20000], &mut leg);
    assert_eq!(out.origin.session_version, 1001);
    assert_eq!(leg.version(), 1001);
    // Resume: changed again.
    let out = rewrite_for_relay(&offer, relay(), &[20000], &mut leg);
    assert_eq!(out.origin.session_version, 1002);
    // A new relay port is a change too.
    let out = rewrite_for_relay(&offer, relay(), &[20010], &mut leg);
    assert_eq!(out.origin.session_version, 1003);
    assert_eq!(out.origin.session_id, "1000");

    // Another leg has its own o= line.
    let mut other = OriginState::new(77);
    assert_eq!(
        rewrite_for_relay(&offer, relay(), &[20000], &mut other)
            .origin
            .session_version,
        77
    );

    // A user name that would break the o= line is replaced by "-".
    let mut odd = OriginState::new(1).with_username("two words");
    let mut sdp = parse(SIPP);
    odd.stamp(&mut sdp, relay());
    assert_eq!(sdp.origin.username, "-");
}

const ANSWER_PCMA: &str = "v=0
o=bob 1 1 IN IP4 192.0.2.20
s=-
c=IN IP4 192.0.2.20
t=0 0
m=audio 5000 RTP/AVP 8 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
";

#[test]
fn good_answers_pass() {
    let offer = parse(BARESIP);
    check_answer(&offer, &parse(ANSWER_PCMA)).unwrap();
    // A dynamic payload type renumbered by the answerer is matched by name.
    check_answer(
        &offer,
        &parse(
            &ANSWER_PCMA
                .replace("RTP/AVP 8 101", "RTP/AVP 100")
                .replace(":101 ", ":100 "),
        ),
    )
    .unwrap();
    // Extra formats not in the offer are allowed (RFC 3264 §6.1), one common is enough.
    check_answer(
        &offer,
        &parse(&ANSWER_PCMA.replace("RTP/AVP 8 101", "RTP/AVP 3 8")),
    )
    .unwrap();
    // A rejected stream (port 0) needs nothing in common.
    check_answer(
        &offer,
        &parse(&ANSWER_PCMA.replace("m=audio 5000 RTP/AVP 8 101", "m=audio 0 RTP/AVP 3")),
    )
    .unwrap();
    // An answer to itself, for every sample.
    for (name, sample) in common::ALL {
        let sdp = parse(sample);
        check_answer(&sdp, &sdp).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn bad_answers_fail_with_reasons() {
    let offer = parse(BARESIP);
    let two = format!("{ANSWER_PCMA}m=video 0 RTP/AVP 31\n");
    assert_eq!(
        check_answer(&offer, &parse(&two)),
        Err(SdpError::MediaCountMismatch {
            offer: 1,
            answer: 2
        })
    );
    let e = check_answer(
        &offer,
        &parse(&ANSWER_PCMA.replace("RTP/AVP 8 101", "RTP/AVP 3")),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "No common format for media 0");
    assert!(!e.is_malformed());
    // RFC 3264 §6.1 asks for one common format; telephone-event alone is one.
    check_answer(
        &offer,
        &parse(&ANSWER_PCMA.replace("RTP/AVP 8 101", "RTP/AVP 101")),
    )
    .unwrap();
    // Same payload type, different encoding: not common.
    let clash = ANSWER_PCMA
        .replace("RTP/AVP 8 101", "RTP/AVP 101")
        .replace("telephone-event/8000", "opus/48000/2");
    assert_eq!(
        check_answer(&offer, &parse(&clash)),
        Err(SdpError::NoCommonFormat { media: 0 })
    );
    assert_eq!(
        check_answer(&offer, &parse(&ANSWER_PCMA.replace("m=audio", "m=video"))),
        Err(SdpError::MediaTypeMismatch { media: 0 })
    );
    let mut disabled = offer.clone();
    disabled.media[0].port = 0;
    assert_eq!(
        check_answer(&disabled, &parse(ANSWER_PCMA)),
        Err(SdpError::DisabledStreamAccepted { media: 0 })
    );
    let multicast = ANSWER_PCMA.replace("c=IN IP4 192.0.2.20", "c=IN IP4 233.252.0.1/127");
    assert_eq!(
        check_answer(&offer, &parse(&multicast)),
        Err(SdpError::MulticastAnswer { media: 0 })
    );
}

const SUPPORTED: &str = "v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 0 RTP/AVP 8 0 101
a=rtpmap:8 pcma/8000
a=rtpmap:101 telephone-event/8000
";

#[test]
fn intersect_keeps_offered_payload_types_we_support() {
    let out = intersect(&parse(PJSIP), &parse(SUPPORTED));
    // Offer order and offer numbers; opus, G722 and the 48 kHz events gone.
    assert_eq!(out.media[0].formats, ["8", "0", "102"]);
    let body = text(&out);
    assert!(
        !body.contains("opus") && !body.contains("a=fmtp:101") && !body.contains("a=rtpmap:9 "),
        "{body}"
    );
    assert!(
        body.contains("a=rtpmap:102 telephone-event/8000\r\na=fmtp:102 0-16"),
        "{body}"
    );
    assert_eq!(out.media[0].port, 4000);

    // Video we do not support: disabled, formats kept so the m= line stays valid.
    let out = intersect(&parse(LINPHONE), &parse(SUPPORTED));
    assert_eq!(out.media[0].formats, ["0", "8", "100"]);
    assert_eq!(out.media[1].port, 0);
    assert_eq!(out.media[1].formats, ["96", "97"]);
    assert!(out.media[0].has_attribute("rtcp-fb"), "rtcp-fb:* stays");

    // Only telephone-event in common: nothing to talk with, disabled.
    let only_events = SUPPORTED.replace("RTP/AVP 8 0 101", "RTP/AVP 101");
    assert_eq!(
        intersect(&parse(PJSIP), &parse(&only_events)).media[0].port,
        0
    );
    // The result is valid SDP.
    assert!(SessionDescription::parse(&out.to_bytes()).is_ok());
}
