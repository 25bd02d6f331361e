//! Random mutations of good SDPs: the parser and everything downstream never panic, and
//! whatever parses serialises to bytes that parse back equal (the round-trip property the
//! fuzz target would check). Bounded and seeded, so a failure replays.

mod common;

use std::net::IpAddr;

use common::{crlf, ALL};
use confab_sdp::{check_answer, intersect, rewrite_for_relay, OriginState, SessionDescription};

/// xorshift64*: enough randomness for mutations, and deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that make parsers stumble.
const INTERESTING: &[u8] = b"\r\n \t:/=0129aAmcvo\xff\x00-.";

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            1 => {
                let at = rng.below(len + 1);
                input.insert(at, INTERESTING[rng.below(INTERESTING.len())]);
            }
            2 if len > 0 => {
                let at = rng.below(len);
                input.remove(at);
            }
            3 if len > 0 => input.truncate(rng.below(len)),
            4 if len > 0 => {
                // Duplicate a slice somewhere (a line, often).
                let from = rng.below(len);
                let to = (from + rng.below(64)).min(len);
                let piece = input[from..to].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, piece);
            }
            5 if len > 0 => {
                let at = rng.below(len);
                input[at] = input[at].wrapping_add(1 + rng.below(3) as u8);
            }
            6 if len > 1 => {
                // Swap two bytes (reorders lines when it hits line ends).
                let (a, b) = (rng.below(len), rng.below(len));
                input.swap(a, b);
            }
            _ => {
                let digits = rng.next().to_string();
                let at = rng.below(len + 1);
                input.splice(at..at, digits.bytes());
            }
        }
    }
}

fn exercise(sdp: &SessionDescription, good: &SessionDescription) {
    let bytes = sdp.to_bytes();
    let again = SessionDescription::parse(&bytes).unwrap_or_else(|e| {
        panic!(
            "re-parse failed ({e}):\n{}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(
        &again,
        sdp,
        "round trip changed:\n{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(again.to_bytes(), bytes);
    for i in 0..sdp.media.len() + 2 {
        let _ = sdp.media_connection(i);
        let _ = sdp.rtcp_address(i);
        let _ = sdp.direction(i);
        let _ = sdp.legacy_hold(i);
        let _ = sdp.codecs(i);
    }
    let ports: Vec<u16> = (0..sdp.media.len()).map(|i| 20000 + 2 * i as u16).collect();
    let relay: IpAddr = "127.0.0.1".parse().unwrap();
    let out = rewrite_for_relay(sdp, relay, &ports, &mut OriginState::new(1));
    SessionDescription::parse(&out.to_bytes()).expect("rewrite output parses");
    let _ = check_answer(good, sdp);
    let _ = check_answer(sdp, good);
    let _ = check_answer(sdp, sdp);
    let _ = intersect(sdp, good);
    let _ = intersect(good, sdp);
}

#[test]
fn random_mutations_never_panic_and_round_trip() {
    const ROUNDS: usize = 3000;
    let mut rng = Rng(0x5EED_CAFE_F00D_D00D);
    let (mut parsed, mut refused) = (0, 0);
    for (name, text) in ALL {
        let original = crlf(text);
        let good = SessionDescription::parse(&original).unwrap();
        for round in 0..ROUNDS {
            let mut input = original.clone();
            mutate(&mut rng, &mut input);
            match SessionDescription::parse(&input) {
                Ok(sdp) => {
                    parsed += 1;
                    let result = std::panic::catch_unwind(|| exercise(&sdp, &good));
                    assert!(
                        result.is_ok(),
                        "{name} round {round}: input {:?}",
                        String::from_utf8_lossy(&input)
                    );
                }
                Err(e) => {
                    refused += 1;
                    let reason = e.to_string();
                    assert!(
                        !reason.is_empty() && !reason.contains(['\r', '\n']) && reason.len() < 64
                    );
                }
            }
        }
    }
    // Both paths were exercised.
    assert!(
        parsed > 1000 && refused > 1000,
        "parsed {parsed}, refused {refused}"
    );
}
