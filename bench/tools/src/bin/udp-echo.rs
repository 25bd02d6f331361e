//! The machine's floor for UDP signalling: a bare loop that sends every datagram
//! it receives on 127.0.0.1 straight back to its sender, doing nothing else.
//!
//! `bench/register.sh` pins it to one core, drives it with `udp-load` from the
//! other and reads its CPU time from /proc: CPU seconds / datagrams echoed is
//! the kernel's cost of one datagram in plus one out on this machine, the least
//! any UDP server can spend per request/response pair.
//!
//! ```text
//! udp-echo [--bind 127.0.0.1:0] [--mode plain|mmsg] [--batch 32] [--max-secs 600]
//! ```
//! `plain` makes one `recv_from` and one `send_to` per datagram; `mmsg` receives
//! up to `--batch` datagrams with one `recvmmsg` and answers them with one
//! `sendmmsg`. Prints `listening ADDR` once bound, and on exit (after
//! `--max-secs`, or `--idle-secs` without traffic once traffic was seen) a line
//! `echoed=N cpu_us=T us_per_datagram=X` with its own CPU time
//! (CLOCK_PROCESS_CPUTIME_ID). Standard library only; the two batched system
//! calls are declared here by hand (x86_64/aarch64 Linux, glibc layout).

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Mmsg,
}

struct Args {
    bind: SocketAddr,
    mode: Mode,
    batch: usize,
    max_secs: u64,
    idle_secs: u64,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: udp-echo [--bind 127.0.0.1:0] [--mode plain|mmsg] [--batch 32] \
         [--max-secs 600] [--idle-secs 0 (never)]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Option<Args> {
    let mut args = Args {
        bind: "127.0.0.1:0".parse().ok()?,
        mode: Mode::Plain,
        batch: 32,
        max_secs: 600,
        idle_secs: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--bind" => args.bind = value.parse().ok()?,
            "--mode" => {
                args.mode = match value.as_str() {
                    "plain" => Mode::Plain,
                    "mmsg" => Mode::Mmsg,
                    _ => return None,
                }
            }
            "--batch" => args.batch = value.parse().ok().filter(|b| (1..=1024).contains(b))?,
            "--max-secs" => args.max_secs = value.parse().ok().filter(|s| *s > 0)?,
            "--idle-secs" => args.idle_secs = value.parse().ok()?,
            _ => return None,
        }
    }
    Some(args)
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        return usage();
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-echo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> io::Result<()> {
    let sock = UdpSocket::bind(args.bind)?;
    // Wake up now and then to honour the time limits.
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    println!("listening {}", sock.local_addr()?);
    io::stdout().flush()?;

    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let cpu_start = sys::process_cpu_ns();
    let mut echoed: u64 = 0;
    let mut last_traffic: Option<Instant> = None;
    let mut echo = Echo::new(args.mode, args.batch);
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let (Some(last), true) = (last_traffic, args.idle_secs > 0) {
            if now.duration_since(last) >= Duration::from_secs(args.idle_secs) {
                break;
            }
        }
        match echo.once(&sock) {
            Ok(0) => {}
            Ok(n) => {
                echoed += n as u64;
                last_traffic = Some(Instant::now());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A vanished peer (ICMP port unreachable) is not our problem.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
    }
    let cpu_us = sys::process_cpu_ns().saturating_sub(cpu_start) as f64 / 1000.0;
    let per = if echoed > 0 {
        cpu_us / echoed as f64
    } else {
        0.0
    };
    println!("echoed={echoed} cpu_us={cpu_us:.0} us_per_datagram={per:.2}");
    Ok(())
}

/// Buffers for one mode of echoing.
struct Echo {
    mode: Mode,
    single: Vec<u8>,
    batch: sys::Batch,
}

impl Echo {
    fn new(mode: Mode, batch: usize) -> Self {
        Self {
            mode,
            single: vec![0u8; 65536],
            batch: sys::Batch::new(batch, 2048),
        }
    }

    /// Receives what is there (blocking up to the read timeout) and echoes it.
    /// Returns the number of datagrams echoed.
    fn once(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        match self.mode {
            Mode::Plain => {
                let (len, peer) = sock.recv_from(&mut self.single)?;
                sock.send_to(&self.single[..len], peer)?;
                Ok(1)
            }
            Mode::Mmsg => self.batch.echo(sock),
        }
    }
}

mod sys {
    //! The few libc calls std does not wrap: recvmmsg/sendmmsg and the process
    //! CPU clock. std links libc already; these are its plain C symbols.
    use std::ffi::{c_int, c_long, c_uint, c_void};
    use std::io;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[repr(C)]
    struct Iovec {
        iov_base: *mut c_void,
        iov_len: usize,
    }

    #[repr(C)]
    struct Msghdr {
        msg_name: *mut c_void,
        msg_namelen: u32,
        msg_iov: *mut Iovec,
        msg_iovlen: usize,
        msg_control: *mut c_void,
        msg_controllen: usize,
        msg_flags: c_int,
    }

    #[repr(C)]
    struct Mmsghdr {
        msg_hdr: Msghdr,
        msg_len: c_uint,
    }

    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: c_long,
    }

    const MSG_WAITFORONE: c_int = 0x10000;
    const CLOCK_PROCESS_CPUTIME_ID: c_int = 2;
    const SOCKADDR_STORAGE_LEN: usize = 128;

    extern "C" {
        fn recvmmsg(
            fd: c_int,
            msgvec: *mut Mmsghdr,
            vlen: c_uint,
            flags: c_int,
            timeout: *mut Timespec,
        ) -> c_int;
        fn sendmmsg(fd: c_int, msgvec: *mut Mmsghdr, vlen: c_uint, flags: c_int) -> c_int;
        fn clock_gettime(clock: c_int, tp: *mut Timespec) -> c_int;
    }

    /// CPU time (user + system) of the whole process, in nanoseconds.
    pub(crate) fn process_cpu_ns() -> u64 {
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        if rc != 0 {
            return 0;
        }
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Owned buffers for a batch of datagrams; the headers are rebuilt from
    /// them before each call, so no pointer outlives a borrow of `self`.
    pub(crate) struct Batch {
        bufs: Vec<Vec<u8>>,
        addrs: Vec<[u8; SOCKADDR_STORAGE_LEN]>,
        lens: Vec<usize>,
        addr_lens: Vec<u32>,
    }

    impl Batch {
        pub(crate) fn new(n: usize, size: usize) -> Self {
            Self {
                bufs: (0..n).map(|_| vec![0u8; size]).collect(),
                addrs: vec![[0u8; SOCKADDR_STORAGE_LEN]; n],
                lens: vec![0; n],
                addr_lens: vec![0; n],
            }
        }

        /// One recvmmsg (waits for the first datagram, takes what else is
        /// queued) and one sendmmsg back to each sender.
        pub(crate) fn echo(&mut self, sock: &UdpSocket) -> io::Result<usize> {
            let fd = sock.as_raw_fd();
            let n = self.bufs.len();
            let mut iovs: Vec<Iovec> = self
                .bufs
                .iter_mut()
                .map(|b| Iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            let mut hdrs: Vec<Mmsghdr> = iovs
                .iter_mut()
                .zip(self.addrs.iter_mut())
                .map(|(iov, addr)| Mmsghdr {
                    msg_hdr: Msghdr {
                        msg_name: addr.as_mut_ptr().cast(),
                        msg_namelen: SOCKADDR_STORAGE_LEN as u32,
                        msg_iov: iov,
                        msg_iovlen: 1,
                        msg_control: std::ptr::null_mut(),
                        msg_controllen: 0,
                        msg_flags: 0,
                    },
                    msg_len: 0,
                })
                .collect();
            // SAFETY: every header points into `iovs`, `self.bufs` and `self.addrs`,
            // which live (unmoved) until the end of this function; lengths match.
            let got = unsafe {
                recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    n as c_uint,
                    MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            let got = got as usize;
            for (i, h) in hdrs.iter().take(got).enumerate() {
                self.lens[i] = h.msg_len as usize;
                self.addr_lens[i] = h.msg_hdr.msg_namelen;
            }
            // Reuse the same headers to send: payload length = received length,
            // destination = the sender's address as received.
            for (i, h) in hdrs.iter_mut().take(got).enumerate() {
                // SAFETY: msg_iov points at iovs[i], still alive and unaliased here.
                unsafe { (*h.msg_hdr.msg_iov).iov_len = self.lens[i] };
                h.msg_hdr.msg_namelen = self.addr_lens[i];
                h.msg_hdr.msg_flags = 0;
            }
            let mut sent = 0usize;
            while sent < got {
                // SAFETY: as above; `sent..got` is within `hdrs`.
                let rc =
                    unsafe { sendmmsg(fd, hdrs.as_mut_ptr().add(sent), (got - sent) as c_uint, 0) };
                if rc < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // Skip a datagram the kernel refuses (e.g. peer gone).
                    sent += 1;
                    continue;
                }
                sent += rc as usize;
            }
            drop(iovs);
            Ok(got)
        }
    }
}
