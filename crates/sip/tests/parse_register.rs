//! A typical REGISTER parsed and serialised many times: catches accidental quadratic work or
//! runaway allocation in the hot path (bounded by iteration count and allocation count, not by
//! a clock).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use confab_sip::{HeaderName, Message};

/// Counts this thread's allocations so the test can bound them (the allocation count is what
/// dominates the parse time of a small message); per thread, so tests running in parallel do not
/// disturb the count.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK.5f3a9c2e1d\r\n\
Max-Forwards: 70\r\n\
From: \"Alice Smith\" <sip:alice@example.com>;tag=8c3e7f9a21\r\n\
To: \"Alice Smith\" <sip:alice@example.com>\r\n\
Call-ID: 7d1f0b2c9e8a4b3c@192.0.2.10\r\n\
CSeq: 20 REGISTER\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";expires=3600\r\n\
Expires: 3600\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, NOTIFY, MESSAGE, REFER, UPDATE\r\n\
Supported: path, outbound, gruu\r\n\
User-Agent: Confab-Test/1.0\r\n\
Content-Length: 0\r\n\
\r\n";

#[test]
fn register_parse_serialise_10k() {
    assert!((400..600).contains(&REGISTER.len()));
    let mut total = 0;
    for _ in 0..10_000 {
        let m = Message::parse(REGISTER, true).expect("REGISTER parses");
        let out = m.to_bytes();
        total += out.len();
        assert_eq!(m.headers().values(&HeaderName::Allow).count(), 10);
    }
    assert_eq!(total, REGISTER.len() * 10_000);
}

#[test]
fn register_allocations_are_bounded() {
    let a = allocations();
    let m = Message::parse(REGISTER, true).expect("REGISTER parses");
    let b = allocations();
    let out = m.to_bytes();
    let c = allocations();
    drop(out);
    let (parse, serialise) = (b - a, c - b);
    eprintln!("REGISTER: {parse} allocations to parse, {serialise} to serialise");
    assert!(parse <= 60, "{parse} allocations to parse a REGISTER");
    assert!(
        serialise <= 8,
        "{serialise} allocations to serialise a REGISTER"
    );
}
