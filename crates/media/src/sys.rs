//! Thin safe wrappers over the Linux calls the worker loop needs: epoll, eventfd, and batched
//! UDP receive/send (`recvmmsg`/`sendmmsg`). All `unsafe` in the crate lives here.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Largest datagram the relay forwards; larger ones arrive truncated and are dropped.
pub(crate) const MAX_DATAGRAM: usize = 2048;
/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub(crate) const BATCH: usize = 32;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An epoll instance; readable interest only.
pub(crate) struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub(crate) fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked before it is owned.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
        })
    }

    /// Registers `fd`. Edge-triggered: the owner must read until a read comes back short, or
    /// remember to come back; level-triggered would re-poll every socket read in the previous
    /// turn on each `epoll_wait`, a cost per packet.
    pub(crate) fn add(&self, fd: RawFd, token: u64, edge: bool) -> io::Result<()> {
        let flags = if edge {
            libc::EPOLLIN | libc::EPOLLET
        } else {
            libc::EPOLLIN
        };
        let mut ev = libc::epoll_event {
            events: flags as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Waits for readiness (timeout in ms, -1 = forever); returns how many tokens are ready,
    /// read with [`token`](Self::token). An interrupted wait returns 0.
    pub(crate) fn wait(&mut self, timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: the buffer holds `len` initialised events; the kernel writes at most `len`.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        match cvt(n) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// The token of ready event `i` of the last wait.
    pub(crate) fn token(&self, i: usize) -> u64 {
        // Copy the (packed) field out by value.
        self.events[i].u64
    }
}

/// An eventfd used to wake a worker blocked in `epoll_wait`.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked before it is owned.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: a fresh descriptor owned by nothing else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer. A full counter (EAGAIN) is already a wake-up.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A socket address in the kernel's layout, converted once and reused.
#[derive(Clone, Copy)]
pub(crate) struct RawAddr {
    storage: libc::sockaddr_in6,
    len: libc::socklen_t,
}

impl RawAddr {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        // SAFETY: an all-zero sockaddr_in6 is valid; sockaddr_in fits inside it.
        let mut storage: libc::sockaddr_in6 = unsafe { mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_in (16 bytes) fits in sockaddr_in6 (28 bytes); both are POD.
                unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_in6).cast(), sin) };
                mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                storage.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                storage.sin6_port = a.port().to_be();
                storage.sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                storage.sin6_flowinfo = a.flowinfo();
                storage.sin6_scope_id = a.scope_id();
                mem::size_of::<libc::sockaddr_in6>()
            }
        };
        Self {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

/// Reads the address the kernel wrote into a receive slot.
fn decode_addr(storage: &libc::sockaddr_in6, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(storage.sin6_family) {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in at the start of the slot.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_in6).cast()) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(storage.sin6_addr.s6_addr),
                u16::from_be(storage.sin6_port),
                storage.sin6_flowinfo,
                storage.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// One received datagram in a [`RecvBatch`].
pub(crate) struct Received<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) source: Option<SocketAddr>,
    pub(crate) truncated: bool,
}

/// Receive buffers for one `recvmmsg` call; allocated once per worker.
pub(crate) struct RecvBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]; BATCH]>,
    addrs: Box<[libc::sockaddr_in6; BATCH]>,
    iovs: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    len: usize,
}

// SAFETY: the raw pointers inside the headers are scratch values, rewritten before every system
// call to point into the batch's own boxes; nothing is shared with another thread.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        // SAFETY: all-zero iovec, mmsghdr and sockaddr_in6 are valid (null pointers, zero
        // lengths); the pointers are set below, once: the boxes never move their contents.
        let zeroed = || unsafe { MaybeUninit::<[libc::mmsghdr; BATCH]>::zeroed().assume_init() };
        let mut batch = Self {
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!()),
            // SAFETY: as above.
            addrs: Box::new(unsafe { mem::zeroed() }),
            // SAFETY: as above.
            iovs: Box::new(unsafe { mem::zeroed() }),
            hdrs: Box::new(zeroed()),
            len: BATCH,
        };
        for i in 0..BATCH {
            batch.iovs[i] = libc::iovec {
                iov_base: batch.bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
            let h = &mut batch.hdrs[i];
            h.msg_hdr.msg_name = (&mut batch.addrs[i] as *mut libc::sockaddr_in6).cast();
            h.msg_hdr.msg_iov = &mut batch.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        batch
    }

    /// Reads up to `BATCH` datagrams without blocking; returns how many (0 when none waited).
    /// Fewer than `BATCH` means the socket's queue was found empty (`recvmmsg` stops at the
    /// first `EAGAIN`).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // The kernel rewrites the name length (in/out) of the slots it filled last time; the
        // pointers set in `new` stay valid.
        for h in &mut self.hdrs[..self.len] {
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        }
        self.len = 0;
        // SAFETY: every header points at live buffers owned by `self`, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        match cvt(n) {
            Ok(n) => {
                self.len = n as usize;
                Ok(self.len)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn get(&self, i: usize) -> Received<'_> {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(MAX_DATAGRAM);
        Received {
            data: &self.bufs[i][..len],
            source: decode_addr(&self.addrs[i], h.msg_hdr.msg_namelen),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }
}

/// Datagrams of a [`RecvBatch`] to send out of one socket, each to its own address.
pub(crate) struct SendBatch {
    addrs: Box<[RawAddr; BATCH]>,
    iovs: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    /// Index into the receive batch, per queued datagram.
    slots: [u8; BATCH],
    len: usize,
}

// SAFETY: as for `RecvBatch`: pointers are rewritten in `flush` before the call that reads them.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub(crate) fn new() -> Self {
        let zero = RawAddr::new(SocketAddr::from(([0, 0, 0, 0], 0)));
        Self {
            addrs: Box::new([zero; BATCH]),
            // SAFETY: all-zero iovec and mmsghdr are valid (null pointers, zero lengths).
            iovs: Box::new(unsafe { mem::zeroed() }),
            // SAFETY: as above.
            hdrs: Box::new(unsafe {
                MaybeUninit::<[libc::mmsghdr; BATCH]>::zeroed().assume_init()
            }),
            slots: [0; BATCH],
            len: 0,
        }
    }

    /// Queues datagram `slot` of the receive batch for `to`. At most `BATCH` per flush (one
    /// receive batch), so the queue cannot overflow.
    pub(crate) fn push(&mut self, slot: usize, to: &RawAddr) {
        if self.len < BATCH {
            self.addrs[self.len] = *to;
            self.slots[self.len] = slot as u8;
            self.len += 1;
        }
    }

    /// Sends everything queued out of `fd`; the datagrams are read from `from`. Returns how many
    /// the kernel refused (each is skipped; the rest are still sent).
    pub(crate) fn flush(&mut self, fd: RawFd, from: &RecvBatch) -> usize {
        let total = self.len;
        self.len = 0;
        for i in 0..total {
            let slot = usize::from(self.slots[i]);
            let data = from.get(slot).data;
            self.iovs[i] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i].storage as *mut libc::sockaddr_in6).cast();
            h.msg_hdr.msg_namelen = self.addrs[i].len;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
        }
        let mut done = 0;
        let mut failed = 0;
        // Bounded: every turn sends at least one datagram or skips one.
        while done < total {
            // SAFETY: headers [done, total) point at live buffers in `self` and `from`; sendmmsg
            // only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..].as_mut_ptr(),
                    (total - done) as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                )
            };
            match cvt(n) {
                Ok(n) if n > 0 => done += n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The first remaining datagram failed (full buffer, unreachable): skip it.
                _ => {
                    done += 1;
                    failed += 1;
                }
            }
        }
        failed
    }
}

/// A UDP socket bound to `addr`, non-blocking and close-on-exec from the `socket` call itself
/// (two system calls; `std`'s bind plus `set_nonblocking` take three).
pub(crate) fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let flags = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain system call; the result is checked before it is owned.
    let fd = cvt(unsafe { libc::socket(family, flags, 0) })?;
    // SAFETY: a fresh descriptor owned by nothing else; closed on every path from here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = RawAddr::new(addr);
    // SAFETY: `raw.storage` holds a valid socket address of `raw.len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw.storage as *const libc::sockaddr_in6).cast(),
            raw.len,
        )
    })?;
    Ok(std::net::UdpSocket::from(fd))
}

/// At most this many datagrams are discarded per [`discard_queued`] call: a receive buffer
/// holds a few hundred at most, so the bound only guards against a flood racing the drain.
const DRAIN_MAX: usize = 4096;

/// Reads and discards every datagram queued on a non-blocking socket (copying at most a byte
/// of each) and clears a pending socket error; returns how many datagrams it discarded.
pub(crate) fn discard_queued(fd: RawFd) -> usize {
    let mut byte = 0u8;
    let mut discarded = 0;
    for _ in 0..DRAIN_MAX {
        // SAFETY: reads at most one byte into a live buffer; MSG_TRUNC only changes the
        // returned length.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n >= 0 {
            discarded += 1;
            continue;
        }
        match io::Error::last_os_error().kind() {
            // Reported once, then cleared: look again.
            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused => continue,
            _ => break, // WouldBlock: empty
        }
    }
    discarded
}

/// The process's soft limit on open descriptors (`RLIMIT_NOFILE`), if it has one.
pub(crate) fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: writes one rlimit into a live value.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }).ok()?;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Whether an error says the process (or the system) has no descriptor left.
pub(crate) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// [`discard_queued`] for several sockets with one system call when all are empty (the
/// usual case): `poll` first, then only the readable ones are read. Returns how many
/// datagrams were discarded.
pub(crate) fn discard_queued_all(fds: &[RawFd]) -> usize {
    let mut polled = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 4];
    let mut discarded = 0;
    for chunk in fds.chunks(polled.len()) {
        for (p, &fd) in polled.iter_mut().zip(chunk) {
            *p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
        }
        let polled = &mut polled[..chunk.len()];
        // SAFETY: `polled` is a live array of `len` pollfds; timeout 0 never blocks.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 0) };
        if ready == 0 {
            continue;
        }
        for p in polled.iter() {
            // On a failed poll, read them all: a read of an empty socket is harmless.
            if ready < 0 || p.revents != 0 {
                discarded += discard_queued(p.fd);
            }
        }
    }
    discarded
}

/// Moves a `std` UDP socket's descriptor value out for registration, keeping ownership.
pub(crate) fn raw(socket: &std::net::UdpSocket) -> RawFd {
    socket.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_sockets_are_nonblocking_and_close_on_exec_and_drain() {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let fd = socket.as_raw_fd();
        // SAFETY: plain fcntl queries on a live descriptor.
        let (fl, fd_flags) = unsafe {
            (
                libc::fcntl(fd, libc::F_GETFL),
                libc::fcntl(fd, libc::F_GETFD),
            )
        };
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0);
        let to = socket.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for len in [0, 1, 172, 1500] {
            sender.send_to(&vec![7u8; len], to).unwrap();
        }
        // Loopback delivers at once in practice; bounded wait all the same.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut discarded = 0;
        while discarded < 4 && std::time::Instant::now() < deadline {
            discarded += discard_queued(fd);
        }
        assert_eq!(discarded, 4);
        assert_eq!(discard_queued(fd), 0);
        let other = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        sender.send_to(b"x", other.local_addr().unwrap()).unwrap();
        let both = [fd, other.as_raw_fd()];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut discarded = 0;
        while discarded < 1 && std::time::Instant::now() < deadline {
            discarded += discard_queued_all(&both);
        }
        assert_eq!((discarded, discard_queued_all(&both)), (1, 0));
        let taken = bind_udp(to).map(|_| ()).unwrap_err();
        assert_eq!(taken.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn raw_addr_round_trips() {
        for addr in ["127.0.0.1:20000", "[::1]:5004", "[fe80::1]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let raw = RawAddr::new(addr);
            assert_eq!(decode_addr(&raw.storage, raw.len), Some(addr));
        }
    }
}
