//! Graceful shutdown loses nothing that was acknowledged: a REGISTER answered 200 just before
//! SIGTERM is in the database afterwards (the location service writes behind once a second, and
//! the final flush happens on shutdown).

mod common;

use std::net::Ipv4Addr;

use common::{register_udp, Server, ServerSpec, Ua, UdpClient};

#[test]
fn sigterm_stops_cleanly_and_keeps_acknowledged_registrations() {
    let mut server = Server::start(ServerSpec::new("shutdown").user("alice", "wonderland"));
    let udp = UdpClient::bind(Ipv4Addr::LOCALHOST);
    let mut ua = Ua::new("alice", "wonderland", "UDP", udp.local_addr());
    let (_, ok) = register_udp(&udp, server.udp(), &mut ua);
    assert_eq!(
        ok.status(),
        Some(200),
        "REGISTER not accepted:\n{}",
        ok.summary()
    );

    // At once, before the once-a-second write-behind had a chance to run.
    let status = server.terminate();
    assert!(
        status.success(),
        "confab exited with {status}:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("stopped"), "no clean stop in the log:\n{log}");

    let listing = server.registrations();
    let contact = ua.contact_uri();
    assert!(
        common::binding_matches(&listing, "alice", &[contact.as_str()]),
        "the acknowledged binding {contact} was lost at shutdown:\n{listing:#}"
    );
}
