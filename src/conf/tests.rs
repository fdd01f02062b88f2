use super::*;

fn ok(text: &str) -> Conf {
    Conf::parse("t.yml", text).unwrap_or_else(|e| panic!("rejected: {e}"))
}

fn bad(text: &str) -> String {
    match Conf::parse("t.yml", text) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_nutcracker_defaults() {
    let c = ok("a:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n");
    let p = &c.pools[0];
    assert_eq!(p.hash, HashFn::Fnv1a_64);
    assert_eq!(p.distribution.name, "ketama");
    assert_eq!(p.timeout, None);
    assert_eq!(p.backlog, 512);
    assert!(!p.redis && !p.preconnect && !p.auto_eject_hosts && !p.tcpkeepalive && !p.reuseport);
    assert_eq!(p.server_connections, 1);
    assert_eq!(p.server_retry_timeout, Duration::from_millis(30_000));
    assert_eq!(p.server_failure_limit, 2);
    assert_eq!(p.redis_db, 0);
    assert_eq!(p.hash_tag, None);
}

#[test]
fn every_key_is_applied() {
    let c = ok("a:
  listen: /tmp/sp.sock 0600
  hash: murmur
  hash_tag: \"{}\"
  distribution: modula
  timeout: 400
  backlog: 1024
  client_connections: 100
  redis: true
  redis_auth: secret
  redis_db: 3
  preconnect: true
  auto_eject_hosts: true
  server_connections: 4
  server_retry_timeout: 2000
  server_failure_limit: 3
  tcpkeepalive: true
  reuseport: true
  servers:
   - 127.0.0.1:6379:1
");
    let p = &c.pools[0];
    assert_eq!(
        p.listen,
        Listen::Unix {
            path: "/tmp/sp.sock".into(),
            perm: Some(0o600)
        }
    );
    assert_eq!(p.hash, HashFn::Murmur);
    assert_eq!(p.hash_tag, Some(*b"{}"));
    assert_eq!(p.distribution.name, "modula");
    assert_eq!(p.timeout, Some(Duration::from_millis(400)));
    assert_eq!(
        (
            p.backlog,
            p.client_connections,
            p.redis_db,
            p.server_connections,
            p.server_failure_limit
        ),
        (1024, 100, 3, 4, 3)
    );
    assert!(p.redis && p.preconnect && p.auto_eject_hosts && p.tcpkeepalive && p.reuseport);
    assert_eq!(p.redis_auth.as_deref(), Some("secret"));
    assert_eq!(p.server_retry_timeout, Duration::from_millis(2000));
}

#[test]
fn pools_and_servers_sort_by_length_then_bytes() {
    let c = ok("gamma:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:16379:1\n   - 127.0.0.1:16380:1 beta_node\n\
                alpha:\n  listen: 127.0.0.1:2\n  servers:\n   - h:1:1\n\
                zeta:\n  listen: 127.0.0.1:3\n  servers:\n   - h:1:1\n");
    let names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "gamma"]);
    let servers: Vec<&str> = c.pools[2].servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(servers, ["beta_node", "127.0.0.1:16379"]);
}

#[test]
fn timeout_zero_means_none() {
    let c = ok("a:\n  listen: 127.0.0.1:1\n  timeout: 0\n  servers:\n   - h:1:1\n");
    assert_eq!(c.pools[0].timeout, None);
}

#[test]
fn a_sequence_under_another_key_feeds_its_setter() {
    // nutcracker's quirk: `hash:` followed by `- md5` works.
    let c = ok("a:\n  listen: 127.0.0.1:1\n  servers: h:1:1\n  hash:\n   - md5\n");
    assert_eq!(c.pools[0].hash, HashFn::Md5);
    assert!(
        bad("a:\n  listen: 127.0.0.1:1\n  servers: h:1:1\n  hash: md5\n")
            .contains("no \"servers:\" list")
    );
}

#[test]
fn errors_name_file_line_pool_key_and_value() {
    assert_eq!(
        bad("alpha:\n  listen: 127.0.0.1:1\n  timeout: abc\n  servers:\n   - h:1:1\n"),
        "t.yml:3: pool \"alpha\": timeout: \"abc\" is not a number (expected decimal digits only)"
    );
    let m = bad("alpha:\n  listen: 127.0.0.1:1\n  Listen: x\n  servers:\n   - h:1:1\n");
    assert!(
        m.starts_with("t.yml:3: pool \"alpha\": Listen: unknown key"),
        "{m}"
    );
    let m = bad("alpha:\n  listen: 127.0.0.1:1\n  servers:\n   - h:1:1\n   - h:1:2\n");
    assert!(
        m.starts_with("t.yml:5: pool \"alpha\": servers: \"h:1:2\" has the same name \"h:1\""),
        "{m}"
    );
    let m = bad("alpha:\n  listen: 127.0.0.1:1\n  redis_auth: x\n  servers:\n   - h:1:1\n");
    assert!(
        m.contains("redis_auth: is only valid for a redis pool"),
        "{m}"
    );
    let m = bad("a:\n  listen: 127.0.0.1:1\n  servers:\n   - h:1:1\nb:\n  listen: 127.0.0.1:1\n  servers:\n   - h:1:1\n");
    assert!(
        m.contains(
            "pool \"b\": listen: \"127.0.0.1:1\" is already the listen address of pool \"a\""
        ),
        "{m}"
    );
    let m = bad("a:\n  listen: 127.0.0.1:1\n  servers:\n   - h:1:1\na:\n  listen: 127.0.0.1:2\n  servers:\n   - h:1:1\n");
    assert!(
        m.contains("t.yml:5: pool \"a\": a pool with this name is already defined"),
        "{m}"
    );
    let m = bad("a:\n  servers:\n   - h:1:1\n");
    assert!(m.contains("\"listen:\" key is missing"), "{m}");
    let m = bad("a:\n  listen: 127.0.0.1:1\n  server_connections: 0\n  servers:\n   - h:1:1\n");
    assert!(
        m.contains("t.yml:3: pool \"a\": server_connections: cannot be 0"),
        "{m}"
    );
    let m = bad("a:\n  listen: 127.0.0.1:1\n  redis: yes\n  servers:\n   - h:1:1\n");
    assert!(
        m.contains("redis: \"yes\" is not \"true\" or \"false\""),
        "{m}"
    );
    let m = bad("a:\n  listen: 127.0.0.1:1\n  hash:\n  servers:\n   - h:1:1\n");
    assert!(m.contains("hash: has no value"), "{m}");
    let m = bad("a:\n  listen: 127.0.0.1:1\n  timeout: 99999999999\n  servers:\n   - h:1:1\n");
    assert!(m.contains("too large"), "{m}");
}

#[test]
fn server_name_strategy_rules() {
    let six = "  servers:\n   - 127.0.0.1:6379:1 r1\n   - 127.0.0.1:6379:1 r2\n   - 127.0.0.1:6380:1 r3\n";
    let c = ok(&format!(
        "a:\n  listen: 127.0.0.1:1\n  hash: server_name\n  distribution: server_name\n{six}"
    ));
    assert_eq!(c.pools[0].distribution.name, "server_name");
    ok(&format!(
        "a:\n  listen: 127.0.0.1:1\n  distribution: server_name\n{six}"
    ));
    let m = bad(&format!(
        "a:\n  listen: 127.0.0.1:1\n  hash: md5\n  distribution: server_name\n{six}"
    ));
    assert!(
        m.contains("hash: \"md5\" cannot be used with distribution server_name"),
        "{m}"
    );
    let m = bad(&format!(
        "a:\n  listen: 127.0.0.1:1\n  hash: server_name\n  distribution: ketama\n{six}"
    ));
    assert!(
        m.contains("hash: \"server_name\" only works with \"distribution: server_name\""),
        "{m}"
    );
    let m = bad(&format!(
        "a:\n  listen: 127.0.0.1:1\n  hash: server_name\n{six}"
    ));
    assert!(m.contains("only works with"), "{m}");
    let m = bad("a:\n  listen: 127.0.0.1:1\n  distribution: server_name\n  servers:\n   - 127.0.0.1:6379:1 r1\n   - 127.0.0.1:6380:1\n");
    assert!(m.contains("has no name"), "{m}");
}

#[test]
fn acl_users() {
    let ok = "p:\n  listen: 127.0.0.1:1\n  redis: true\n  redis_username: alice\n  redis_auth: pw\n  client_users:\n    - bob b readonly\n    - carol c readwrite\n  servers:\n    - 127.0.0.1:2:1\n";
    let c = Conf::parse("t.yml", ok).unwrap_or_else(|e| panic!("{e}"));
    let p = &c.pools[0];
    assert_eq!(p.redis_username.as_deref(), Some("alice"));
    assert_eq!(p.client_users.len(), 2);
    assert!(p.client_users[0].readonly && !p.client_users[1].readonly);
    for (bad, why) in [
        (
            ok.replace("bob b readonly", "bob b sometimes"),
            "not a mode",
        ),
        (
            ok.replace("bob b readonly", "bob"),
            "expected \"name password",
        ),
        (ok.replace("carol c", "bob c"), "listed twice"),
        (
            ok.replace("  redis_auth: pw\n", ""),
            "needs \"redis_auth:\"",
        ),
        (
            ok.replace("  redis: true\n", "")
                .replace("  redis_username: alice\n  redis_auth: pw\n", ""),
            "only valid for a redis pool",
        ),
    ] {
        let e = match Conf::parse("t.yml", &bad) {
            Ok(_) => panic!("{why}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(why), "{why}: {e}");
    }
}

#[test]
fn replica_reads() {
    let ok = "p:\n  listen: 127.0.0.1:1\n  redis: true\n  read_from: prefer_replica\n  replica_max_lag: 3\n  servers:\n    - 127.0.0.1:2:1 m1\n  sentinels:\n    - 127.0.0.1:26379:1\n";
    let c = Conf::parse("t.yml", ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.pools[0].read_from, super::ReadFrom::PreferReplica);
    assert_eq!(c.pools[0].replica_max_lag, Duration::from_secs(3));
    let plain = Conf::parse(
        "t.yml",
        &ok.replace("  read_from: prefer_replica\n  replica_max_lag: 3\n", ""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plain.pools[0].read_from, super::ReadFrom::Master);
    assert_eq!(plain.pools[0].replica_max_lag, Duration::from_secs(10));
    for (bad, why) in [
        (
            ok.replace("prefer_replica", "nearest"),
            "expected master, prefer_replica or replica",
        ),
        (
            ok.replace("  sentinels:\n    - 127.0.0.1:26379:1\n", ""),
            "needs \"sentinels:\"",
        ),
        (
            ok.replace("replica_max_lag: 3", "replica_max_lag: soon"),
            "replica_max_lag",
        ),
    ] {
        let e = match Conf::parse("t.yml", &bad) {
            Ok(_) => panic!("{why}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(why), "{why}: {e}");
    }
}
