//! URIs: whatever parses prints (`Display`) to text that parses back to an equal URI.
#![no_main]

use confab_sip::Uri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = Uri::parse(text) else { return };
    let printed = uri.to_string();
    assert_eq!(Uri::parse(&printed).as_ref(), Ok(&uri), "{printed}");
    if let Some(sip) = uri.as_sip() {
        let _ = sip.user_unescaped();
        let _ = sip.transport_param();
    }
});
