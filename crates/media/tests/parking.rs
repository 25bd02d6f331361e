//! Reuse of released port pairs ("parking"), on 127.0.0.1: cooling, the cap, stale datagrams,
//! running out of free ports.
//!
//! Each test uses its own port range (23400–23599, below the ephemeral range). Waits are
//! bounded polls (2 s), not synchronisation sleeps, except where a test needs the cooling time
//! to pass.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use confab_media::{Error, Leg, MediaConfig, MediaEngine, MediaSession, RemoteMedia};

fn engine(port_min: u16, port_max: u16, workers: usize, cooling: Duration) -> MediaEngine {
    MediaEngine::start(MediaConfig {
        port_min,
        port_max,
        workers,
        park_cooling: cooling,
        ..MediaConfig::default()
    })
    .unwrap()
}

const HOUR: Duration = Duration::from_secs(3600);

fn phone() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.resize(172, 0xd5);
    p
}

fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 4096];
    let (n, from) = socket
        .recv_from(&mut buf)
        .expect("relayed datagram within 2 s");
    (buf[..n].to_vec(), from)
}

/// The RTP ports of a session's two legs.
fn ports(s: &MediaSession) -> [u16; 2] {
    [s.a_port(), s.b_port()]
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(2);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_parked_pair_is_reused_once_cooled_and_not_before_while_ports_are_free() {
    let cooling = Duration::from_millis(150);
    let engine = engine(23400, 23439, 1, cooling);
    let first = engine.allocate().unwrap();
    let first_ports = ports(&first);
    first.release().unwrap();
    assert_eq!((engine.allocated_ports(), engine.parked_pairs()), (0, 2));

    // Not cooled yet, and free ports remain: new ports.
    let second = engine.allocate().unwrap();
    let second_ports = ports(&second);
    assert!(second_ports.iter().all(|p| !first_ports.contains(p)));
    assert_eq!((engine.allocated_ports(), engine.parked_pairs()), (4, 2));
    second.release().unwrap();
    assert_eq!(engine.parked_pairs(), 4);

    std::thread::sleep(cooling + Duration::from_millis(20));
    // Both sessions' pairs have cooled: the oldest (the first session's) come back first.
    let third = engine.allocate().unwrap();
    assert_eq!(ports(&third), first_ports);
    let fourth = engine.allocate().unwrap();
    assert_eq!(ports(&fourth), second_ports);
    assert_eq!((engine.allocated_ports(), engine.parked_pairs()), (8, 0));

    // A reused pair relays like a new one.
    let (a, b) = (phone(), phone());
    third
        .set_remote(Leg::B, RemoteMedia::new(b.local_addr().unwrap()))
        .unwrap();
    a.send_to(&rtp(1, 0xa), third.local(Leg::A)).unwrap();
    assert_eq!(recv(&b), (rtp(1, 0xa), third.local(Leg::B)));
    b.send_to(&rtp(1, 0xb), third.local(Leg::B)).unwrap();
    assert_eq!(recv(&a), (rtp(1, 0xb), third.local(Leg::A)));
}

#[test]
fn without_cooling_every_cycle_reuses_the_same_pairs() {
    let engine = engine(23440, 23459, 2, Duration::ZERO);
    let mut seen = BTreeSet::new();
    for _ in 0..50 {
        let s = engine.allocate().unwrap();
        seen.extend(ports(&s));
        s.release().unwrap();
    }
    // One session at a time, two workers: at most one session's pairs per worker.
    assert!(seen.len() <= 4, "{seen:?}");
    assert_eq!(engine.allocated_ports(), 0);
    assert!(engine.parked_pairs() <= 4);
}

#[test]
fn stale_datagrams_on_a_parked_pair_are_discarded_and_do_not_latch_the_next_session() {
    let engine = engine(23460, 23479, 1, Duration::ZERO);
    let old = engine.allocate().unwrap();
    let old_ports = ports(&old);
    let (old_a, old_b) = (phone(), phone());
    old.set_remote(Leg::A, RemoteMedia::new(old_a.local_addr().unwrap()))
        .unwrap();
    old.set_remote(Leg::B, RemoteMedia::new(old_b.local_addr().unwrap()))
        .unwrap();
    old_a.send_to(&rtp(1, 0xa), old.local(Leg::A)).unwrap();
    assert_eq!(recv(&old_b).0, rtp(1, 0xa));
    let (leg_a, leg_b) = (old.local(Leg::A), old.local(Leg::B));
    let last = old.release().unwrap();
    assert_eq!(last.a.rtp.packets, 1);

    // The old phones keep sending after the call ended: the worker reads and discards.
    for seq in 2..12 {
        old_a.send_to(&rtp(seq, 0xa), leg_a).unwrap();
        old_b
            .send_to(
                &rtp(seq, 0xb),
                SocketAddr::new(leg_b.ip(), leg_b.port() + 1),
            )
            .unwrap();
    }
    wait_for("20 stale datagrams", || engine.stale_datagrams() == 20);

    // More late packets, and the next call takes the pair at once: whatever of them the worker
    // has not read yet is drained before the allocation returns.
    for seq in 12..22 {
        old_a.send_to(&rtp(seq, 0xa), leg_a).unwrap();
    }
    let new = engine.allocate().unwrap();
    assert_eq!(ports(&new), old_ports, "cooling zero: the same pairs");
    wait_for("30 stale datagrams", || engine.stale_datagrams() == 30);

    // Nothing of the old call is in the new session's state.
    let fresh = new.stats().unwrap();
    for leg in [&fresh.a, &fresh.b] {
        assert_eq!(
            (leg.rtp.packets, leg.rtp_latched, leg.rtp_remote),
            (0, false, None)
        );
        assert_eq!(leg.dropped, Default::default());
    }
    let (a, b) = (phone(), phone());
    new.set_remote(Leg::A, RemoteMedia::new(a.local_addr().unwrap()))
        .unwrap();
    new.set_remote(Leg::B, RemoteMedia::new(b.local_addr().unwrap()))
        .unwrap();
    a.send_to(&rtp(1, 0xc), new.local(Leg::A)).unwrap();
    assert_eq!(recv(&b), (rtp(1, 0xc), new.local(Leg::B)));
    b.send_to(&rtp(1, 0xd), new.local(Leg::B)).unwrap();
    assert_eq!(recv(&a), (rtp(1, 0xd), new.local(Leg::A)));
    let stats = new.stats().unwrap();
    assert_eq!(
        (stats.a.rtp.packets, stats.a.rtp_remote, stats.a.relatches),
        (1, Some(a.local_addr().unwrap()), 0)
    );
    assert_eq!(stats.a.dropped.foreign_source, 0);
    // The old phone is a stranger to the new call now.
    old_a.send_to(&rtp(30, 0xa), new.local(Leg::A)).unwrap();
    a.send_to(&rtp(2, 0xc), new.local(Leg::A)).unwrap();
    assert_eq!(recv(&b).0, rtp(2, 0xc));
    assert_eq!(new.stats().unwrap().a.dropped.foreign_source, 1);
    assert_eq!(engine.stale_datagrams(), 30);
}

#[test]
fn datagrams_for_a_claimed_pair_wait_for_the_session() {
    // A deferred allocation claims a parked pair; the worker hears of the session only at the
    // flush. What the new phone sends meanwhile is the session's, not stale.
    let engine = engine(23480, 23499, 1, Duration::ZERO);
    engine.allocate().unwrap().release().unwrap();
    // Past the worker's command linger (5 ms): deferred commands now wait for the flush.
    std::thread::sleep(Duration::from_millis(30));
    let session = engine.allocate_deferred().unwrap();
    assert_eq!(engine.parked_pairs(), 0);
    let (a, b) = (phone(), phone());
    session
        .set_remote_deferred(Leg::B, RemoteMedia::new(b.local_addr().unwrap()))
        .unwrap();
    for seq in 0..3 {
        a.send_to(&rtp(seq, 0xa), session.local(Leg::A)).unwrap();
    }
    // The worker wakes for the readable socket, finds the pair claimed, leaves the datagrams.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(engine.stale_datagrams(), 0);
    engine.flush();
    for seq in 0..3 {
        assert_eq!(recv(&b).0, rtp(seq, 0xa));
    }
    assert_eq!(engine.stale_datagrams(), 0);
    assert_eq!(session.stats().unwrap().a.rtp.packets, 3);
}

#[test]
fn the_cap_closes_what_it_cannot_park() {
    let engine = MediaEngine::start(MediaConfig {
        port_min: 23500,
        port_max: 23519,
        workers: 1,
        park_max_pairs: 2,
        ..MediaConfig::default()
    })
    .unwrap();
    let one = engine.allocate().unwrap();
    let two = engine.allocate().unwrap();
    let (kept, closed) = (ports(&one), ports(&two));
    one.release().unwrap();
    two.release().unwrap();
    assert_eq!((engine.allocated_ports(), engine.parked_pairs()), (0, 2));
    for port in closed.iter().flat_map(|&p| [p, p + 1]) {
        UdpSocket::bind(("127.0.0.1", port)).expect("closed beyond the cap");
    }
    for port in kept.iter().flat_map(|&p| [p, p + 1]) {
        assert!(
            UdpSocket::bind(("127.0.0.1", port)).is_err(),
            "parked: bound"
        );
    }
}

#[test]
fn running_out_of_free_ports_falls_back_to_parked_pairs_oldest_first() {
    // 6 pairs, cooling far away: parked pairs are used only once no port is free.
    let engine = engine(23520, 23531, 1, HOUR);
    let first = engine.allocate().unwrap();
    let first_ports = ports(&first);
    first.release().unwrap();
    let second = engine.allocate().unwrap();
    let second_ports = ports(&second);
    second.release().unwrap();
    let third = engine.allocate().unwrap(); // the last two free pairs
    let all: BTreeSet<u16> = [first_ports, second_ports, ports(&third)]
        .concat()
        .into_iter()
        .collect();
    assert_eq!(all.len(), 6, "every pair fresh while free ones remained");
    assert_eq!(engine.parked_pairs(), 4);
    // No free port left: the oldest parked pairs, although they have not cooled.
    let fourth = engine.allocate().unwrap();
    assert_eq!(ports(&fourth), first_ports);
    let fifth = engine.allocate().unwrap();
    assert_eq!(ports(&fifth), second_ports);
    assert_eq!((engine.allocated_ports(), engine.parked_pairs()), (12, 0));
    assert!(matches!(engine.allocate(), Err(Error::NoFreePorts { .. })));
    assert_eq!(
        engine.allocated_ports(),
        12,
        "a failed allocation leaks nothing"
    );
}

#[test]
fn parked_pairs_spread_over_workers_are_closed_rather_than_failing() {
    // 4 pairs, 2 workers, at most 3 parked. Leaves one parked pair on each worker and none
    // free: no worker can give a session two pairs, so the workers close theirs and the
    // session binds the ports anew.
    let engine = MediaEngine::start(MediaConfig {
        port_min: 23540,
        port_max: 23547,
        workers: 2,
        park_cooling: HOUR,
        park_max_pairs: 3,
        ..MediaConfig::default()
    })
    .unwrap();
    let one = engine.allocate().unwrap(); // worker 0
    let two = engine.allocate().unwrap(); // worker 1
    let (p0, p1) = (one.a_port(), one.b_port());
    let (p2, p3) = (two.a_port(), two.b_port());
    one.release().unwrap(); // worker 0 parks p0, p1
    two.release().unwrap(); // worker 1 parks p2; p3 is closed (cap), free again
    assert_eq!(engine.parked_pairs(), 3);
    let three = engine.allocate().unwrap(); // worker 0: the free p3, then its oldest, p0
    assert_eq!(ports(&three), [p3, p0]);
    assert_eq!(engine.parked_pairs(), 2); // p1 on worker 0, p2 on worker 1
    let four = engine.allocate().unwrap();
    assert_eq!(
        ports(&four).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([p1, p2])
    );
    assert_eq!((engine.allocated_ports(), engine.parked_pairs()), (8, 0));
    // It relays.
    let (a, b) = (phone(), phone());
    four.set_remote(Leg::B, RemoteMedia::new(b.local_addr().unwrap()))
        .unwrap();
    a.send_to(&rtp(1, 0xa), four.local(Leg::A)).unwrap();
    assert_eq!(recv(&b).0, rtp(1, 0xa));
}
