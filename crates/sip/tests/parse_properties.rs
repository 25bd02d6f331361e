//! Properties of the message checks on mutated messages: whatever `Message::parse` accepts, every
//! accessor reads (the contract of `message`), the borrowed accessors agree with the owned ones,
//! and the message survives `to_bytes` → `parse`; whatever it refuses, it refuses the same way
//! twice and without panicking. The mutations are biased towards the bytes the grammars turn on.

use confab_sip::{ContactValue, HeaderName, Message};
use proptest::prelude::*;

const SEEDS: &[&str] = &[
    "REGISTER sip:bench.confab SIP/2.0\r\n\
     Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-17-1;rport\r\n\
     Max-Forwards: 70\r\n\
     From: <sip:u17@bench.confab>;tag=4242SIPpTag0017\r\n\
     To: <sip:u17@bench.confab>\r\n\
     Call-ID: 17-4242@127.0.0.1\r\n\
     CSeq: 1 REGISTER\r\n\
     Contact: <sip:u17@127.0.0.1:5061;transport=udp>;expires=60;+sip.instance=\"<urn:x>\"\r\n\
     Expires: 3600\r\n\
     Content-Length: 0\r\n\r\n",
    "INVITE sips:bob@[2001:db8::1]:5061;lr SIP/2.0\r\n\
     v: SIP / 2.0 / TLS  host.example.com : 5061 ;branch=z9hG4bKx, SIP/2.0/UDP 192.0.2.1\r\n\
     f: \"Alice \\\"A\\\"\" <sip:alice:pw@atlanta.example.com?subject=hi>;tag=1\r\n\
     t: Bob <tel:+1-201-555-0123;phone-context=example.com>\r\n\
     i: a84b4c76e66710\r\n\
     CSeq: 314159 INVITE\r\n\
     m: sip:alice@pc33.atlanta.example.com;q=0.5, *\r\n\
     Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\
     c: application/sdp\r\n\
     l: 4\r\n\r\nv=0\r\n",
    "SIP/2.0 180 Ringing\r\n\
     Via: SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3\r\n\
     To: <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
     From: sip:alice@atlanta.example.com ; tag = 1928301774\r\n\
     Call-ID: a84b4c76e66710\r\n\
     CSeq: 314159 INVITE\r\n\
     Record-Route: <sip:p1.example.com;lr>\r\n\
     Content-Length: 0\r\n\r\n",
];

/// Bytes the grammars decide on, and some that no grammar allows.
const INTERESTING: &[u8] = b"<>\";:@?&=,.-[] \t%0a9Z\\*\r\n\xc3\xa9";

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let edit = (
        any::<prop::sample::Index>(),
        0..3u8,
        prop::sample::select(INTERESTING),
    );
    (
        prop::sample::select(SEEDS),
        proptest::collection::vec(edit, 0..4),
    )
        .prop_map(|(seed, edits)| {
            let mut bytes = seed.as_bytes().to_vec();
            for (at, kind, b) in edits {
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = b,
                    1 => bytes.insert(i, b),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn accepted_messages_read_and_round_trip(bytes in mutated()) {
        let first = Message::parse(&bytes, false);
        prop_assert_eq!(&first, &Message::parse(&bytes, false));
        let Ok(message) = first else { return Ok(()) };
        let headers = message.headers();
        match &message {
            Message::Request(r) => {
                let via = r.top_via().expect("a parsed request has a top Via");
                prop_assert_eq!(r.top_via_branch(), Ok(via.branch()));
                let from = r.from_header().expect("From parses");
                prop_assert_eq!(r.from_tag(), Ok(from.tag()));
                let to = r.to_header().expect("To parses");
                prop_assert_eq!(r.to_tag(), Ok(to.tag()));
                prop_assert_eq!(r.cseq().expect("CSeq parses").method, r.method.clone());
            }
            Message::Response(r) => {
                let via = r.top_via().expect("a parsed response has a top Via");
                prop_assert_eq!(r.top_via_branch(), Ok(via.branch()));
                let from = r.from_header().expect("From parses");
                prop_assert_eq!(r.from_tag(), Ok(from.tag()));
                let to = r.to_header().expect("To parses");
                prop_assert_eq!(r.to_tag(), Ok(to.tag()));
                prop_assert!(r.cseq().is_ok());
            }
        }
        for value in headers.values(&HeaderName::Contact) {
            prop_assert!(ContactValue::parse(value).is_ok(), "{value:?}");
        }
        let again = Message::parse(&message.to_bytes(), true);
        prop_assert_eq!(again.as_ref(), Ok(&message));
    }
}
