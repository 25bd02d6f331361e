//! Shared by the media benchmark binaries: batched IPv4 UDP IO, /proc CPU readings, arguments.
//! Benchmark code: it stays on 127.0.0.1 and every loop in it is bounded.

#![allow(dead_code, unreachable_pub)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

pub const BUF: usize = 2048;

/// Reads `--name value` pairs; `--flag` alone gives "1".
pub struct Args(Vec<(String, String)>);

impl Args {
    pub fn parse(usage: &str) -> Self {
        let mut out = Vec::new();
        let mut it = std::env::args().skip(1).peekable();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                eprintln!("unexpected argument {a}\n{usage}");
                std::process::exit(2);
            };
            if name == "help" {
                println!("{usage}");
                std::process::exit(0);
            }
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => "1".to_owned(),
            };
            out.push((name.to_owned(), value));
        }
        Self(out)
    }

    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.0.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => v.parse().unwrap_or_else(|_| {
                eprintln!("bad value for --{name}: {v}");
                std::process::exit(2)
            }),
            None => default,
        }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// CPU seconds (user + system) a process has used, all its threads included.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ") ".
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / tick)
}

/// A non-blocking UDP socket on 127.0.0.1 with large buffers.
pub fn socket(port: u16) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
    s.set_nonblocking(true)?;
    for opt in [
        libc::SO_RCVBUFFORCE,
        libc::SO_SNDBUFFORCE,
        libc::SO_RCVBUF,
        libc::SO_SNDBUF,
    ] {
        let size: libc::c_int = 4 << 20;
        // SAFETY: a valid int option on a live socket; failure (no privilege) is ignored.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    Ok(s)
}

fn to_raw(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn from_raw(a: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
        u16::from_be(a.sin_port),
    )
}

/// Buffers and headers for `recvmmsg`/`sendmmsg` of IPv4 datagrams.
pub struct Batch {
    bufs: Vec<[u8; BUF]>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    pub len: usize,
}

impl Batch {
    pub fn new(capacity: usize) -> Self {
        // SAFETY: all-zero iovec, sockaddr_in and mmsghdr are valid values.
        let (addr, iov, hdr) = unsafe { (mem::zeroed(), mem::zeroed(), mem::zeroed()) };
        Self {
            bufs: vec![[0; BUF]; capacity],
            lens: vec![0; capacity],
            addrs: vec![addr; capacity],
            iovs: vec![iov; capacity],
            hdrs: vec![hdr; capacity],
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    fn point(&mut self, i: usize, len: usize) {
        self.iovs[i] = libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: len,
        };
        let h = &mut self.hdrs[i];
        h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
        h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_hdr.msg_iov = &mut self.iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_flags = 0;
        h.msg_len = 0;
    }

    /// Receives up to `capacity` datagrams without blocking.
    pub fn recv(&mut self, fd: RawFd) -> usize {
        let cap = self.capacity();
        for i in 0..cap {
            self.point(i, BUF);
        }
        // SAFETY: the headers point at live buffers of the sizes given.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                cap as _,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        self.len = n.max(0) as usize;
        for i in 0..self.len {
            self.lens[i] = self.hdrs[i].msg_len as usize;
        }
        self.len
    }

    pub fn data(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i].min(BUF)]
    }

    pub fn addr(&self, i: usize) -> SocketAddrV4 {
        from_raw(&self.addrs[i])
    }

    /// Appends a datagram to send; returns its buffer to fill (`len` bytes).
    pub fn push(&mut self, len: usize, to: SocketAddrV4) -> &mut [u8] {
        let i = self.len;
        self.len += 1;
        self.lens[i] = len;
        self.addrs[i] = to_raw(to);
        &mut self.bufs[i][..len]
    }

    /// Sends the queued datagrams; returns how many the kernel took (the rest are dropped).
    pub fn send(&mut self, fd: RawFd) -> usize {
        let total = self.len;
        self.len = 0;
        for i in 0..total {
            let len = self.lens[i];
            self.point(i, len);
        }
        let (mut done, mut sent) = (0, 0);
        while done < total {
            // SAFETY: headers [done, total) point at live buffers; sendmmsg only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..total].as_mut_ptr(),
                    (total - done) as _,
                    libc::MSG_DONTWAIT as _,
                )
            };
            if n > 0 {
                done += n as usize;
                sent += n as usize;
            } else {
                done += 1; // skip the datagram that failed
            }
        }
        sent
    }

    /// Marks the `n` received datagrams to be sent back to their sources.
    pub fn echo(&mut self, n: usize) {
        self.len = n;
    }
}
