//! The RESP reply scanner (backend side), RESP2 and RESP3. Iterative: nested
//! aggregates only add to a count of elements still to read, so a hostile depth
//! costs no memory. RESP3 push messages (`>`) are refused at the top level: they
//! answer no request, so they would break FIFO matching (the proxy forwards no
//! command that enables them).

use super::super::Scan;
use std::ops::Range;

/// A reply the proxy cannot understand (garbage, an unsolicited push): the server
/// connection is closed and its requests fail with "Invalid argument".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyError;

/// Longest status/error/integer line we wait for before calling it garbage.
const MAX_LINE: usize = 64 * 1024;

fn line(buf: &[u8], from: usize) -> Result<Option<usize>, ReplyError> {
    let window = &buf[from..buf.len().min(from + MAX_LINE)];
    match memchr::memchr(b'\n', window) {
        Some(i) if i > 0 && window[i - 1] == b'\r' => Ok(Some(from + i - 1)),
        Some(_) => Err(ReplyError),
        None if window.len() >= MAX_LINE => Err(ReplyError),
        None => Ok(None),
    }
}

/// A big number (`(`, any count of digits).
fn big_number(line: &[u8]) -> Result<(), ReplyError> {
    let d = line.strip_prefix(b"-").unwrap_or(line);
    if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
        return Err(ReplyError);
    }
    Ok(())
}

/// A `[-]<digits>\r\n` header after the type byte at `pos`.
#[inline]
fn header(buf: &[u8], pos: usize) -> Result<Option<(i64, usize)>, ReplyError> {
    super::header_number(buf, pos + 1, true).map_err(|()| ReplyError)
}

/// Scans one complete reply at the start of `buf`.
#[inline]
pub fn scan_reply(buf: &[u8]) -> Result<Scan, ReplyError> {
    scan(buf, false)
}

/// Scans one complete frame of a subscribed connection: a reply, or a RESP3
/// push (a published message, a confirmation).
pub fn scan_frame(buf: &[u8]) -> Result<Scan, ReplyError> {
    scan(buf, true)
}

#[inline(always)]
fn scan(buf: &[u8], pushes: bool) -> Result<Scan, ReplyError> {
    let mut pos = 0;
    let mut todo: u64 = 1;
    while todo > 0 {
        let Some(&kind) = buf.get(pos) else {
            return Ok(Scan::Incomplete { hint: pos + 1 });
        };
        todo -= 1;
        // Counted types: the header is parsed in the same pass as its CRLF.
        match kind {
            b'$' | b'!' | b'=' => {
                let Some((n, end)) = header(buf, pos)? else {
                    return Ok(Scan::Incomplete {
                        hint: buf.len() + 1,
                    });
                };
                if n >= 0 {
                    let stop = end + 2 + n as usize;
                    if buf.len() < stop + 2 {
                        return Ok(Scan::Incomplete { hint: stop + 2 });
                    }
                    if &buf[stop..stop + 2] != b"\r\n" {
                        return Err(ReplyError);
                    }
                    pos = stop + 2;
                } else if n == -1 && kind == b'$' {
                    pos = end + 2;
                } else {
                    return Err(ReplyError);
                }
                continue;
            }
            b'*' | b'~' | b'>' | b'%' | b'|' | b':' => {
                if kind == b'>' && pos == 0 && !pushes {
                    return Err(ReplyError);
                }
                let Some((n, end)) = header(buf, pos)? else {
                    return Ok(Scan::Incomplete {
                        hint: buf.len() + 1,
                    });
                };
                if kind == b':' {
                    // An integer: nothing follows.
                } else if n > 0 {
                    let n = n as u64;
                    todo += match kind {
                        b'%' => 2 * n,
                        // An attribute map comes before the reply it annotates.
                        b'|' => 2 * n + 1,
                        _ => n,
                    };
                } else if n < -1 || (n == -1 && kind != b'*') {
                    return Err(ReplyError);
                } else if kind == b'|' {
                    todo += 1;
                }
                pos = end + 2;
                continue;
            }
            _ => {}
        }
        let Some(end) = line(buf, pos + 1)? else {
            return Ok(Scan::Incomplete {
                hint: buf.len() + 1,
            });
        };
        match kind {
            b'+' | b'-' | b',' => {}
            b'(' => big_number(&buf[pos + 1..end])?,
            b'#' => {
                if !matches!(&buf[pos + 1..end], b"t" | b"f") {
                    return Err(ReplyError);
                }
            }
            b'_' => {
                if end != pos + 1 {
                    return Err(ReplyError);
                }
            }
            _ => return Err(ReplyError),
        }
        pos = end + 2;
    }
    Ok(Scan::Complete(pos))
}

/// The elements of a complete array reply of bulk strings (an MGET fragment's
/// reply): each element's whole encoding (`$3\r\nfoo\r\n`, `$-1\r\n`, or
/// RESP3's null `_\r\n`).
/// Anything else (an error reply, nested arrays) is `Err`.
pub fn array_elements(reply: &[u8], out: &mut Vec<Range<usize>>) -> Result<(), ReplyError> {
    out.clear();
    if reply.first() != Some(&b'*') {
        return Err(ReplyError);
    }
    let (n, end) = header(reply, 0)?.ok_or(ReplyError)?;
    let mut pos = end + 2;
    for _ in 0..n.max(0) {
        if !matches!(reply.get(pos), Some(b'$') | Some(b'_')) {
            return Err(ReplyError);
        }
        match scan_reply(&reply[pos..])? {
            Scan::Complete(len) => {
                out.push(pos..pos + len);
                pos += len;
            }
            Scan::Incomplete { .. } => return Err(ReplyError),
        }
    }
    Ok(())
}

/// The element count of a complete array reply and where its first element
/// starts (a null array counts 0).
pub fn array_header(reply: &[u8]) -> Result<(usize, usize), ReplyError> {
    if reply.first() != Some(&b'*') {
        return Err(ReplyError);
    }
    let (n, end) = header(reply, 0)?.ok_or(ReplyError)?;
    Ok((n.max(0) as usize, end + 2))
}

/// The end of the bulk-string element (`$3\r\nfoo\r\n`, `$-1\r\n`, `_\r\n`)
/// that starts at `pos` of a complete reply. Anything else is `Err`.
#[inline]
pub fn bulk_element(reply: &[u8], pos: usize) -> Result<usize, ReplyError> {
    match reply.get(pos) {
        Some(b'$') => {
            let (n, end) = header(reply, pos)?.ok_or(ReplyError)?;
            let stop = match n {
                -1 => return Ok(end + 2),
                n if n >= 0 => end + 2 + n as usize,
                _ => return Err(ReplyError),
            };
            match reply.get(stop..stop + 2) {
                Some(b"\r\n") => Ok(stop + 2),
                _ => Err(ReplyError),
            }
        }
        Some(b'_') if reply.get(pos + 1..pos + 3) == Some(b"\r\n") => Ok(pos + 3),
        _ => Err(ReplyError),
    }
}

/// The value of an integer reply (`:<n>\r\n`).
pub fn integer(reply: &[u8]) -> Option<i64> {
    if reply.first() != Some(&b':') {
        return None;
    }
    match header(reply, 0) {
        Ok(Some((n, end))) if end + 2 == reply.len() => Some(n),
        _ => None,
    }
}

/// Redis's transient failures that nutcracker does not forward (spec §5.3).
pub fn is_transient_error(reply: &[u8]) -> bool {
    reply.starts_with(b"-OOM")
        || reply.starts_with(b"-LOADING")
        || (reply.starts_with(b"-BUSY") && matches!(reply.get(5), Some(b' ') | Some(b'\r')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type() {
        for (r, n) in [
            (&b"+OK\r\n"[..], 5),
            (b"-ERR x\r\n", 8),
            (b":-12\r\n", 6),
            (b"$3\r\nfoo\r\n", 9),
            (b"$-1\r\n", 5),
            (b"*-1\r\n", 5),
            (b"*0\r\n", 4),
            (b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", 19),
            // RESP3
            (b"%1\r\n+a\r\n:1\r\n", 12),
            (b"_\r\n", 3),
            (b"#t\r\n", 4),
            (b",1.5\r\n", 6),
            (b"(12345678901234567890123\r\n", 26),
            (b"!3\r\nerr\r\n", 9),
            (b"=7\r\ntxt:abc\r\n", 13),
            (b"~2\r\n:1\r\n_\r\n", 11),
            (b"|1\r\n+ttl\r\n:3\r\n$1\r\nx\r\n", 21),
            (b"*1\r\n>1\r\n:1\r\n", 12),
        ] {
            assert_eq!(
                scan_reply(r),
                Ok(Scan::Complete(n)),
                "{:?}",
                String::from_utf8_lossy(r)
            );
            for cut in 0..r.len() {
                assert!(matches!(scan_reply(&r[..cut]), Ok(Scan::Incomplete { .. })));
            }
        }
    }

    #[test]
    fn garbage_and_pushes_are_errors() {
        for r in [
            &b">1\r\n+message\r\n"[..],
            b"_x\r\n",
            b"#x\r\n",
            b"%-1\r\n",
            b"!-1\r\n",
            b"hello\r\n",
            b"$3\r\nfooo\r\n",
            b":x\r\n",
            b"$-2\r\n",
            b"+OK\n",
        ] {
            assert_eq!(
                scan_reply(r),
                Err(ReplyError),
                "{:?}",
                String::from_utf8_lossy(r)
            );
        }
    }

    #[test]
    fn bulk_elements() {
        let r = b"*4\r\n$1\r\na\r\n$-1\r\n_\r\n$0\r\n\r\n";
        assert_eq!(array_header(r), Ok((4, 4)));
        assert_eq!(bulk_element(r, 4), Ok(11));
        assert_eq!(bulk_element(r, 11), Ok(16));
        assert_eq!(bulk_element(r, 16), Ok(19));
        assert_eq!(bulk_element(r, 19), Ok(25));
        for bad in [
            &b"$3\r\nab\r\n"[..],
            b"$2\r\nabc\r\n",
            b"$-2\r\n",
            b"_x\r\n",
            b":1\r\n",
            b"*1\r\n$1\r\na\r\n",
            b"$1\r\na",
            b"",
        ] {
            assert_eq!(bulk_element(bad, 0), Err(ReplyError), "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_cheap() {
        let mut r = b"*1\r\n".repeat(100_000);
        r.extend_from_slice(b":1\r\n");
        assert_eq!(scan_reply(&r), Ok(Scan::Complete(r.len())));
    }

    #[test]
    fn elements_and_integers() {
        let r = b"*3\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n";
        let mut e = Vec::new();
        assert_eq!(array_elements(r, &mut e), Ok(()));
        assert_eq!(e, [4..11, 11..16, 16..22]);
        assert_eq!(array_elements(b"-ERR x\r\n", &mut e), Err(ReplyError));
        assert_eq!(integer(b":42\r\n"), Some(42));
        assert_eq!(integer(b"+OK\r\n"), None);
        assert!(
            is_transient_error(b"-LOADING x\r\n")
                && is_transient_error(b"-BUSY x\r\n")
                && !is_transient_error(b"-BUSYKEY x\r\n")
        );
    }
}
