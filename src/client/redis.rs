//! The redis side of a client: scan requests, answer the commands the proxy
//! owns, route the rest, split multi-key commands into fragments and coalesce
//! their replies.
//!
//! Unlike nutcracker, an unknown or malformed command gets an error reply and
//! the connection stays open with every earlier reply delivered; only a framing
//! error (the byte stream cannot be resynchronised) closes it, after an error.

use super::frag::{plan, send_parts, Merge};
use super::{printable, unroutable, Pending, Session};
use crate::dist::NoServer;
use crate::msg::{ErrKind, Slot};
use crate::proto::guard::{http_command, http_line, Attack};
use crate::proto::redis::reply::{array_header, bulk_element, integer};
use crate::proto::redis::request::{is_inline, put_array_header, put_bulk};
use crate::proto::redis::{lookup, scan_request, Fragment, Keys, Limits, Local};
use crate::proto::Scan;
use crate::server::Dialect;
use crate::stats::metrics::Class;
use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use std::ops::Range;

const PONG: &[u8] = b"+PONG\r\n";
const OK: &[u8] = b"+OK\r\n";
const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";

/// Scans and handles every complete request in `rbuf`; returns the size hint of
/// the next incomplete one.
pub fn handle_requests(s: &mut Session, rbuf: &mut BytesMut) -> usize {
    let mut args = std::mem::take(&mut s.args);
    let hint = scan_all(s, rbuf, &mut args);
    s.args = args;
    hint
}

fn scan_all(s: &mut Session, rbuf: &mut BytesMut, args: &mut Vec<Range<usize>>) -> usize {
    let limits = Limits::default();
    while !s.closing {
        match scan_request(rbuf, &limits, args) {
            Ok(Scan::Complete(n)) => {
                let req = rbuf.split_to(n).freeze();
                if !args.is_empty() {
                    handle(s, req, args);
                    if s.attack.is_some() {
                        // Nothing after an attack line runs.
                        rbuf.clear();
                    }
                }
            }
            Ok(Scan::Incomplete { hint }) => return hint,
            Err(e) => {
                match e.1 {
                    Some(attack) => s.reject(attack),
                    None => {
                        s.ready(format!("-ERR Protocol error: {}\r\n", e.0));
                        s.break_off();
                    }
                }
                rbuf.clear();
            }
        }
    }
    0
}

fn error(s: &mut Session, msg: &str) {
    s.ready(format!("-ERR {msg}\r\n"));
}

fn handle(s: &mut Session, req: Bytes, args: &[Range<usize>]) {
    let name = &req[args[0].clone()];
    let Some(cmd) = lookup(name) else {
        if http_command(name) || http_line(args.iter().map(|a| &req[a.clone()])) {
            return s.reject(Attack::Http);
        }
        error(
            s,
            &format!("unknown or unsupported command '{}'", printable(name)),
        );
        return;
    };
    let argc = args.len() - 1;
    if !cmd.arity.accepts(argc) {
        if http_line(args.iter().map(|a| &req[a.clone()])) {
            // `GET / HTTP/1.1`
            return s.reject(Attack::Http);
        }
        error(
            s,
            &format!("wrong number of arguments for '{}' command", cmd.name),
        );
        return;
    }
    if !s.authenticated
        && !matches!(
            cmd.local,
            Some(Local::Auth) | Some(Local::Quit) | Some(Local::Hello)
        )
    {
        s.ready(NOAUTH);
        return;
    }
    if let Some(local) = cmd.local {
        return answer(s, local, &req, args);
    }
    // Forwarded: RESP as written, or re-encoded when it came inline.
    let shared = &s.pool.shared;
    shared.health.before_dispatch(&shared.router);
    // None: the request goes as the client wrote it.
    let wire = is_inline(&req).then(|| encode(&req, args.iter().cloned()));
    let class = if cmd.read { Class::Read } else { Class::Write };
    match cmd.keys {
        Keys::Placeholder => forward(s, Key::Placeholder, req, wire, class),
        Keys::Eval => {
            let numkeys = std::str::from_utf8(&req[args[2].clone()])
                .ok()
                .and_then(|n| n.parse::<usize>().ok());
            match numkeys {
                Some(n) if n >= 1 && argc >= 2 + n => {
                    forward(s, Key::At(args[3].clone()), req, wire, class)
                }
                _ => error(
                    s,
                    &format!(
                        "{} needs numkeys ≥ 1 and that many keys to be routed by the proxy",
                        cmd.name
                    ),
                ),
            }
        }
        Keys::First | Keys::None => {
            let frag = cmd.fragment;
            let step = if frag == Fragment::Mset { 2 } else { 1 };
            if frag == Fragment::Mset && argc % 2 != 0 {
                return error(s, "wrong number of arguments for 'mset' command");
            }
            if frag == Fragment::No || argc == step {
                forward(s, Key::At(args[1].clone()), req, wire, class);
            } else {
                fragment(s, cmd.name, frag, &req, args, step);
            }
        }
    }
}

fn answer(s: &mut Session, local: Local, req: &Bytes, args: &[Range<usize>]) {
    let arg = |i: usize| &req[args[i].clone()];
    match local {
        Local::Ping if args.len() == 1 => s.ready(PONG),
        Local::Ping | Local::Echo => {
            let mut out = Vec::new();
            put_bulk(&mut out, arg(1));
            s.ready(out);
        }
        Local::Quit => {
            s.ready(OK);
            s.owe(Pending::Close, Class::Local);
            s.closing = true;
        }
        Local::Auth => {
            let password = arg(args.len() - 1);
            match &s.pool.shared.conf.redis_auth {
                None => error(s, "Client sent AUTH, but no password is set"),
                Some(want) if constant_time_eq(want.as_bytes(), password) => {
                    s.authenticated = true;
                    s.ready(OK);
                }
                Some(_) => {
                    s.authenticated = false;
                    error(s, "invalid password");
                }
            }
        }
        Local::Select => {
            let db = s.pool.shared.conf.redis_db;
            if arg(1) == itoa::Buffer::new().format(db).as_bytes() {
                s.ready(OK);
            } else {
                error(s, &format!("this pool uses db {db}: SELECT of another db is not supported by the proxy"));
            }
        }
        Local::Client => {
            let sub = arg(1).to_ascii_lowercase();
            if sub == b"setname" || sub == b"setinfo" {
                s.ready(OK);
            } else {
                error(
                    s,
                    &format!(
                        "CLIENT {} is not supported by the proxy",
                        printable(arg(1)).to_ascii_uppercase()
                    ),
                );
            }
        }
        Local::Hello => hello(s, req, args),
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`: switches the
/// client between RESP2 and RESP3 (its requests then use RESP3 backend
/// connections, so replies keep their RESP3 types), authenticating on the way.
fn hello(s: &mut Session, req: &Bytes, args: &[Range<usize>]) {
    let arg = |i: usize| &req[args[i].clone()];
    let mut dialect = s.dialect;
    if args.len() > 1 {
        dialect = match arg(1) {
            b"2" => Dialect::Plain,
            b"3" => Dialect::Resp3,
            _ => return s.ready(&b"-NOPROTO unsupported protocol version\r\n"[..]),
        };
    }
    let mut i = 2;
    let mut password = None;
    while i < args.len() {
        let opt = arg(i).to_ascii_lowercase();
        if opt == b"auth" && i + 2 < args.len() {
            password = Some(arg(i + 2));
            i += 3;
        } else if opt == b"setname" && i + 1 < args.len() {
            i += 2;
        } else {
            return error(
                s,
                &format!("Syntax error in HELLO option '{}'", printable(arg(i))),
            );
        }
    }
    if let (Some(p), Some(want)) = (password, &s.pool.shared.conf.redis_auth) {
        if !constant_time_eq(want.as_bytes(), p) {
            return s
                .ready(&b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"[..]);
        }
        s.authenticated = true;
    }
    if !s.authenticated {
        return s.ready(&b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"[..]);
    }
    s.dialect = dialect;
    let proto: &[u8] = if dialect == Dialect::Resp3 {
        b"3"
    } else {
        b"2"
    };
    let fields: [(&[u8], &[u8]); 6] = [
        (b"server", b"shardproxy"),
        (b"version", env!("CARGO_PKG_VERSION").as_bytes()),
        (b"proto", proto),
        (b"id", b"0"),
        (b"mode", b"standalone"),
        (b"role", b"master"),
    ];
    let mut out = Vec::with_capacity(192);
    if dialect == Dialect::Resp3 {
        out.extend_from_slice(b"%7\r\n");
    } else {
        put_array_header(&mut out, 14);
    }
    for (k, v) in fields {
        put_bulk(&mut out, k);
        if k == b"proto" || k == b"id" {
            out.push(b':');
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        } else {
            put_bulk(&mut out, v);
        }
    }
    put_bulk(&mut out, b"modules");
    out.extend_from_slice(b"*0\r\n");
    s.ready(out);
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Re-encodes arguments as RESP multibulk.
fn encode(req: &[u8], args: impl ExactSizeIterator<Item = Range<usize>>) -> Bytes {
    let mut out = Vec::with_capacity(req.len() + 16);
    put_array_header(&mut out, args.len());
    for a in args {
        put_bulk(&mut out, &req[a]);
    }
    out.into()
}

fn route_error(s: &mut Session, key: &[u8], e: NoServer) {
    match e {
        NoServer::AllEjected => s.forward_error(ErrKind::Refused.redis_reply()),
        NoServer::Unroutable => {
            let msg = unroutable(s, key);
            s.forward_error(format!("-ERR {msg}\r\n"));
        }
    }
}

/// What a forwarded request is routed by.
enum Key {
    /// The argument at this range of the request.
    At(Range<usize>),
    /// A fixed key: commands without one (nutcracker routes them so too).
    Placeholder,
}

/// Routes and queues `req` (or `wire`, its re-encoding, when it came
/// inline): moved to the server connection, never copied.
fn forward(s: &mut Session, key: Key, req: Bytes, wire: Option<Bytes>, class: Class) {
    let k: &[u8] = match &key {
        Key::At(r) => &req[r.clone()],
        Key::Placeholder => b"placeholder",
    };
    match s.pool.shared.router.dispatch(k) {
        Ok(idx) => {
            let slot = Slot::new(s.waker.clone());
            s.pool.servers[idx].send_in(s.dialect, wire.unwrap_or(req), slot.clone(), s.now);
            s.owe(Pending::Wait(slot), class);
        }
        Err(e) => route_error(s, k, e),
    }
}

fn fragment(
    s: &mut Session,
    name: &str,
    kind: Fragment,
    req: &Bytes,
    args: &[Range<usize>],
    step: usize,
) {
    let keys = &args[1..];
    let plan = match plan(
        &s.pool.shared.router,
        s.pool.servers.len(),
        keys.chunks(step).map(|g| &req[g[0].clone()]),
    ) {
        Ok(p) => p,
        Err((key, e)) => return route_error(s, key, e),
    };
    let inline = is_inline(req);
    let mut name_bulk = Vec::with_capacity(16);
    put_bulk(&mut name_bulk, name.as_bytes());
    send_parts(s, plan, Merge::Redis(kind), |members| {
        // The group of key `m` (a key, or a key and its value): as the client
        // encoded it, from the end of the argument before it to its last CRLF.
        let raw = |m: u32| {
            let first = 1 + m as usize * step;
            args[first - 1].end + 2..args[first + step - 1].end + 2
        };
        let mut count = itoa::Buffer::new();
        let count = count.format(1 + members.len() * step).as_bytes();
        let head = 1 + count.len() + 2 + name_bulk.len();
        let body: usize = if inline {
            members.len() * step * 16
        } else {
            members.iter().map(|&m| raw(m).len()).sum()
        };
        let mut wire = Vec::with_capacity(head + body);
        wire.push(b'*');
        wire.extend_from_slice(count);
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&name_bulk);
        for &m in members {
            if inline {
                let first = 1 + m as usize * step;
                for a in &args[first..first + step] {
                    put_bulk(&mut wire, &req[a.clone()]);
                }
            } else {
                wire.extend_from_slice(&req[raw(m)]);
            }
        }
        // Exact size (always, but for inline requests): the Bytes takes the
        // Vec without another allocation.
        wire.into()
    });
}

/// Merges the parts' replies of a fragmented command (every part answered).
pub fn merge(kind: Fragment, replies: &[Bytes], order: &[u32]) -> Bytes {
    // A backend error reply (e.g. -NOAUTH, -READONLY) is passed on as is.
    if let Some(e) = replies.iter().find(|r| r.first() == Some(&b'-')) {
        return e.clone();
    }
    match kind {
        Fragment::Sum => {
            let mut sum = 0i64;
            for r in replies {
                match integer(r) {
                    Some(n) => sum += n,
                    None => return ErrKind::Invalid.redis_reply(),
                }
            }
            Bytes::from(format!(":{sum}\r\n"))
        }
        Fragment::Mset => {
            if replies.iter().all(|r| &r[..] == OK) {
                Bytes::from_static(OK)
            } else {
                ErrKind::Invalid.redis_reply()
            }
        }
        Fragment::Mget | Fragment::No => {
            // Walk each part's reply with a cursor, taking its next element
            // for each key in request order: no per-part element lists.
            let mut cursor: SmallVec<[(usize, usize); 4]> = SmallVec::new();
            let mut count = itoa::Buffer::new();
            let count = count.format(order.len()).as_bytes();
            // Exact when every part is well formed: each element is copied once.
            let mut size = 1 + count.len() + 2;
            for r in replies {
                match array_header(r) {
                    Ok((n, start)) => {
                        cursor.push((start, n));
                        size += r.len() - start;
                    }
                    Err(_) => return ErrKind::Invalid.redis_reply(),
                }
            }
            let mut out = Vec::with_capacity(size);
            out.push(b'*');
            out.extend_from_slice(count);
            out.extend_from_slice(b"\r\n");
            for &p in order {
                let p = p as usize;
                let (pos, left) = cursor[p];
                if left == 0 {
                    return ErrKind::Invalid.redis_reply();
                }
                match bulk_element(&replies[p], pos) {
                    Ok(end) => {
                        out.extend_from_slice(&replies[p][pos..end]);
                        cursor[p] = (end, left - 1);
                    }
                    Err(_) => return ErrKind::Invalid.redis_reply(),
                }
            }
            // Every part answered exactly as many keys as it was sent.
            if cursor.iter().any(|&(_, left)| left != 0) {
                return ErrKind::Invalid.redis_reply();
            }
            out.into()
        }
    }
}
