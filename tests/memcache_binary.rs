//! memcache's binary protocol through the proxy, against real memcached
//! backends: raw packets compared with memcached's own replies, a
//! 1,000-key quiet multi-get across three servers, quiet writes; then real
//! clients (memjs, pylibmc).

mod support;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::{memcached, shardproxy, Proc};

fn pool(backends: &[&Proc]) -> impl Fn(u16) -> String {
    let s: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("   - {}:1 m{i}\n", b.addr()))
        .collect();
    move |port| {
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  hash: murmur\n  timeout: 5000\n  servers:\n{s}"
        )
    }
}

/// A binary request packet.
fn packet(opcode: u8, key: &[u8], extras: &[u8], value: &[u8], opaque: u32) -> Vec<u8> {
    let body = extras.len() + key.len() + value.len();
    let mut p = vec![0x80, opcode];
    p.extend((key.len() as u16).to_be_bytes());
    p.push(extras.len() as u8);
    p.extend([0, 0, 0]);
    p.extend((body as u32).to_be_bytes());
    p.extend(opaque.to_be_bytes());
    p.extend([0; 8]);
    p.extend(extras);
    p.extend(key);
    p.extend(value);
    p
}

fn set(opcode: u8, key: &[u8], value: &[u8], opaque: u32) -> Vec<u8> {
    // flags 0xdeadbeef, no expiry
    packet(
        opcode,
        key,
        &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0],
        value,
        opaque,
    )
}

struct Bin {
    s: TcpStream,
    buf: Vec<u8>,
}

/// A response: (opcode, status, opaque, key, value, extras).
#[derive(Debug, PartialEq, Eq)]
struct Resp {
    opcode: u8,
    status: u16,
    opaque: u32,
    key: Vec<u8>,
    value: Vec<u8>,
    extras: Vec<u8>,
}

impl Bin {
    fn new(port: u16) -> Bin {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        Bin { s, buf: Vec::new() }
    }

    fn send(&mut self, p: &[u8]) {
        self.s.write_all(p).unwrap_or_else(|e| panic!("{e}"));
    }

    fn read(&mut self) -> Resp {
        loop {
            if self.buf.len() >= 24 {
                let body =
                    u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]])
                        as usize;
                if self.buf.len() >= 24 + body {
                    let p: Vec<u8> = self.buf.drain(..24 + body).collect();
                    assert_eq!(p[0], 0x81, "not a response: {p:?}");
                    let kl = u16::from_be_bytes([p[2], p[3]]) as usize;
                    let el = p[4] as usize;
                    return Resp {
                        opcode: p[1],
                        status: u16::from_be_bytes([p[6], p[7]]),
                        opaque: u32::from_be_bytes([p[12], p[13], p[14], p[15]]),
                        extras: p[24..24 + el].to_vec(),
                        key: p[24 + el..24 + el + kl].to_vec(),
                        value: p[24 + el + kl..].to_vec(),
                    };
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self
                .s
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("read: {e}"));
            assert!(n > 0, "closed");
            self.buf.extend(&chunk[..n]);
        }
    }

    fn call(&mut self, p: &[u8]) -> Resp {
        self.send(p);
        self.read()
    }
}

#[test]
fn binary_requests_get_memcacheds_replies() {
    let (a, b, c) = (memcached(), memcached(), memcached());
    let p = shardproxy(&pool(&[&a, &b, &c]), &[]);
    // The same conversation with one memcached and with the proxy: the same
    // replies (CAS values aside).
    let direct_backend = memcached();
    for port in [direct_backend.port, p.port] {
        let mut k = Bin::new(port);
        let r = k.call(&set(0x01, b"bk", b"hello", 11));
        assert_eq!((r.opcode, r.status, r.opaque), (0x01, 0, 11), "{port}");
        let r = k.call(&packet(0x00, b"bk", &[], &[], 12));
        assert_eq!((r.opcode, r.status, r.opaque), (0x00, 0, 12));
        assert_eq!(r.value, b"hello");
        assert_eq!(r.extras, [0xde, 0xad, 0xbe, 0xef]);
        let r = k.call(&packet(0x0c, b"bk", &[], &[], 13)); // getk
        assert_eq!(
            (r.key.as_slice(), r.value.as_slice()),
            (&b"bk"[..], &b"hello"[..])
        );
        let r = k.call(&packet(0x00, b"missing", &[], &[], 14));
        assert_eq!((r.status, r.opaque), (1, 14));
        let r = k.call(&set(0x02, b"bk", b"x", 15)); // add: exists
        assert_eq!(r.status, 2);
        let r = k.call(&packet(0x0e, b"bk", &[], b" world", 16)); // append
        assert_eq!(r.status, 0);
        let incr = [0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let r = k.call(&packet(0x05, b"n", &incr, &[], 17)); // incr with initial 0
        assert_eq!(r.status, 0);
        let r = k.call(&packet(0x05, b"n", &incr, &[], 18));
        assert_eq!(r.value, 5u64.to_be_bytes());
        let r = k.call(&packet(0x04, b"bk", &[], &[], 19)); // delete
        assert_eq!((r.status, r.opaque), (0, 19));
        let r = k.call(&packet(0x0a, b"", &[], &[], 20)); // noop
        assert_eq!((r.opcode, r.status, r.opaque), (0x0a, 0, 20));
        let r = k.call(&packet(0x0b, b"", &[], &[], 21)); // version
        assert_eq!((r.opcode, r.status, r.opaque), (0x0b, 0, 21));
        assert!(!r.value.is_empty());
    }
    // What the proxy refuses gets a status and the connection goes on.
    let mut k = Bin::new(p.port);
    let r = k.call(&packet(0x08, b"", &[], &[], 30)); // flush
    assert_eq!((r.status, r.opaque), (0x83, 30));
    let r = k.call(&packet(0x21, b"PLAIN", &[], b"x", 31)); // SASL auth
    assert_eq!((r.status, r.opaque), (0x83, 31));
    let r = k.call(&packet(0x77, b"", &[], &[], 32));
    assert_eq!((r.status, r.opaque), (0x81, 32));
    let r = k.call(&packet(0x00, b"", &[], &[], 33)); // a get with no key
    assert_eq!((r.status, r.opaque), (0x04, 33));
    let r = k.call(&set(0x01, b"after", b"ok", 34));
    assert_eq!(r.status, 0);
}

/// A 1,000-key multi-get the way binary clients do it: `getkq` for every
/// key, then a `noop` fence; quiet sets before it. Misses and successful
/// quiet writes are silent, hits come back in order, then the `noop`.
#[test]
fn quiet_multi_get_of_1000_keys_across_three_servers() {
    let (a, b, c) = (memcached(), memcached(), memcached());
    let p = shardproxy(&pool(&[&a, &b, &c]), &[]);
    let mut k = Bin::new(p.port);
    // Quiet sets of the even keys: no reply at all, then a noop.
    let mut batch = Vec::new();
    for i in (0..1000).step_by(2) {
        batch.extend(set(
            0x11,
            format!("q:{i}").as_bytes(),
            format!("v{i}").as_bytes(),
            i,
        ));
    }
    // A quiet add that fails (exists): its error is sent.
    batch.extend(set(0x12, b"q:0", b"again", 5000));
    batch.extend(packet(0x0a, b"", &[], &[], 9999));
    k.send(&batch);
    let r = k.read();
    assert_eq!((r.opcode, r.status, r.opaque), (0x12, 2, 5000), "{r:?}");
    let r = k.read();
    assert_eq!((r.opcode, r.opaque), (0x0a, 9999));
    // Every key was placed on some server, all three used.
    let per: Vec<usize> = [&a, &b, &c]
        .iter()
        .map(|m| {
            let mut d = support::Conn::new(m.port);
            (0..1000)
                .step_by(2)
                .filter(|i| {
                    d.mc(format!("get q:{i}\r\n").as_bytes())
                        .starts_with(b"VALUE")
                })
                .count()
        })
        .collect();
    assert_eq!(per.iter().sum::<usize>(), 500, "{per:?}");
    assert!(per.iter().all(|&n| n > 50), "{per:?}");
    // getkq for all 1,000, then noop: 500 hits in request order, then noop.
    let mut batch = Vec::new();
    for i in 0..1000u32 {
        batch.extend(packet(0x0d, format!("q:{i}").as_bytes(), &[], &[], i));
    }
    batch.extend(packet(0x0a, b"", &[], &[], 7777));
    k.send(&batch);
    for i in (0..1000u32).step_by(2) {
        let r = k.read();
        assert_eq!((r.opcode, r.status, r.opaque), (0x0d, 0, i), "{r:?}");
        assert_eq!(r.key, format!("q:{i}").into_bytes());
        assert_eq!(r.value, format!("v{i}").into_bytes());
    }
    let r = k.read();
    assert_eq!((r.opcode, r.opaque), (0x0a, 7777));
}

#[test]
fn memjs_through_the_proxy() {
    let (a, b, c) = (memcached(), memcached(), memcached());
    let p = shardproxy(&pool(&[&a, &b, &c]), &[]);
    support::run_node_with("memjs_client.js", &[p.port.to_string()], "memjs");
}

#[test]
fn pylibmc_binary_and_ascii() {
    let (a, b, c) = (memcached(), memcached(), memcached());
    let p = shardproxy(&pool(&[&a, &b, &c]), &[]);
    for mode in ["binary", "ascii"] {
        let out = std::process::Command::new("/usr/bin/python3")
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/clients/pylibmc_client.py"),
            )
            .args([p.port.to_string(), mode.to_string()])
            .output()
            .unwrap_or_else(|e| panic!("python3: {e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("No module named 'pylibmc'"),
            "pylibmc is missing: run scripts/test (it installs python3-pylibmc)"
        );
        assert!(
            out.status.success(),
            "pylibmc {mode}: {}{err}",
            String::from_utf8_lossy(&out.stdout)
        );
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// Reads from `s` until `want` bytes have come (or 10 s pass).
fn read_n(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    while got.len() < want {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend(&chunk[..n]),
        }
    }
    got
}

/// The meta protocol (memcached 1.6's `mg ms md ma mn me`), driven by raw
/// bytes: the proxy answers exactly what one memcached answers — quiet
/// modes, opaques, returned keys, base64 keys, `mn` fences — with the keys
/// spread over three servers.
#[test]
fn meta_commands_answer_as_memcached_does() {
    let (a, b, c) = (memcached(), memcached(), memcached());
    let p = shardproxy(&pool(&[&a, &b, &c]), &[]);
    let direct = memcached();
    let mut script = Vec::new();
    for i in 0..1000 {
        // Quiet sets: nothing comes back for them.
        script.extend(format!("ms meta:{i} 2 q T0 F{i}\r\nv{}\r\n", i % 10).into_bytes());
    }
    script.extend(b"mn\r\n".to_vec());
    for i in 0..1200 {
        // A 1,200-key quiet multi-get with opaques and keys (the last 200
        // miss): the hits only, in order.
        script.extend(format!("mg meta:{i} v f k q O{i}\r\n").into_bytes());
    }
    script.extend(b"mn\r\n".to_vec());
    script.extend(b"mg meta:3 s v\r\nmg missing v\r\nmg missing v q\r\nmn\r\n".to_vec());
    // base64 keys: "meta:5" and an unknown one.
    script.extend(b"mg bWV0YTo1 b v k\r\nmg bm9uZQ== b v\r\n".to_vec());
    script.extend(b"ms meta:9 2 q MR\r\nzz\r\nms nothere 2 q MR\r\nzz\r\nmn\r\n".to_vec());
    script.extend(b"md meta:1 q\r\nmd meta:1 q\r\nmd meta:2\r\nmn\r\n".to_vec());
    script.extend(b"ma cnt q N0 J5\r\nma cnt v\r\nma cnt q v\r\nma nocnt q\r\nmn\r\n".to_vec());
    script.extend(b"me nothere\r\nmn\r\n".to_vec());
    let run = |port: u16| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap_or_else(|e| panic!("{e}"));
        s.write_all(&script).unwrap_or_else(|e| panic!("{e}"));
        // Everything until the reads go quiet.
        read_n(&mut s, usize::MAX)
    };
    let want = run(direct.port);
    let got = run(p.port);
    assert!(
        want.ends_with(b"MN\r\n"),
        "{}",
        String::from_utf8_lossy(&want)
    );
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "the proxy differs from memcached"
    );
    // The keys really are spread: every server holds some.
    for m in [&a, &b, &c] {
        let mut d = support::Conn::new(m.port);
        let n = (0..60)
            .filter(|i| {
                d.mc(format!("get meta:{i}\r\n").as_bytes())
                    .starts_with(b"VALUE")
            })
            .count();
        assert!(n > 5, "{n} keys on {}", m.port);
    }
}
