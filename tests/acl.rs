//! Redis ACL users on both sides: the proxy authenticates to the servers as
//! `redis_username` (the default user disabled there), and clients log in
//! as the pool's `client_users`, a `readonly` one refused writes.

mod support;
use support::{named_pool, redis_with, shardproxy, Conn, Value};

#[test]
fn acl_users_on_both_sides() {
    // A server whose default user is off: only alice gets in.
    let r = redis_with(&[
        "--user", "alice", "on", ">alicepw", "~*", "&*", "+@all", "--user", "default", "off",
    ]);
    let p = shardproxy(
        &named_pool(
            &[&r],
            "  redis_username: alice\n  redis_auth: alicepw\n  client_users:\n    - bob bobpw readonly\n    - carol carolpw readwrite\n",
        ),
        &[],
    );
    // The default user (redis_auth, as nutcracker) and the client users.
    let mut k = Conn::new(p.port);
    assert_eq!(
        k.cmd(&[b"GET", b"k"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(k.cmd(&[b"AUTH", b"alicepw"]), b"+OK\r\n");
    assert_eq!(k.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    // On the server, the proxy is alice.
    let mut d = Conn::new(r.port);
    assert_eq!(d.cmd(&[b"AUTH", b"alice", b"alicepw"]), b"+OK\r\n");
    let list = d.value(&[b"CLIENT", b"LIST"]).text();
    let others: Vec<&str> = list.lines().filter(|l| !l.contains("cmd=client")).collect();
    assert!(
        !others.is_empty() && others.iter().all(|l| l.contains("user=alice")),
        "{list}"
    );
    // bob reads only.
    let mut bob = Conn::new(p.port);
    assert_eq!(bob.cmd(&[b"AUTH", b"bob", b"bobpw"]), b"+OK\r\n");
    assert_eq!(bob.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    assert_eq!(
        bob.cmd(&[b"SET", b"k", b"x"]),
        b"-NOPERM User bob has no permissions to run the 'set' command\r\n"
    );
    assert_eq!(bob.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert!(bob.cmd(&[b"DEL", b"k"]).starts_with(b"-NOPERM"));
    assert!(bob.cmd(&[b"EXEC"]).starts_with(b"-EXECABORT"));
    assert_eq!(bob.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    // carol writes; HELLO 3 AUTH works too.
    let mut carol = Conn::new(p.port);
    let hello = Value::parse(&carol.frame_of(&[b"HELLO", b"3", b"AUTH", b"carol", b"carolpw"]));
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    assert_eq!(carol.frame_of(&[b"SET", b"k", b"c"]), b"+OK\r\n");
    // Wrong credentials: Redis's error, in constant time; the connection stays.
    let mut eve = Conn::new(p.port);
    for (u, pw) in [
        (&b"bob"[..], &b"nope"[..]),
        (b"nobody", b"bobpw"),
        (b"default", b"bobpw"),
    ] {
        assert_eq!(
            eve.cmd(&[b"AUTH", u, pw]),
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        );
    }
    assert_eq!(
        eve.cmd(&[b"GET", b"k"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(eve.cmd(&[b"AUTH", b"default", b"alicepw"]), b"+OK\r\n");
    assert_eq!(eve.cmd(&[b"GET", b"k"]), b"$1\r\nc\r\n");
    // redis-py with a username.
    support::run_python("redis_py_acl.py", &[p.port.to_string()]);
}
