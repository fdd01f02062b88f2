//! The memcache ASCII reply scanner. Replies do not depend on the request: a
//! retrieval answers with `VALUE` blocks and `END`, everything else with one
//! line. A reply outside the protocol is an error: the server connection is
//! out of sync and must be closed (spec §6.3).

use super::super::Scan;
use std::ops::Range;

/// The backend sent something that is not a memcache reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadReply;

/// Longest reply line we wait for (VALUE lines carry a ≤ 250-byte key).
const MAX_LINE: usize = 8 * 1024;
/// Largest value a backend may announce (memcached's `-I` tops out at 1 GB).
const MAX_VALUE: usize = 1024 * 1024 * 1024;

/// Single-line replies, exactly.
const WORDS: &[&[u8]] = &[
    b"END",
    b"STORED",
    b"NOT_STORED",
    b"EXISTS",
    b"NOT_FOUND",
    b"DELETED",
    b"TOUCHED",
    b"OK",
    b"ERROR",
];
/// Single-line replies by prefix.
const PREFIXES: &[&[u8]] = &[b"CLIENT_ERROR", b"SERVER_ERROR", b"VERSION "];

/// The line at `buf[from..]` without its CRLF, or None if incomplete.
fn line(buf: &[u8], from: usize) -> Result<Option<Range<usize>>, BadReply> {
    let window = &buf[from..buf.len().min(from + MAX_LINE)];
    match memchr::memchr(b'\n', window) {
        Some(i) if i > 0 && window[i - 1] == b'\r' => Ok(Some(from..from + i - 1)),
        Some(_) => Err(BadReply),
        None if window.len() >= MAX_LINE => Err(BadReply),
        None => Ok(None),
    }
}

/// Meta replies of one line: a two-letter code, then flags.
const META_CODES: &[&[u8]] = &[b"HD", b"NS", b"EX", b"NF", b"EN", b"MN", b"ME"];

/// `VA <size> <flags>*`: `Some(Some(size))`; `Some(None)` for a `VA` line
/// without a readable size; `None` for another line.
fn meta_value(l: &[u8]) -> Option<Option<usize>> {
    let rest = l.strip_prefix(b"VA ")?;
    let size = rest.split(|&c| c == b' ').next().and_then(number);
    Some(size.filter(|&n| n <= MAX_VALUE))
}

/// A meta reply line (`HD`, `EN k O123`, `MN`…).
fn is_meta_line(l: &[u8]) -> bool {
    l.len() >= 2 && META_CODES.contains(&&l[..2]) && (l.len() == 2 || l[2] == b' ')
}

/// One `VALUE <key> <flags> <bytes> [<cas>]` header: (key, data length).
fn value_header(l: &[u8]) -> Option<(Range<usize>, usize)> {
    let rest = l.strip_prefix(b"VALUE ")?;
    let mut fields = rest.split(|&c| c == b' ');
    let key = fields.next().filter(|k| !k.is_empty())?;
    let _flags = fields.next().filter(|f| is_number(f))?;
    let n = fields.next().and_then(number)?;
    match fields.next() {
        None => {}
        Some(cas) if is_number(cas) && fields.next().is_none() => {}
        Some(_) => return None,
    }
    (n <= MAX_VALUE).then_some((6..6 + key.len(), n))
}

/// A decimal field's value (digits only; None past `usize`).
fn number(b: &[u8]) -> Option<usize> {
    if !is_number(b) {
        return None;
    }
    b.iter().try_fold(0usize, |n, &d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

fn is_number(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= 20 && b.iter().all(u8::is_ascii_digit)
}

/// Scans one reply at the start of `buf`.
pub fn scan_reply(buf: &[u8]) -> Result<Scan, BadReply> {
    let Some(first) = line(buf, 0)? else {
        return Ok(Scan::Incomplete {
            hint: buf.len() + 1,
        });
    };
    let l = &buf[first.clone()];
    if let Some(n) = meta_value(l) {
        // `VA <size> <flags>*`: a meta get's value block.
        let n = n.ok_or(BadReply)?;
        let end = first.end + 2 + n + 2;
        if buf.len() < end {
            return Ok(Scan::Incomplete { hint: end });
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(BadReply);
        }
        return Ok(Scan::Complete(end));
    }
    if is_meta_line(l) {
        return Ok(Scan::Complete(first.end + 2));
    }
    if !l.starts_with(b"VALUE ") {
        let known = WORDS.contains(&l) || PREFIXES.iter().any(|p| l.starts_with(p)) || is_number(l);
        return if known {
            Ok(Scan::Complete(first.end + 2))
        } else {
            Err(BadReply)
        };
    }
    let mut pos = 0;
    loop {
        let Some(r) = line(buf, pos)? else {
            return Ok(Scan::Incomplete {
                hint: buf.len() + 1,
            });
        };
        let l = &buf[r.clone()];
        if l == b"END" {
            return Ok(Scan::Complete(r.end + 2));
        }
        let (_, n) = value_header(l).ok_or(BadReply)?;
        let end = r.end + 2 + n + 2;
        if buf.len() < end {
            return Ok(Scan::Incomplete { hint: end });
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(BadReply);
        }
        pos = end;
    }
}

/// One `VALUE` block of a complete retrieval reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The key, within the reply.
    pub key: Range<usize>,
    /// The whole block, header line to the data's CRLF.
    pub block: Range<usize>,
}

/// The `VALUE` block at `pos` of a complete retrieval reply (`VALUE`…
/// `END`), or `None` at its final `END`.
pub fn value_at(reply: &[u8], pos: usize) -> Result<Option<Value>, BadReply> {
    let r = line(reply, pos)?.ok_or(BadReply)?;
    let l = &reply[r.clone()];
    if l == b"END" {
        return if r.end + 2 == reply.len() {
            Ok(None)
        } else {
            Err(BadReply)
        };
    }
    let (key, n) = value_header(l).ok_or(BadReply)?;
    let end = r.end + 2 + n + 2;
    if reply.len() < end {
        return Err(BadReply);
    }
    Ok(Some(Value {
        key: pos + key.start..pos + key.end,
        block: pos..end,
    }))
}

/// Splits a complete retrieval reply (`VALUE`… `END`) into its blocks.
pub fn values(reply: &[u8], out: &mut Vec<Value>) -> Result<(), BadReply> {
    out.clear();
    let mut pos = 0;
    while let Some(v) = value_at(reply, pos)? {
        pos = v.block.end;
        out.push(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_fields() {
        assert_eq!(number(b"0"), Some(0));
        assert_eq!(number(b"100"), Some(100));
        assert_eq!(number(b"18446744073709551615"), Some(usize::MAX));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1a",
            b" 1",
            b"18446744073709551616",
            b"99999999999999999999",
        ] {
            assert_eq!(number(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // A data length past usize or past the limit is not a reply.
        assert_eq!(
            scan_reply(b"VALUE k 0 99999999999999999999\r\n"),
            Err(BadReply)
        );
        assert_eq!(scan_reply(b"VA 99999999999999999999\r\n"), Err(BadReply));
        assert_eq!(
            scan_reply(b"VALUE k 0 3\r\nabc\r\nEND\r\n"),
            Ok(Scan::Complete(23))
        );
    }

    #[test]
    fn single_lines() {
        for r in [
            &b"STORED\r\n"[..],
            b"NOT_FOUND\r\n",
            b"END\r\n",
            b"12345\r\n",
            b"VERSION 1.6.18\r\n",
            b"SERVER_ERROR out of memory\r\n",
            b"CLIENT_ERROR bad data chunk\r\n",
            b"TOUCHED\r\n",
        ] {
            assert_eq!(scan_reply(r), Ok(Scan::Complete(r.len())), "{r:?}");
        }
        assert_eq!(scan_reply(b"STORED\r"), Ok(Scan::Incomplete { hint: 8 }));
        assert_eq!(scan_reply(b"+OK\r\n"), Err(BadReply));
        assert_eq!(scan_reply(b"STORED\n"), Err(BadReply));
    }

    #[test]
    fn value_blocks() {
        let r = b"VALUE a 0 3\r\nabc\r\nVALUE bb 5 1 77\r\n\n\r\nEND\r\n";
        assert_eq!(scan_reply(r), Ok(Scan::Complete(r.len())));
        for cut in 0..r.len() {
            assert!(
                matches!(scan_reply(&r[..cut]), Ok(Scan::Incomplete { .. })),
                "{cut}"
            );
        }
        let mut v = Vec::new();
        assert_eq!(values(r, &mut v), Ok(()));
        assert_eq!(v.len(), 2);
        assert_eq!(&r[v[0].key.clone()], b"a");
        assert_eq!(&r[v[1].key.clone()], b"bb");
        assert_eq!(&r[v[1].block.clone()], b"VALUE bb 5 1 77\r\n\n\r\n");
        assert_eq!(
            scan_reply(b"VALUE a 0 100\r\n"),
            Ok(Scan::Incomplete { hint: 117 })
        );
        assert_eq!(scan_reply(b"VALUE a 0 1\r\nxyz\r\n"), Err(BadReply));
        assert_eq!(scan_reply(b"VALUE a 0 1\r\nx\r\nSTORED\r\n"), Err(BadReply));
        assert_eq!(scan_reply(b"VALUE a 0 99999999999999\r\n"), Err(BadReply));
    }

    use proptest::prelude::*;

    proptest! {
        /// A retrieval reply split at any byte scans incomplete, then complete.
        #[test]
        fn any_split_scans_the_same(
            vals in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..5),
            cut in 0usize..400,
        ) {
            let mut wire = Vec::new();
            for (i, v) in vals.iter().enumerate() {
                wire.extend_from_slice(format!("VALUE k{i} {i} {} {}\r\n", v.len(), i * 7).as_bytes());
                wire.extend_from_slice(v);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"END\r\n");
            let cut = cut % wire.len();
            let partial = matches!(scan_reply(&wire[..cut]), Ok(Scan::Incomplete { .. }));
            prop_assert!(partial);
            prop_assert_eq!(scan_reply(&wire), Ok(Scan::Complete(wire.len())));
            let mut v = Vec::new();
            prop_assert_eq!(values(&wire, &mut v), Ok(()));
            prop_assert_eq!(v.len(), vals.len());
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = scan_reply(&bytes);
            let _ = values(&bytes, &mut Vec::new());
        }
    }
}
