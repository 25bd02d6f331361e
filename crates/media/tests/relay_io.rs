//! The relay on real sockets, on 127.0.0.1: UDP "phones" talk through sessions.
//!
//! Each test uses its own port range (below the ephemeral range) so tests run in parallel.
//! Receives wait at most 2 s (a bound, not a synchronisation sleep): a relayed datagram on
//! loopback arrives in microseconds.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use confab_media::{Error, Leg, MediaConfig, MediaEngine, PayloadKind, RemoteMedia};

fn engine(port_min: u16, port_max: u16, workers: usize) -> MediaEngine {
    MediaEngine::start(MediaConfig {
        port_min,
        port_max,
        workers,
        ..MediaConfig::default()
    })
    .unwrap()
}

fn phone() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

fn rtp(pt: u8, seq: u16, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.resize(172, fill);
    p
}

fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 4096];
    let (n, from) = socket
        .recv_from(&mut buf)
        .expect("relayed datagram within 2 s");
    (buf[..n].to_vec(), from)
}

fn rtcp_port(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + 1)
}

#[test]
fn two_phones_talk_both_ways_through_a_session() {
    let engine = engine(23000, 23019, 1);
    let session = engine.allocate().unwrap();
    assert_eq!(engine.allocated_ports(), 4);
    let (a, b) = (phone(), phone());
    session
        .set_remote(Leg::A, RemoteMedia::new(a.local_addr().unwrap()))
        .unwrap();
    session
        .set_remote(
            Leg::B,
            RemoteMedia::new(b.local_addr().unwrap())
                .with_payload(101, PayloadKind::TelephoneEvent),
        )
        .unwrap();

    for seq in 0..20u16 {
        let to_b = rtp(0, seq, 0xa, seq as u8);
        a.send_to(&to_b, session.local(Leg::A)).unwrap();
        let (got, from) = recv(&b);
        assert_eq!((got, from), (to_b, session.local(Leg::B)));

        // B answers; every fifth packet is an RFC 4733 event, which must pass unchanged.
        let to_a = if seq % 5 == 4 {
            rtp(101, seq, 0xb, 0x0a)
        } else {
            rtp(8, seq, 0xb, !(seq as u8))
        };
        b.send_to(&to_a, session.local(Leg::B)).unwrap();
        let (got, from) = recv(&a);
        assert_eq!((got, from), (to_a, session.local(Leg::A)));
    }

    let stats = session.stats().unwrap();
    assert_eq!(
        (
            stats.a.rtp.packets,
            stats.a.rtp.bytes,
            stats.a.forwarded.packets
        ),
        (20, 20 * 172, 20)
    );
    assert_eq!(
        (stats.b.rtp.packets, stats.b.telephone_events, stats.b.lost),
        (20, 4, 0)
    );
    assert!(stats.a.last_packet_at.is_some() && stats.b.last_rtp_at.is_some());
    assert_eq!(stats.b.rtp_remote, Some(b.local_addr().unwrap()));
    let last = session.release().unwrap();
    assert_eq!(last.a.rtp.packets, 20);
    assert_eq!(engine.allocated_ports(), 0);
}

#[test]
fn latches_to_the_real_source_not_the_sdp_port() {
    let engine = engine(23020, 23039, 1);
    let session = engine.allocate().unwrap();
    let (a, b, b_sdp) = (phone(), phone(), phone());
    session
        .set_remote(Leg::A, RemoteMedia::new(a.local_addr().unwrap()))
        .unwrap();
    // B's SDP names one port (b_sdp), but behind NAT its packets come from another (b).
    session
        .set_remote(Leg::B, RemoteMedia::new(b_sdp.local_addr().unwrap()))
        .unwrap();

    // Before B sends anything, A's media goes to the SDP address.
    a.send_to(&rtp(0, 1, 0xa, 1), session.local(Leg::A))
        .unwrap();
    assert_eq!(recv(&b_sdp).0, rtp(0, 1, 0xa, 1));

    b.send_to(&rtp(0, 1, 0xb, 2), session.local(Leg::B))
        .unwrap();
    assert_eq!(recv(&a).0, rtp(0, 1, 0xb, 2));
    // Now A's media follows B's real address.
    a.send_to(&rtp(0, 2, 0xa, 3), session.local(Leg::A))
        .unwrap();
    assert_eq!(recv(&b), (rtp(0, 2, 0xa, 3), session.local(Leg::B)));

    // A stranger on B's relay port is refused while B talks.
    let stranger = phone();
    stranger
        .send_to(&rtp(0, 9, 0xbad, 4), session.local(Leg::B))
        .unwrap();
    b.send_to(&rtp(0, 2, 0xb, 5), session.local(Leg::B))
        .unwrap();
    assert_eq!(recv(&a).0, rtp(0, 2, 0xb, 5), "only B's packet reaches A");
    let stats = session.stats().unwrap();
    assert_eq!(
        (stats.b.rtp_latched, stats.b.dropped.foreign_source),
        (true, 1)
    );
}

#[test]
fn rtcp_is_relayed_on_the_port_above() {
    let engine = engine(23040, 23059, 1);
    let session = engine.allocate().unwrap();
    let (a, a_rtcp, b, b_rtcp) = (phone(), phone(), phone(), phone());
    session
        .set_remote(
            Leg::A,
            RemoteMedia::new(a.local_addr().unwrap()).with_rtcp(a_rtcp.local_addr().unwrap()),
        )
        .unwrap();
    session
        .set_remote(
            Leg::B,
            RemoteMedia::new(b.local_addr().unwrap()).with_rtcp(b_rtcp.local_addr().unwrap()),
        )
        .unwrap();
    // An RR from A about B's stream (SSRC 0xb): 10 % lost, cumulative 7, jitter 40.
    let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 0xa, 0, 0, 0, 0xb, 26, 0, 0, 7];
    rr.extend_from_slice(&[0, 0, 1, 0, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 0]);
    a_rtcp
        .send_to(&rr, rtcp_port(session.local(Leg::A)))
        .unwrap();
    assert_eq!(
        recv(&b_rtcp),
        (rr.clone(), rtcp_port(session.local(Leg::B)))
    );
    b_rtcp
        .send_to(&rr, rtcp_port(session.local(Leg::B)))
        .unwrap();
    assert_eq!(recv(&a_rtcp), (rr, rtcp_port(session.local(Leg::A))));

    let report = session
        .stats()
        .unwrap()
        .a
        .report
        .expect("A's reception report");
    assert_eq!(
        (
            report.source_ssrc,
            report.cumulative_lost,
            report.jitter_units
        ),
        (0xb, 7, 40)
    );
    assert!((report.fraction_lost - 26.0 / 256.0).abs() < 1e-9);
}

#[test]
fn release_frees_every_port_and_the_range_can_be_used_again() {
    // 5 pairs: two sessions (4 pairs), a third does not fit; with parking on (the default)
    // and off.
    for park_max_pairs in [MediaConfig::default().park_max_pairs, 0] {
        let engine = MediaEngine::start(MediaConfig {
            port_min: 23060,
            port_max: 23069,
            workers: 2,
            park_max_pairs,
            ..MediaConfig::default()
        })
        .unwrap();
        for round in 0..3 {
            let one = engine.allocate().unwrap();
            let two = engine.allocate().unwrap();
            assert_eq!(engine.allocated_ports(), 8, "round {round}");
            assert!(matches!(engine.allocate(), Err(Error::NoFreePorts { .. })));
            assert_eq!(
                engine.allocated_ports(),
                8,
                "a failed allocation leaks nothing"
            );
            assert_eq!(engine.session_count(), 2);
            // One ends by explicit release, the other by dropping the guard (a call that failed).
            let _ = engine.release(one.id()).unwrap();
            drop(two);
            drop(one); // releasing again is harmless
            assert_eq!(engine.allocated_ports(), 0);
            assert_eq!(engine.session_count(), 0);
            // Round 0 used 4 pairs; later ones took the fifth as well (free before parked).
            let used = if round == 0 { 4 } else { 5 };
            assert_eq!(engine.parked_pairs(), park_max_pairs.min(used));
        }
        if park_max_pairs == 0 {
            // The sockets really are closed: the ports can be bound again.
            for port in 23060..=23069 {
                UdpSocket::bind(("127.0.0.1", port)).unwrap();
            }
        } else {
            // Parked sockets stay bound until the engine stops.
            drop(engine);
            for port in 23060..=23069 {
                UdpSocket::bind(("127.0.0.1", port)).unwrap();
            }
        }
    }
}

#[test]
fn ports_held_by_others_are_skipped() {
    let _squatter = UdpSocket::bind("127.0.0.1:23071").unwrap();
    let engine = engine(23070, 23079, 1);
    let sessions: Vec<_> = (0..2).map(|_| engine.allocate().unwrap()).collect();
    for s in &sessions {
        assert_ne!(s.a_port(), 23070);
        assert_ne!(s.b_port(), 23070);
    }
}

#[test]
fn garbage_short_and_oversize_datagrams_are_dropped_and_counted() {
    let engine = engine(23080, 23099, 1);
    let session = engine.allocate().unwrap();
    let (a, b) = (phone(), phone());
    session
        .set_remote(Leg::A, RemoteMedia::new(a.local_addr().unwrap()))
        .unwrap();
    session
        .set_remote(Leg::B, RemoteMedia::new(b.local_addr().unwrap()))
        .unwrap();
    let to = session.local(Leg::A);
    a.send_to(b"", to).unwrap();
    a.send_to(b"\x80", to).unwrap();
    a.send_to(b"GET / HTTP/1.0\r\n\r\n", to).unwrap();
    a.send_to(&[0x80; 3000], to).unwrap();
    a.send_to(b"junk", rtcp_port(to)).unwrap();
    a.send_to(&rtp(0, 1, 0xa, 7), to).unwrap();
    // Only the valid packet arrives; it was sent last on the RTP port, so the others were
    // handled before it.
    assert_eq!(recv(&b).0, rtp(0, 1, 0xa, 7));
    let d = session.stats().unwrap().a.dropped;
    assert_eq!((d.keepalive, d.truncated), (1, 1));
    // The RTCP port's datagram may be read after the RTP one; both malformed ones are bounded.
    assert!((2..=3).contains(&d.malformed), "{d:?}");
    // The worker survived: the session still relays.
    a.send_to(&rtp(0, 2, 0xa, 8), to).unwrap();
    assert_eq!(recv(&b).0, rtp(0, 2, 0xa, 8));
}

#[test]
fn many_sessions_over_several_workers() {
    let engine = engine(23100, 23199, 2);
    let sessions: Vec<_> = (0..10).map(|_| engine.allocate().unwrap()).collect();
    let phones: Vec<_> = (0..10).map(|_| (phone(), phone())).collect();
    for (s, (a, b)) in sessions.iter().zip(&phones) {
        s.set_remote(Leg::A, RemoteMedia::new(a.local_addr().unwrap()))
            .unwrap();
        s.set_remote(Leg::B, RemoteMedia::new(b.local_addr().unwrap()))
            .unwrap();
    }
    for (i, (s, (a, b))) in sessions.iter().zip(&phones).enumerate() {
        a.send_to(&rtp(0, 1, i as u32, i as u8), s.local(Leg::A))
            .unwrap();
        b.send_to(&rtp(0, 1, 100 + i as u32, i as u8), s.local(Leg::B))
            .unwrap();
    }
    for (i, (a, b)) in phones.iter().enumerate() {
        assert_eq!(recv(b).0, rtp(0, 1, i as u32, i as u8));
        assert_eq!(recv(a).0, rtp(0, 1, 100 + i as u32, i as u8));
    }
    assert_eq!(engine.allocated_ports(), 40);
    drop(sessions);
    assert_eq!(engine.allocated_ports(), 0);
}

#[test]
fn unknown_sessions_are_errors_not_panics() {
    let engine = engine(23200, 23219, 1);
    let session = engine.allocate().unwrap();
    let id = session.id();
    session.release().unwrap();
    assert!(matches!(engine.stats(id), Err(Error::UnknownSession(_))));
    assert!(matches!(engine.release(id), Err(Error::UnknownSession(_))));
    let remote = RemoteMedia::new("127.0.0.1:9".parse().unwrap());
    assert!(matches!(
        engine.set_remote(id, Leg::A, remote),
        Err(Error::UnknownSession(_))
    ));
}

#[test]
fn a_burst_larger_than_one_batch_arrives_complete_and_in_order() {
    // More than the worker's receive batch (32) at once: exercises the "socket still has
    // datagrams" path of the edge-triggered loop.
    let engine = engine(23220, 23239, 1);
    let session = engine.allocate().unwrap();
    let (a, b) = (phone(), phone());
    session
        .set_remote(Leg::A, RemoteMedia::new(a.local_addr().unwrap()))
        .unwrap();
    session
        .set_remote(Leg::B, RemoteMedia::new(b.local_addr().unwrap()))
        .unwrap();
    for seq in 0..100u16 {
        a.send_to(&rtp(0, seq, 0xa, seq as u8), session.local(Leg::A))
            .unwrap();
    }
    for seq in 0..100u16 {
        assert_eq!(recv(&b).0, rtp(0, seq, 0xa, seq as u8));
    }
    let stats = session.stats().unwrap();
    assert_eq!((stats.a.forwarded.packets, stats.a.lost), (100, 0));
}

#[test]
fn allocating_the_streams_of_a_call_is_all_or_nothing() {
    // 3 pairs: a one-stream call (2 pairs) fits, a two-stream call (4 pairs) does not.
    let engine = engine(23240, 23245, 1);
    assert!(matches!(
        engine.allocate_streams(2),
        Err(Error::NoFreePorts { .. })
    ));
    assert_eq!(
        engine.allocated_ports(),
        0,
        "the first stream's ports were given back"
    );
    let one = engine.allocate_streams(1).unwrap();
    assert_eq!((one.len(), engine.allocated_ports()), (1, 4));
}

#[test]
fn the_last_handle_gone_stops_the_workers_and_frees_the_ports() {
    let engine = engine(23250, 23259, 2);
    let session = engine.allocate().unwrap();
    let (a_port, b_port) = (session.a_port(), session.b_port());
    drop(engine); // the session keeps the workers alive...
    let (a, b) = (phone(), phone());
    session
        .set_remote(Leg::B, RemoteMedia::new(b.local_addr().unwrap()))
        .unwrap();
    a.send_to(&rtp(0, 1, 0xa, 1), session.local(Leg::A))
        .unwrap();
    assert_eq!(recv(&b).0, rtp(0, 1, 0xa, 1));
    drop(session); // ...until it ends; then every socket is closed.
    for port in [a_port, a_port + 1, b_port, b_port + 1] {
        UdpSocket::bind(("127.0.0.1", port)).unwrap();
    }
}

#[test]
fn deferred_commands_apply_after_a_flush_and_a_deferred_release_frees_the_ports() {
    let engine = engine(23300, 23319, 1);
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let session = engine.allocate_deferred().unwrap();
    session
        .set_remote_deferred(Leg::B, RemoteMedia::new(b.local_addr().unwrap()))
        .unwrap();
    engine.flush();
    assert_eq!(engine.session_count(), 1);
    a.send_to(&rtp(0, 1, 0xa, 1), session.local(Leg::A))
        .unwrap();
    assert_eq!(recv(&b).0, rtp(0, 1, 0xa, 1));
    let pending = session.release_deferred().unwrap();
    // Not flushed: waiting wakes the worker itself.
    let stats = pending.wait().unwrap();
    assert_eq!(stats.a.forwarded.packets, 1);
    assert_eq!((engine.allocated_ports(), engine.session_count()), (0, 0));
}
