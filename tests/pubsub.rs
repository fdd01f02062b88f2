//! Pub/sub through a 3-server pool of real redis-servers: channels routed
//! like keys, patterns on every server, the client's own counts, RESP2 and
//! RESP3, subscribers that leave and servers that die; raw RESP, redis-py
//! and ioredis.

mod support;
use std::collections::BTreeMap;
use std::time::Duration;
use support::{
    eventually, named_pool, redis, resp, run_node, run_python, shardproxy, Conn, Proc, Value,
};

fn three() -> (Proc, Proc, Proc) {
    (redis(), redis(), redis())
}

fn pool(backends: &[&Proc]) -> impl Fn(u16) -> String {
    named_pool(backends, "  timeout: 2000\n")
}

fn pinned(p: &Proc) -> i64 {
    support::pinned_connections(p)
}

/// The confirmation Redis writes.
fn confirm(push: bool, kind: &str, name: Option<&str>, n: usize) -> Vec<u8> {
    let mut out = if push {
        b">3\r\n".to_vec()
    } else {
        b"*3\r\n".to_vec()
    };
    out.extend(format!("${}\r\n{kind}\r\n", kind.len()).as_bytes());
    match name {
        Some(c) => out.extend(format!("${}\r\n{c}\r\n", c.len()).as_bytes()),
        None if push => out.extend(b"_\r\n"),
        None => out.extend(b"$-1\r\n"),
    }
    out.extend(format!(":{n}\r\n").as_bytes());
    out
}

/// Which backend a channel is subscribed on (by asking each).
fn subscribed_on(backends: &[&Proc], channel: &str) -> Vec<usize> {
    (0..backends.len())
        .filter(|&i| {
            let r = Conn::new(backends[i].port).value(&[b"PUBSUB", b"NUMSUB", channel.as_bytes()]);
            r.items()[1].int() > 0
        })
        .collect()
}

/// Channels, one subscribed on each server (found by subscribing
/// candidates and asking the servers), and their subscriber.
fn one_channel_per_server(p: &Proc, backends: &[&Proc]) -> (Conn, Vec<String>) {
    let mut sub = Conn::new(p.port);
    let mut per: BTreeMap<usize, String> = BTreeMap::new();
    for i in 0..100 {
        let ch = format!("ch{i}");
        let n = per.len() + 1;
        assert_eq!(
            sub.cmd(&[b"SUBSCRIBE", ch.as_bytes()]),
            confirm(false, "subscribe", Some(&ch), n)
        );
        let on = subscribed_on(backends, &ch);
        assert_eq!(on.len(), 1, "{ch} is subscribed on {on:?}");
        match per.entry(on[0]) {
            std::collections::btree_map::Entry::Occupied(_) => assert_eq!(
                sub.cmd(&[b"UNSUBSCRIBE", ch.as_bytes()]),
                confirm(false, "unsubscribe", Some(&ch), n - 1)
            ),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(ch);
            }
        }
        if per.len() == backends.len() {
            return (sub, per.into_values().collect());
        }
    }
    panic!("no channel on some server: {per:?}")
}

#[test]
fn channels_meet_their_publishers_on_every_server() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends), &[]);
    let (mut sub, chans) = one_channel_per_server(&p, &backends);
    let mut publisher = Conn::new(p.port);
    for ch in &chans {
        assert_eq!(
            publisher.cmd(&[b"PUBLISH", ch.as_bytes(), b"hello"]),
            b":1\r\n"
        );
        let want = format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{ch}\r\n$5\r\nhello\r\n",
            ch.len()
        );
        assert_eq!(sub.frame(), want.as_bytes());
    }
    // RESP2 subscribed mode: PING answers as Redis does, other commands are
    // refused, the connection stays.
    assert_eq!(sub.cmd(&[b"PING"]), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(
        sub.cmd(&[b"PING", b"x"]),
        b"*2\r\n$4\r\npong\r\n$1\r\nx\r\n"
    );
    let r = Value::parse(&sub.cmd(&[b"GET", b"k"]));
    assert!(
        matches!(&r, Value::Error(e) if e.starts_with("ERR Can't execute 'get'")),
        "{r:?}"
    );
    // Subscribing again confirms with the same count; unsubscribing one
    // that is not subscribed too.
    assert_eq!(
        sub.cmd(&[b"SUBSCRIBE", chans[0].as_bytes()]),
        confirm(false, "subscribe", Some(&chans[0]), 3)
    );
    assert_eq!(
        sub.cmd(&[b"UNSUBSCRIBE", b"nope"]),
        confirm(false, "unsubscribe", Some("nope"), 3)
    );
    // A pattern on every server: the count goes on from the channels'.
    assert_eq!(
        sub.cmd(&[b"PSUBSCRIBE", b"news.*"]),
        confirm(false, "psubscribe", Some("news.*"), 4)
    );
    for b in &backends {
        assert_eq!(Conn::new(b.port).value(&[b"PUBSUB", b"NUMPAT"]).int(), 1);
    }
    let mut got = 0;
    for i in 0..30 {
        let ch = format!("news.{i}");
        assert_eq!(publisher.cmd(&[b"PUBLISH", ch.as_bytes(), b"n"]), b":1\r\n");
        let r = Value::parse(&sub.frame());
        assert_eq!(r.items()[0].text(), "pmessage");
        assert_eq!(r.items()[2].text(), ch);
        got += 1;
    }
    assert_eq!(got, 30);
    // Sharded channels count apart.
    assert_eq!(
        sub.cmd(&[b"SSUBSCRIBE", b"sh"]),
        confirm(false, "ssubscribe", Some("sh"), 1)
    );
    assert_eq!(publisher.cmd(&[b"SPUBLISH", b"sh", b"s"]), b":1\r\n");
    assert_eq!(
        sub.frame(),
        b"*3\r\n$8\r\nsmessage\r\n$2\r\nsh\r\n$1\r\ns\r\n"
    );
    // UNSUBSCRIBE without arguments: every channel, counts down; then the
    // patterns; the shard channel keeps the client subscribed.
    sub.send(&resp(&[b"UNSUBSCRIBE"]));
    let mut sorted = chans.clone();
    sorted.sort();
    for (i, ch) in sorted.iter().enumerate() {
        assert_eq!(sub.reply(), confirm(false, "unsubscribe", Some(ch), 3 - i));
    }
    assert_eq!(
        sub.cmd(&[b"PUNSUBSCRIBE"]),
        confirm(false, "punsubscribe", Some("news.*"), 0)
    );
    assert_eq!(
        sub.cmd(&[b"PUNSUBSCRIBE"]),
        confirm(false, "punsubscribe", None, 0)
    );
    assert!(sub.cmd(&[b"GET", b"k"]).starts_with(b"-ERR Can't execute"));
    assert_eq!(
        sub.cmd(&[b"SUNSUBSCRIBE"]),
        confirm(false, "sunsubscribe", Some("sh"), 0)
    );
    // Out of subscribed mode: commands run again, the connections go back.
    assert_eq!(sub.cmd(&[b"GET", b"k"]), b"$-1\r\n");
    eventually("the subscribed connections are released", || {
        pinned(&p) == 0
    });
    for ch in &chans {
        assert_eq!(publisher.cmd(&[b"PUBLISH", ch.as_bytes(), b"x"]), b":0\r\n");
    }
}

#[test]
fn a_thousand_messages_per_channel_in_order_resp2_and_resp3() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends), &[]);
    for resp3 in [false, true] {
        let (mut sub, chans) = one_channel_per_server(&p, &backends);
        if resp3 {
            // Switching protocols needs no pinned connection: start over.
            drop(sub);
            sub = Conn::new(p.port);
            let hello = Value::parse(&sub.frame_of(&[b"HELLO", b"3"]));
            assert!(matches!(hello, Value::Map(_)), "{hello:?}");
            for (i, ch) in chans.iter().enumerate() {
                sub.send(&resp(&[b"SUBSCRIBE", ch.as_bytes()]));
                assert_eq!(sub.frame(), confirm(true, "subscribe", Some(ch), i + 1));
            }
            // RESP3: other commands run while subscribed.
            assert_eq!(sub.frame_of(&[b"SET", b"k", b"v"]), b"+OK\r\n");
        }
        let mut publisher = Conn::new(p.port);
        let mut wire = Vec::new();
        for i in 0..1000 {
            for ch in &chans {
                wire.extend(resp(&[b"PUBLISH", ch.as_bytes(), i.to_string().as_bytes()]));
            }
        }
        publisher.send(&wire);
        for _ in 0..3000 {
            assert_eq!(publisher.reply(), b":1\r\n");
        }
        let mut next: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..3000 {
            let f = sub.frame();
            assert_eq!(f[0], if resp3 { b'>' } else { b'*' });
            let r = Value::parse(&f);
            let (ch, n) = (r.items()[1].text(), r.items()[2].text());
            let want = next.entry(ch.clone()).or_default();
            assert_eq!(n, want.to_string(), "{ch}: out of order");
            *want += 1;
        }
        assert!(next.values().all(|&n| n == 1000), "{next:?}");
        if resp3 {
            assert_eq!(sub.frame_of(&[b"GET", b"k"]), b"$1\r\nv\r\n");
        }
    }
}

#[test]
fn a_subscriber_that_leaves_is_unsubscribed_everywhere() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends), &[]);
    let (mut sub, chans) = one_channel_per_server(&p, &backends);
    assert_eq!(
        sub.cmd(&[b"PSUBSCRIBE", b"p*"]),
        confirm(false, "psubscribe", Some("p*"), 4)
    );
    assert_eq!(pinned(&p), 3);
    drop(sub);
    eventually("the servers forget the subscriber", || {
        chans
            .iter()
            .all(|ch| subscribed_on(&backends, ch).is_empty())
            && backends
                .iter()
                .all(|b| Conn::new(b.port).value(&[b"PUBSUB", b"NUMPAT"]).int() == 0)
    });
    eventually("no pinned connection left", || pinned(&p) == 0);
}

#[test]
fn a_server_that_dies_ends_the_subscription_with_an_error() {
    let (a, b) = (redis(), redis());
    let p = shardproxy(&pool(&[&a]), &[]);
    let _other = b;
    let mut sub = Conn::new(p.port);
    assert_eq!(
        sub.cmd(&[b"SUBSCRIBE", b"ch"]),
        confirm(false, "subscribe", Some("ch"), 1)
    );
    drop(a);
    let r = Value::parse(&sub.frame());
    assert!(
        matches!(&r, Value::Error(e) if e.contains("subscriptions ended")),
        "{r:?}"
    );
    assert!(sub.closed(), "the subscriber's connection stays open");
    eventually("no pinned connection left", || pinned(&p) == 0);
}

#[test]
fn redis_py_and_ioredis_subscribers() {
    let (a, b, c) = three();
    let backends = [&a, &b, &c];
    let p = shardproxy(&pool(&backends), &[]);
    let port = p.port.to_string();
    run_python("redis_py_pubsub.py", &[port.clone(), "2".into()]);
    run_python("redis_py_pubsub.py", &[port.clone(), "3".into()]);
    run_node("ioredis_pubsub.js", &[port]);
    std::thread::sleep(Duration::from_millis(100));
    eventually("no pinned connection left", || pinned(&p) == 0);
}

/// A subscriber that stops reading is disconnected once `--client-buffer`
/// bytes of messages wait for it, with the reason in the log; the proxy's
/// memory does not grow with what it does not read.
#[test]
fn a_subscriber_that_does_not_read_is_dropped_with_a_reason() {
    let a = redis();
    let p = shardproxy(&pool(&[&a]), &["--client-buffer", "65536"]);
    let mut sub = Conn::new(p.port);
    assert_eq!(
        sub.cmd(&[b"SUBSCRIBE", b"slow"]),
        confirm(false, "subscribe", Some("slow"), 1)
    );
    let mut publisher = Conn::new(p.port);
    let msg = vec![b'm'; 4096];
    let mut batch = Vec::new();
    for _ in 0..100 {
        batch.extend(resp(&[b"PUBLISH", b"slow", &msg]));
    }
    // Up to 40 MB, until the proxy lets the subscriber go.
    let mut sent = 0;
    while pinned(&p) > 0 {
        assert!(sent < 100, "the subscriber was never dropped");
        publisher.send(&batch);
        for _ in 0..100 {
            let r = publisher.reply();
            assert!(r == b":1\r\n" || r == b":0\r\n", "{r:?}");
        }
        sent += 1;
    }
    println!(
        "dropped after {} MB published",
        sent * 100 * 4096 / 1_000_000
    );
    eventually("the reason is logged", || {
        p.log().contains("closing the subscriber connection")
    });
    // The subscriber reads what was written to it, then the end.
    sub.s
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match std::io::Read::read(&mut sub.s, &mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("the subscriber's connection was not closed: {e}"),
        }
    }
    assert!(
        total < sent * 100 * 4200,
        "{total} bytes: nothing was dropped"
    );
}
