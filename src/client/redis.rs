//! The redis side of a client: scan requests, answer the commands the proxy
//! owns, route the rest, split multi-key commands into fragments and coalesce
//! their replies.
//!
//! Unlike nutcracker, an unknown or malformed command gets an error reply and
//! the connection stays open with every earlier reply delivered; only a framing
//! error (the byte stream cannot be resynchronised) closes it, after an error.

use super::frag::{plan, send_parts, Merge, Plan};
use super::pubsub::Kind;
use super::{printable, unroutable, Pending, Session};
use crate::dist::NoServer;
use crate::msg::{ErrKind, Slot};
use crate::proto::guard::{http_command, http_line, Attack};
use crate::proto::redis::blocking::{block_time, Block};
use crate::proto::redis::command::{Command, Find};
use crate::proto::redis::keys::KeyPositions;
use crate::proto::redis::request::{is_inline, put_array_header, put_bulk};
use crate::proto::redis::topology;
use crate::proto::redis::{
    lookup, scan_request, Fragment, KeyShape, Limits, Local, Route, SessionKind,
};
use crate::proto::Scan;
use crate::server::{Dialect, ReplyTo};
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
    if let Some((req, held)) = s.take_held() {
        // Its `timeout` (and that of what was read after it) runs from now,
        // not from when it was read.
        s.now = std::time::Instant::now();
        handle(s, req, &held);
    }
    while !s.closing && !s.holding() {
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
    if s.must_wait() {
        // A pin ends with a reply still to come (a blocking command's,
        // an EXEC's): what follows runs after it, as on a direct connection.
        return s.hold(req, args);
    }
    let name = &req[args[0].clone()];
    let Some(mut cmd) = lookup(name) else {
        if http_command(name) || http_line(args.iter().map(|a| &req[a.clone()])) {
            return s.reject(Attack::Http);
        }
        s.txn_error();
        return unknown_command(s, &req, args);
    };
    if !cmd.accepts(args.len()) {
        if http_line(args.iter().map(|a| &req[a.clone()])) {
            // `GET / HTTP/1.1`
            return s.reject(Attack::Http);
        }
        s.txn_error();
        return wrong_arity(s, cmd);
    }
    if cmd.container && args.len() > 1 {
        let sub = &req[args[1].clone()];
        match cmd.sub(sub) {
            Some(c) => cmd = c,
            None => {
                let mut e = b"-ERR unknown subcommand '".to_vec();
                e.extend(sanitized(sub, 128));
                e.extend(format!("'. Try {} HELP.\r\n", cmd.upper()).as_bytes());
                s.txn_error();
                return s.ready(e);
            }
        }
        if !cmd.accepts(args.len()) {
            s.txn_error();
            return wrong_arity(s, cmd);
        }
    }
    if !s.authenticated && !cmd.no_auth {
        s.txn_error();
        s.ready(NOAUTH);
        return;
    }
    if let Some(user) = &s.readonly_user {
        if cmd.spec.flags & crate::proto::redis::command::flag::WRITE != 0 {
            let msg = format!(
                "-NOPERM User {user} has no permissions to run the '{}' command\r\n",
                cmd.name.replace(' ', "|")
            );
            s.txn_error();
            return s.ready(msg);
        }
    }
    // Forwarded: RESP as written, or re-encoded when it came inline.
    let shared = &s.pool.shared;
    shared.health.before_dispatch(&shared.router);
    let class = if cmd.read { Class::Read } else { Class::Write };
    // None: the request goes as the client wrote it.
    let wire = is_inline(&req).then(|| encode(&req, args.iter().cloned()));
    s.replica_read = false;
    if s.txn.is_some() && s.in_multi() {
        return in_multi(s, cmd, req, wire, args);
    }
    if s.subs.is_some() && s.resp2_subscribed() {
        match cmd.route {
            Route::Session(SessionKind::PubSub) | Route::Local(Local::Quit | Local::Reset) => {}
            Route::Local(Local::Ping) => {
                return s.subscribed_ping(args.get(1).map(|a| &req[a.clone()]));
            }
            _ => return s.not_in_subscribed_mode(&cmd.name),
        }
    }
    // Reads outside any session state may go to a replica (`read_from`).
    s.replica_read = cmd.read
        && shared.reads_replicas()
        && s.txn.is_none()
        && matches!(
            cmd.route,
            Route::Keys
                | Route::StreamRead
                | Route::Sort
                | Route::Split(_)
                | Route::One
                | Route::Arg(_)
        );
    match cmd.route {
        Route::Keys => by_keys(s, cmd, req, wire, args, class),
        Route::StreamRead => {
            // XREAD/XREADGROUP … BLOCK ms … STREAMS: blocking only with BLOCK.
            if block_time(&cmd.name, args.len(), |i| &req[args[i].clone()]).is_some() {
                return blocking(s, cmd, req, wire, args);
            }
            by_keys(s, cmd, req, wire, args, class)
        }
        Route::Sort => by_keys(s, cmd, req, wire, args, class),
        Route::Split(frag) => {
            let argc = args.len() - 1;
            let step = if frag == Fragment::Mset { 2 } else { 1 };
            if frag == Fragment::Mset && argc % 2 != 0 {
                return wrong_arity(s, cmd);
            }
            if argc == step {
                forward(s, Key::At(args[1].clone()), req, wire, class);
            } else {
                fragment(s, &cmd.name, frag, &req, args, step);
            }
        }
        Route::All(frag) => {
            let frag = match frag {
                Fragment::Info { .. } => Fragment::Info {
                    clients: s
                        .pool
                        .shared
                        .clients
                        .load(std::sync::atomic::Ordering::Relaxed),
                },
                f => f,
            };
            let w = wire.unwrap_or(req);
            let n = s.pool.servers.len();
            every_server(s, frag, (0..n).map(|i| (i, w.clone())));
        }
        Route::One => forward(s, Key::Placeholder, req, wire, class),
        Route::Arg(i) => forward(s, Key::At(args[i].clone()), req, wire, class),
        Route::Scan => scan(s, &req, args),
        Route::Local(local) => answer(s, local, &req, args),
        Route::Session(SessionKind::Transaction) => transaction(s, cmd, req, wire, args),
        Route::Session(SessionKind::Blocking) => blocking(s, cmd, req, wire, args),
        Route::Session(SessionKind::Wait) => wait(s, cmd, req, wire, args),
        Route::Session(SessionKind::PubSub) => match Kind::of(&cmd.name) {
            Some((kind, true)) => s.subscribe(kind, &req, args),
            Some((kind, false)) => s.unsubscribe(kind, &req, args),
            None => needs_session(s, cmd, SessionKind::PubSub),
        },
        Route::Refuse(why) => error(
            s,
            &format!("{} is not allowed through the proxy: {why}", cmd.upper()),
        ),
        Route::Container => wrong_arity(s, cmd),
    }
}

fn needs_session(s: &mut Session, cmd: &Command, kind: SessionKind) {
    error(
        s,
        &format!(
            "{} is not supported by the proxy yet: {} need a server connection of their own",
            cmd.upper(),
            kind.what()
        ),
    );
}

/// `s` with CR and LF made spaces (as redis-server's errors), at most `max`
/// bytes.
fn sanitized(s: &[u8], max: usize) -> impl Iterator<Item = u8> + '_ {
    s.iter()
        .take(max)
        .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
}

/// redis-server's own reply to an unknown command.
fn unknown_command(s: &mut Session, req: &[u8], args: &[Range<usize>]) {
    let mut e = b"-ERR unknown command '".to_vec();
    e.extend(sanitized(&req[args[0].clone()], 128));
    e.extend_from_slice(b"', with args beginning with: ");
    let mut listed = 0;
    for a in &args[1..] {
        if listed >= 128 {
            break;
        }
        let arg = &req[a.clone()];
        let take = arg.len().min(128 - listed);
        e.push(b'\'');
        e.extend(sanitized(arg, take));
        e.extend_from_slice(b"' ");
        listed += take + 3;
    }
    e.extend_from_slice(b"\r\n");
    s.ready(e);
}

fn wrong_arity(s: &mut Session, cmd: &Command) {
    error(
        s,
        &format!(
            "wrong number of arguments for '{}' command",
            cmd.name.replace(' ', "|")
        ),
    );
}

const CROSSSLOT: &[u8] = b"-CROSSSLOT Keys in request don't hash to the same server\r\n";

/// Why a request has no server: the error reply, and whether it counts as
/// a forwarding error (no server up, an unknown server name).
struct NoRoute {
    reply: Bytes,
    forward_error: bool,
}

impl NoRoute {
    fn error(msg: &str) -> NoRoute {
        NoRoute {
            reply: Bytes::from(format!("-ERR {msg}\r\n")),
            forward_error: false,
        }
    }

    fn reply(reply: &'static [u8]) -> NoRoute {
        NoRoute {
            reply: Bytes::from_static(reply),
            forward_error: false,
        }
    }

    fn send(self, s: &mut Session) {
        if self.forward_error {
            s.forward_error(self.reply);
        } else {
            s.ready(self.reply);
        }
    }
}

fn no_server(s: &Session, key: &[u8], e: NoServer) -> NoRoute {
    let reply = match e {
        NoServer::AllEjected => ErrKind::Refused.redis_reply(),
        NoServer::Unroutable => Bytes::from(format!("-ERR {}\r\n", unroutable(s, key))),
        NoServer::NoSlotOwner => {
            // The map may be stale (a failover under way): ask again.
            s.pool.shared.cluster_refresh.notify_one();
            Bytes::from(format!(
                "-CLUSTERDOWN Hash slot {} not served (as far as the proxy knows the cluster)\r\n",
                crate::dist::cluster::key_slot(key)
            ))
        }
    };
    NoRoute {
        reply,
        forward_error: true,
    }
}

/// Routes a request by the keys its key specs find: one server for all of
/// them, or `-CROSSSLOT`.
fn by_keys(
    s: &mut Session,
    cmd: &Command,
    req: Bytes,
    wire: Option<Bytes>,
    args: &[Range<usize>],
    class: Class,
) {
    match keyed_server(s, cmd, &req, args) {
        Ok(i) => send_to(s, i, req, wire, class),
        Err(e) => e.send(s),
    }
}

/// The one server of every key of a keyed request (found by its key specs;
/// for SORT, with its patterns).
fn keyed_server(
    s: &Session,
    cmd: &Command,
    req: &Bytes,
    args: &[Range<usize>],
) -> Result<usize, NoRoute> {
    if cmd.route == Route::Sort {
        return sort_server(s, cmd, req, args);
    }
    if let KeyShape::Single(pos) = cmd.keys {
        if let Some(k) = args.get(pos) {
            let k = &req[k.clone()];
            return s
                .pool
                .shared
                .router
                .dispatch(k)
                .map_err(|e| no_server(s, k, e));
        }
    }
    let mut keys = KeyPositions::new();
    let found = crate::proto::redis::keys::find(
        cmd.spec,
        args.len(),
        |i| &req[args[i].clone()],
        true,
        &mut keys,
    );
    if found.is_err() {
        return Err(NoRoute::error(&format!(
            "syntax error: the keys of this '{}' request cannot be found",
            cmd.name
        )));
    }
    if keys.is_empty() {
        if cmd
            .spec
            .key_specs
            .iter()
            .any(|k| matches!(k.find, Find::Keynum { .. }))
        {
            return Err(NoRoute::error(&format!(
                "{} with no keys cannot be routed by the proxy: pass the keys it uses (numkeys ≥ 1)",
                cmd.upper()
            )));
        }
        return Err(NoRoute::error(&format!(
            "syntax error: no key in this '{}' request",
            cmd.name
        )));
    }
    colocated(s, keys.iter().map(|&i| &req[args[i as usize].clone()]))
}

/// The server of `keys` if they all route to one.
fn colocated<'k>(s: &Session, keys: impl Iterator<Item = &'k [u8]>) -> Result<usize, NoRoute> {
    let routing = s.pool.shared.router.routing();
    let mut server = None;
    for k in keys {
        match routing.dispatch(k) {
            Ok(i) if server.is_none_or(|at| at == i) => server = Some(i),
            Ok(_) => return Err(NoRoute::reply(CROSSSLOT)),
            Err(e) => return Err(no_server(s, k, e)),
        }
    }
    server.ok_or_else(|| NoRoute::error("syntax error: no key in this request"))
}

/// SORT / SORT_RO: the sorted key, `STORE`'s destination and the keys
/// `BY`/`GET` patterns make must share a server; a pattern's keys are
/// known only when its hash tag comes before its `*`.
fn sort_server(
    s: &Session,
    cmd: &Command,
    req: &Bytes,
    args: &[Range<usize>],
) -> Result<usize, NoRoute> {
    let arg = |i: u32| &req[args[i as usize].clone()];
    let extra = crate::proto::redis::keys::sort(args.len(), |i| &req[args[i].clone()]);
    let routing = s.pool.shared.router.routing();
    for &p in &extra.patterns {
        let prefix = crate::proto::redis::keys::pattern_prefix(arg(p));
        if !routing.routes_every_extension(prefix) {
            return Err(NoRoute::error(&format!("{} with BY/GET patterns cannot be routed by the proxy: their keys may be on any server; put a hash tag before the '*' (e.g. 'w_{{tag}}*') so they share the sorted key's server", cmd.upper())));
        }
    }
    drop(routing);
    let keys = std::iter::once(1).chain(extra.store).map(arg).chain(
        extra
            .patterns
            .iter()
            .map(|&p| crate::proto::redis::keys::pattern_prefix(arg(p))),
    );
    colocated(s, keys)
}

/// The server of a request inside `MULTI` or of a blocking command: its
/// keys' (split commands' keys too: a transaction cannot split them).
fn one_server(
    s: &Session,
    cmd: &Command,
    req: &Bytes,
    args: &[Range<usize>],
) -> Result<usize, NoRoute> {
    match cmd.route {
        Route::Split(frag) => {
            let step = if frag == Fragment::Mset { 2 } else { 1 };
            colocated(s, args[1..].iter().step_by(step).map(|a| &req[a.clone()]))
        }
        Route::Arg(i) => {
            let k = &req[args[i].clone()];
            s.pool
                .shared
                .router
                .dispatch(k)
                .map_err(|e| no_server(s, k, e))
        }
        _ => keyed_server(s, cmd, req, args),
    }
}

/// The server of requests without a key (nutcracker routes them by a fixed
/// key).
fn placeholder_server(s: &Session) -> Option<usize> {
    s.pool.shared.router.dispatch(b"placeholder").ok()
}

/// A command between `MULTI` and `EXEC`: queued by the proxy if it can run
/// in the transaction's server, else refused (and `EXEC` will abort).
fn in_multi(
    s: &mut Session,
    cmd: &Command,
    req: Bytes,
    wire: Option<Bytes>,
    args: &[Range<usize>],
) {
    use super::txn::Target;
    let target = match (cmd.route, &*cmd.name) {
        (_, "exec") => return s.exec(placeholder_server(s)),
        (_, "discard") => return s.discard(),
        (_, "multi") => return s.multi(),
        // Not flagged, as Redis.
        (_, "watch") => return error(s, "WATCH inside MULTI is not allowed"),
        (Route::Local(Local::Quit | Local::Reset), _) => {
            return answer(s, local_of(cmd), &req, args)
        }
        (Route::Local(Local::Ping | Local::Echo), _) | (Route::One, _) | (_, "unwatch") => {
            Ok(Target::Any)
        }
        (Route::Local(Local::Select), _) => {
            let db = s.pool.shared.conf.redis_db;
            if req[args[1].clone()] == *itoa::Buffer::new().format(db).as_bytes() {
                Ok(Target::Any)
            } else {
                Err(NoRoute::error(&format!(
                    "this pool uses db {db}: SELECT of another db is not supported by the proxy"
                )))
            }
        }
        (
            Route::Keys
            | Route::StreamRead
            | Route::Sort
            | Route::Split(_)
            | Route::Arg(_)
            | Route::Session(SessionKind::Blocking),
            _,
        ) => one_server(s, cmd, &req, args).map(Target::Server),
        (Route::Refuse(why), _) => Err(NoRoute::error(&format!(
            "{} is not allowed through the proxy: {why}",
            cmd.upper()
        ))),
        _ => Err(NoRoute::error(&format!(
            "{} cannot be part of a transaction through the proxy: a transaction runs on one server",
            cmd.upper()
        ))),
    };
    match target {
        Ok(t) => s.queue(t, wire.unwrap_or(req)),
        Err(e) => {
            s.txn_error();
            e.send(s);
        }
    }
}

fn local_of(cmd: &Command) -> Local {
    match cmd.route {
        Route::Local(l) => l,
        _ => Local::Ping,
    }
}

/// MULTI EXEC DISCARD WATCH UNWATCH outside `MULTI`.
fn transaction(
    s: &mut Session,
    cmd: &Command,
    req: Bytes,
    wire: Option<Bytes>,
    args: &[Range<usize>],
) {
    match &*cmd.name {
        "multi" => s.multi(),
        "exec" => s.exec(None),
        "discard" => s.discard(),
        "unwatch" => s.unwatch(),
        _ => {
            // WATCH: a pinned connection to its keys' server, taken once
            // every earlier reply is in.
            let server = keyed_server(s, cmd, &req, args).map_err(|e| e.reply);
            if let Ok(i) = server {
                if s.pins.get(i).is_none() && !s.pending.is_empty() {
                    return s.hold(req, args);
                }
            }
            s.watch(server, wire.unwrap_or(req));
        }
    }
}

/// The deadline of a request that may block for `block` on a pinned
/// connection: its own block time plus the pool's `timeout`; none when it
/// blocks forever (or the pool has no timeout).
fn block_deadline(s: &Session, idx: usize, block: Option<Block>) -> Option<tokio::time::Instant> {
    let server = &s.pool.servers[idx];
    let timeout = server.timeout()?;
    let start = tokio::time::Instant::from_std(s.now);
    match block {
        Some(Block::Forever) => None,
        Some(Block::For(d)) => Some(start + timeout + d),
        Some(Block::Invalid) | None => Some(start + timeout),
    }
}

/// A blocking command: on a connection of its own to its keys' server
/// (pinned once every earlier reply is in); requests after it wait for its
/// reply, as they would on a direct connection.
fn blocking(
    s: &mut Session,
    cmd: &Command,
    req: Bytes,
    wire: Option<Bytes>,
    args: &[Range<usize>],
) {
    let server = match keyed_server(s, cmd, &req, args) {
        Ok(i) => i,
        Err(e) => return e.send(s),
    };
    let pinned = s.pins.get(server).is_some();
    if !pinned && !s.pending.is_empty() {
        return s.hold(req, args);
    }
    if let Err(e) = s.pin(server) {
        return error(s, &e.to_string());
    }
    let block = block_time(&cmd.name, args.len(), |i| &req[args[i].clone()]);
    s.block_deadline = Some(block_deadline(s, server, block));
    let class = if cmd.read { Class::Read } else { Class::Write };
    send_to(s, server, req, wire, class);
    s.block_deadline = None;
    if s.txn.is_none() {
        // Not within a WATCH: the pin ends with the reply.
        s.pins.end_when_answered = true;
    }
}

/// Advances a pinned connection's replication offset to the server's
/// current one, so that WAIT on it waits for every write made before it,
/// whichever connection carried them (Redis propagates PUBLISH to replicas;
/// no key is touched and nobody subscribes to this channel).
const WAIT_MARK: &[u8] = b"*3\r\n$7\r\nPUBLISH\r\n$17\r\n__shardproxy:wait\r\n$0\r\n\r\n";

/// WAIT / WAITAOF: on every server, on pinned connections (a WAIT blocks
/// its connection), after every earlier reply is in; the smallest count.
fn wait(s: &mut Session, cmd: &Command, req: Bytes, wire: Option<Bytes>, args: &[Range<usize>]) {
    if s.txn.is_some() {
        return error(
            s,
            &format!(
                "{} is not supported through the proxy while WATCH holds a server connection",
                cmd.upper()
            ),
        );
    }
    if !s.pending.is_empty() {
        return s.hold(req, args);
    }
    let n = s.pool.servers.len();
    for i in 0..n {
        if let Err(e) = s.pin(i) {
            s.unpin_sessions(true);
            return error(s, &e.to_string());
        }
    }
    let block = block_time(&cmd.name, args.len(), |i| &req[args[i].clone()]);
    for i in 0..n {
        if let Some(c) = s.pins.get(i).cloned() {
            let server = &s.pool.servers[i];
            server.send_pinned(
                &c,
                Bytes::from_static(WAIT_MARK),
                ReplyTo::Swallow,
                server.deadline(s.now),
            );
        }
    }
    s.block_deadline = Some(block_deadline(s, 0, block));
    let w = wire.unwrap_or(req);
    every_server(s, Fragment::Min, (0..n).map(|i| (i, w.clone())));
    s.block_deadline = None;
    s.pins.end_when_answered = true;
}

/// Sends one part per `(server, wire)` and merges the replies by `frag`.
fn every_server(
    s: &mut Session,
    frag: Fragment,
    parts: impl ExactSizeIterator<Item = (usize, Bytes)>,
) {
    let mut plan = Plan::default();
    let mut wires: SmallVec<[Bytes; 4]> = SmallVec::new();
    for (i, w) in parts {
        plan.parts.push((i, 0..0));
        wires.push(w);
    }
    let mut next = wires.into_iter();
    send_parts(s, plan, Merge::Redis(frag), |_| {
        next.next().unwrap_or_default()
    });
}

/// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`: the client's cursor is
/// `server cursor × servers + server index`; each server is scanned in turn,
/// from index 0, so a full iteration visits every server once.
fn scan(s: &mut Session, req: &Bytes, args: &[Range<usize>]) {
    let n = s.pool.servers.len() as u64;
    let Some(cursor) = std::str::from_utf8(&req[args[1].clone()])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return error(s, "invalid cursor");
    };
    let (server, inner) = (cursor % n, cursor / n);
    let mut wire = Vec::with_capacity(req.len() + 8);
    put_array_header(&mut wire, args.len());
    put_bulk(&mut wire, b"SCAN");
    put_bulk(&mut wire, itoa::Buffer::new().format(inner).as_bytes());
    for a in &args[2..] {
        put_bulk(&mut wire, &req[a.clone()]);
    }
    let frag = Fragment::Scan {
        server: server as u32,
        servers: n as u32,
    };
    every_server(
        s,
        frag,
        std::iter::once((server as usize, Bytes::from(wire))),
    );
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
        Local::Auth if args.len() > 3 => error(s, "syntax error"),
        Local::Auth if args.len() == 3 => {
            // AUTH user password: a client user (or `default`, redis_auth).
            if login(s, arg(1), arg(2)) {
                s.ready(OK);
            } else {
                s.ready(WRONGPASS);
            }
        }
        Local::Auth => {
            let password = arg(args.len() - 1);
            match &s.pool.shared.conf.redis_auth {
                None => error(s, "Client sent AUTH, but no password is set"),
                Some(want) if constant_time_eq(want.as_bytes(), password) => {
                    s.authenticated = true;
                    s.readonly_user = None;
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
            if arg(1).eq_ignore_ascii_case(b"getname") {
                let mut out = Vec::new();
                match &s.client_name {
                    Some(n) => put_bulk(&mut out, n),
                    None if s.dialect == Dialect::Resp3 => out.extend_from_slice(b"_\r\n"),
                    None => out.extend_from_slice(b"$-1\r\n"),
                }
                s.ready(out);
            } else {
                if arg(1).eq_ignore_ascii_case(b"setname") {
                    let name = req.slice(args[2].clone());
                    s.client_name = (!name.is_empty()).then_some(name);
                }
                s.ready(OK);
            }
        }
        Local::Reset => {
            // Before the dialect changes: pins are kept per dialect.
            s.end_session();
            s.dialect = Dialect::Plain;
            s.authenticated = super::open_pool(&s.pool.shared.conf);
            s.readonly_user = None;
            s.client_name = None;
            s.ready(&b"+RESET\r\n"[..]);
        }
        Local::Hello => hello(s, req, args),
        Local::Cluster => cluster(s, req, args),
    }
}

/// The pool as one cluster node (see [`topology`]): `CLUSTER SLOTS`,
/// `SHARDS`, `NODES`, `INFO`, `MYID`, `MYSHARDID`, `KEYSLOT`; `READONLY`,
/// `READWRITE` and `ASKING` are accepted (this node has no replicas and
/// never redirects).
fn cluster(s: &mut Session, req: &Bytes, args: &[Range<usize>]) {
    let arg = |i: usize| &req[args[i].clone()];
    let name = arg(0).to_ascii_lowercase();
    if name != b"cluster" {
        return s.ready(OK);
    }
    let sub = arg(1).to_ascii_lowercase();
    if sub == b"keyslot" {
        return s.ready(topology::keyslot(arg(2)));
    }
    let Some(addr) = s.stream.local_addr() else {
        return error(
            s,
            "CLUSTER topology is answered on TCP listeners only: a cluster client cannot dial a Unix socket",
        );
    };
    let view = topology::View::new(
        addr,
        &s.pool.shared.conf.name,
        !s.stream.plain(),
        s.dialect == Dialect::Resp3,
    );
    let reply = match &sub[..] {
        b"slots" => view.slots(),
        b"shards" => view.shards(),
        b"nodes" => view.nodes(),
        b"info" => view.info(),
        b"myid" => view.myid(),
        b"myshardid" => view.myshardid(),
        _ => return error(s, "unknown CLUSTER subcommand"),
    };
    s.ready(reply);
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
    let mut credentials = None;
    while i < args.len() {
        let opt = arg(i).to_ascii_lowercase();
        if opt == b"auth" && i + 2 < args.len() {
            credentials = Some((arg(i + 1), arg(i + 2)));
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
    if let Some((user, password)) = credentials {
        if !login(s, user, password) {
            return s.ready(WRONGPASS);
        }
    }
    if dialect != s.dialect && (s.txn.is_some() || !s.pins.is_empty()) {
        return error(
            s,
            "HELLO cannot switch protocols during a transaction or WATCH: EXEC, DISCARD or UNWATCH first",
        );
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

const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";

/// `AUTH user password` (and `HELLO … AUTH`): `default` is `redis_auth`'s
/// user; the others are the pool's `client_users`. Every password is
/// compared in constant time, and every user is tried, so the time does
/// not tell whether the user exists.
fn login(s: &mut Session, user: &[u8], password: &[u8]) -> bool {
    let conf = &s.pool.shared.conf;
    let mut found: Option<Option<Box<str>>> = None;
    if let Some(want) = &conf.redis_auth {
        if user == b"default" && constant_time_eq(want.as_bytes(), password) {
            found = Some(None);
        }
    }
    for u in &conf.client_users {
        let name_ok = constant_time_eq(u.name.as_bytes(), user);
        let pass_ok = constant_time_eq(u.password.as_bytes(), password);
        if name_ok && pass_ok {
            found = Some(u.readonly.then(|| u.name.as_str().into()));
        }
    }
    match found {
        Some(readonly) => {
            s.authenticated = true;
            s.readonly_user = readonly;
            true
        }
        None => false,
    }
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
    no_server(s, key, e).send(s);
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
        Ok(idx) => send_to(s, idx, req, wire, class),
        Err(e) => route_error(s, k, e),
    }
}

/// Queues `req` (or `wire`) on server `idx`.
#[inline]
fn send_to(s: &mut Session, idx: usize, req: Bytes, wire: Option<Bytes>, class: Class) {
    let slot = Slot::new(s.waker.clone());
    s.send(idx, wire.unwrap_or(req), slot.clone());
    s.owe(Pending::Wait(slot), class);
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

pub use crate::proto::redis::merge::merge;
