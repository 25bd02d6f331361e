//! Typed header values (Via, name-addr, CSeq) and list splitting: whatever parses prints to
//! text that parses back equal; nothing panics.
#![no_main]

use confab_sip::{CSeq, ContactValue, HeaderName, Headers, NameAddr, Via};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(via) = Via::parse(text) {
        assert_eq!(Via::parse(&via.to_string()).as_ref(), Ok(&via));
    }
    if let Ok(addr) = NameAddr::parse(text) {
        assert_eq!(NameAddr::parse(&addr.to_string()).as_ref(), Ok(&addr));
    }
    if let Ok(cseq) = CSeq::parse(text) {
        assert_eq!(CSeq::parse(&cseq.to_string()).as_ref(), Ok(&cseq));
    }
    let _ = ContactValue::parse(text);
    let mut headers = Headers::new();
    headers.push(HeaderName::Contact, text);
    for value in headers.values(&HeaderName::Contact) {
        assert!(!value.is_empty());
        let _ = ContactValue::parse(value);
    }
});
