//! Cutting SIP messages out of a byte stream (TCP, TLS) by Content-Length (RFC 3261 §18.3).
//!
//! Pure and allocation-free: [`next_frame`] looks at the bytes a connection has buffered and says
//! what the front of the buffer is: a keep-alive to answer or skip, one whole message of a given
//! length, or not enough bytes yet. It does not parse the message (the parser does that once the
//! frame is cut); it only finds the end of the header section and reads Content-Length.
//!
//! Calling contract: after each read, call [`next_frame`] on the buffered bytes until it returns
//! [`Frame::Incomplete`], removing the bytes each frame accounts for. An `Err` means the stream
//! cannot be framed any more; the transport drops what it has and closes the connection.

use thiserror::Error;

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A double-CRLF keep-alive "ping" (RFC 5626 §3.5.1) of `consumed` bytes (always 4). The
    /// transport discards it and answers with a single CRLF "pong".
    Ping { consumed: usize },
    /// CRLFs before a start line (RFC 3261 §7.5: ignored), e.g. a "pong" answering our own ping.
    /// Discard `consumed` bytes; nothing is answered.
    Skip { consumed: usize },
    /// One SIP message: the first `len` bytes (header section, blank line and body).
    Message { len: usize },
    /// Not enough bytes yet to decide; read more.
    Incomplete,
}

/// Why a stream cannot be framed. The transport closes the connection on any of these: the
/// peer's byte stream has lost its message boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The message (headers and declared body) exceeds the configured maximum, or the headers
    /// have not ended within it.
    #[error("message exceeds {limit} bytes")]
    TooLarge { limit: usize },
    /// A Content-Length value that is not a decimal number (RFC 3261 §20.14).
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Several Content-Length headers with different values: the body length is ambiguous.
    #[error("conflicting Content-Length headers")]
    ConflictingContentLength,
    /// The bytes cannot start a SIP message (a start line begins with a method token or
    /// `SIP/`), e.g. a TLS handshake sent to a TCP port.
    #[error("not a SIP message")]
    NotSip,
}

const CRLF: &[u8] = b"\r\n";
const PING: &[u8] = b"\r\n\r\n";

/// Looks at the front of `buf` and reports the next frame (see the module docs for the calling
/// contract). `max_len` bounds a whole message, headers plus body, in bytes.
///
/// A message without Content-Length gets an empty body here: RFC 3261 §18.3 makes the header
/// mandatory on streams, and the parser reports its absence.
pub fn next_frame(buf: &[u8], max_len: usize) -> Result<Frame, FramingError> {
    // RFC 3261 §7.5 / RFC 5626 §3.5.1: CRLFs between messages are keep-alives or padding.
    let leading = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if leading > 0 {
        if buf.starts_with(PING) {
            return Ok(Frame::Ping {
                consumed: PING.len(),
            });
        }
        if leading == buf.len() && PING.starts_with(buf) {
            // "\r", "\r\n" or "\r\n\r": the rest of a ping may still be on its way.
            return Ok(Frame::Incomplete);
        }
        return Ok(Frame::Skip { consumed: leading });
    }
    let Some(&first) = buf.first() else {
        return Ok(Frame::Incomplete);
    };
    if !can_start_message(first) {
        return Err(FramingError::NotSip);
    }
    let Some(head_end) = find(buf, PING) else {
        // The blank line is not there yet. Once more than `max_len` bytes arrived without it,
        // the message would be too large whatever its body.
        if buf.len() > max_len {
            return Err(FramingError::TooLarge { limit: max_len });
        }
        return Ok(Frame::Incomplete);
    };
    let head_len = head_end + PING.len();
    let body_len = content_length(&buf[..head_end])?.unwrap_or(0);
    let len = head_len
        .checked_add(body_len)
        .filter(|&len| len <= max_len)
        .ok_or(FramingError::TooLarge { limit: max_len })?;
    if buf.len() < len {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Message { len })
}

/// Whether a message can begin with this byte: a start line begins with a method, which is a
/// token (RFC 3261 §25.1), or with "SIP/2.0". Transports use it to drop binary junk early.
pub fn can_start_message(first: u8) -> bool {
    first.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&first)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The Content-Length of a header section (start line and headers, without the blank line), if
/// it has one. Handles the compact form `l` (RFC 3261 §7.3.3), any letter case, whitespace before
/// the colon and values continued on folded lines (RFC 3261 §7.3.1).
fn content_length(head: &[u8]) -> Result<Option<usize>, FramingError> {
    let mut found: Option<usize> = None;
    let mut lines = LogicalLines { rest: head };
    // The first logical line is the start line.
    lines.next();
    for line in lines {
        let Some(colon) = line.first.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line.first[..colon]);
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = parse_length(&line.first[colon + 1..], line.continuation)?;
        match found {
            Some(previous) if previous != value => {
                return Err(FramingError::ConflictingContentLength)
            }
            _ => found = Some(value),
        }
    }
    Ok(found)
}

/// One header line plus its folded continuation lines (still with their CRLFs).
struct LogicalLine<'a> {
    first: &'a [u8],
    continuation: &'a [u8],
}

struct LogicalLines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for LogicalLines<'a> {
    type Item = LogicalLine<'a>;

    fn next(&mut self) -> Option<LogicalLine<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let (first, mut after) = split_line(self.rest);
        let continuation_start = after;
        let mut continuation_len = 0;
        // RFC 3261 §7.3.1: a line starting with whitespace continues the previous one.
        while after.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            let (_, next) = split_line(after);
            continuation_len += after.len() - next.len();
            after = next;
        }
        self.rest = after;
        Some(LogicalLine {
            first,
            continuation: &continuation_start[..continuation_len],
        })
    }
}

/// Splits at the first CRLF: (line without CRLF, rest after CRLF).
fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    match find(bytes, CRLF) {
        Some(i) => (&bytes[..i], &bytes[i + CRLF.len()..]),
        None => (bytes, &[]),
    }
}

/// A Content-Length value: digits surrounded by linear whitespace, which may span folds.
fn parse_length(first: &[u8], continuation: &[u8]) -> Result<usize, FramingError> {
    let mut value: Option<usize> = None;
    let mut digits_done = false;
    for &b in first.iter().chain(continuation) {
        match b {
            b'0'..=b'9' if !digits_done => {
                let digit = usize::from(b - b'0');
                let next = value
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(digit))
                    // Too many digits for memory is too large for any limit.
                    .ok_or(FramingError::TooLarge { limit: usize::MAX })?;
                value = Some(next);
            }
            b' ' | b'\t' | b'\r' | b'\n' => digits_done = value.is_some(),
            _ => return Err(FramingError::InvalidContentLength),
        }
    }
    value.ok_or(FramingError::InvalidContentLength)
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65535;

    fn msg(body: &str) -> Vec<u8> {
        format!(
            "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP a.example.com;branch=z9hG4bK1\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// Feeds `stream` in chunks of `chunk` bytes and collects the frames a transport would cut.
    fn cut_all(stream: &[u8], chunk: usize) -> Vec<Frame> {
        let mut buffered = Vec::new();
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            buffered.extend_from_slice(piece);
            loop {
                let frame = next_frame(&buffered, MAX).unwrap();
                let consumed = match frame {
                    Frame::Ping { consumed } | Frame::Skip { consumed } => consumed,
                    Frame::Message { len } => len,
                    Frame::Incomplete => break,
                };
                frames.push(frame);
                buffered.drain(..consumed);
            }
        }
        assert!(buffered.is_empty(), "left over: {buffered:?}");
        frames
    }

    #[test]
    fn whole_message() {
        let m = msg("hello");
        assert_eq!(next_frame(&m, MAX), Ok(Frame::Message { len: m.len() }));
    }

    #[test]
    fn split_reads_at_every_size() {
        let m = msg("hello world");
        for chunk in 1..=m.len() {
            assert_eq!(
                cut_all(&m, chunk),
                [Frame::Message { len: m.len() }],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        let m = msg("body");
        for end in 0..m.len() {
            assert_eq!(
                next_frame(&m[..end], MAX),
                Ok(Frame::Incomplete),
                "prefix {end}"
            );
        }
    }

    #[test]
    fn two_messages_in_one_buffer() {
        let (a, b) = (msg("first"), msg("second one"));
        let stream = [a.clone(), b.clone()].concat();
        assert_eq!(
            cut_all(&stream, stream.len()),
            [
                Frame::Message { len: a.len() },
                Frame::Message { len: b.len() }
            ]
        );
    }

    #[test]
    fn body_containing_blank_lines() {
        let m = msg("v=0\r\n\r\n\r\nstill body\r\n\r\n");
        let stream = [m.clone(), m.clone()].concat();
        assert_eq!(cut_all(&stream, 7), [Frame::Message { len: m.len() }; 2]);
    }

    #[test]
    fn ping_and_pong_between_messages() {
        let m = msg("x");
        let stream = [b"\r\n\r\n".as_slice(), &m, b"\r\n", &m, b"\r\n\r\n\r\n\r\n"].concat();
        assert_eq!(
            cut_all(&stream, stream.len()),
            [
                Frame::Ping { consumed: 4 },
                Frame::Message { len: m.len() },
                Frame::Skip { consumed: 2 },
                Frame::Message { len: m.len() },
                Frame::Ping { consumed: 4 },
                Frame::Ping { consumed: 4 },
            ]
        );
    }

    #[test]
    fn ping_split_across_reads() {
        assert_eq!(cut_all(b"\r\n\r\n", 1), [Frame::Ping { consumed: 4 }]);
        assert_eq!(next_frame(b"\r\n", MAX), Ok(Frame::Incomplete));
        assert_eq!(next_frame(b"\r\nI", MAX), Ok(Frame::Skip { consumed: 2 }));
    }

    #[test]
    fn compact_and_case_insensitive_content_length() {
        for header in ["l: 3", "L:3", "CONTENT-LENGTH :  3 ", "content-length:\t3"] {
            let m = format!("BYE sip:a@b SIP/2.0\r\n{header}\r\nCall-ID: x\r\n\r\nabc");
            assert_eq!(
                next_frame(m.as_bytes(), MAX),
                Ok(Frame::Message { len: m.len() }),
                "{header}"
            );
        }
    }

    #[test]
    fn folded_content_length_value() {
        let m = "BYE sip:a@b SIP/2.0\r\nContent-Length:\r\n   3\r\nCall-ID: x\r\n\r\nabc";
        assert_eq!(
            next_frame(m.as_bytes(), MAX),
            Ok(Frame::Message { len: m.len() })
        );
    }

    #[test]
    fn folded_lines_of_other_headers_are_not_headers() {
        // The continuation " l: 99" belongs to Subject, so it is not a Content-Length.
        let m = "BYE sip:a@b SIP/2.0\r\nSubject: hi\r\n l: 99\r\nl: 2\r\n\r\nab";
        assert_eq!(
            next_frame(m.as_bytes(), MAX),
            Ok(Frame::Message { len: m.len() })
        );
    }

    #[test]
    fn headers_that_merely_contain_the_name_are_ignored() {
        let m = "BYE sip:a@b SIP/2.0\r\nX-Content-Length: 99\r\nSubject: l: 5\r\n\r\n";
        assert_eq!(
            next_frame(m.as_bytes(), MAX),
            Ok(Frame::Message { len: m.len() })
        );
    }

    #[test]
    fn missing_content_length_means_empty_body() {
        let m = b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\nNEXT";
        assert_eq!(next_frame(m, MAX), Ok(Frame::Message { len: m.len() - 4 }));
    }

    #[test]
    fn bad_content_lengths() {
        for (header, err) in [
            ("l: abc", FramingError::InvalidContentLength),
            ("l: -1", FramingError::InvalidContentLength),
            ("l: 1 2", FramingError::InvalidContentLength),
            ("l:", FramingError::InvalidContentLength),
            (
                "l: 99999999999999999999999999",
                FramingError::TooLarge { limit: usize::MAX },
            ),
        ] {
            let m = format!("BYE sip:a@b SIP/2.0\r\n{header}\r\n\r\n");
            assert_eq!(next_frame(m.as_bytes(), MAX), Err(err), "{header}");
        }
        let m = b"BYE sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(
            next_frame(m, MAX),
            Err(FramingError::ConflictingContentLength)
        );
        let m = b"BYE sip:a@b SIP/2.0\r\nl: 2\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(next_frame(m, MAX), Ok(Frame::Message { len: m.len() }));
    }

    #[test]
    fn oversize() {
        let m = msg(&"x".repeat(100));
        assert_eq!(next_frame(&m, m.len()), Ok(Frame::Message { len: m.len() }));
        assert_eq!(
            next_frame(&m, m.len() - 1),
            Err(FramingError::TooLarge { limit: m.len() - 1 })
        );
        // Declared body too large: rejected as soon as the headers are in, before the body.
        let head = b"INVITE sip:a@b SIP/2.0\r\nl: 70000\r\n\r\n";
        assert_eq!(
            next_frame(head, MAX),
            Err(FramingError::TooLarge { limit: MAX })
        );
        // Headers that never end.
        let endless = [b"INVITE sip:a@b SIP/2.0\r\n".as_slice(), &[b'a'; MAX]].concat();
        assert_eq!(
            next_frame(&endless, MAX),
            Err(FramingError::TooLarge { limit: MAX })
        );
    }

    #[test]
    fn garbage() {
        assert_eq!(
            next_frame(b"\x16\x03\x01\x02\x00", MAX),
            Err(FramingError::NotSip)
        );
        assert_eq!(next_frame(b"\0\0\0\0", MAX), Err(FramingError::NotSip));
        assert_eq!(next_frame(b" INVITE", MAX), Err(FramingError::NotSip));
        assert_eq!(next_frame(b"", MAX), Ok(Frame::Incomplete));
    }

    /// A tiny deterministic generator, so the test needs no dependency and replays exactly.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn check_invariants(buf: &[u8], max: usize) {
        match next_frame(buf, max) {
            Ok(Frame::Ping { consumed } | Frame::Skip { consumed }) => {
                assert!(consumed > 0 && consumed <= buf.len())
            }
            Ok(Frame::Message { len }) => assert!(len > 0 && len <= buf.len() && len <= max),
            Ok(Frame::Incomplete) | Err(_) => {}
        }
    }

    #[test]
    fn never_panics_on_random_bytes() {
        // Alphabet biased towards the bytes framing cares about.
        const ALPHABET: &[u8] = b"\r\n\r\n: \tlL0123456789Content-ngthSIP/2.0 \x00\xff";
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let len = (rng.next() % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if r & 3 == 0 {
                        r as u8
                    } else {
                        ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                    }
                })
                .collect();
            let max = (rng.next() % 256) as usize;
            check_invariants(&bytes, max);
            // Also behind a valid start line, to get past the start-line check.
            let prefixed = [b"REGISTER sip:x SIP/2.0\r\n".as_slice(), &bytes].concat();
            check_invariants(&prefixed, max + 64);
        }
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512),
                                     max in 0usize..1024) {
                super::check_invariants(&bytes, max);
            }

            #[test]
            fn any_split_frames_the_same(body in "[a-z\r\n]{0,64}", cut in 0usize..200) {
                let m = super::msg(&body);
                let stream = [m.clone(), m.clone()].concat();
                let cut = cut.min(stream.len());
                // Whatever the first read holds, the frame boundaries come out the same.
                let first = next_frame(&stream[..cut], 65535).unwrap();
                match first {
                    Frame::Incomplete => prop_assert!(cut < m.len()),
                    Frame::Message { len } => prop_assert_eq!(len, m.len()),
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
    }
}
