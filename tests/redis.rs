//! The redis data path against real redis-server backends.

mod support;
use support::{redis, resp, servers, shardproxy, Conn, Proc};

fn pool(backends: &[&Proc], extra: &str) -> impl Fn(u16) -> String {
    let s = servers(backends);
    let extra = extra.to_string();
    move |port| {
        format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 5000\n{extra}  servers:\n{s}")
    }
}

fn three() -> (Proc, Proc, Proc) {
    (redis(), redis(), redis())
}

#[test]
fn command_groups_route_and_reply() {
    let (a, b, c) = three();
    for threads in ["1", "2"] {
        let p = shardproxy(&pool(&[&a, &b, &c], ""), &["--threads", threads]);
        let mut k = Conn::new(p.port);
        assert_eq!(k.cmd(&[b"SET", b"s", b"v"]), b"+OK\r\n");
        assert_eq!(k.cmd(&[b"get", b"s"]), b"$1\r\nv\r\n");
        assert_eq!(k.cmd(&[b"GET", b"nosuch"]), b"$-1\r\n");
        assert_eq!(k.cmd(&[b"INCRBY", b"n", b"5"]), b":5\r\n");
        assert_eq!(k.cmd(&[b"HSET", b"h", b"f", b"1"]), b":1\r\n");
        assert_eq!(k.cmd(&[b"HGETALL", b"h"]), b"*2\r\n$1\r\nf\r\n$1\r\n1\r\n");
        assert_eq!(k.cmd(&[b"RPUSH", b"l", b"x", b"y"]), b":2\r\n");
        assert_eq!(
            k.cmd(&[b"LRANGE", b"l", b"0", b"-1"]),
            b"*2\r\n$1\r\nx\r\n$1\r\ny\r\n"
        );
        assert_eq!(k.cmd(&[b"SADD", b"st", b"m"]), b":1\r\n");
        assert_eq!(k.cmd(&[b"ZADD", b"z", b"1", b"m"]), b":1\r\n");
        assert_eq!(
            k.cmd(&[b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"]),
            b"*2\r\n$1\r\nm\r\n$1\r\n1\r\n"
        );
        assert_eq!(k.cmd(&[b"PFADD", b"hll", b"a"]), b":1\r\n");
        assert_eq!(
            k.cmd(&[b"EVAL", b"return KEYS[1]", b"1", b"ek"]),
            b"$2\r\nek\r\n"
        );
        assert_eq!(k.cmd(&[b"EXPIRE", b"s", b"100"]), b":1\r\n");
        assert_eq!(k.cmd(&[b"LPUSH", b"s", b"x"])[..10], b"-WRONGTYPE"[..]);
        assert_eq!(
            k.cmd(&[b"DEL", b"s", b"n", b"h", b"l", b"st", b"z", b"hll", b"nosuch"]),
            b":7\r\n"
        );
    }
}

#[test]
fn local_commands_and_errors_keep_the_connection() {
    let (a, b, c) = three();
    let p = shardproxy(&pool(&[&a, &b, &c], ""), &[]);
    let mut k = Conn::new(p.port);
    // Pipelined: every reply arrives, in order, the errors included.
    // (HELLO 4: no such protocol.)
    let mut wire = resp(&[b"SET", b"k", b"1"]);
    wire.extend(resp(&[b"NOSUCH", b"a", b"b"]));
    wire.extend(resp(&[b"GET"]));
    wire.extend(resp(&[b"GET", b"k"]));
    wire.extend(b"PING\r\n");
    wire.extend(resp(&[b"PING", b"hi"]));
    wire.extend(resp(&[b"ECHO", b"e"]));
    wire.extend(resp(&[b"SELECT", b"0"]));
    wire.extend(resp(&[b"SELECT", b"1"]));
    wire.extend(resp(&[b"CLIENT", b"SETNAME", b"x"]));
    wire.extend(resp(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"x"]));
    wire.extend(resp(&[b"HELLO", b"4"]));
    wire.extend(resp(&[b"AUTH", b"x"]));
    wire.extend(resp(&[b"EVAL", b"return 1", b"0"]));
    k.send(&wire);
    assert_eq!(k.reply(), b"+OK\r\n");
    assert_eq!(
        k.reply(),
        b"-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n"
    );
    assert_eq!(
        k.reply(),
        b"-ERR wrong number of arguments for 'get' command\r\n"
    );
    assert_eq!(k.reply(), b"$1\r\n1\r\n");
    assert_eq!(k.reply(), b"+PONG\r\n");
    assert_eq!(k.reply(), b"$2\r\nhi\r\n");
    assert_eq!(k.reply(), b"$1\r\ne\r\n");
    assert_eq!(k.reply(), b"+OK\r\n");
    assert!(k.reply().starts_with(b"-ERR this pool uses db 0"));
    assert_eq!(k.reply(), b"+OK\r\n");
    assert_eq!(k.reply(), b"+OK\r\n");
    assert!(k.reply().starts_with(b"-NOPROTO"));
    assert_eq!(
        k.reply(),
        b"-ERR Client sent AUTH, but no password is set\r\n"
    );
    let r = k.reply();
    assert!(
        r.starts_with(b"-ERR EVAL with no keys cannot be routed by the proxy"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    // QUIT: +OK, then close after earlier replies.
    k.send(
        &[
            resp(&[b"GET", b"k"]),
            resp(&[b"QUIT"]),
            resp(&[b"GET", b"k"]),
        ]
        .concat(),
    );
    assert_eq!(k.reply(), b"$1\r\n1\r\n");
    assert_eq!(k.reply(), b"+OK\r\n");
    assert!(k.closed());
    // A framing error: error reply, then close; earlier replies delivered.
    let mut k = Conn::new(p.port);
    k.send(&[resp(&[b"GET", b"k"]), b"*1\r\n$x\r\n".to_vec()].concat());
    assert_eq!(k.reply(), b"$1\r\n1\r\n");
    assert_eq!(k.reply(), b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(k.closed());
}

#[test]
fn multi_key_commands_span_servers_in_key_order() {
    let (a, b, c) = three();
    // murmur spreads similar keys; the default fnv1a_64 clusters them (spec §4.2).
    let p = shardproxy(&pool(&[&a, &b, &c], "  hash: murmur\n"), &[]);
    let mut k = Conn::new(p.port);
    let keys: Vec<String> = (0..60).map(|i| format!("key-{i}")).collect();
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    for key in &keys {
        mset.push(key.as_bytes());
        mset.push(key.as_bytes());
    }
    assert_eq!(k.cmd(&mset), b"+OK\r\n");
    // The keys really are spread over all three backends.
    for be in [&a, &b, &c] {
        let n = Conn::new(be.port).cmd(&[b"DBSIZE"]);
        assert_ne!(n, b":0\r\n", "backend {} got no key", be.port);
    }
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(keys.iter().map(|k| k.as_bytes()));
    mget.extend([&b"nosuch"[..], b"key-0", b"key-59"]);
    let mut want = format!("*{}\r\n", keys.len() + 3).into_bytes();
    for key in &keys {
        want.extend(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    want.extend(b"$-1\r\n$5\r\nkey-0\r\n$6\r\nkey-59\r\n");
    assert_eq!(k.cmd(&mget), want);
    assert_eq!(
        k.cmd(&[b"EXISTS", b"key-1", b"key-2", b"key-1", b"nosuch"]),
        b":3\r\n"
    );
    assert_eq!(k.cmd(&[b"TOUCH", b"key-1", b"key-2", b"nosuch"]), b":2\r\n");
    assert_eq!(k.cmd(&[b"UNLINK", b"key-1", b"key-2"]), b":2\r\n");
    assert_eq!(
        k.cmd(&[b"DEL", b"key-3", b"key-4", b"key-3", b"nosuch"]),
        b":2\r\n"
    );
    assert_eq!(
        k.cmd(&[b"MSET", b"a", b"1", b"b"]),
        b"-ERR wrong number of arguments for 'mset' command\r\n"
    );
    // A 10,000-key MGET.
    let big: Vec<String> = (0..10_000).map(|i| format!("key-{}", i % 60)).collect();
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(big.iter().map(|k| k.as_bytes()));
    let r = k.cmd(&mget);
    let mut want = b"*10000\r\n".to_vec();
    for key in &big {
        let n = key.trim_start_matches("key-").parse::<usize>().unwrap_or(0);
        want.extend(
            if n == 1 || n == 2 || n == 3 || n == 4 {
                "$-1\r\n".to_string()
            } else {
                format!("${}\r\n{key}\r\n", key.len())
            }
            .as_bytes(),
        );
    }
    assert_eq!(r, want);
}

#[test]
fn pipelines_bytes_at_a_time_big_values_and_binary_keys() {
    let (a, b, c) = three();
    let p = shardproxy(&pool(&[&a, &b, &c], ""), &[]);
    let mut k = Conn::new(p.port);
    // 10,000 pipelined commands in one write.
    let mut wire = Vec::new();
    for i in 0..10_000 {
        wire.extend(resp(&[
            b"SET",
            format!("p{i}").as_bytes(),
            format!("{i}").as_bytes(),
        ]));
    }
    k.send(&wire);
    for _ in 0..10_000 {
        assert_eq!(k.reply(), b"+OK\r\n");
    }
    let mut wire = Vec::new();
    for i in 0..10_000 {
        wire.extend(resp(&[b"GET", format!("p{i}").as_bytes()]));
    }
    k.send(&wire);
    for i in 0..10_000 {
        let v = format!("{i}");
        assert_eq!(k.reply(), format!("${}\r\n{v}\r\n", v.len()).into_bytes());
    }
    // One byte at a time.
    for byte in resp(&[b"SET", b"slow", b"value"])
        .iter()
        .chain(resp(&[b"GET", b"slow"]).iter())
    {
        k.send(&[*byte]);
    }
    assert_eq!(k.reply(), b"+OK\r\n");
    assert_eq!(k.reply(), b"$5\r\nvalue\r\n");
    // Binary keys and values.
    let key: Vec<u8> = (0..=255u8).collect();
    assert_eq!(k.cmd(&[b"SET", &key, b"\r\n\x00"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"GET", &key]), b"$3\r\n\r\n\x00\r\n");
    // A 100 MB value.
    let big = vec![b'x'; 100 * 1024 * 1024];
    assert_eq!(k.cmd(&[b"SET", b"big", &big]), b"+OK\r\n");
    let r = k.cmd(&[b"GET", b"big"]);
    assert_eq!(r.len(), big.len() + 14);
    assert!(r.starts_with(b"$104857600\r\nxxx"));
    assert_eq!(k.cmd(&[b"DEL", b"big"]), b":1\r\n");
}

#[test]
fn five_hundred_concurrent_clients() {
    let (a, b, c) = three();
    let p = shardproxy(&pool(&[&a, &b, &c], ""), &["--threads", "2"]);
    let mut conns: Vec<Conn> = (0..500).map(|_| Conn::new(p.port)).collect();
    for (i, k) in conns.iter_mut().enumerate() {
        k.send(
            &[
                resp(&[
                    b"SET",
                    format!("c{i}").as_bytes(),
                    format!("v{i}").as_bytes(),
                ]),
                resp(&[b"GET", format!("c{i}").as_bytes()]),
            ]
            .concat(),
        );
    }
    for (i, k) in conns.iter_mut().enumerate() {
        assert_eq!(k.reply(), b"+OK\r\n");
        let v = format!("v{i}");
        assert_eq!(k.reply(), format!("${}\r\n{v}\r\n", v.len()).into_bytes());
    }
}

#[test]
fn auth_and_db() {
    let a = redis_with_pass();
    let p = shardproxy(&pool(&[&a], "  redis_auth: s3cret\n  redis_db: 3\n"), &[]);
    let mut k = Conn::new(p.port);
    assert_eq!(
        k.cmd(&[b"GET", b"x"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(k.cmd(&[b"PING"]), b"-NOAUTH Authentication required.\r\n");
    assert_eq!(k.cmd(&[b"AUTH", b"wrong"]), b"-ERR invalid password\r\n");
    assert_eq!(k.cmd(&[b"AUTH", b"s3cret"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"SET", b"x", b"in-db-3"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"SELECT", b"3"]), b"+OK\r\n");
    // AUTH before SELECT on the backend: the key is in db 3 (nutcracker: db 0).
    let mut d = Conn::new(a.port);
    assert_eq!(d.cmd(&[b"AUTH", b"s3cret"]), b"+OK\r\n");
    assert_eq!(d.cmd(&[b"GET", b"x"]), b"$-1\r\n");
    assert_eq!(d.cmd(&[b"SELECT", b"3"]), b"+OK\r\n");
    assert_eq!(d.cmd(&[b"GET", b"x"]), b"$7\r\nin-db-3\r\n");
    assert_eq!(k.cmd(&[b"AUTH", b"wrong"]), b"-ERR invalid password\r\n");
    assert_eq!(
        k.cmd(&[b"GET", b"x"]),
        b"-NOAUTH Authentication required.\r\n"
    );
}

fn redis_with_pass() -> Proc {
    support::redis_with(&["--requirepass", "s3cret"])
}

#[test]
fn client_connections_limit_answers_then_closes() {
    let a = redis();
    let p = shardproxy(&pool(&[&a], "  client_connections: 2\n"), &[]);
    // Let the harness's readiness probe connection be closed and uncounted.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut one = Conn::new(p.port);
    let mut two = Conn::new(p.port);
    assert_eq!(one.cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(two.cmd(&[b"PING"]), b"+PONG\r\n");
    let mut three = Conn::new(p.port);
    assert_eq!(three.reply(), b"-ERR max number of clients reached\r\n");
    assert!(three.closed());
    drop(one);
    drop(three);
    // The freed slot is reused once the proxy has seen the close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut four = Conn::new(p.port);
        let r = four.cmd(&[b"PING"]);
        if r == b"+PONG\r\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot never freed: {}",
            String::from_utf8_lossy(&r)
        );
    }
}

#[test]
fn server_name_routing_by_prefix_and_tag() {
    let (a, b) = (redis(), redis());
    let yaml = |port: u16| {
        format!(
            "named:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: server_name\n  distribution: server_name\n  hash_tag: \"{{}}\"\n  servers:\n   - 127.0.0.1:{}:1 r1\n   - 127.0.0.1:{}:1 r2\n   - 127.0.0.1:{}:1 r3\n",
            a.port, b.port, b.port
        )
    };
    let p = shardproxy(&yaml, &[]);
    let mut k = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"SET", b"r1:user:1", b"a"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"SET", b"{r2}user:2", b"b"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"SET", b"r3", b"c"]), b"+OK\r\n");
    assert_eq!(
        k.cmd(&[b"SET", b"r9:x", b"d"]),
        b"-ERR no server named 'r9' in pool 'named'\r\n"
    );
    assert_eq!(
        k.cmd(&[b"GET", b"nocolon"]),
        b"-ERR no server named 'nocolon' in pool 'named'\r\n"
    );
    assert_eq!(
        Conn::new(a.port).cmd(&[b"GET", b"r1:user:1"]),
        b"$1\r\na\r\n"
    );
    assert_eq!(
        Conn::new(b.port).cmd(&[b"GET", b"{r2}user:2"]),
        b"$1\r\nb\r\n"
    );
    assert_eq!(Conn::new(b.port).cmd(&[b"GET", b"r3"]), b"$1\r\nc\r\n");
    assert_eq!(
        k.cmd(&[b"MGET", b"r1:user:1", b"{r2}user:2", b"r3"]),
        b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
    );
    assert_eq!(
        k.cmd(&[b"MGET", b"r1:user:1", b"r7:nope"]),
        b"-ERR no server named 'r7' in pool 'named'\r\n"
    );
    assert_eq!(k.cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn hello_3_switches_the_client_to_resp3() {
    let (a, b, c) = three();
    let p = shardproxy(
        &pool(&[&a, &b, &c], "  hash: murmur\n  redis_auth: pw\n"),
        &[],
    );
    let mut k = Conn::new(p.port);
    assert!(k.cmd(&[b"HELLO", b"3"]).starts_with(b"-NOAUTH"));
    assert!(k
        .cmd(&[b"HELLO", b"3", b"AUTH", b"default", b"bad"])
        .starts_with(b"-WRONGPASS"));
    let hello = k.cmd(&[b"HELLO", b"3", b"AUTH", b"default", b"pw", b"SETNAME", b"n"]);
    assert!(hello.starts_with(b"%7\r\n$6\r\nserver\r\n"), "{hello:?}");
    assert!(hello.windows(15).any(|w| w == b"$5\r\nproto\r\n:3\r\n"));
    // Replies keep their RESP3 types, across fragments too.
    assert_eq!(k.cmd(&[b"HSET", b"h", b"f", b"v"]), b":1\r\n");
    assert_eq!(k.cmd(&[b"HGETALL", b"h"]), b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
    assert_eq!(k.cmd(&[b"GET", b"nosuch"]), b"_\r\n");
    assert_eq!(
        k.cmd(&[b"MSET", b"a", b"1", b"b", b"2", b"c", b"3"]),
        b"+OK\r\n"
    );
    assert_eq!(
        k.cmd(&[b"MGET", b"a", b"nosuch", b"b", b"c", b"x"]),
        b"*5\r\n$1\r\n1\r\n_\r\n$1\r\n2\r\n$1\r\n3\r\n_\r\n"
    );
    // A plain client of the same pool still gets RESP2.
    let mut old = Conn::new(p.port);
    assert_eq!(old.cmd(&[b"AUTH", b"pw"]), b"+OK\r\n");
    assert_eq!(
        old.cmd(&[b"HGETALL", b"h"]),
        b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    assert_eq!(old.cmd(&[b"GET", b"nosuch"]), b"$-1\r\n");
    // HELLO 2 switches back.
    assert!(k.cmd(&[b"HELLO", b"2"]).starts_with(b"*14\r\n"));
    assert_eq!(k.cmd(&[b"GET", b"nosuch"]), b"$-1\r\n");
}

#[test]
fn transient_errors_fail_like_nutcracker_and_the_connection_recovers() {
    // -OOM: a backend over its maxmemory refuses writes.
    let r = support::redis_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let p = shardproxy(&pool(&[&r], ""), &[]);
    let mut direct = Conn::new(r.port);
    let chunk = vec![b'x'; 64 * 1024];
    let full = (0..200).any(|i| {
        let key = format!("fill{i}");
        direct
            .cmd(&[b"SET", key.as_bytes(), &chunk])
            .starts_with(b"-OOM")
    });
    assert!(full, "the backend never reached maxmemory");
    assert!(direct.cmd(&[b"SET", b"k", &chunk]).starts_with(b"-OOM"));
    let mut k = Conn::new(p.port);
    // Not forwarded (spec §5.3): the server connection is closed and every
    // request on it fails with -ERR Invalid argument, the pipelined GET too.
    k.send(&[resp(&[b"SET", b"k", &chunk]), resp(&[b"STRLEN", b"fill0"])].concat());
    assert_eq!(k.reply(), b"-ERR Invalid argument\r\n");
    let second = k.reply();
    assert!(
        second == b"-ERR Invalid argument\r\n" || second == b":65536\r\n",
        "{second:?}"
    );
    // The next request opens a new connection and is served.
    assert_eq!(k.cmd(&[b"STRLEN", b"fill0"]), b":65536\r\n");

    // -BUSY: a script running past busy-reply-threshold.
    let r = support::redis_with(&["--busy-reply-threshold", "50"]);
    let p = shardproxy(&pool(&[&r], ""), &[]);
    let mut direct = Conn::new(r.port);
    direct.send(&resp(&[b"EVAL", b"while true do end", b"0"]));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut k = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"GET", b"k"]), b"-ERR Invalid argument\r\n");
    let mut killer = Conn::new(r.port);
    assert_eq!(killer.cmd(&[b"SCRIPT", b"KILL"]), b"+OK\r\n");
    assert!(direct.reply().starts_with(b"-"), "the script was killed");
    assert_eq!(k.cmd(&[b"GET", b"k"]), b"$-1\r\n");
}

#[test]
fn a_fragment_error_reply_is_passed_on() {
    // Backends that want a password the pool does not send: every fragment
    // answers -NOAUTH, and the client sees that reply, not "Invalid argument".
    let (a, b) = (
        support::redis_with(&["--requirepass", "pw"]),
        support::redis_with(&["--requirepass", "pw"]),
    );
    let p = shardproxy(&pool(&[&a, &b], "  hash: murmur\n"), &[]);
    let mut k = Conn::new(p.port);
    let r = k.cmd(&[b"MGET", b"a", b"b", b"c", b"d", b"e"]);
    assert!(r.starts_with(b"-NOAUTH"), "{}", String::from_utf8_lossy(&r));
    assert_eq!(k.cmd(&[b"PING"]), b"+PONG\r\n");
}
