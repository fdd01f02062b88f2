//! The memcache ASCII request scanner: one command line, split on spaces, and
//! for the storage commands a data block of the declared length.
//!
//! Every error says how much of the stream it spans, so the client handler can
//! answer it and carry on with the next request: a bad line is skipped, a
//! storage command with a bad key or flags has its data block skipped too, and a
//! data block that does not end in CRLF is skipped and the stream resynchronised
//! at the next line. Only a storage line whose length field is unreadable (the
//! data block cannot be found) or a line longer than the limit closes the
//! connection: guessing there would execute value bytes as commands.

use super::super::guard::{binary_start, http_line, Attack};
use super::super::Scan;
use std::borrow::Cow;
use std::ops::Range;

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest command line (a multi-get of thousands of keys is one line).
    pub max_line: usize,
    /// Largest data block (memcached's `-I` tops out at 1 GB).
    pub max_value: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 4 * 1024 * 1024,
            max_value: 1024 * 1024 * 1024,
        }
    }
}

/// memcached's longest key.
pub const MAX_KEY: usize = 250;

/// The commands the scanner knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Command {
    #[default]
    Get,
    Gets,
    Gat,
    Gats,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
    Incr,
    Decr,
    Touch,
    Delete,
    Version,
    Verbosity,
    Quit,
    /// `stats` with no argument: answered by the proxy.
    Stats,
    /// Meta commands (memcached 1.6): `mg`, `ms`, `md`, `ma`, `me` routed
    /// by key, `mn` answered in order.
    MetaGet,
    MetaSet,
    MetaDelete,
    MetaArith,
    MetaDebug,
    MetaNoop,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Get => "get",
            Command::Gets => "gets",
            Command::Gat => "gat",
            Command::Gats => "gats",
            Command::Set => "set",
            Command::Add => "add",
            Command::Replace => "replace",
            Command::Append => "append",
            Command::Prepend => "prepend",
            Command::Cas => "cas",
            Command::Incr => "incr",
            Command::Decr => "decr",
            Command::Touch => "touch",
            Command::Delete => "delete",
            Command::Version => "version",
            Command::Verbosity => "verbosity",
            Command::Quit => "quit",
            Command::Stats => "stats",
            Command::MetaGet => "mg",
            Command::MetaSet => "ms",
            Command::MetaDelete => "md",
            Command::MetaArith => "ma",
            Command::MetaDebug => "me",
            Command::MetaNoop => "mn",
        }
    }

    fn from_name(name: &[u8]) -> Option<Command> {
        Some(match name {
            b"get" => Command::Get,
            b"gets" => Command::Gets,
            b"gat" => Command::Gat,
            b"gats" => Command::Gats,
            b"set" => Command::Set,
            b"add" => Command::Add,
            b"replace" => Command::Replace,
            b"append" => Command::Append,
            b"prepend" => Command::Prepend,
            b"cas" => Command::Cas,
            b"incr" => Command::Incr,
            b"decr" => Command::Decr,
            b"touch" => Command::Touch,
            b"delete" => Command::Delete,
            b"version" => Command::Version,
            b"verbosity" => Command::Verbosity,
            b"quit" => Command::Quit,
            b"stats" => Command::Stats,
            b"mg" => Command::MetaGet,
            b"ms" => Command::MetaSet,
            b"md" => Command::MetaDelete,
            b"ma" => Command::MetaArith,
            b"me" => Command::MetaDebug,
            b"mn" => Command::MetaNoop,
            _ => return None,
        })
    }

    /// Retrievals: many keys, fragmented across servers.
    pub fn is_retrieval(self) -> bool {
        matches!(
            self,
            Command::Get | Command::Gets | Command::Gat | Command::Gats
        )
    }
}

/// memcached commands the proxy does not forward (their scope is a whole
/// server, not a key). Anything else unknown is answered `ERROR`.
const UNSUPPORTED: &[&[u8]] = &[
    b"flush_all",
    b"cache_memlimit",
    b"shutdown",
    b"slabs",
    b"lru",
    b"lru_crawler",
    b"watch",
    b"misbehave",
    b"debugtime",
];

/// One scanned request. Positions are into the scanned buffer.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub cmd: Command,
    /// Every token of the command line (reused between scans).
    tokens: Vec<Range<usize>>,
    /// Which tokens are keys.
    keys: Range<usize>,
    /// `gat`/`gats`: the exptime token.
    pub exptime: Range<usize>,
    /// The request ends with `noreply`: the client expects nothing back.
    pub noreply: bool,
    /// A meta command with the `q` flag (quiet: memcached leaves some
    /// replies out).
    pub quiet: bool,
    /// A meta command with the `b` flag: its key is base64.
    pub base64: bool,
}

impl Request {
    /// The keys (retrievals: every key in order; others: one or none).
    pub fn keys(&self) -> &[Range<usize>] {
        &self.tokens[self.keys.clone()]
    }
}

/// How much of the stream a malformed request spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Skip this many bytes (possibly more than are buffered yet: the rest is
    /// discarded as it arrives); the stream is in sync after them.
    Bytes(usize),
    /// Skip this many bytes and then everything up to and including the next
    /// newline (a data block longer than declared).
    BytesThenLine(usize),
    /// The stream cannot be resynchronised: answer and close.
    Close,
    /// Not a memcache client at all (an HTTP request, a TLS hello, binary
    /// garbage): close at once, answering nothing, running nothing after it.
    Attack(Attack),
}

/// A malformed request: what to answer and what to skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// The reply line without CRLF (`ERROR`, `CLIENT_ERROR …`).
    pub reply: Cow<'static, str>,
    pub skip: Skip,
    /// The request said `noreply`: like memcached, answer nothing.
    pub noreply: bool,
}

fn malformed(reply: impl Into<Cow<'static, str>>, skip: Skip, noreply: bool) -> Malformed {
    Malformed {
        reply: reply.into(),
        skip,
        noreply,
    }
}

const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";

/// Parses an unsigned decimal of at most `max` (digits only, no sign).
fn unsigned(b: &[u8], max: u64) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for d in b {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (n <= max).then_some(n)
}

/// An exptime: a signed 32-bit-ish decimal (negative means already expired).
fn exptime(b: &[u8]) -> bool {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    unsigned(digits, i64::MAX as u64).is_some()
}

/// A meta command's base64 key (`b` flag), decoded: what it routes by.
pub fn meta_key(b64: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let k = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (!k.is_empty() && k.len() <= MAX_KEY).then_some(k)
}

/// A valid key: 1..=250 bytes, no control characters or spaces.
pub fn valid_key(k: &[u8]) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY && k.iter().all(|&c| c > b' ' && c != 0x7f)
}

/// Scans one request at the start of `buf`, filling `req`.
pub fn scan_request(buf: &[u8], limits: &Limits, req: &mut Request) -> Result<Scan, Malformed> {
    req.keys = 0..0;
    req.noreply = false;
    req.exptime = 0..0;
    req.tokens.clear();
    let window = &buf[..buf.len().min(limits.max_line)];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        // A TLS hello or binary garbage may never contain a newline: do not
        // wait for one.
        if let Some(attack) = buf.first().copied().and_then(binary_start) {
            return Err(malformed("", Skip::Attack(attack), true));
        }
        if window.len() >= limits.max_line {
            return Err(malformed("CLIENT_ERROR line too long", Skip::Close, false));
        }
        return Ok(Scan::Incomplete {
            hint: buf.len() + 1,
        });
    };
    let line_len = nl + 1;
    let end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let tokens = &mut req.tokens;
    let line = &buf[..end];
    let mut i = 0;
    while i < line.len() {
        if line[i] == b' ' {
            i += 1;
            continue;
        }
        let start = i;
        i = memchr::memchr(b' ', &line[i..]).map_or(line.len(), |j| i + j);
        tokens.push(start..i);
    }
    let tokens = &*tokens;
    let tok = |t: usize| &buf[tokens[t].clone()];
    let skip_line = Skip::Bytes(line_len);
    let Some(first) = tokens.first() else {
        return Err(malformed("ERROR", skip_line, false));
    };
    let noreply = tokens.len() > 1 && tok(tokens.len() - 1) == b"noreply";
    let Some(cmd) = Command::from_name(&buf[first.clone()]) else {
        let name = &buf[first.clone()];
        if let Some(attack) = binary_start(buf[0]) {
            return Err(malformed("", Skip::Attack(attack), true));
        }
        if http_line(tokens.iter().map(|t| &buf[t.clone()])) {
            return Err(malformed("", Skip::Attack(Attack::Http), true));
        }
        if UNSUPPORTED.contains(&name) {
            return Err(unsupported(name, skip_line));
        }
        return Err(malformed("ERROR", skip_line, false));
    };
    req.cmd = cmd;
    req.quiet = false;
    req.base64 = false;
    let args = tokens.len() - 1;
    let bad = |msg: &'static str| Err(malformed(msg, skip_line, noreply));
    match cmd {
        Command::Get | Command::Gets | Command::Gat | Command::Gats => {
            let first_key = if matches!(cmd, Command::Gat | Command::Gats) {
                if args < 1 || !exptime(tok(1)) {
                    return bad("CLIENT_ERROR invalid exptime argument");
                }
                req.exptime = tokens[1].clone();
                2
            } else {
                1
            };
            if tokens.len() <= first_key {
                return Err(malformed("ERROR", skip_line, false));
            }
            for t in &tokens[first_key..] {
                if !valid_key(&buf[t.clone()]) {
                    return Err(malformed(BAD_FORMAT, skip_line, false));
                }
            }
            req.keys = first_key..tokens.len();
        }
        Command::Set
        | Command::Add
        | Command::Replace
        | Command::Append
        | Command::Prepend
        | Command::Cas => {
            let want = if cmd == Command::Cas { 5 } else { 4 };
            // Without a readable length the data block cannot be found.
            let Some(n) = tokens
                .get(4)
                .and_then(|t| unsigned(&buf[t.clone()], u64::MAX))
            else {
                return Err(malformed(BAD_FORMAT, Skip::Close, noreply));
            };
            let block = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_add(2))
                .and_then(|b| b.checked_add(line_len));
            let Some(total) = block.filter(|_| n <= limits.max_value as u64) else {
                return Err(malformed(
                    "SERVER_ERROR object too large for cache",
                    match block {
                        Some(total) => Skip::Bytes(total),
                        None => Skip::Close,
                    },
                    noreply,
                ));
            };
            let fields_ok = (args == want || (args == want + 1 && noreply))
                && valid_key(tok(1))
                && unsigned(tok(2), u64::from(u32::MAX)).is_some()
                && exptime(tok(3))
                && (cmd != Command::Cas || unsigned(tok(5), u64::MAX).is_some());
            if !fields_ok {
                return Err(malformed(BAD_FORMAT, Skip::Bytes(total), noreply));
            }
            req.keys = 1..2;
            req.noreply = noreply;
            return data_block(buf, total, noreply);
        }
        Command::MetaNoop => {
            if args != 0 {
                return Err(malformed(BAD_FORMAT, skip_line, false));
            }
        }
        Command::MetaGet
        | Command::MetaDelete
        | Command::MetaArith
        | Command::MetaDebug
        | Command::MetaSet => {
            // `<cmd> <key> [<datalen>] <flags>*`: flags are single letters
            // with optional tokens (`O123`, `T90`).
            let flags_from = if cmd == Command::MetaSet { 3 } else { 2 };
            if args < flags_from - 1 {
                return Err(malformed(BAD_FORMAT, skip_line, false));
            }
            let flags = &tokens[flags_from.min(tokens.len())..];
            req.quiet = flags.iter().any(|f| &buf[f.clone()] == b"q");
            req.base64 = flags.iter().any(|f| &buf[f.clone()] == b"b");
            let key_ok = if req.base64 {
                meta_key(tok(1)).is_some()
            } else {
                valid_key(tok(1))
            };
            if cmd == Command::MetaSet {
                let Some(n) = unsigned(tok(2), limits.max_value as u64) else {
                    return Err(malformed(BAD_FORMAT, Skip::Close, false));
                };
                let total = line_len + n as usize + 2;
                if !key_ok {
                    return Err(malformed(BAD_FORMAT, Skip::Bytes(total), false));
                }
                req.keys = 1..2;
                req.noreply = false;
                return data_block(buf, total, false);
            }
            if !key_ok {
                return Err(malformed(BAD_FORMAT, skip_line, false));
            }
            req.keys = 1..2;
            req.noreply = false;
            return Ok(Scan::Complete(line_len));
        }
        Command::Incr | Command::Decr => {
            if args != 2 + usize::from(noreply) {
                return bad(BAD_FORMAT);
            }
            if !valid_key(tok(1)) {
                return bad(BAD_FORMAT);
            }
            if unsigned(tok(2), u64::MAX).is_none() {
                return bad("CLIENT_ERROR invalid numeric delta argument");
            }
            req.keys = 1..2;
        }
        Command::Touch => {
            if args != 2 + usize::from(noreply) || !valid_key(tok(1)) {
                return bad(BAD_FORMAT);
            }
            if !exptime(tok(2)) {
                return bad("CLIENT_ERROR invalid exptime argument");
            }
            req.keys = 1..2;
        }
        Command::Delete => {
            // memcached still accepts a legacy `0` time argument.
            let legacy = args >= 2 && tok(2) == b"0";
            if args != 1 + usize::from(legacy) + usize::from(noreply) || !valid_key(tok(1)) {
                return bad("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]");
            }
            req.keys = 1..2;
        }
        Command::Verbosity => {
            if args != 1 + usize::from(noreply) {
                return Err(malformed("ERROR", skip_line, noreply));
            }
        }
        Command::Version | Command::Quit => {}
        Command::Stats => {
            if args != 0 {
                // `stats items`, `stats slabs`…: one server's internals.
                let what = &buf[tokens[0].start..tokens[tokens.len() - 1].end];
                return Err(unsupported(what, skip_line));
            }
        }
    }
    req.noreply = noreply;
    Ok(Scan::Complete(line_len))
}

/// A storage request whose command line is valid and whose data block ends
/// at `total`: complete once it is all here and ends with CRLF.
fn data_block(buf: &[u8], total: usize, noreply: bool) -> Result<Scan, Malformed> {
    if buf.len() < total {
        return Ok(Scan::Incomplete { hint: total });
    }
    if &buf[total - 2..total] != b"\r\n" {
        return Err(malformed(
            "CLIENT_ERROR bad data chunk",
            Skip::BytesThenLine(total),
            noreply,
        ));
    }
    Ok(Scan::Complete(total))
}

fn unsupported(name: &[u8], skip: Skip) -> Malformed {
    malformed(
        format!(
            "CLIENT_ERROR {} is not supported by the proxy",
            String::from_utf8_lossy(name)
        ),
        skip,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(b: &[u8]) -> Result<Scan, Malformed> {
        scan_request(b, &Limits::default(), &mut Request::default())
    }

    fn malformed_with(b: &[u8], l: &Limits) -> Malformed {
        match scan_request(b, l, &mut Request::default()) {
            Err(e) => e,
            Ok(s) => panic!("{b:?} scanned as {s:?}"),
        }
    }

    fn err(b: &[u8]) -> (String, Skip) {
        let e = malformed_with(b, &Limits::default());
        (e.reply.into_owned(), e.skip)
    }

    #[test]
    fn complete_requests() {
        let mut r = Request::default();
        let l = Limits::default();
        assert_eq!(
            scan_request(b"get a bb  ccc\r\n", &l, &mut r),
            Ok(Scan::Complete(15))
        );
        assert_eq!(r.keys(), &[4..5, 6..8, 10..13]);
        assert_eq!(
            scan_request(b"set k 1 2 3 noreply\r\nabc\r\nget", &l, &mut r),
            Ok(Scan::Complete(26))
        );
        assert!(r.noreply);
        assert_eq!(r.cmd, Command::Set);
        assert_eq!(
            scan_request(b"cas k 0 0 1 99\r\nx\r\n", &l, &mut r),
            Ok(Scan::Complete(19))
        );
        assert_eq!(
            scan_request(b"gat -1 a b\n", &l, &mut r),
            Ok(Scan::Complete(11))
        );
        assert_eq!((r.exptime.clone(), r.keys().len()), (4..6, 2));
        assert_eq!(scan(b"incr k 5 noreply\r\n"), Ok(Scan::Complete(18)));
        assert_eq!(scan(b"delete k 0\r\n"), Ok(Scan::Complete(12)));
        assert_eq!(scan(b"touch k 10\r\n"), Ok(Scan::Complete(12)));
        assert_eq!(scan(b"verbosity 1 noreply\r\n"), Ok(Scan::Complete(21)));
        let key = vec![b'k'; 250];
        let line = [b"get ", &key[..], b"\r\n"].concat();
        assert_eq!(scan(&line), Ok(Scan::Complete(256)));
    }

    #[test]
    fn incomplete_until_the_data_block_is_there() {
        assert_eq!(scan(b"get a"), Ok(Scan::Incomplete { hint: 6 }));
        assert_eq!(
            scan(b"set k 0 0 10\r\nabc"),
            Ok(Scan::Incomplete { hint: 26 })
        );
    }

    #[test]
    fn malformed_requests_say_what_to_skip() {
        assert_eq!(err(b"GET a\r\n"), ("ERROR".into(), Skip::Bytes(7)));
        assert_eq!(err(b"\r\n"), ("ERROR".into(), Skip::Bytes(2)));
        assert_eq!(err(b"get\r\n"), ("ERROR".into(), Skip::Bytes(5)));
        let key = vec![b'k'; 251];
        let line = [b"get ", &key[..], b"\r\n"].concat();
        assert_eq!(err(&line), (BAD_FORMAT.into(), Skip::Bytes(257)));
        assert_eq!(
            err(b"set k abc 0 1\r\nx\r\n"),
            (BAD_FORMAT.into(), Skip::Bytes(18))
        );
        assert_eq!(err(b"set k 0 0 -1\r\n"), (BAD_FORMAT.into(), Skip::Close));
        assert_eq!(
            err(b"set k 0 0 1\r\nxyz\r\n"),
            (
                "CLIENT_ERROR bad data chunk".into(),
                Skip::BytesThenLine(16)
            )
        );
        assert_eq!(
            err(b"set k 0 0 99999999999\r\n"),
            (
                "SERVER_ERROR object too large for cache".into(),
                Skip::Bytes(23 + 99999999999 + 2)
            )
        );
        assert_eq!(err(b"cas k 0 0 1\r\nx\r\n").0, BAD_FORMAT);
        assert_eq!(
            err(b"incr b abc\r\n").0,
            "CLIENT_ERROR invalid numeric delta argument"
        );
        assert_eq!(err(b"decr key\r\n").0, BAD_FORMAT);
        assert_eq!(err(b"touch key\r\n").0, BAD_FORMAT);
        assert!(err(b"delete a 5\r\n").0.starts_with(BAD_FORMAT));
        assert!(scan(b"stats\r\n").is_ok());
        assert_eq!(
            err(b"stats slabs\r\n"),
            (
                "CLIENT_ERROR stats slabs is not supported by the proxy".into(),
                Skip::Bytes(13)
            )
        );
        assert_eq!(
            err(b"flush_all\r\n"),
            (
                "CLIENT_ERROR flush_all is not supported by the proxy".into(),
                Skip::Bytes(11)
            )
        );
        assert_eq!(scan(b"ms k 2 T0\r\nab\r\n"), Ok(Scan::Complete(15)));
        assert_eq!(err(b"ms k 2 T0\r\nabc\r\n").1, Skip::BytesThenLine(15));
        assert!(scan(b"mg k v q O12\r\n").is_ok());
        assert!(scan(b"mg aGVsbG8= b v\r\n").is_ok());
        assert_eq!(err(b"mg !!! b v\r\n").0, BAD_FORMAT);
        assert_eq!(scan(b"mn\r\n"), Ok(Scan::Complete(4)));
        assert!(malformed_with(b"set k 0 0 1 noreply\r\nxyz\r\n", &Limits::default()).noreply);
        assert!(scan(b"get noreply\r\n").is_ok());
    }

    #[test]
    fn long_lines_are_bounded() {
        let l = Limits {
            max_line: 16,
            max_value: 8,
        };
        assert_eq!(malformed_with(&[b'a'; 16], &l).skip, Skip::Close);
        assert_eq!(
            malformed_with(
                b"set k 0 0 9
",
                &l
            )
            .reply,
            "SERVER_ERROR object too large for cache"
        );
    }

    #[test]
    fn control_characters_are_not_keys() {
        assert!(!valid_key(b"a\x01b"));
        assert!(!valid_key(b"a\x7f"));
        assert!(valid_key("ключ".as_bytes()));
    }

    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0x21u8..=0xff, 1..20).prop_map(|k| {
            k.into_iter()
                .map(|c| if c == 0x7f { b'x' } else { c })
                .collect()
        })
    }

    proptest! {
        /// A request split at any byte: every prefix is incomplete (never an
        /// error), the whole scans complete with the same keys.
        #[test]
        fn any_split_scans_the_same(
            keys in proptest::collection::vec(key(), 1..5),
            value in proptest::collection::vec(any::<u8>(), 0..60),
            storage in any::<bool>(),
            noreply in any::<bool>(),
            cut in 0usize..400,
        ) {
            let mut wire = Vec::new();
            if storage {
                wire.extend_from_slice(b"set ");
                wire.extend_from_slice(&keys[0]);
                wire.extend_from_slice(format!(" 1 0 {}{}\r\n", value.len(), if noreply { " noreply" } else { "" }).as_bytes());
                wire.extend_from_slice(&value);
                wire.extend_from_slice(b"\r\n");
            } else {
                wire.extend_from_slice(b"gets");
                for k in &keys {
                    wire.push(b' ');
                    wire.extend_from_slice(k);
                }
                wire.extend_from_slice(b"\r\n");
            }
            let cut = cut % wire.len();
            let mut r = Request::default();
            let partial = matches!(scan_request(&wire[..cut], &Limits::default(), &mut r), Ok(Scan::Incomplete { .. }));
            prop_assert!(partial);
            prop_assert_eq!(scan_request(&wire, &Limits::default(), &mut r), Ok(Scan::Complete(wire.len())));
            let got: Vec<Vec<u8>> = r.keys().iter().map(|k| wire[k.clone()].to_vec()).collect();
            let want = if storage { keys[..1].to_vec() } else { keys.clone() };
            prop_assert_eq!(got, want);
            prop_assert_eq!(r.noreply, storage && noreply);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = scan(&bytes);
        }
    }
}
