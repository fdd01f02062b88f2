//! The memcache side of a client: scan ASCII requests, answer what the proxy
//! owns (`version`, `verbosity`, `quit`), route the rest by key, split
//! multi-key retrievals (`get gets gat gats`) per server and merge the
//! `VALUE` blocks back in key order.
//!
//! Unlike nutcracker, a malformed request is answered (`ERROR`,
//! `CLIENT_ERROR …`) and the connection stays open whenever the stream is still
//! in sync; `noreply` requests produce no output at all, errors included, as
//! memcached does.

use super::frag::{plan, send_parts, Merge};
use super::{unroutable, Pending, Session};
use crate::dist::NoServer;
use crate::msg::{ErrKind, Slot};
use crate::proto::memcache::{
    scan_request, value_at, BadReply, Command, Limits, Request, Skip, Value,
};
use crate::proto::Scan;
use crate::stats::metrics::Class;
use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;
use std::ops::Range;

const VERSION: &str = concat!("VERSION shardproxy-", env!("CARGO_PKG_VERSION"), "\r\n");

/// Scans and handles every complete request in `rbuf`; returns the size hint of
/// the next incomplete one.
pub fn handle_requests(s: &mut Session, rbuf: &mut BytesMut) -> usize {
    if s.mc_mode != super::mcbin::Mode::Ascii {
        if let Some(hint) = super::mcbin::handle_requests(s, rbuf) {
            return hint;
        }
    }
    let mut req = std::mem::take(&mut s.mc);
    let hint = scan_all(s, rbuf, &mut req);
    s.mc = req;
    hint
}

fn scan_all(s: &mut Session, rbuf: &mut BytesMut, req: &mut Request) -> usize {
    let limits = Limits::default();
    while !s.closing {
        if !s.swallow_bytes(rbuf) {
            return 0;
        }
        if s.swallow_line {
            match memchr::memchr(b'\n', rbuf) {
                Some(i) => {
                    rbuf.advance(i + 1);
                    s.swallow_line = false;
                }
                None => {
                    rbuf.clear();
                    return 0;
                }
            }
        }
        match scan_request(rbuf, &limits, req) {
            Ok(Scan::Complete(n)) => {
                let bytes = rbuf.split_to(n).freeze();
                handle(s, bytes, req);
            }
            Ok(Scan::Incomplete { hint }) => return hint,
            Err(m) => {
                if !m.noreply {
                    s.ready(format!("{}\r\n", m.reply));
                }
                match m.skip {
                    Skip::Bytes(n) => s.swallow = n,
                    Skip::BytesThenLine(n) => {
                        s.swallow = n;
                        s.swallow_line = true;
                    }
                    Skip::Close => {
                        s.break_off();
                        rbuf.clear();
                    }
                    Skip::Attack(attack) => {
                        s.reject(attack);
                        rbuf.clear();
                    }
                }
            }
        }
    }
    0
}

fn handle(s: &mut Session, req: Bytes, r: &Request) {
    let keys = r.keys();
    if !keys.is_empty() {
        // Routed: put back ejected servers whose retry time has passed.
        let shared = &s.pool.shared;
        shared.health.before_dispatch(&shared.router);
    }
    match r.cmd {
        Command::Quit => {
            s.owe(Pending::Close, Class::Local);
            s.closing = true;
        }
        Command::Version => s.ready(VERSION),
        Command::Stats => {
            let text = stats(s);
            s.ready(text);
        }
        Command::Verbosity => {
            if !r.noreply {
                s.ready(&b"OK\r\n"[..]);
            }
        }
        Command::MetaNoop => s.ready(&b"MN\r\n"[..]),
        Command::MetaGet
        | Command::MetaSet
        | Command::MetaDelete
        | Command::MetaArith
        | Command::MetaDebug => meta(s, req, r),
        cmd if cmd.is_retrieval() && keys.len() > 1 => fragment(s, cmd, &req, r),
        _ => {
            let key = &req[keys[0].clone()];
            match s.pool.shared.router.dispatch(key) {
                Ok(idx) if r.noreply => s.pool.servers[idx].send_noreply(req),
                Ok(idx) => {
                    let slot = Slot::new(s.waker.clone());
                    s.pool.servers[idx].send(req, slot.clone(), s.now);
                    let class = if r.cmd.is_retrieval() {
                        Class::Read
                    } else {
                        Class::Write
                    };
                    s.owe(Pending::Wait(slot), class);
                }
                Err(_) if r.noreply => {
                    // Nothing to answer, but the request was not forwarded.
                    s.pool
                        .stats
                        .get(crate::stats::metrics::PoolField::ForwardError)
                        .incr();
                }
                Err(e) => route_error(s, key, e),
            }
        }
    }
}

/// A meta command, routed by its key (a `b` key decoded first: it goes
/// where the same key in the classic commands goes). A quiet one (`q`) is
/// sent followed by `mn`, and its reply read up to the `MN`: memcached
/// leaves out what quiet mode leaves out, as it would for the client, and
/// every request on the server connection still has a reply.
fn meta(s: &mut Session, req: Bytes, r: &Request) {
    let token = &req[r.keys()[0].clone()];
    let decoded;
    let key: &[u8] = if r.base64 {
        match crate::proto::memcache::request::meta_key(token) {
            Some(k) => {
                decoded = k;
                &decoded
            }
            None => return s.ready(&b"CLIENT_ERROR bad data chunk\r\n"[..]),
        }
    } else {
        token
    };
    let idx = match s.pool.shared.router.dispatch(key) {
        Ok(i) => i,
        Err(e) => return route_error(s, key, e),
    };
    let class = if r.cmd == Command::MetaGet {
        Class::Read
    } else {
        Class::Write
    };
    let slot = Slot::new(s.waker.clone());
    if r.quiet {
        let mut fenced = Vec::with_capacity(req.len() + 4);
        fenced.extend_from_slice(&req);
        fenced.extend_from_slice(b"mn\r\n");
        s.pool.servers[idx].send_fenced(fenced.into(), slot.clone(), s.now);
        s.owe(Pending::Fenced(slot), class);
    } else {
        s.pool.servers[idx].send(req, slot.clone(), s.now);
        s.owe(Pending::Wait(slot), class);
    }
}

/// `stats`: memcached's format, for what the proxy knows (monitoring
/// clients and health checks call it).
fn stats(s: &Session) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = String::with_capacity(256);
    for (k, v) in [
        ("pid", std::process::id().to_string()),
        ("uptime", crate::stats::uptime().as_secs().to_string()),
        ("time", now.to_string()),
        (
            "version",
            format!("shardproxy-{}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "pointer_size",
            (8 * std::mem::size_of::<usize>()).to_string(),
        ),
        (
            "curr_connections",
            s.pool
                .shared
                .clients
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        ),
        ("servers", s.pool.servers.len().to_string()),
    ] {
        out.push_str("STAT ");
        out.push_str(k);
        out.push(' ');
        out.push_str(&v);
        out.push_str("\r\n");
    }
    out.push_str("END\r\n");
    out
}

fn route_error(s: &mut Session, key: &[u8], e: NoServer) {
    match e {
        // (No memcache pool has slots.)
        NoServer::AllEjected | NoServer::NoSlotOwner => {
            s.forward_error(ErrKind::Refused.memcache_reply())
        }
        NoServer::Unroutable => {
            let msg = format!("SERVER_ERROR {}\r\n", unroutable(s, key));
            s.forward_error(msg);
        }
    }
}

fn fragment(s: &mut Session, cmd: Command, req: &Bytes, r: &Request) {
    let keys = r.keys();
    let plan = match plan(
        &s.pool.shared.router,
        s.pool.servers.len(),
        keys.iter().map(|k| &req[k.clone()]),
    ) {
        Ok(p) => p,
        Err((key, e)) => return route_error(s, key, e),
    };
    let mut head = Vec::with_capacity(32);
    head.extend_from_slice(cmd.name().as_bytes());
    if matches!(cmd, Command::Gat | Command::Gats) {
        head.push(b' ');
        head.extend_from_slice(&req[r.exptime.clone()]);
    }
    let merge = Merge::Memcache {
        req: req.clone(),
        keys: keys.to_vec(),
    };
    send_parts(s, plan, merge, |members| {
        // Exact size: the Bytes takes the Vec without another allocation.
        let size = head.len()
            + 2
            + members
                .iter()
                .map(|&m| 1 + keys[m as usize].len())
                .sum::<usize>();
        let mut wire = Vec::with_capacity(size);
        wire.extend_from_slice(&head);
        for &m in members {
            wire.push(b' ');
            wire.extend_from_slice(&req[keys[m as usize].clone()]);
        }
        wire.extend_from_slice(b"\r\n");
        wire.into()
    });
}

/// Merges the parts' replies of a split retrieval: for each key in request
/// order, the next `VALUE` block its server returned for it (misses contribute
/// nothing; duplicated keys give duplicated blocks), then one `END`. A part
/// that answered with an error line makes that line the whole reply. Each
/// part's reply is walked once with a cursor; nothing is collected per part.
pub fn merge(req: &[u8], keys: &[Range<usize>], replies: &[Bytes], order: &[u32]) -> Bytes {
    if let Some(e) = replies.iter().find(|r| {
        r.starts_with(b"SERVER_ERROR") || r.starts_with(b"CLIENT_ERROR") || &r[..] == b"ERROR\r\n"
    }) {
        return e.clone();
    }
    match merge_values(req, keys, replies, order) {
        Ok(b) => b,
        Err(BadReply) => ErrKind::Invalid.memcache_reply(),
    }
}

fn merge_values(
    req: &[u8],
    keys: &[Range<usize>],
    replies: &[Bytes],
    order: &[u32],
) -> Result<Bytes, BadReply> {
    // Per part: the block at its cursor (None at its END).
    let mut next: SmallVec<[Option<Value>; 4]> = SmallVec::with_capacity(replies.len());
    // Exact when every block is taken once (no misses, no leftovers).
    let mut size = END.len();
    for r in replies {
        next.push(value_at(r, 0)?);
        size += r.len().saturating_sub(END.len());
    }
    let mut out = Vec::with_capacity(size);
    for (k, &p) in keys.iter().zip(order) {
        let p = p as usize;
        if let Some(v) = &next[p] {
            if replies[p][v.key.clone()] == req[k.clone()] {
                out.extend_from_slice(&replies[p][v.block.clone()]);
                next[p] = value_at(&replies[p], v.block.end)?;
            }
        }
    }
    // Blocks nobody asked for are dropped, but each part must still be a
    // well-formed reply.
    for (p, r) in replies.iter().enumerate() {
        while let Some(v) = next[p].take() {
            next[p] = value_at(r, v.block.end)?;
        }
    }
    out.extend_from_slice(END);
    Ok(out.into())
}

const END: &[u8] = b"END\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_in_key_order_with_duplicates_and_misses() {
        // get a b c nosuch a  — a, nosuch on part 0; b, c on part 1.
        let req = b"get a b c nosuch a\r\n";
        let keys = vec![4..5, 6..7, 8..9, 10..16, 17..18];
        let order = [0, 1, 1, 0, 0];
        let replies = [
            Bytes::from_static(b"VALUE a 0 1\r\n1\r\nVALUE a 0 1\r\n1\r\nEND\r\n"),
            Bytes::from_static(b"VALUE b 0 1\r\n2\r\nVALUE c 0 1\r\n3\r\nEND\r\n"),
        ];
        let out = merge(req, &keys, &replies, &order);
        assert_eq!(
            &out[..],
            b"VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nVALUE c 0 1\r\n3\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
        );
        let failed = [
            Bytes::from_static(b"SERVER_ERROR out of memory\r\n"),
            Bytes::from_static(b"END\r\n"),
        ];
        assert_eq!(
            &merge(req, &keys, &failed, &order)[..],
            b"SERVER_ERROR out of memory\r\n"
        );
        let odd = [
            Bytes::from_static(b"STORED\r\n"),
            Bytes::from_static(b"END\r\n"),
        ];
        assert_eq!(
            &merge(req, &keys, &odd, &order)[..],
            b"SERVER_ERROR Invalid argument\r\n"
        );
    }
}
