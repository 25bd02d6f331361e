//! The floor for the media benchmark: a bare UDP echo loop over as many sockets as the relay
//! would use for the same calls (two per call), driven by the same load generator.
//!
//! `rtp-echo-floor --calls N [--port-min P] [--batch] [--lifetime S]`
//!
//! Prints one line per call, "PORT_A PORT_B" (even ports, 2 apart, like the relay's RTP ports),
//! then "ready". Each readable socket gets one `recvfrom` and one `sendto` back to the source
//! per epoll wake-up (with `--batch`: one `recvmmsg` and one `sendmmsg`), the same pattern as
//! the relay's worker. Ends at EOF on stdin or after `--lifetime` seconds.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{Args, Batch};

const USAGE: &str = "rtp-echo-floor --calls N [--port-min 30000] [--batch] [--lifetime 600]";

fn main() {
    let args = Args::parse(USAGE);
    let calls: usize = args.get("calls", 100);
    let port_min: u16 = args.get("port-min", 30000);
    let batch = args.get::<u8>("batch", 0) != 0;
    let lifetime = Duration::from_secs(args.get("lifetime", 600));

    let mut sockets = Vec::with_capacity(2 * calls);
    let mut port = u32::from(port_min) & !1;
    while sockets.len() < 2 * calls {
        if port > 65534 {
            eprintln!("ran out of ports");
            std::process::exit(1);
        }
        // Ports in use by something else are skipped, as the relay's pool does.
        if let Ok(s) = common::socket(port as u16) {
            sockets.push((s, port as u16));
        }
        port += 2;
    }
    // SAFETY: plain system call.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epfd >= 0, "epoll_create1");
    let add = |fd: i32, token: u64| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: a valid event for a live descriptor.
        let r = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert_eq!(r, 0, "epoll_ctl");
    };
    for (i, (s, _)) in sockets.iter().enumerate() {
        add(s.as_raw_fd(), i as u64);
    }
    add(0, u64::MAX);

    let mut out = std::io::stdout().lock();
    for pair in sockets.chunks(2) {
        let _ = writeln!(out, "{} {}", pair[0].1, pair[1].1);
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);

    let started = Instant::now();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = [0u8; common::BUF];
    let mut mm = Batch::new(32);
    let mut echoed: u64 = 0;
    'outer: while started.elapsed() < lifetime {
        // SAFETY: the buffer holds `len` events.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, 200) };
        for ev in events.iter().take(n.max(0) as usize) {
            let token = ev.u64;
            if token == u64::MAX {
                let mut b = [0u8; 64];
                // SAFETY: reads into a live buffer.
                if unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) } <= 0 {
                    break 'outer;
                }
                continue;
            }
            let fd = sockets[token as usize].0.as_raw_fd();
            if batch {
                let got = mm.recv(fd);
                mm.echo(got);
                echoed += mm.send(fd) as u64;
            } else {
                // SAFETY: an all-zero sockaddr_in is a valid value.
                let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                let mut from_len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                // SAFETY: live buffers of the given sizes.
                let got = unsafe {
                    libc::recvfrom(
                        fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                        (&mut from as *mut libc::sockaddr_in).cast(),
                        &mut from_len,
                    )
                };
                if got > 0 {
                    // SAFETY: as above; `from` was filled by recvfrom.
                    let sent = unsafe {
                        libc::sendto(
                            fd,
                            buf.as_ptr().cast(),
                            got as usize,
                            libc::MSG_DONTWAIT,
                            (&from as *const libc::sockaddr_in).cast(),
                            from_len,
                        )
                    };
                    echoed += u64::from(sent > 0);
                }
            }
        }
    }
    eprintln!("echoed={echoed}");
}
