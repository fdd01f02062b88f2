//! memcache's binary protocol on the client side (Java, libmemcached-based
//! and Node clients speak it).
//!
//! A connection whose first byte is `0x80` speaks binary for its lifetime.
//! Each request is framed by its header ([`crate::proto::memcache::binary`])
//! and routed by its key, exactly where the ASCII request for the same key
//! goes, on server connections of their own ([`Dialect::Binary`]: memcached
//! fixes a connection's protocol by its first byte). Replies pass through
//! untouched — the opaque the client chose is the server's echo.
//!
//! Quiet requests (`getq`, `getkq`, `setq`…) are sent loud, so that every
//! request on a server connection has one reply and the FIFO matching holds;
//! the proxy then drops what the client must not see (a quiet get's miss,
//! another quiet command's success) and gives the rest the quiet opcode
//! back. A `noop` — the fence a client puts after a batch of quiet gets —
//! is answered by the proxy in order: after every earlier reply.

use super::{Pending, Session};
use crate::dist::NoServer;
use crate::msg::{Outcome, Slot};
use crate::proto::memcache::binary::{self, op, status, Bad, Header, Kind};
use crate::proto::Scan;
use crate::server::Dialect;
use crate::stats::metrics::Class;
use bytes::{Bytes, BytesMut};
use std::rc::Rc;

/// The largest request body taken (a value of memcached's largest item
/// size, 1 GB, is refused before it is read).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Which protocol a memcache connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Nothing read yet.
    #[default]
    Unknown,
    Ascii,
    Binary,
}

/// A forwarded binary request's reply, owed to the client.
#[derive(Debug)]
pub struct BinWait {
    pub slot: Rc<Slot>,
    /// The client's opcode (a quiet one is sent loud).
    opcode: u8,
    opaque: [u8; 4],
    quiet: bool,
}

impl BinWait {
    /// What the client gets for `outcome` (empty: nothing, a quiet
    /// request's suppressed reply).
    pub fn reply(&self, outcome: Outcome) -> Bytes {
        match outcome {
            Ok(r) if !self.quiet => r,
            Ok(r) if binary::suppressed(self.opcode, &r) => Bytes::new(),
            Ok(r) => Bytes::from(binary::with_opcode(&r, self.opcode)),
            Err(e) => Bytes::from(binary::response(
                self.opcode,
                status::INTERNAL,
                self.opaque,
                b"",
                e.text().as_bytes(),
            )),
        }
    }
}

/// Handles the binary requests in `rbuf` if the connection speaks binary
/// (deciding it on the first byte); `None` for an ASCII connection.
pub fn handle_requests(s: &mut Session, rbuf: &mut BytesMut) -> Option<usize> {
    if s.mc_mode == Mode::Unknown {
        match rbuf.first() {
            None => return Some(0),
            Some(&binary::REQUEST) => {
                s.mc_mode = Mode::Binary;
                s.dialect = Dialect::Binary;
            }
            Some(_) => {
                s.mc_mode = Mode::Ascii;
                return None;
            }
        }
    }
    while !s.closing {
        if !s.swallow_bytes(rbuf) {
            return Some(0);
        }
        match binary::scan_request(rbuf, MAX_BODY) {
            Ok((Scan::Complete(n), Some(h))) => {
                let req = rbuf.split_to(n).freeze();
                handle(s, req, h);
            }
            Ok((Scan::Complete(_), None)) => return Some(0),
            Ok((Scan::Incomplete { hint }, _)) => return Some(hint),
            Err(Bad::TooLarge { header, skip }) => {
                s.ready(binary::response(
                    header.opcode,
                    status::TOO_LARGE,
                    header.opaque,
                    b"",
                    b"Too large.",
                ));
                s.swallow = skip;
            }
            Err(Bad::Magic) => {
                // Not a request packet: the stream cannot be followed.
                s.break_off();
                rbuf.clear();
            }
        }
    }
    Some(0)
}

fn error(s: &mut Session, h: &Header, st: u16, msg: &str) {
    s.ready(binary::response(
        h.opcode,
        st,
        h.opaque,
        b"",
        msg.as_bytes(),
    ));
}

fn handle(s: &mut Session, req: Bytes, h: Header) {
    match binary::kind(h.opcode) {
        Kind::Keyed { loud, quiet, read } => {
            let key = h.key();
            if h.key_len == 0 || key.end > req.len() {
                return error(s, &h, status::INVALID, "Invalid arguments");
            }
            let shared = &s.pool.shared;
            shared.health.before_dispatch(&shared.router);
            let idx = match shared.router.dispatch(&req[key.clone()]) {
                Ok(i) => i,
                Err(e) => {
                    let msg = match e {
                        NoServer::AllEjected => "Connection refused".to_string(),
                        _ => super::unroutable(s, &req[key]),
                    };
                    s.pool
                        .stats
                        .get(crate::stats::metrics::PoolField::ForwardError)
                        .incr();
                    return error(s, &h, status::INTERNAL, &msg);
                }
            };
            let data = if quiet {
                Bytes::from(binary::with_opcode(&req, loud))
            } else {
                req
            };
            let slot = Slot::new(s.waker.clone());
            s.send(idx, data, slot.clone());
            s.owe(
                Pending::Bin(Box::new(BinWait {
                    slot,
                    opcode: h.opcode,
                    opaque: h.opaque,
                    quiet,
                })),
                if read { Class::Read } else { Class::Write },
            );
        }
        Kind::Local => local(s, &h),
        Kind::Unsupported(why) => error(s, &h, status::NOT_SUPPORTED, why),
        Kind::Unknown => error(s, &h, status::UNKNOWN_COMMAND, "Unknown command"),
    }
}

fn local(s: &mut Session, h: &Header) {
    let ok =
        |key: &[u8], value: &[u8]| binary::response(h.opcode, status::OK, h.opaque, key, value);
    match h.opcode {
        op::NOOP => s.ready(ok(b"", b"")),
        op::VERSION => s.ready(ok(
            b"",
            concat!("shardproxy-", env!("CARGO_PKG_VERSION")).as_bytes(),
        )),
        op::STAT => {
            let mut out = Vec::new();
            for (k, v) in [
                ("pid", std::process::id().to_string()),
                ("uptime", crate::stats::uptime().as_secs().to_string()),
                (
                    "version",
                    format!("shardproxy-{}", env!("CARGO_PKG_VERSION")),
                ),
            ] {
                out.extend(ok(k.as_bytes(), v.as_bytes()));
            }
            out.extend(ok(b"", b""));
            s.ready(out);
        }
        op::QUIT => {
            s.ready(ok(b"", b""));
            s.owe(Pending::Close, Class::Local);
            s.closing = true;
        }
        _ => {
            // QUITQ: no reply.
            s.owe(Pending::Close, Class::Local);
            s.closing = true;
        }
    }
}
