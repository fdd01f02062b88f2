//! `shardproxy -t` against Debian's `nutcracker -t` on a table of configurations:
//! both must accept or both reject, except the deliberate differences listed in
//! docs/compatibility.md (asserted here as differences). Every rejection by
//! shardproxy must name the offending key or value.

mod support;

const S: &str = "  servers:\n   - 127.0.0.1:16379:1\n";

/// (label, yaml, what shardproxy's rejection must mention ("" = accepted), nutcracker agrees)
fn table() -> Vec<(&'static str, String, &'static str, bool)> {
    let p = |body: &str| format!("alpha:\n  listen: 127.0.0.1:22121\n{body}");
    vec![
        ("minimal", p(S), "", true),
        ("every key", p(&format!("  hash: md5\n  hash_tag: \"{{}}\"\n  distribution: modula\n  timeout: 400\n  backlog: 1024\n  client_connections: 10\n  redis: true\n  redis_auth: pw\n  redis_db: 2\n  preconnect: true\n  auto_eject_hosts: true\n  server_connections: 2\n  server_retry_timeout: 100\n  server_failure_limit: 3\n  tcpkeepalive: true\n{S}")), "", true),
        ("each hash", (0..12).map(|i| format!("p{i}:\n  listen: 127.0.0.1:{}\n  hash: {}\n{S}", 23000 + i, ["one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64", "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"][i])).collect(), "", true),
        ("random distribution", p(&format!("  distribution: random\n{S}")), "", true),
        ("unix listen with perm", "a:\n  listen: /tmp/sp-test.sock 0600\n  servers:\n   - 127.0.0.1:1:1\n".into(), "", true),
        ("unix listen without perm", "a:\n  listen: /tmp/sp-test.sock\n  servers:\n   - 127.0.0.1:1:1\n".into(), "", true),
        ("unix server", p("  servers:\n   - /tmp/redis.sock:1\n   - /tmp/redis2.sock:2 named\n"), "", true),
        ("named servers and weights", p("  servers:\n   - 127.0.0.1:1:1 a\n   - 127.0.0.1:2:5 b\n"), "", true),
        ("ipv6 listen", "a:\n  listen: ::1:22121\n  servers:\n   - ::1:6379:1\n".into(), "", true),
        ("hostname server unresolved", p("  servers:\n   - no-such-host.invalid:6379:1\n"), "", true),
        ("quoted values", p(&format!("  redis: \"true\"\n  timeout: '100'\n{S}")), "", true),
        ("comments", format!("# top\nalpha: # pool\n  listen: 127.0.0.1:22121 # here\n{S}"), "", true),
        ("two pools", format!("a:\n  listen: 127.0.0.1:1\n{S}b:\n  listen: 127.0.0.1:2\n{S}"), "", true),
        ("hash as a list (quirk)", "a:\n  listen: 127.0.0.1:1\n  servers: 127.0.0.1:1:1\n  hash:\n   - md5\n".into(), "", true),
        ("extra host fields (quirk)", p("  servers:\n   - 127.0.0.1:6379:1:2\n"), "", true),
        ("backlog 0", p(&format!("  backlog: 0\n{S}")), "", true),
        ("timeout 0", p(&format!("  timeout: 0\n{S}")), "", true),
        ("unknown key", p(&format!("  lisen: x\n{S}")), "lisen", true),
        ("key case", p(&format!("  Hash: md5\n{S}")), "Hash", true),
        ("duplicate key", p(&format!("  hash: md5\n  hash: crc16\n{S}")), "hash", true),
        ("bad hash", p(&format!("  hash: sha1\n{S}")), "sha1", true),
        ("bad distribution", p(&format!("  distribution: rendezvous\n{S}")), "rendezvous", true),
        ("bad hash_tag", p(&format!("  hash_tag: \"{{\"\n{S}")), "hash_tag", true),
        ("bad number", p(&format!("  timeout: abc\n{S}")), "abc", true),
        ("negative number", p(&format!("  timeout: -1\n{S}")), "-1", true),
        ("bad bool", p(&format!("  redis: yes\n{S}")), "yes", true),
        ("empty value", p(&format!("  hash:\n{S}")), "hash", true),
        ("empty quoted value", p(&format!("  hash: \"\"\n{S}")), "hash", true),
        ("listen missing", format!("alpha:\n{S}"), "listen", true),
        ("listen without port", p(S).replace("127.0.0.1:22121", "127.0.0.1"), "listen", true),
        ("listen port 0", p(S).replace(":22121", ":0"), "listen", true),
        ("listen port too big", p(S).replace(":22121", ":70000"), "70000", true),
        ("tcp listen with perm", p(S).replace(":22121", ":22121 0666"), "listen", true),
        ("unix perm too big", "a:\n  listen: /tmp/x.sock 1000\n  servers:\n   - 127.0.0.1:1:1\n".into(), "1000", true),
        ("server without weight", p("  servers:\n   - 127.0.0.1:6379\n"), "127.0.0.1:6379", true),
        ("server weight 0", p("  servers:\n   - 127.0.0.1:6379:0\n"), "zero weight", true),
        ("server bad port", p("  servers:\n   - 127.0.0.1:x:1\n"), "port", true),
        ("server name with space", p("  servers:\n   - 127.0.0.1:6379:1 my server\n"), "my server", true),
        ("duplicate server names", p("  servers:\n   - 127.0.0.1:6379:1\n   - 127.0.0.1:6379:2\n"), "same name", true),
        ("server_connections 0", p(&format!("  server_connections: 0\n{S}")), "server_connections", true),
        ("redis_auth on memcache", p(&format!("  redis_auth: x\n{S}")), "redis_auth", true),
        ("duplicate listen", format!("a:\n  listen: 127.0.0.1:1\n{S}b:\n  listen: 127.0.0.1:1\n{S}"), "127.0.0.1:1", true),
        ("duplicate pool", format!("a:\n  listen: 127.0.0.1:1\n{S}a:\n  listen: 127.0.0.1:2\n{S}"), "\"a\"", true),
        ("no servers list", p("  hash: md5\n"), "servers", true),
        ("two lists", p(&format!("{S}  sentinels:\n   - 127.0.0.1:26379:1\n")), "sentinels", true),
        ("nested mapping", p(&format!("  hash:\n    x: y\n{S}")), "hash", true),
        ("pool is a scalar", "alpha: foo\n".into(), "alpha", true),
        ("root is a sequence", "- a\n- b\n".into(), "sequence", true),
        ("root is a scalar", "hello\n".into(), "scalar", true),
        ("empty file", "".into(), "no YAML document", true),
        ("comment only", "# nothing\n".into(), "no YAML document", true),
        ("explicit document start", format!("---\n{}", p(S)), "---", true),
        ("explicit document end", format!("{}...\n", p(S)), "...", true),
        ("flow sequence", p("  servers: [127.0.0.1:1:1]\n"), "flow", true),
        ("flow mapping", "alpha: {listen: 127.0.0.1:1}\n".into(), "flow", true),
        ("anchor and alias", format!("a:\n  listen: &l 127.0.0.1:1\n{S}b:\n  listen: *l\n{S}"), "anchor", true),
        ("tag", p(&format!("  hash: !!str md5\n{S}")), "tag", true),
        ("tab indentation", format!("alpha:\n\tlisten: 127.0.0.1:1\n{S}"), "tab", true),
        ("bad indentation", "alpha:\n  listen: 127.0.0.1:1\n servers:\n   - 127.0.0.1:1:1\n".into(), "YAML", true),
        // Deliberate differences (docs/compatibility.md).
        ("reuseport (nutcracker HEAD key)", p(&format!("  reuseport: true\n{S}")), "", false),
        ("number overflow", p(&format!("  timeout: 99999999999\n{S}")), "99999999999", false),
        ("trailing space in server", p("  servers:\n   - \"127.0.0.1:6379:1 \"\n"), "no name", false),
        ("non-octal unix perm", "a:\n  listen: /tmp/x.sock 999\n  servers:\n   - 127.0.0.1:1:1\n".into(), "999", false),
        ("server_name distribution", p("  distribution: server_name\n  hash: server_name\n  servers:\n   - 127.0.0.1:1:1 r1\n"), "", false),
    ]
}

#[test]
fn test_mode_agrees_with_nutcracker() {
    support::require("nutcracker");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let table = table();
    let total = table.len();
    assert!(table.len() >= 40);
    let mut failures = Vec::new();
    for (i, (label, yaml, needle, agree)) in table.into_iter().enumerate() {
        let path = dir.path().join(format!("c{i}.yml"));
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
        let path = path.to_string_lossy().into_owned();
        let (nc, _) = support::run("nutcracker", &["-t", "-c", &path]);
        let (sp, err) = support::run(env!("CARGO_BIN_EXE_shardproxy"), &["-t", "-c", &path]);
        let sp_ok = sp == 0;
        let nc_ok = nc == 0;
        let want_ok = needle.is_empty();
        if sp_ok != want_ok {
            failures.push(format!(
                "{label}: shardproxy exit {sp}, expected {}: {err}",
                if want_ok { "accept" } else { "reject" }
            ));
        }
        if agree && sp_ok != nc_ok {
            failures.push(format!(
                "{label}: shardproxy exit {sp} but nutcracker exit {nc}: {err}"
            ));
        }
        if !agree && sp_ok == nc_ok {
            failures.push(format!(
                "{label}: documented as a difference, but both exit {sp}"
            ));
        }
        if !want_ok && !err.contains(needle) {
            failures.push(format!(
                "{label}: the error does not mention {needle:?}: {err}"
            ));
        }
        if sp_ok && !err.contains("syntax is ok") {
            failures.push(format!("{label}: no OK line: {err}"));
        }
        if !sp_ok && !err.contains("syntax is invalid") {
            failures.push(format!("{label}: no invalid line: {err}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        total,
        failures.join("\n")
    );
}

#[test]
fn missing_file_is_an_error_that_names_it() {
    let (code, err) = support::run(
        env!("CARGO_BIN_EXE_shardproxy"),
        &["-t", "-c", "/nonexistent/x.yml"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/x.yml") && err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn example_configs_pass_test_mode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/conf");
    let mut n = 0;
    for e in std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let path = e.path().to_string_lossy().into_owned();
        let (code, err) = support::run(env!("CARGO_BIN_EXE_shardproxy"), &["-t", "-c", &path]);
        assert_eq!(code, 0, "{path}: {err}");
        n += 1;
    }
    assert!(n >= 2);
}

#[test]
fn command_line_matches_nutcracker() {
    let bin = env!("CARGO_BIN_EXE_shardproxy");
    let (code, err) = support::run(bin, &["-V"]);
    assert_eq!(code, 0);
    assert!(err.starts_with("This is shardproxy-"), "{err}");
    let (code, err) = support::run(bin, &["-h"]);
    assert_eq!(code, 0);
    assert!(
        err.contains("-c, --conf-file=S") && err.contains("--threads"),
        "{err}"
    );
    let (code, err) = support::run(bin, &["-D"]);
    assert_eq!(code, 0);
    assert!(
        err.contains("pool stats:\n  client_eof          \"# eof on client connections\""),
        "{err}"
    );
    for (args, msg) in [
        (&["-s", "0"][..], "option -s value 0 is not a valid port"),
        (&["-x"], "invalid option -- 'x'"),
        (
            &["-m", "1"],
            "mbuf chunk size must be between 512 and 16777216 bytes",
        ),
        (&["-v", "x"], "option -v requires a number"),
    ] {
        let (code, err) = support::run(bin, args);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            err.contains(msg) && err.contains("Usage:"),
            "{args:?}: {err}"
        );
    }
}
