//! memcache's binary protocol, sans-IO: request framing and classification,
//! reply framing, and the responses the proxy makes itself.
//!
//! A packet is a 24-byte header — magic (`0x80` request, `0x81` response),
//! opcode, key length, extras length, data type, vbucket/status, total body
//! length, opaque, CAS — then extras, key and value. The body length frames
//! every packet, so a request the proxy refuses is skipped exactly and the
//! stream stays in sync; only a wrong magic loses it.

use crate::proto::Scan;

pub const HEADER: usize = 24;
pub const REQUEST: u8 = 0x80;
pub const RESPONSE: u8 = 0x81;

/// Response statuses.
pub mod status {
    pub const OK: u16 = 0x0000;
    pub const KEY_NOT_FOUND: u16 = 0x0001;
    pub const TOO_LARGE: u16 = 0x0003;
    pub const INVALID: u16 = 0x0004;
    pub const UNKNOWN_COMMAND: u16 = 0x0081;
    pub const NOT_SUPPORTED: u16 = 0x0083;
    pub const INTERNAL: u16 = 0x0084;
}

/// Opcodes the proxy answers itself.
pub mod op {
    pub const QUIT: u8 = 0x07;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const STAT: u8 = 0x10;
    pub const QUITQ: u8 = 0x17;
}

/// What the proxy does with a request, by opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Routed by its key; `loud` is the opcode sent (a quiet one's loud
    /// twin: one reply per request on the server connection, the client's
    /// quiet semantics kept by the proxy); `read` for the latency class.
    Keyed { loud: u8, quiet: bool, read: bool },
    /// Answered by the proxy.
    Local,
    /// Known to memcached, refused by the proxy (`flush`, SASL…).
    Unsupported(&'static str),
    /// Not an opcode the proxy knows.
    Unknown,
}

/// The proxy's plan for an opcode.
pub fn kind(opcode: u8) -> Kind {
    let keyed = |loud, quiet, read| Kind::Keyed { loud, quiet, read };
    match opcode {
        0x00 | 0x0c => keyed(opcode, false, true), // get, getk
        0x09 => keyed(0x00, true, true),           // getq
        0x0d => keyed(0x0c, true, true),           // getkq
        0x1d | 0x23 => keyed(opcode, false, true), // gat, gatk
        0x1e => keyed(0x1d, true, true),           // gatq
        0x24 => keyed(0x23, true, true),           // gatkq
        0x01..=0x06 | 0x0e | 0x0f | 0x1c => keyed(opcode, false, false),
        0x11 => keyed(0x01, true, false), // setq
        0x12 => keyed(0x02, true, false), // addq
        0x13 => keyed(0x03, true, false), // replaceq
        0x14 => keyed(0x04, true, false), // deleteq
        0x15 => keyed(0x05, true, false), // incrementq
        0x16 => keyed(0x06, true, false), // decrementq
        0x19 => keyed(0x0e, true, false), // appendq
        0x1a => keyed(0x0f, true, false), // prependq
        op::QUIT | op::QUITQ | op::NOOP | op::VERSION | op::STAT => Kind::Local,
        0x08 | 0x18 => Kind::Unsupported("flush is not supported by the proxy"),
        0x20..=0x22 => Kind::Unsupported("SASL is not supported by the proxy"),
        0x1b => Kind::Unsupported("verbosity is not supported by the proxy"),
        _ => Kind::Unknown,
    }
}

/// A request header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub body_len: u32,
    pub opaque: [u8; 4],
}

impl Header {
    pub fn parse(b: &[u8]) -> Option<Header> {
        let h = b.get(..HEADER)?;
        Some(Header {
            opcode: h[1],
            key_len: u16::from_be_bytes([h[2], h[3]]),
            extras_len: h[4],
            body_len: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            opaque: [h[12], h[13], h[14], h[15]],
        })
    }

    /// Where the key is in the packet.
    pub fn key(&self) -> std::ops::Range<usize> {
        let start = HEADER + self.extras_len as usize;
        start..start + self.key_len as usize
    }

    /// The whole packet's length.
    pub fn packet_len(&self) -> usize {
        HEADER + self.body_len as usize
    }
}

/// Why a request cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Not a request packet: the stream cannot be resynchronised.
    Magic,
    /// A packet too large: answered with `TOO_LARGE`, its `skip` bytes
    /// discarded as they arrive.
    TooLarge { header: Header, skip: usize },
}

/// Frames one request: `Complete(n)` with its header, or how much more is
/// needed. Never allocates for a declared length.
pub fn scan_request(buf: &[u8], max_body: usize) -> Result<(Scan, Option<Header>), Bad> {
    if buf.is_empty() {
        return Ok((Scan::Incomplete { hint: HEADER }, None));
    }
    if buf[0] != REQUEST {
        return Err(Bad::Magic);
    }
    let Some(h) = Header::parse(buf) else {
        return Ok((Scan::Incomplete { hint: HEADER }, None));
    };
    if h.body_len as usize > max_body {
        return Err(Bad::TooLarge {
            header: h,
            skip: h.packet_len(),
        });
    }
    if buf.len() < h.packet_len() {
        return Ok((
            Scan::Incomplete {
                hint: h.packet_len(),
            },
            Some(h),
        ));
    }
    Ok((Scan::Complete(h.packet_len()), Some(h)))
}

/// Frames one reply (server side); `Err` when it is not a response packet.
pub fn scan_reply(buf: &[u8]) -> Result<Scan, super::BadReply> {
    if buf.is_empty() {
        return Ok(Scan::Incomplete { hint: HEADER });
    }
    if buf[0] != RESPONSE {
        return Err(super::BadReply);
    }
    if buf.len() < HEADER {
        return Ok(Scan::Incomplete { hint: HEADER });
    }
    let body = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    if buf.len() < HEADER + body {
        return Ok(Scan::Incomplete {
            hint: HEADER + body,
        });
    }
    Ok(Scan::Complete(HEADER + body))
}

/// A reply's status.
pub fn reply_status(reply: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*reply.get(6)?, *reply.get(7)?]))
}

/// A response packet made by the proxy.
pub fn response(opcode: u8, status: u16, opaque: [u8; 4], key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len();
    let mut out = Vec::with_capacity(HEADER + body);
    out.push(RESPONSE);
    out.push(opcode);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(0); // extras
    out.push(0); // data type
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&opaque);
    out.extend_from_slice(&[0; 8]); // CAS
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// A request with its opcode replaced (a quiet request sent loud).
pub fn with_opcode(packet: &[u8], opcode: u8) -> Vec<u8> {
    let mut v = packet.to_vec();
    if let Some(b) = v.get_mut(1) {
        *b = opcode;
    }
    v
}

/// Whether a quiet request's reply is one the client must not see: a
/// quiet get's miss, any other quiet command's success.
pub fn suppressed(request_opcode: u8, reply: &[u8]) -> bool {
    match (request_opcode, reply_status(reply)) {
        (0x09 | 0x0d | 0x1e | 0x24, Some(status::KEY_NOT_FOUND)) => true,
        (0x09 | 0x0d | 0x1e | 0x24, _) => false,
        (_, Some(status::OK)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(opcode: u8, key: &[u8], opaque: u32) -> Vec<u8> {
        let mut p = vec![REQUEST, opcode];
        p.extend((key.len() as u16).to_be_bytes());
        p.extend([0, 0, 0, 0]);
        p.extend((key.len() as u32).to_be_bytes());
        p.extend(opaque.to_be_bytes());
        p.extend([0; 8]);
        p.extend(key);
        p
    }

    #[test]
    fn requests_frame_at_every_split() {
        let p = get(0x0d, b"hello", 7);
        for cut in 0..p.len() {
            let (s, _) = scan_request(&p[..cut], 1 << 20).unwrap_or_else(|e| panic!("{e:?}"));
            assert!(matches!(s, Scan::Incomplete { .. }), "{cut}");
        }
        let (s, h) = scan_request(&p, 1 << 20).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s, Scan::Complete(p.len()));
        let h = h.unwrap_or_else(|| panic!("no header"));
        assert_eq!(&p[h.key()], b"hello");
        assert_eq!(h.opaque, 7u32.to_be_bytes());
        assert_eq!(
            kind(h.opcode),
            Kind::Keyed {
                loud: 0x0c,
                quiet: true,
                read: true
            }
        );
    }

    #[test]
    fn bad_packets() {
        assert_eq!(scan_request(b"get a\r\n", 10), Err(Bad::Magic));
        let mut p = get(0x01, b"k", 1);
        p[8..12].copy_from_slice(&(1u32 << 30).to_be_bytes());
        match scan_request(&p, 1 << 20) {
            Err(Bad::TooLarge { skip, .. }) => assert_eq!(skip, HEADER + (1 << 30)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            kind(0x21),
            Kind::Unsupported("SASL is not supported by the proxy")
        );
        assert_eq!(kind(0x77), Kind::Unknown);
    }

    #[test]
    fn replies_and_quiet_rules() {
        let r = response(0x0c, status::KEY_NOT_FOUND, [0, 0, 0, 9], b"", b"Not found");
        assert_eq!(scan_reply(&r), Ok(Scan::Complete(r.len())));
        assert_eq!(scan_reply(&r[..30]), Ok(Scan::Incomplete { hint: r.len() }));
        assert!(scan_reply(b"VALUE").is_err());
        assert!(suppressed(0x0d, &r));
        assert!(!suppressed(0x0c, &r) || kind(0x0c) != Kind::Local);
        let ok = response(0x01, status::OK, [0; 4], b"", b"");
        assert!(suppressed(0x11, &ok));
        let exists = response(0x01, 0x0002, [0; 4], b"", b"");
        assert!(!suppressed(0x11, &exists));
        let hit = response(0x00, status::OK, [0; 4], b"", b"v");
        assert!(!suppressed(0x09, &hit));
        assert_eq!(with_opcode(&get(0x09, b"k", 1), 0x00)[1], 0x00);
    }
}
