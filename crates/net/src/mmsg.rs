//! Batched datagram IO (Linux `recvmmsg` and `sendmmsg`) behind two small safe types. Every
//! `unsafe` block the UDP transport needs lives here.
//!
//! Both types own the arrays the kernel reads and writes and rebuild the pointers into them
//! right before each call, so nothing points into memory that has moved since.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use bytes::Bytes;
use socket2::{SockAddr, SockAddrStorage};

/// Most messages one `recvmmsg`/`sendmmsg` call takes (the kernel's `UIO_MAXIOV`).
const MAX_VLEN: usize = 1024;

/// An all-zero value of a plain C struct.
///
/// # Safety
///
/// `T` must be a C struct of integers, arrays of them and raw pointers (iovec, msghdr, mmsghdr,
/// sockaddr_storage), for which all-zero bytes are a valid value (zero lengths, null pointers).
unsafe fn zeroed<T>() -> T {
    // SAFETY: guaranteed by the caller.
    unsafe { mem::zeroed() }
}

/// Receive buffers for one `recvmmsg` call, reused for every call of one receive thread.
pub(crate) struct RecvBatch {
    /// `hdrs.len()` slots of `slot_len` bytes, one after the other.
    buffer: Vec<u8>,
    slot_len: usize,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Slots filled by the last [`recv`](Self::recv).
    filled: usize,
}

impl RecvBatch {
    /// `slots` datagrams of at most `slot_len` bytes each per call; a longer datagram is cut to
    /// `slot_len` bytes (the rest is discarded by the kernel).
    pub(crate) fn new(slots: usize, slot_len: usize) -> Self {
        assert!((1..=MAX_VLEN).contains(&slots) && slot_len > 0);
        Self {
            buffer: vec![0; slots * slot_len],
            slot_len,
            // SAFETY: plain C structs; the pointers are set before every call.
            names: vec![unsafe { zeroed() }; slots],
            // SAFETY: as above.
            iovs: vec![unsafe { zeroed() }; slots],
            // SAFETY: as above.
            hdrs: vec![unsafe { zeroed() }; slots],
            filled: 0,
        }
    }

    /// Waits for one datagram, as long as the socket's receive timeout allows (`WouldBlock` or
    /// `TimedOut` when it runs out), then takes those already queued behind it without waiting,
    /// up to the number of slots (`MSG_WAITFORONE`). Returns how many were read, at least 1;
    /// read them with [`datagram`](Self::datagram).
    pub(crate) fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.filled = 0;
        for (iov, slot) in self
            .iovs
            .iter_mut()
            .zip(self.buffer.chunks_exact_mut(self.slot_len))
        {
            iov.iov_base = slot.as_mut_ptr().cast();
            iov.iov_len = slot.len();
        }
        let iovs = self.iovs.as_mut_ptr();
        for (i, (hdr, name)) in self.hdrs.iter_mut().zip(&mut self.names).enumerate() {
            // SAFETY: plain C struct (some C libraries add private padding fields, so it is
            // not built as a literal).
            hdr.msg_hdr = unsafe { zeroed() };
            hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iovs.wrapping_add(i);
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_len = 0;
        }
        // SAFETY: every header points at its own address slot (`msg_namelen` bytes) and at one
        // iovec that points at its own `slot_len` bytes of `buffer`; all of them are owned by
        // `self`, which is borrowed mutably for the whole call, and none moves during it. The
        // kernel writes at most `hdrs.len()` headers. No timeout pointer: the socket's own
        // receive timeout bounds the wait for the first datagram.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as _,
                libc::MSG_WAITFORONE as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.filled = (n as usize).min(self.hdrs.len());
        Ok(self.filled)
    }

    /// Datagram `index` of the last [`recv`](Self::recv): its bytes (at most `slot_len`) and
    /// its sender (`None` only for an address family a UDP socket never reports).
    pub(crate) fn datagram(&self, index: usize) -> (&[u8], Option<SocketAddr>) {
        assert!(index < self.filled, "datagram {index} was not received");
        let hdr = &self.hdrs[index];
        let len = (hdr.msg_len as usize).min(self.slot_len);
        let start = index * self.slot_len;
        let peer = decode(&self.names[index], hdr.msg_hdr.msg_namelen);
        (&self.buffer[start..start + len], peer)
    }
}

/// The address the kernel wrote in a receive slot, if it is a whole IPv4 or IPv6 one.
fn decode(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let needed = match i32::from(name.ss_family) {
        libc::AF_INET => mem::size_of::<libc::sockaddr_in>(),
        libc::AF_INET6 => mem::size_of::<libc::sockaddr_in6>(),
        _ => return None,
    };
    if (len as usize) < needed {
        return None;
    }
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_storage` is the platform type `SockAddrStorage` wraps.
    unsafe { *storage.view_as::<libc::sockaddr_storage>() = *name };
    // SAFETY: the family is AF_INET or AF_INET6 and the kernel wrote a whole address of it
    // (checked above).
    let addr = unsafe { SockAddr::new(storage, len) };
    addr.as_socket()
}

/// Datagrams waiting to be sent with one `sendmmsg`, in order; reused from flush to flush.
#[derive(Default)]
pub(crate) struct SendBatch {
    queue: Vec<(SockAddr, Bytes)>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    pub(crate) fn push(&mut self, to: SocketAddr, bytes: Bytes) {
        self.queue.push((SockAddr::from(to), bytes));
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Sends every queued datagram, in order, without blocking (`MSG_DONTWAIT`), with as few
    /// `sendmmsg` calls as the kernel allows: one when all go through. A datagram the kernel
    /// refuses (full socket buffer, unreachable or invalid destination, too long) is passed to
    /// `refused` with the error and skipped; the ones after it are still sent. Returns how many
    /// were sent; the queue is empty afterwards.
    pub(crate) fn flush(
        &mut self,
        socket: &impl AsRawFd,
        mut refused: impl FnMut(SocketAddr, io::Error),
    ) -> usize {
        let total = self.queue.len();
        if total == 0 {
            return 0;
        }
        self.iovs.clear();
        self.iovs
            .extend(self.queue.iter().map(|(_, bytes)| libc::iovec {
                // The kernel only reads through this pointer (a send).
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            }));
        self.hdrs.clear();
        let iovs = self.iovs.as_mut_ptr();
        for (i, (to, _)) in self.queue.iter().enumerate() {
            // SAFETY: plain C struct; the fields that matter are set below.
            let mut hdr: libc::mmsghdr = unsafe { zeroed() };
            hdr.msg_hdr.msg_name = to.as_ptr().cast_mut().cast();
            hdr.msg_hdr.msg_namelen = to.len();
            hdr.msg_hdr.msg_iov = iovs.wrapping_add(i);
            hdr.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(hdr);
        }
        let mut sent = 0;
        let mut next = 0;
        while next < total {
            let vlen = (total - next).min(MAX_VLEN);
            // SAFETY: headers `next..next + vlen` exist; each points at its own address (a
            // `SockAddr` in `queue`, `msg_namelen` bytes) and one iovec describing the bytes of
            // its datagram, all owned by `self` and unchanged until the call returns. The kernel
            // reads them and writes only each header's `msg_len`.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.hdrs.as_mut_ptr().add(next),
                    vlen as _,
                    libc::MSG_DONTWAIT as _,
                )
            };
            if n > 0 {
                let n = (n as usize).min(vlen);
                sent += n;
                next += n;
                continue;
            }
            // `sendmmsg` reports an error only when the first datagram of the call fails (a
            // later failure ends the call early, with the count so far, and shows here on the
            // next call when it recurs).
            let error = if n == 0 {
                io::Error::from(io::ErrorKind::WriteZero)
            } else {
                io::Error::last_os_error()
            };
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let to = self.queue[next].0.as_socket();
            refused(to.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()), error);
            next += 1;
        }
        self.queue.clear();
        self.hdrs.clear();
        self.iovs.clear();
        sent
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;

    fn socket() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    }

    /// Reads until `count` datagrams have come, in as many calls as it takes.
    fn recv_all(
        batch: &mut RecvBatch,
        socket: &UdpSocket,
        count: usize,
    ) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        while out.len() < count {
            let n = batch.recv(socket).unwrap();
            assert!(n >= 1);
            for i in 0..n {
                let (bytes, peer) = batch.datagram(i);
                out.push((bytes.to_vec(), peer.unwrap()));
            }
        }
        out
    }

    #[test]
    fn receives_a_burst_in_order_and_cuts_long_datagrams() {
        let server = socket();
        let client = socket();
        let mut batch = RecvBatch::new(8, 100);
        let mut sent = Vec::new();
        for i in 0..12u8 {
            // The 5th is longer than a slot.
            let datagram = vec![i; if i == 4 { 300 } else { 10 + usize::from(i) }];
            client
                .send_to(&datagram, server.local_addr().unwrap())
                .unwrap();
            sent.push(datagram);
        }
        let got = recv_all(&mut batch, &server, 12);
        assert_eq!(got.len(), 12);
        for (i, (bytes, peer)) in got.iter().enumerate() {
            assert_eq!(*peer, client.local_addr().unwrap());
            if i == 4 {
                assert_eq!(bytes.as_slice(), &sent[i][..100], "cut to the slot length");
            } else {
                assert_eq!(bytes, &sent[i]);
            }
        }
    }

    #[test]
    fn receive_times_out_like_recv_from() {
        let server = socket();
        server
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut batch = RecvBatch::new(4, 64);
        let error = batch.recv(&server).unwrap_err();
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{error}"
        );
    }

    #[test]
    fn sends_in_order_and_skips_refused_datagrams() {
        let sender = socket();
        let receiver = socket();
        let to = receiver.local_addr().unwrap();
        let mut batch = SendBatch::default();
        let mut refused = Vec::new();
        let mut expected = Vec::new();
        for i in 0..10u8 {
            match i {
                // Port 0 is refused (EINVAL), and so is a datagram longer than UDP allows.
                3 => batch.push(([127, 0, 0, 1], 0).into(), Bytes::from_static(b"nowhere")),
                6 => batch.push(to, Bytes::from(vec![0u8; 70_000])),
                _ => {
                    batch.push(to, Bytes::from(vec![i; 20]));
                    expected.push(vec![i; 20]);
                }
            }
        }
        assert_eq!(batch.len(), 10);
        let sent = batch.flush(&sender, |to, error| refused.push((to, error.kind())));
        assert_eq!(sent, 8);
        assert_eq!(batch.len(), 0);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(refused[0].0, ([127, 0, 0, 1], 0).into());
        assert_eq!(refused[1].0, to);
        let mut buf = [0u8; 100];
        for want in expected {
            let (len, from) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(from, sender.local_addr().unwrap());
            assert_eq!(&buf[..len], want.as_slice());
        }
        // Reused after a flush.
        batch.push(to, Bytes::from_static(b"again"));
        assert_eq!(batch.flush(&sender, |_, e| panic!("{e}")), 1);
        let (len, _) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"again");
    }
}
