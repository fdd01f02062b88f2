//! The memcache data path against real memcached backends.

mod support;
use std::collections::BTreeMap;
use std::time::Duration;
use support::{memcached, shardproxy, Conn, Proc};

fn servers(backends: &[&Proc]) -> String {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("   - {}:1 m{i}\n", b.addr()))
        .collect()
}

/// A memcache pool over `backends` (murmur spreads similar keys).
fn pool(backends: &[&Proc], extra: &str) -> impl Fn(u16) -> String {
    let s = servers(backends);
    let extra = extra.to_string();
    move |port| {
        format!("alpha:\n  listen: 127.0.0.1:{port}\n  hash: murmur\n  timeout: 5000\n{extra}  servers:\n{s}")
    }
}

fn three() -> (Proc, Proc, Proc) {
    (memcached(), memcached(), memcached())
}

fn set(k: &mut Conn, key: &str, val: &[u8]) -> Vec<u8> {
    let mut req = format!("set {key} 0 0 {}\r\n", val.len()).into_bytes();
    req.extend_from_slice(val);
    req.extend_from_slice(b"\r\n");
    k.mc(&req)
}

fn value(key: &str, flags: u32, val: &[u8]) -> Vec<u8> {
    let mut v = format!("VALUE {key} {flags} {}\r\n", val.len()).into_bytes();
    v.extend_from_slice(val);
    v.extend_from_slice(b"\r\n");
    v
}

/// The cas unique of `key`, read with `gets`.
fn cas_of(k: &mut Conn, key: &str) -> String {
    let r = String::from_utf8(k.mc(format!("gets {key}\r\n").as_bytes()))
        .unwrap_or_else(|e| panic!("{e}"));
    r.lines()
        .next()
        .and_then(|l| l.split(' ').nth(4))
        .unwrap_or_else(|| panic!("no cas in {r:?}"))
        .to_string()
}

const QUIET: Duration = Duration::from_millis(300);

#[test]
fn every_command_with_and_without_noreply() {
    let (a, b, c) = three();
    for threads in ["1", "2"] {
        let p = shardproxy(&pool(&[&a, &b, &c], ""), &["--threads", threads]);
        let mut k = Conn::new(p.port);
        assert_eq!(k.mc(b"set s 5 0 3\r\nabc\r\n"), b"STORED\r\n");
        assert_eq!(
            k.mc(b"get s\r\n"),
            [value("s", 5, b"abc"), b"END\r\n".to_vec()].concat()
        );
        assert_eq!(k.mc(b"add s 0 0 1\r\nx\r\n"), b"NOT_STORED\r\n");
        assert_eq!(k.mc(b"add n 0 0 1\r\n7\r\n"), b"STORED\r\n");
        assert_eq!(k.mc(b"replace s 1 0 2\r\nzz\r\n"), b"STORED\r\n");
        assert_eq!(k.mc(b"replace nosuch 0 0 1\r\nx\r\n"), b"NOT_STORED\r\n");
        assert_eq!(k.mc(b"append s 0 0 1\r\n>\r\n"), b"STORED\r\n");
        assert_eq!(k.mc(b"prepend s 0 0 1\r\n<\r\n"), b"STORED\r\n");
        assert_eq!(
            k.mc(b"get s\r\n"),
            [value("s", 1, b"<zz>"), b"END\r\n".to_vec()].concat()
        );
        assert_eq!(k.mc(b"incr n 5\r\n"), b"12\r\n");
        assert_eq!(k.mc(b"decr n 20\r\n"), b"0\r\n");
        assert_eq!(k.mc(b"incr nosuch 1\r\n"), b"NOT_FOUND\r\n");
        assert_eq!(k.mc(b"incr s 1\r\n")[..12], b"CLIENT_ERROR"[..]);
        assert_eq!(k.mc(b"touch s 100\r\n"), b"TOUCHED\r\n");
        assert_eq!(k.mc(b"touch nosuch 100\r\n"), b"NOT_FOUND\r\n");
        assert_eq!(
            k.mc(b"gat 100 s\r\n"),
            [value("s", 1, b"<zz>"), b"END\r\n".to_vec()].concat()
        );
        let gats = String::from_utf8(k.mc(b"gats 100 s\r\n")).unwrap_or_default();
        assert!(
            gats.starts_with("VALUE s 1 4 ") && gats.ends_with("\r\n<zz>\r\nEND\r\n"),
            "{gats:?}"
        );
        let cas = cas_of(&mut k, "s");
        assert_eq!(
            k.mc(format!("cas s 0 0 1 {cas}\r\nc\r\n").as_bytes()),
            b"STORED\r\n"
        );
        // The same cas again conflicts: the item changed.
        assert_eq!(
            k.mc(format!("cas s 0 0 1 {cas}\r\nd\r\n").as_bytes()),
            b"EXISTS\r\n"
        );
        assert_eq!(k.mc(b"cas nosuch 0 0 1 1\r\nd\r\n"), b"NOT_FOUND\r\n");
        assert_eq!(k.mc(b"delete s\r\n"), b"DELETED\r\n");
        assert_eq!(k.mc(b"delete s\r\n"), b"NOT_FOUND\r\n");
        assert_eq!(k.mc(b"delete n 0\r\n"), b"DELETED\r\n");
        assert_eq!(k.mc(b"get s n\r\n"), b"END\r\n");
        assert!(k.mc(b"version\r\n").starts_with(b"VERSION shardproxy-"));
        assert_eq!(k.mc(b"verbosity 1\r\n"), b"OK\r\n");

        // noreply: nothing comes back, and the effect is there.
        for req in [
            &b"set q 0 0 1 noreply\r\n1\r\n"[..],
            b"add q 0 0 1 noreply\r\nx\r\n",
            b"replace q 0 0 1 noreply\r\n2\r\n",
            b"append q 0 0 1 noreply\r\n3\r\n",
            b"prepend q 0 0 1 noreply\r\n1\r\n",
            b"incr q 100 noreply\r\n",
            b"decr q 1 noreply\r\n",
            b"touch q 100 noreply\r\n",
            b"verbosity 1 noreply\r\n",
        ] {
            k.send(req);
            assert!(k.silent_for(Duration::from_millis(50)), "{req:?}");
        }
        assert_eq!(
            k.mc(b"get q\r\n"),
            [value("q", 0, b"222"), b"END\r\n".to_vec()].concat()
        );
        let cas = cas_of(&mut k, "q");
        k.send(format!("cas q 0 0 1 {cas} noreply\r\n9\r\n").as_bytes());
        k.send(b"cas q 0 0 1 1 noreply\r\n8\r\n");
        assert!(k.silent_for(QUIET));
        assert_eq!(
            k.mc(b"get q\r\n"),
            [value("q", 0, b"9"), b"END\r\n".to_vec()].concat()
        );
        k.send(b"delete q noreply\r\n");
        assert!(k.silent_for(QUIET));
        assert_eq!(k.mc(b"get q\r\n"), b"END\r\n");

        // quit: earlier replies first, then the connection closes.
        k.send(b"set z 0 0 1\r\nz\r\nget z\r\nquit\r\nget z\r\n");
        assert_eq!(k.mc_reply(), b"STORED\r\n");
        assert_eq!(
            k.mc_reply(),
            [value("z", 0, b"z"), b"END\r\n".to_vec()].concat()
        );
        assert!(k.closed());
    }
}

#[test]
fn malformed_requests_get_errors_and_the_connection_stays_open() {
    let a = memcached();
    let p = shardproxy(&pool(&[&a], ""), &[]);
    let mut k = Conn::new(p.port);
    let long = "k".repeat(251);
    let ok = "k".repeat(250);
    let cases: Vec<(Vec<u8>, &[u8])> = vec![
        (b"GET a\r\n".to_vec(), b"ERROR\r\n"),
        (b"bogus\r\n".to_vec(), b"ERROR\r\n"),
        (b"\r\n".to_vec(), b"ERROR\r\n"),
        (b"get\r\n".to_vec(), b"ERROR\r\n"),
        (b"get \r\n".to_vec(), b"ERROR\r\n"),
        (
            format!("get {long}\r\n").into_bytes(),
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (format!("get {ok}\r\n").into_bytes(), b"END\r\n"),
        (
            b"get a\x01b\r\n".to_vec(),
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        // Bad flags: the data block is skipped too, so "x" is not read as a command.
        (
            b"set k abc 0 1\r\nx\r\n".to_vec(),
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"set k 0 0 1\r\nxyz\r\n".to_vec(),
            b"CLIENT_ERROR bad data chunk\r\n",
        ),
        (
            b"cas k 0 0 1\r\nx\r\n".to_vec(),
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"incr b abc\r\n".to_vec(),
            b"CLIENT_ERROR invalid numeric delta argument\r\n",
        ),
        (
            b"decr key\r\n".to_vec(),
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"touch key\r\n".to_vec(),
            b"CLIENT_ERROR bad command line format\r\n",
        ),
        (
            b"delete a 5\r\n".to_vec(),
            b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
        ),
        (
            b"stats items\r\n".to_vec(),
            b"CLIENT_ERROR stats items is not supported by the proxy\r\n",
        ),
        (
            b"flush_all\r\n".to_vec(),
            b"CLIENT_ERROR flush_all is not supported by the proxy\r\n",
        ),
        (
            // Framed: forwarded, and memcached's own complaint comes back.
            b"ms k 2 T0 abc\r\nab\r\n".to_vec(),
            b"CLIENT_ERROR invalid flag\r\n",
        ),
        (
            b"lru_crawler metadump all\r\n".to_vec(),
            b"CLIENT_ERROR lru_crawler is not supported by the proxy\r\n",
        ),
        (
            b"set big 0 0 2000000000\r\n".to_vec(),
            b"SERVER_ERROR object too large for cache\r\n",
        ),
    ];
    // One pipelined write: every error in order, and the stream stays in sync.
    let mut wire = Vec::new();
    for (req, _) in &cases {
        wire.extend_from_slice(req);
    }
    // The 2 GB value is swallowed as it streams: send a little of it, then
    // close the data block by sending less than declared is not possible, so
    // it goes last and the connection is checked with a fresh one.
    k.send(&wire);
    for (req, want) in &cases {
        assert_eq!(
            String::from_utf8_lossy(&k.mc_reply()),
            String::from_utf8_lossy(want),
            "{:?}",
            String::from_utf8_lossy(req)
        );
    }
    let mut k = Conn::new(p.port);
    k.send(b"set k 0 0 1\r\nxyz\r\nget k\r\n");
    assert_eq!(k.mc_reply(), b"CLIENT_ERROR bad data chunk\r\n");
    assert_eq!(
        k.mc_reply(),
        b"END\r\n",
        "resynchronised after the bad chunk"
    );
    // noreply errors are silent, like memcached.
    k.send(b"set k 0 0 1 noreply\r\nxyz\r\nincr k x noreply\r\n");
    assert!(k.silent_for(QUIET));
    assert_eq!(set(&mut k, "k", b"v"), b"STORED\r\n");
    // An unreadable length: the data cannot be found, so the proxy closes.
    k.send(b"set k 0 0 -1\r\nget k\r\n");
    assert_eq!(k.mc_reply(), b"CLIENT_ERROR bad command line format\r\n");
    assert!(k.closed());
}

/// A deterministic key set with duplicates and misses.
fn keyset(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 10 {
            3 => format!("miss:{i}"),
            7 => format!("key:{}", i / 2),
            _ => format!("key:{i}"),
        })
        .collect()
}

#[test]
fn multi_get_of_1000_keys_across_servers_in_order() {
    let (a, b, c) = three();
    for threads in ["1", "2"] {
        let p = shardproxy(&pool(&[&a, &b, &c], ""), &["--threads", threads]);
        let mut k = Conn::new(p.port);
        let keys = keyset(1000);
        let mut stored = BTreeMap::new();
        let mut wire = Vec::new();
        let mut sets = 0;
        for key in keys.iter().filter(|k| k.starts_with("key:")) {
            sets += 1;
            let v = format!("v-{key}-{}", key.len() * 7);
            wire.extend_from_slice(format!("set {key} 3 0 {}\r\n{v}\r\n", v.len()).as_bytes());
            stored.insert(key.clone(), v);
        }
        k.send(&wire);
        for _ in 0..sets {
            assert_eq!(k.mc_reply(), b"STORED\r\n");
        }
        // The keys are spread over all three memcached.
        for m in [&a, &b, &c] {
            let mut d = Conn::new(m.port);
            let any = stored
                .keys()
                .any(|key| d.mc(format!("get {key}\r\n").as_bytes()) != b"END\r\n");
            assert!(any, "backend {} holds none of the keys", m.port);
        }
        for cmd in ["get", "gets"] {
            let reply = k.mc(format!("{cmd} {}\r\n", keys.join(" ")).as_bytes());
            let mut want = Vec::new();
            let mut got = reply.as_slice();
            for key in &keys {
                if let Some(v) = stored.get(key) {
                    if cmd == "get" {
                        want.extend(value(key, 3, v.as_bytes()));
                    } else {
                        // gets: VALUE key flags bytes cas — skip the cas.
                        let line_end = got.iter().position(|&c| c == b'\n').unwrap_or(0);
                        let line = String::from_utf8_lossy(&got[..line_end]).to_string();
                        assert!(
                            line.starts_with(&format!("VALUE {key} 3 {} ", v.len())),
                            "{line}"
                        );
                        got = &got[line_end + 1 + v.len() + 2..];
                    }
                }
            }
            if cmd == "get" {
                want.extend_from_slice(b"END\r\n");
                assert_eq!(
                    String::from_utf8_lossy(&reply),
                    String::from_utf8_lossy(&want)
                );
            } else {
                assert_eq!(got, b"END\r\n");
            }
        }
        // Duplicates across the pipeline and gat.
        assert_eq!(
            k.mc(b"gat 0 key:1 miss:3 key:1 key:2\r\n"),
            [
                value("key:1", 3, stored["key:1"].as_bytes()),
                value("key:1", 3, stored["key:1"].as_bytes()),
                value("key:2", 3, stored["key:2"].as_bytes()),
                b"END\r\n".to_vec()
            ]
            .concat()
        );
    }
}

#[test]
fn values_up_to_the_item_size_limit_and_split_at_every_byte() {
    let (a, b) = (memcached(), memcached());
    let p = shardproxy(&pool(&[&a, &b], ""), &[]);
    let mut k = Conn::new(p.port);
    // memcached's default item size is 1 MB, item header included.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    assert_eq!(set(&mut k, "big", &big), b"STORED\r\n");
    assert_eq!(
        k.mc(b"get big\r\n"),
        [value("big", 0, &big), b"END\r\n".to_vec()].concat()
    );
    let too_big = vec![b'x'; 2 * 1024 * 1024];
    assert_eq!(
        set(&mut k, "huge", &too_big),
        b"SERVER_ERROR object too large for cache\r\n"
    );
    assert_eq!(
        k.mc(b"get huge big2\r\n"),
        b"END\r\n",
        "the stream is in sync after it"
    );
    // Binary-safe: every byte value, CRLF inside the data.
    let bin: Vec<u8> = (0..=255u8).chain(*b"\r\nEND\r\n").collect();
    assert_eq!(set(&mut k, "bin", &bin), b"STORED\r\n");
    assert_eq!(
        k.mc(b"get bin\r\n"),
        [value("bin", 0, &bin), b"END\r\n".to_vec()].concat()
    );
    // A request split at every byte boundary.
    let req = b"set split 7 0 10\r\n0123\r\n6789\r\nget split other\r\n";
    for cut in 1..req.len() {
        let mut k = Conn::new(p.port);
        k.send(&req[..cut]);
        std::thread::sleep(Duration::from_millis(2));
        k.send(&req[cut..]);
        assert_eq!(k.mc_reply(), b"STORED\r\n", "cut at {cut}");
        assert_eq!(
            k.mc_reply(),
            [value("split", 7, b"0123\r\n6789"), b"END\r\n".to_vec()].concat(),
            "cut at {cut}"
        );
    }
    // And one byte at a time.
    let mut k = Conn::new(p.port);
    for byte in req.iter() {
        k.send(&[*byte]);
    }
    assert_eq!(k.mc_reply(), b"STORED\r\n");
    assert_eq!(
        k.mc_reply(),
        [value("split", 7, b"0123\r\n6789"), b"END\r\n".to_vec()].concat()
    );
}

#[test]
fn five_hundred_concurrent_clients() {
    let (a, b, c) = three();
    let p = shardproxy(&pool(&[&a, &b, &c], ""), &["--threads", "2"]);
    let port = p.port;
    let handles: Vec<_> = (0..500)
        .map(|i| {
            std::thread::spawn(move || {
                let mut k = Conn::new(port);
                for j in 0..10 {
                    let key = format!("c{i}:{j}");
                    let v = format!("{i}-{j}");
                    assert_eq!(set(&mut k, &key, v.as_bytes()), b"STORED\r\n");
                    assert_eq!(
                        k.mc(format!("get {key} c{i}:0\r\n").as_bytes()),
                        [
                            value(&key, 0, v.as_bytes()),
                            value(&format!("c{i}:0"), 0, format!("{i}-0").as_bytes()),
                            b"END\r\n".to_vec()
                        ]
                        .concat()
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap_or_else(|_| panic!("a client failed"));
    }
}

#[test]
fn garbage_from_one_client_does_not_affect_another() {
    let (a, b) = (memcached(), memcached());
    let p = shardproxy(&pool(&[&a, &b], ""), &[]);
    let mut good = Conn::new(p.port);
    assert_eq!(set(&mut good, "g", b"1"), b"STORED\r\n");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..50 {
        let mut bad = Conn::new(p.port);
        let mut junk = Vec::with_capacity(4096);
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly printable with spaces and newlines, so lines form.
            let c = match x % 16 {
                0 => b'\n',
                1 => b' ',
                2 => (x >> 8) as u8,
                _ => b'a' + (x >> 8) as u8 % 26,
            };
            junk.push(c);
        }
        bad.send(&junk);
        assert_eq!(
            good.mc(b"get g\r\n"),
            [value("g", 0, b"1"), b"END\r\n".to_vec()].concat(),
            "round {round}"
        );
    }
    assert_eq!(set(&mut good, "g", b"2"), b"STORED\r\n");
}

#[test]
fn failed_fragment_fails_the_request_and_the_connection_stays_open() {
    let a = memcached();
    let dead_port = support::free_port();
    let yaml = {
        let a = a.addr();
        move |port: u16| {
            format!("alpha:\n  listen: 127.0.0.1:{port}\n  hash: murmur\n  timeout: 2000\n  servers:\n   - {a}:1 up\n   - 127.0.0.1:{dead_port}:1 down\n")
        }
    };
    let p = shardproxy(&yaml, &[]);
    let mut k = Conn::new(p.port);
    // Find a key on each server.
    let mut on_up = None;
    let mut on_down = None;
    for i in 0..100 {
        let key = format!("f{i}");
        let r = set(&mut k, &key, b"v");
        if r == b"STORED\r\n" {
            on_up.get_or_insert(key);
        } else {
            assert_eq!(r, b"SERVER_ERROR Connection refused\r\n");
            on_down.get_or_insert(key);
        }
    }
    let (up, down) = (on_up.unwrap_or_default(), on_down.unwrap_or_default());
    assert!(!up.is_empty() && !down.is_empty());
    assert_eq!(
        k.mc(format!("get {up} {down}\r\n").as_bytes()),
        b"SERVER_ERROR Connection refused\r\n"
    );
    assert_eq!(
        k.mc(format!("get {up}\r\n").as_bytes()),
        [value(&up, 0, b"v"), b"END\r\n".to_vec()].concat()
    );
}

#[test]
fn server_name_routing() {
    let (a, b) = (memcached(), memcached());
    let yaml = {
        let (a, b) = (a.addr(), b.addr());
        move |port: u16| {
            format!("sn:\n  listen: 127.0.0.1:{port}\n  hash: server_name\n  distribution: server_name\n  hash_tag: \"{{}}\"\n  servers:\n   - {a}:1 r1\n   - {b}:1 r2\n")
        }
    };
    let p = shardproxy(&yaml, &[]);
    let mut k = Conn::new(p.port);
    assert_eq!(set(&mut k, "r1:user", b"a"), b"STORED\r\n");
    assert_eq!(set(&mut k, "r2:user", b"b"), b"STORED\r\n");
    assert_eq!(set(&mut k, "{r2}tagged", b"c"), b"STORED\r\n");
    assert_eq!(set(&mut k, "r1", b"d"), b"STORED\r\n");
    assert_eq!(
        set(&mut k, "r9:user", b"x"),
        b"SERVER_ERROR no server named 'r9' in pool 'sn'\r\n"
    );
    assert_eq!(
        k.mc(b"get r1:user r2:user {r2}tagged r1 r9:x\r\n"),
        b"SERVER_ERROR no server named 'r9' in pool 'sn'\r\n"
    );
    assert_eq!(
        k.mc(b"get r1:user r2:user {r2}tagged r1\r\n"),
        [
            value("r1:user", 0, b"a"),
            value("r2:user", 0, b"b"),
            value("{r2}tagged", 0, b"c"),
            value("r1", 0, b"d"),
            b"END\r\n".to_vec()
        ]
        .concat()
    );
    // Read the backends directly: each key is where its name says.
    let mut da = Conn::new(a.port);
    let mut db = Conn::new(b.port);
    assert_eq!(
        da.mc(b"get r1:user r1 r2:user {r2}tagged\r\n"),
        [
            value("r1:user", 0, b"a"),
            value("r1", 0, b"d"),
            b"END\r\n".to_vec()
        ]
        .concat()
    );
    assert_eq!(
        db.mc(b"get r1:user r1 r2:user {r2}tagged\r\n"),
        [
            value("r2:user", 0, b"b"),
            value("{r2}tagged", 0, b"c"),
            b"END\r\n".to_vec()
        ]
        .concat()
    );
}

/// Renders bytes for a transcript: printable ASCII as is, CR/LF as `\r\n`,
/// anything else as `\xNN`.
fn render(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

/// The exact bytes of every reply, kept in docs/transcripts/memcache.md: the
/// test fails when the proxy's answers change. `SHARDPROXY_UPDATE_TRANSCRIPTS=1`
/// rewrites the file.
#[test]
fn byte_transcripts() {
    let (a, b) = (memcached(), memcached());
    let p = shardproxy(&pool(&[&a, &b], ""), &[]);
    let mut k = Conn::new(p.port);
    // (request, number of replies it gets)
    let script: &[(&[u8], usize)] = &[
        (b"set user:1 0 0 5\r\nalice\r\n", 1),
        (b"set user:2 42 0 3\r\nbob\r\n", 1),
        (b"get user:1\r\n", 1),
        (b"get user:1 user:2 nosuch user:1\r\n", 1),
        (b"gets user:2\r\n", 1),
        (b"gat 0 user:1 user:2\r\n", 1),
        (b"add user:1 0 0 1\r\nx\r\n", 1),
        (b"replace user:3 0 0 1\r\nx\r\n", 1),
        (b"append user:1 0 0 2\r\n!!\r\n", 1),
        (b"prepend user:1 0 0 2\r\n<<\r\n", 1),
        (b"set n 0 0 2\r\n10\r\n", 1),
        (b"incr n 5\r\n", 1),
        (b"decr n 100\r\n", 1),
        (b"incr user:1 1\r\n", 1),
        (b"touch user:1 60\r\n", 1),
        (b"cas user:2 0 0 1 999999\r\nx\r\n", 1),
        (b"delete n\r\n", 1),
        (b"delete n\r\n", 1),
        (b"set q 0 0 1 noreply\r\nq\r\n", 0),
        (b"get q\r\n", 1),
        (b"verbosity 1\r\n", 1),
        (b"GET user:1\r\n", 1),
        (b"get\r\n", 1),
        (b"incr n abc\r\n", 1),
        (b"set k 0 0 1\r\nxyz\r\n", 1),
        (b"set k abc 0 1\r\nx\r\n", 1),
        (b"flush_all\r\n", 1),
        (b"get user:1\r\n", 1),
        (b"quit\r\n", 0),
    ];
    let mut doc = String::from(
        "# memcache byte transcripts\n\n\
         Exact bytes exchanged with shardproxy over one connection, in order, for a\n\
         pool of two memcached 1.6 backends (`>` sent, `<` received). Generated and\n\
         checked by `tests/memcache.rs` `byte_transcripts`: the test fails if a reply\n\
         changes (`SHARDPROXY_UPDATE_TRANSCRIPTS=1` regenerates this file).\n\n```text\n",
    );
    for (req, n) in script {
        k.send(req);
        doc.push_str(&format!("> {}\n", render(req)));
        for _ in 0..*n {
            doc.push_str(&format!("< {}\n", render(&k.mc_reply())));
        }
        if *n == 0 && !req.starts_with(b"quit") {
            assert!(k.silent_for(Duration::from_millis(100)));
            doc.push_str("< (nothing: noreply)\n");
        }
    }
    assert!(k.closed());
    doc.push_str("< (connection closed by the proxy)\n```\n");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/transcripts/memcache.md");
    if std::env::var_os("SHARDPROXY_UPDATE_TRANSCRIPTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, &doc).unwrap_or_else(|e| panic!("{e}"));
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        doc, want,
        "run with SHARDPROXY_UPDATE_TRANSCRIPTS=1 to regenerate {path:?}"
    );
}

/// `stats` is answered by the proxy in memcached's format (clients and
/// health checks call it; an error there made npm `memcached` mark the
/// server dead).
#[test]
fn stats_is_answered_in_memcacheds_format() {
    let (a, b, c) = three();
    let p = shardproxy(&pool(&[&a, &b, &c], ""), &[]);
    let mut raw =
        std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap_or_else(|e| panic!("{e}"));
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut raw, b"stats\r\n").unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    while !got.ends_with(b"END\r\n") {
        let mut chunk = [0u8; 4096];
        let n = std::io::Read::read(&mut raw, &mut chunk).unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend(&chunk[..n]);
    }
    let mut k = Conn::from(raw);
    let text = String::from_utf8_lossy(&got);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with("STAT ") || *l == "END"),
        "{text}"
    );
    for stat in ["pid", "uptime", "time", "version", "curr_connections"] {
        assert!(
            text.contains(&format!("STAT {stat} ")),
            "{stat} missing: {text}"
        );
    }
    assert!(
        text.contains(&format!("STAT pid {}\r\n", p.pid())),
        "{text}"
    );
    assert!(text.contains("STAT servers 3\r\n"), "{text}");
    // The connection goes on.
    assert_eq!(k.mc(b"set s 0 0 1\r\nx\r\n"), b"STORED\r\n");
}
