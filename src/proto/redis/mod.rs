//! RESP (redis) request and reply scanning, the command table (from Redis's
//! own metadata) with what the proxy does with each command, and key finding.

pub mod blocking;
pub mod command;
pub mod keys;
pub mod merge;
pub mod policy;
pub mod pubsub;
pub mod reply;
pub mod request;
pub mod topology;
pub mod value;

pub use command::{lookup, Command, KeyShape};
pub use policy::{Fragment, Local, Route, SessionKind};
pub use request::{scan_request, Limits, RequestError};

/// A `[-]<digits>\r\n` header (`*3`, `$5`, `:-2`, `$-1` after the type byte)
/// at `buf[from..]`, parsed in one pass: `Ok(Some((value, cr)))` with `cr`
/// the index of its `\r`, `Ok(None)` when the line is not all here yet.
/// Anything but at most 18 digits (after a `-`, if `signed`) before CRLF is
/// `Err`, as soon as it is seen, so a header never buffers more than 21 bytes.
#[inline(always)]
pub(crate) fn header_number(
    buf: &[u8],
    from: usize,
    signed: bool,
) -> Result<Option<(i64, usize)>, ()> {
    let Some(b) = buf.get(from..) else {
        return Ok(None);
    };
    let (neg, digits) = match b.first() {
        Some(b'-') if signed => (true, &b[1..]),
        _ => (false, b),
    };
    let mut n: i64 = 0;
    // At most 18 digits, then CR: the 19th byte must be the CR.
    for (i, &c) in digits.iter().enumerate().take(19) {
        let d = c.wrapping_sub(b'0');
        if d < 10 && i < 18 {
            n = n * 10 + i64::from(d);
        } else if c == b'\r' && i > 0 {
            let cr = from + usize::from(neg) + i;
            return match buf.get(cr + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some((if neg { -n } else { n }, cr))),
                Some(_) => Err(()),
            };
        } else {
            return Err(());
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::header_number;

    #[test]
    fn header_numbers() {
        assert_eq!(header_number(b"*3\r\n", 1, false), Ok(Some((3, 2))));
        assert_eq!(header_number(b"$-1\r\n", 1, true), Ok(Some((-1, 3))));
        assert_eq!(header_number(b"$-1\r\n", 1, false), Err(()));
        assert_eq!(header_number(b"$12", 1, false), Ok(None));
        assert_eq!(header_number(b"$12\r", 1, false), Ok(None));
        assert_eq!(header_number(b"$12\rx", 1, false), Err(()));
        assert_eq!(header_number(b"$\r\n", 1, false), Err(()));
        assert_eq!(header_number(b"$-\r\n", 1, true), Err(()));
        assert_eq!(header_number(b"$1x\r\n", 1, false), Err(()));
        assert_eq!(
            header_number(b"$123456789012345678\r\n", 1, false),
            Ok(Some((123456789012345678, 19)))
        );
        assert_eq!(header_number(b"$1234567890123456789", 1, false), Err(()));
        assert_eq!(
            header_number(b"$-123456789012345678\r\n", 1, true),
            Ok(Some((-123456789012345678, 20)))
        );
    }
}
