//! The RESP request scanner: `*<n>\r\n` then n × `$<len>\r\n<bytes>\r\n`, plus
//! inline commands (`PING\r\n`) as redis-server accepts them.
//!
//! Bounded: header lines are short (a line without CRLF within its limit is an
//! error, not a reason to buffer forever), counts and lengths are checked against
//! redis's own limits before anything is reserved for them.

use super::super::guard::{binary_start, Attack};
use super::super::Scan;
use std::ops::Range;

/// Limits on what a client may declare.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest bulk argument (redis `proto-max-bulk-len`, 512 MB).
    pub max_bulk: usize,
    /// Most arguments in one request (redis accepts up to 1024*1024).
    pub max_args: usize,
    /// Longest inline command line (redis: 64 KB).
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline: 64 * 1024,
        }
    }
}

/// A request the byte stream cannot recover from; the client gets
/// `-ERR Protocol error: <what>` and the connection is closed (as redis does).
/// An [`Attack`] (a TLS hello, binary garbage) is closed without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestError(pub &'static str, pub Option<Attack>);

impl RequestError {
    const fn framing(what: &'static str) -> RequestError {
        RequestError(what, None)
    }
}

/// Scans one request at the start of `buf`. On `Complete`, `args` holds the
/// position of every argument (the command name first). `Complete` with no args
/// is an empty request (`*0`, `*-1`, an empty inline line) that gets no reply.
/// An inline request's args may not be contiguous RESP: callers that forward it
/// re-encode it (see [`is_inline`]).
pub fn scan_request(
    buf: &[u8],
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
) -> Result<Scan, RequestError> {
    args.clear();
    if buf.is_empty() {
        return Ok(Scan::Incomplete { hint: 1 });
    }
    if buf[0] != b'*' {
        return scan_inline(buf, limits, args);
    }
    const BAD_COUNT: RequestError = RequestError::framing("invalid multibulk length");
    let Some((n, end)) = super::header_number(buf, 1, true).map_err(|()| BAD_COUNT)? else {
        return Ok(Scan::Incomplete {
            hint: buf.len() + 1,
        });
    };
    if n < 0 {
        // `*-1` (and any negative count): an empty request, like redis.
        return Ok(Scan::Complete(end + 2));
    }
    let n = n as usize;
    if n > limits.max_args {
        return Err(BAD_COUNT);
    }
    let mut pos = end + 2;
    // Reserve for what is already in the buffer, never for the declared count.
    args.reserve(n.min(buf.len() / 4 + 1));
    for _ in 0..n {
        if pos >= buf.len() {
            return Ok(Scan::Incomplete { hint: pos + 4 });
        }
        if buf[pos] != b'$' {
            return Err(RequestError::framing("expected '$'"));
        }
        const BAD_LEN: RequestError = RequestError::framing("invalid bulk length");
        let Some((len, end)) = super::header_number(buf, pos + 1, false).map_err(|()| BAD_LEN)?
        else {
            return Ok(Scan::Incomplete {
                hint: buf.len() + 1,
            });
        };
        let len = len as usize;
        if len > limits.max_bulk {
            return Err(BAD_LEN);
        }
        let start = end + 2;
        let stop = start + len;
        if buf.len() < stop + 2 {
            return Ok(Scan::Incomplete { hint: stop + 2 });
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(RequestError::framing("bulk data does not end with CRLF"));
        }
        args.push(start..stop);
        pos = stop + 2;
    }
    Ok(Scan::Complete(pos))
}

fn scan_inline(
    buf: &[u8],
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
) -> Result<Scan, RequestError> {
    // Not RESP: a text line, unless it starts with a byte no client types
    // (a TLS hello on a plain port must not wait here for a newline).
    if let Some(attack) = binary_start(buf[0]) {
        return Err(RequestError("not a redis command", Some(attack)));
    }
    let window = &buf[..buf.len().min(limits.max_inline)];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        if window.len() >= limits.max_inline {
            return Err(RequestError::framing("too big inline request"));
        }
        return Ok(Scan::Incomplete {
            hint: buf.len() + 1,
        });
    };
    let line_stop = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let mut i = 0;
    while i < line_stop {
        while i < line_stop && (buf[i] == b' ' || buf[i] == b'\t') {
            i += 1;
        }
        let start = i;
        while i < line_stop && buf[i] != b' ' && buf[i] != b'\t' {
            i += 1;
        }
        if i > start {
            args.push(start..i);
        }
    }
    Ok(Scan::Complete(nl + 1))
}

/// Whether a scanned request was written inline (not RESP multibulk).
#[inline]
pub fn is_inline(buf: &[u8]) -> bool {
    buf.first() != Some(&b'*')
}

/// Appends `*<n>\r\n` to `out`.
pub fn put_array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `:<n>\r\n` to `out`.
pub fn put_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `$<len>\r\n<bytes>\r\n` to `out`.
pub fn put_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan(buf: &[u8]) -> Result<(Scan, Vec<Vec<u8>>), RequestError> {
        let mut args = Vec::new();
        let s = scan_request(buf, &Limits::default(), &mut args)?;
        Ok((s, args.into_iter().map(|r| buf[r].to_vec()).collect()))
    }

    #[test]
    fn multibulk() {
        let (s, a) =
            scan(b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n*1").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s, Scan::Complete(22));
        assert_eq!(a, [b"GET".to_vec(), b"foo".to_vec()]);
        let (s, a) = scan(b"*1\r\n$0\r\n\r\n").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((s, a), (Scan::Complete(10), vec![vec![]]));
    }

    #[test]
    fn empty_requests() {
        assert_eq!(scan(b"*0\r\n").map(|x| x.0), Ok(Scan::Complete(4)));
        assert_eq!(scan(b"*-1\r\n").map(|x| x.0), Ok(Scan::Complete(5)));
        assert_eq!(scan(b"\r\n").map(|x| x.0), Ok(Scan::Complete(2)));
    }

    #[test]
    fn inline() {
        let (s, a) = scan(b"  SET  k\tv \r\nGET").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s, Scan::Complete(13));
        assert_eq!(a, [b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]);
        assert_eq!(scan(b"PING\n").map(|x| x.0), Ok(Scan::Complete(5)));
    }

    #[test]
    fn incomplete_reports_the_size_when_known() {
        assert_eq!(
            scan(b"*2\r\n$3\r\nGET\r\n$100\r\nab").map(|x| x.0),
            Ok(Scan::Incomplete { hint: 121 })
        );
        assert!(matches!(
            scan(b"*2\r").map(|x| x.0),
            Ok(Scan::Incomplete { .. })
        ));
    }

    #[test]
    fn framing_errors() {
        for bad in [
            &b"*x\r\n"[..],
            b"*2\r\n+3\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$3\r\nabcd\r\n",
            b"*1\r\n$abc\r\n",
            b"*1\n",
            b"*99999999999999999999\r\n",
            b"*2000000\r\n",
            b"*1\r\n$600000000\r\n",
            b"*1\r\n$0000000000000000000000000000000000001\r\n",
        ] {
            assert!(scan(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(scan(&vec![b'a'; 70_000]).is_err());
    }

    proptest! {
        /// A pipeline split at any byte scans the same: prefixes are incomplete,
        /// never errors, and the whole scans to the same arguments.
        #[test]
        fn any_split_scans_the_same(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6), cut in 0usize..400) {
            let mut wire = Vec::new();
            put_array_header(&mut wire, args.len());
            for a in &args { put_bulk(&mut wire, a); }
            let cut = cut % wire.len();
            let partial = matches!(scan(&wire[..cut]), Ok((Scan::Incomplete { .. }, _)));
            prop_assert!(partial);
            let (s, got) = scan(&wire).unwrap_or((Scan::Incomplete { hint: 0 }, vec![]));
            prop_assert_eq!(s, Scan::Complete(wire.len()));
            prop_assert_eq!(got, args);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = scan(&bytes);
        }
    }
}
