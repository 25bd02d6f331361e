//! RFC 4475 (SIP torture tests) and RFC 5118 (IPv6 torture tests): every message in
//! `shared/testdata/{rfc4475,rfc5118}` gets the parser verdict its RFC section asks for, and
//! every accepted message survives `to_bytes` → `parse` unchanged.
//!
//! Messages are parsed with datagram rules (`stream == false`), as they would arrive over UDP;
//! the re-serialised form is parsed with stream rules, since it always carries Content-Length.

use std::collections::BTreeMap;
use std::path::PathBuf;

use confab_sip::message::recover_request_headers;
use confab_sip::{HeaderName, Message};

/// What the parser must do with a file.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Parses; any further refusal is the application's (see `message::application_checks`).
    Accept,
    /// Refused with this status; the reason must contain the text.
    Reject(u16, &'static str),
    /// A malformed response: refused (and so dropped by the caller); no status is sent.
    Drop(&'static str),
}
use Verdict::*;

fn expectations() -> BTreeMap<&'static str, Verdict> {
    BTreeMap::from([
        // RFC 4475 §3.1.1: valid messages.
        ("rfc4475/wsinv.dat", Accept),
        ("rfc4475/intmeth.dat", Accept),
        ("rfc4475/esc01.dat", Accept),
        ("rfc4475/escnull.dat", Accept),
        ("rfc4475/esc02.dat", Accept),
        ("rfc4475/lwsdisp.dat", Accept),
        ("rfc4475/longreq.dat", Accept),
        ("rfc4475/dblreq.dat", Accept),
        ("rfc4475/semiuri.dat", Accept),
        ("rfc4475/transports.dat", Accept),
        ("rfc4475/mpart01.dat", Accept),
        ("rfc4475/unreason.dat", Accept),
        ("rfc4475/noreason.dat", Accept),
        // RFC 4475 §3.1.2: invalid messages.
        ("rfc4475/badinv01.dat", Reject(400, "Via")),
        (
            "rfc4475/clerr.dat",
            Reject(400, "shorter than Content-Length"),
        ),
        ("rfc4475/ncl.dat", Reject(400, "Bad Content-Length")),
        ("rfc4475/scalar02.dat", Reject(400, "CSeq")),
        ("rfc4475/scalarlg.dat", Drop("CSeq")),
        ("rfc4475/quotbal.dat", Reject(400, "To")),
        ("rfc4475/ltgtruri.dat", Reject(400, "Request-URI")),
        ("rfc4475/lwsruri.dat", Reject(400, "Request-Line")),
        ("rfc4475/lwsstart.dat", Reject(400, "Request-Line")),
        // §3.1.2.10 allows dropping the SPs too; we are strict.
        ("rfc4475/trws.dat", Reject(400, "SIP version")),
        // §3.1.2.11 allows ignoring the escaped headers too; we are strict.
        ("rfc4475/escruri.dat", Reject(400, "headers")),
        // §3.1.2.12 allows ignoring the Date too; we are strict.
        ("rfc4475/baddate.dat", Reject(400, "Date")),
        ("rfc4475/regbadct.dat", Reject(400, "Contact")),
        ("rfc4475/badaspec.dat", Reject(400, "To")),
        ("rfc4475/baddn.dat", Reject(400, "From")),
        ("rfc4475/badvers.dat", Reject(505, "Version")),
        ("rfc4475/mismatch01.dat", Reject(400, "CSeq method")),
        ("rfc4475/mismatch02.dat", Reject(400, "CSeq method")),
        ("rfc4475/bigcode.dat", Drop("status code")),
        // RFC 4475 §3.2: transaction layer semantics.
        ("rfc4475/badbranch.dat", Accept),
        // RFC 4475 §3.3: application layer semantics.
        ("rfc4475/insuf.dat", Reject(400, "Missing")),
        ("rfc4475/unkscm.dat", Accept),
        ("rfc4475/novelsc.dat", Accept),
        ("rfc4475/unksm2.dat", Accept),
        ("rfc4475/bext01.dat", Accept),
        ("rfc4475/invut.dat", Accept),
        ("rfc4475/regaut01.dat", Accept),
        ("rfc4475/multi01.dat", Reject(400, "Multiple")),
        ("rfc4475/mcl01.dat", Reject(400, "Multiple Content-Length")),
        ("rfc4475/bcast.dat", Accept),
        ("rfc4475/zeromf.dat", Accept),
        ("rfc4475/cparam01.dat", Accept),
        ("rfc4475/cparam02.dat", Accept),
        ("rfc4475/regescrt.dat", Accept),
        ("rfc4475/sdp01.dat", Accept),
        // RFC 4475 §3.4: backward compatibility.
        ("rfc4475/inv2543.dat", Accept),
        // RFC 5118.
        ("rfc5118/ipv6-good", Accept),
        ("rfc5118/ipv6-bad", Reject(400, "Request-URI")),
        ("rfc5118/port-ambiguous", Accept),
        ("rfc5118/port-unambiguous", Accept),
        ("rfc5118/ipv6-bug-abnf-3-colons", Reject(400, "Request-URI")),
        ("rfc5118/ipv6-correct-abnf-2-colons", Accept),
        ("rfc5118/ipv4-mapped-ipv6", Accept),
        ("rfc5118/ipv6-in-sdp", Accept),
        ("rfc5118/mult-ip-in-header", Accept),
        ("rfc5118/mult-ip-in-sdp", Accept),
        ("rfc5118/via-received-param-no-delim", Accept),
        ("rfc5118/via-received-param-with-delim", Accept),
    ])
}

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata")
}

/// Every file of both directories, as ("rfc4475/name.dat", bytes).
fn files() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        let path = testdata().join(dir);
        let entries =
            std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let name = format!("{dir}/{}", entry.file_name().to_string_lossy());
            out.push((
                name,
                std::fs::read(entry.path()).expect("readable test file"),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn every_torture_message_gets_its_verdict() {
    let expect = expectations();
    let files = files();
    assert_eq!(
        files.len(),
        49 + 12,
        "RFC 4475 has 49 messages, RFC 5118 has 12"
    );
    let mut failures = Vec::new();
    for (name, bytes) in &files {
        let Some(verdict) = expect.get(name.as_str()) else {
            failures.push(format!("{name}: no expectation in the table"));
            continue;
        };
        let got = Message::parse(bytes, false);
        match (verdict, &got) {
            (Accept, Ok(m)) => {
                let again = Message::parse(&m.to_bytes(), true);
                if again.as_ref() != Ok(m) {
                    failures.push(format!("{name}: round trip changed the message: {again:?}"));
                }
            }
            (Reject(status, why), Err(e)) if e.status == *status && e.reason.contains(why) => {
                // The server can still form its error response.
                if recover_request_headers(bytes).is_none_or(|h| h.get(&HeaderName::Via).is_none())
                {
                    failures.push(format!(
                        "{name}: no Via recovered for the {status} response"
                    ));
                }
            }
            (Drop(why), Err(e)) if e.reason.contains(why) => {
                if recover_request_headers(bytes).is_some() {
                    failures.push(format!("{name}: a response must not look like a request"));
                }
            }
            _ => failures.push(format!("{name}: expected {verdict:?}, got {got:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_table_entry_has_a_file() {
    let files = files();
    for name in expectations().keys() {
        assert!(
            files.iter().any(|(n, _)| n == name),
            "{name} listed but missing"
        );
    }
}

/// RFC 4475 §3.1.1.8 `dblreq`: over UDP the octets after Content-Length are ignored.
#[test]
fn dblreq_parses_only_the_first_request() {
    let bytes = std::fs::read(testdata().join("rfc4475/dblreq.dat")).expect("dblreq");
    let Ok(Message::Request(r)) = Message::parse(&bytes, false) else {
        panic!("dblreq must parse")
    };
    assert_eq!(r.method, confab_sip::Method::Register);
    assert!(r.body.is_empty());
}

/// No torture message, truncated anywhere, makes the parser panic; datagram or stream.
#[test]
fn truncations_never_panic() {
    for (_, bytes) in files() {
        for cut in 0..bytes.len() {
            let part = &bytes[..cut];
            let _ = Message::parse(part, false);
            let _ = Message::parse(part, true);
            let _ = recover_request_headers(part);
        }
    }
}
