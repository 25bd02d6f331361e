//! The relay's hot path allocates nothing: 2,000 datagrams through a session, counted by a
//! global allocator. (A test binary of its own, so no other test allocates meanwhile.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use confab_media::{Leg, MediaConfig, MediaEngine, RemoteMedia};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn relaying_allocates_nothing_per_packet() {
    let config = MediaConfig {
        port_min: 23300,
        port_max: 23319,
        workers: 1,
        ..MediaConfig::default()
    };
    let engine = MediaEngine::start(config).unwrap();
    let session = engine.allocate().unwrap();
    let (a, b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    session
        .set_remote(Leg::A, RemoteMedia::new(a.local_addr().unwrap()))
        .unwrap();
    session
        .set_remote(Leg::B, RemoteMedia::new(b.local_addr().unwrap()))
        .unwrap();
    let (to_a, to_b) = (session.local(Leg::A), session.local(Leg::B));
    let mut packet = [0u8; 172];
    packet[0] = 0x80;
    let mut buf = [0u8; 512];
    let mut exchange = |seq: u16| {
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        a.send_to(&packet, to_a).unwrap();
        b.recv_from(&mut buf).unwrap();
        b.send_to(&packet, to_b).unwrap();
        a.recv_from(&mut buf).unwrap();
    };
    // Warm up: latching, the destination cache, lazy statics in std and tracing.
    for seq in 0..10 {
        exchange(seq);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for seq in 10..1010 {
        exchange(seq);
    }
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(during, 0, "allocations while relaying 2,000 datagrams");
    let stats = session.release().unwrap();
    assert_eq!(
        (stats.a.forwarded.packets, stats.b.forwarded.packets),
        (1010, 1010)
    );
}
