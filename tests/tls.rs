//! TLS on both sides, with real servers and clients: a CA, server and client
//! certificates (and a second CA, an expired certificate) made at test time
//! with the `openssl` CLI; `redis-server --tls-port`, `memcached -Z`,
//! `redis-cli --tls`, redis-py `ssl=True`, pymemcache with a TLS context.

mod support;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{redis, run_python, shardproxy, start, within, Conn, Proc};

/// Certificates made for one test.
struct Certs {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` with a new P-256 key, and `args`.
#[rustfmt::skip]
fn new_key(dir: &Path, args: &[&str]) {
    let mut all = vec!["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    all.extend(args);
    openssl(dir, &all);
}

impl Certs {
    /// A CA (`ca`), another CA (`other`), and leaves signed by them.
    fn new() -> Certs {
        support::require("openssl");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let c = Certs { dir };
        for ca in ["ca", "other"] {
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN=shardproxy test {ca}"),
            );
            new_key(
                c.dir.path(),
                &[
                    "-x509",
                    "-keyout",
                    &key,
                    "-out",
                    &crt,
                    "-subj",
                    &subj,
                    "-days",
                    "2",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        c.leaf("server", "ca", "localhost", 2);
        c.leaf("client", "ca", "client", 2);
        c.leaf("wrong", "other", "localhost", 2);
        c.leaf("expired", "ca", "localhost", -1);
        c
    }

    /// `name.crt`/`name.key`, signed by `ca`, valid for `days` (negative:
    /// expired), for localhost and 127.0.0.1, server and client use.
    fn leaf(&self, name: &str, ca: &str, cn: &str, days: i32) {
        let d = self.dir.path();
        std::fs::write(
            d.join(format!("{name}.ext")),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (key, csr, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("/CN={cn}"),
        );
        new_key(d, &["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                &days.to_string(),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }
}

/// The listener's certificate and key, the CA, and `port` as YAML values.
fn listener_files(c: &Certs, port: u16) -> (String, String, String, u16) {
    (
        c.path("server.crt"),
        c.path("server.key"),
        c.path("ca.crt"),
        port,
    )
}

/// A redis-server speaking only TLS, with `name.crt`; `auth_clients`:
/// it requires a client certificate from `ca`.
fn tls_redis(c: &Certs, name: &str, auth_clients: bool) -> Proc {
    support::require("redis-server");
    start("redis-server", |port, dir| {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--tls-cert-file", &c.path(&format!("{name}.crt"))])
        .args(["--tls-key-file", &c.path(&format!("{name}.key"))])
        .args(["--tls-ca-cert-file", &c.path("ca.crt")])
        .args([
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ]);
        cmd.arg("--dir").arg(dir);
        cmd
    })
}

/// redis-cli --tls against `port`, with the CA and, if given, a client
/// certificate; its stdout (and stderr) and exit code.
fn cli(c: &Certs, port: u16, client: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut a: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "--tls".into(),
        "--cacert".into(),
        c.path("ca.crt"),
    ];
    if let Some(name) = client {
        a.extend([
            "--cert".into(),
            c.path(&format!("{name}.crt")),
            "--key".into(),
            c.path(&format!("{name}.key")),
        ]);
    }
    a.extend(args.iter().map(|s| s.to_string()));
    let out = Command::new("redis-cli")
        .args(&a)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli: {e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn metric(p: &Proc, line_start: &str) -> Option<String> {
    let (_, m) = p.http_get("/metrics");
    m.lines()
        .find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().to_string()))
}

fn failures(p: &Proc, side: &str, reason: &str) -> i64 {
    metric(
        p,
        &format!("shardproxy_tls_handshake_failures_total{{side=\"{side}\",reason=\"{reason}\"}} "),
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or(-1)
}

#[test]
fn a_tls_listener_serves_redis_cli_and_redis_py() {
    let c = Certs::new();
    let backend = redis();
    let (cert, key, b) = (c.path("server.crt"), c.path("server.key"), backend.port);
    let p = shardproxy(
        &move |port| {
            format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  tls_cert: {cert}\n  tls_key: {key}\n  servers:\n   - 127.0.0.1:{b}:1\n")
        },
        &[],
    );
    let (code, out) = cli(&c, p.port, None, &["SET", "tls:cli", "yes"]);
    assert_eq!((code, out.trim()), (0, "OK"), "{out}");
    let (code, out) = cli(&c, p.port, None, &["GET", "tls:cli"]);
    assert_eq!((code, out.trim()), (0, "yes"), "{out}");
    assert_eq!(
        Conn::new(backend.port).cmd(&[b"GET", b"tls:cli"]),
        b"$3\r\nyes\r\n"
    );
    run_python("redis_py_tls.py", &[p.port.to_string(), c.path("ca.crt")]);
    // The cluster view on a TLS listener (cluster.md): the node's port is
    // a `tls-port`.
    let (code, out) = cli(&c, p.port, None, &["CLUSTER", "SHARDS"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let at = lines.iter().position(|l| *l == "tls-port");
    assert_eq!(
        at.and_then(|i| lines.get(i + 1)).copied(),
        Some(p.port.to_string().as_str()),
        "{out}"
    );
    assert!(!lines.contains(&"port"), "{out}");
    // A plaintext client on the TLS listener: refused at the handshake,
    // counted; the listener goes on.
    let mut plain =
        std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap_or_else(|e| panic!("{e}"));
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut plain, b"*1\r\n$4\r\nPING\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    // The proxy answers with a TLS alert at most, then closes.
    let _ = std::io::Read::read_to_end(&mut plain, &mut got);
    assert!(!got.windows(4).any(|w| w == b"PONG"), "{got:?}");
    assert!(
        got.first().is_none_or(|&b| b == 0x15),
        "not a TLS alert: {got:?}"
    );
    within(5, "the failed handshake is counted", || {
        failures(&p, "client", "protocol") >= 1
    });
    let (code, out) = cli(&c, p.port, None, &["PING"]);
    assert_eq!((code, out.trim()), (0, "PONG"), "{out}");
    // The certificate's expiry is exported.
    let exp = metric(
        &p,
        &format!(
            "shardproxy_tls_certificate_expiry_timestamp_seconds{{pool=\"alpha\",key=\"tls_cert\",file=\"{}\"}} ",
            c.path("server.crt")
        ),
    )
    .and_then(|v| v.parse::<f64>().ok())
    .unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    assert!(
        exp > now + 86400.0 && exp < now + 3.0 * 86400.0,
        "{exp} vs {now}"
    );
}

#[test]
fn mutual_tls_refuses_a_wrong_missing_or_expired_client_certificate() {
    let c = Certs::new();
    let backend = redis();
    let (cert, key, ca, b) = listener_files(&c, backend.port);
    let p = shardproxy(
        &move |port| {
            format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  tls_cert: {cert}\n  tls_key: {key}\n  tls_ca: {ca}\n  servers:\n   - 127.0.0.1:{b}:1\n")
        },
        &[],
    );
    let (code, out) = cli(&c, p.port, Some("client"), &["PING"]);
    assert_eq!((code, out.trim()), (0, "PONG"), "{out}");
    run_python(
        "redis_py_tls.py",
        &[
            p.port.to_string(),
            c.path("ca.crt"),
            c.path("client.crt"),
            c.path("client.key"),
        ],
    );
    for (client, reason) in [
        (Some("wrong"), "unknown_ca"),
        (None, "no_certificate"),
        (Some("expired"), "expired"),
    ] {
        let before = failures(&p, "client", reason);
        let (_, out) = cli(&c, p.port, client, &["PING"]);
        assert!(!out.contains("PONG"), "{client:?} got through: {out}");
        within(5, "the refusal is counted with its reason", || {
            failures(&p, "client", reason) == before + 1
        });
        // The log line is written after the counter moves (another thread
        // with --threads 2): wait for it too.
        within(5, &format!("{reason} is logged"), || {
            p.log().contains(&format!("failed ({reason})"))
        });
    }
}

#[test]
fn server_tls_reaches_redis_with_and_without_a_client_certificate() {
    let c = Certs::new();
    for auth_clients in [false, true] {
        let backend = tls_redis(&c, "server", auth_clients);
        let b = backend.port;
        let ca = c.path("ca.crt");
        let identity = if auth_clients {
            format!(
                "  server_tls_cert: {}\n  server_tls_key: {}\n",
                c.path("client.crt"),
                c.path("client.key")
            )
        } else {
            String::new()
        };
        let p = shardproxy(
            &move |port| {
                format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n  server_tls: true\n  server_tls_ca: {ca}\n{identity}  servers:\n   - 127.0.0.1:{b}:1\n")
            },
            &[],
        );
        let mut k = Conn::new(p.port);
        assert_eq!(k.cmd(&[b"SET", b"st", b"1"]), b"+OK\r\n");
        let big = vec![b'v'; 1 << 20];
        assert_eq!(k.cmd(&[b"SET", b"big", &big]), b"+OK\r\n");
        let mut want = format!("${}\r\n", big.len()).into_bytes();
        want.extend(&big);
        want.extend(b"\r\n");
        assert_eq!(k.cmd(&[b"GET", b"big"]), want);
        // A pipeline of many requests, over the one TLS connection.
        let mut batch = Vec::new();
        for _ in 0..500 {
            batch.extend(support::resp(&[b"INCR", b"n"]));
        }
        k.send(&batch);
        for i in 1..=500 {
            assert_eq!(k.reply(), format!(":{i}\r\n").into_bytes());
        }
        let (code, out) = cli(&c, b, Some("client"), &["GET", "st"]);
        assert_eq!((code, out.trim()), (0, "1"), "{out}");
    }
}

#[test]
fn a_server_certificate_from_the_wrong_ca_or_expired_is_refused() {
    let c = Certs::new();
    for (name, reason) in [("wrong", "unknown_ca"), ("expired", "expired")] {
        let backend = tls_redis(&c, name, false);
        let (b, ca) = (backend.port, c.path("ca.crt"));
        let p = shardproxy(
            &move |port| {
                format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n  server_tls: true\n  server_tls_ca: {ca}\n  servers:\n   - 127.0.0.1:{b}:1 r1\n")
            },
            &[],
        );
        let mut k = Conn::new(p.port);
        assert_eq!(
            k.cmd(&[b"GET", b"x"]),
            b"-ERR TLS handshake with the server failed\r\n"
        );
        // The connection stays usable; the reason is logged and counted.
        assert_eq!(k.cmd(&[b"PING"]), b"+PONG\r\n");
        within(5, "the reason is logged", || {
            p.log().contains(&format!(
                "TLS handshake with server 'r1' (127.0.0.1:{b}) failed ({reason})"
            ))
        });
        assert!(failures(&p, "server", reason) >= 1);
    }
    // `server_tls_verify: false` accepts it, and says so at start.
    let backend = tls_redis(&c, "wrong", false);
    let b = backend.port;
    let p = shardproxy(
        &move |port| {
            format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  timeout: 2000\n  server_tls: true\n  server_tls_verify: false\n  servers:\n   - 127.0.0.1:{b}:1\n")
        },
        &[],
    );
    assert_eq!(Conn::new(p.port).cmd(&[b"SET", b"a", b"1"]), b"+OK\r\n");
    assert!(p.log().contains("server_tls_verify: false"), "{}", p.log());
}

#[test]
fn memcached_with_tls_on_both_sides() {
    let c = Certs::new();
    support::require("memcached");
    let tls = format!(
        "ssl_chain_cert={},ssl_key={}",
        c.path("server.crt"),
        c.path("server.key")
    );
    let backend = support::memcached_with(&["-Z", "-o", &tls]);
    let (cert, key, ca, b) = listener_files(&c, backend.port);
    let p = shardproxy(
        &move |port| {
            format!("mc:\n  listen: 127.0.0.1:{port}\n  tls_cert: {cert}\n  tls_key: {key}\n  server_tls: true\n  server_tls_ca: {ca}\n  timeout: 2000\n  servers:\n   - 127.0.0.1:{b}:1\n")
        },
        &[],
    );
    run_python("pymemcache_tls.py", &[p.port.to_string(), c.path("ca.crt")]);
}

/// A rotated certificate is served to new clients once its file changes
/// (`--watch-config` watches the TLS files too) or after SIGUSR1, without a
/// restart; a file that does not parse changes nothing.
#[test]
fn certificates_rotate_on_file_change_and_reload() {
    let c = Certs::new();
    c.leaf("rotated", "ca", "rotated.example", 2);
    let backend = redis();
    let live_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let live = |f: &str| live_dir.path().join(format!("live.{f}"));
    let copy = |name: &str| {
        for f in ["crt", "key"] {
            std::fs::copy(c.dir.path().join(format!("{name}.{f}")), live(f))
                .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    copy("server");
    let (cert, key, b) = (
        live("crt").display().to_string(),
        live("key").display().to_string(),
        backend.port,
    );
    let p = shardproxy(
        &move |port| {
            format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  tls_cert: {cert}\n  tls_key: {key}\n  servers:\n   - 127.0.0.1:{b}:1\n")
        },
        &["--watch-config"],
    );
    let subject = |port: u16| {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-CAfile",
            ])
            .arg(c.path("ca.crt"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        subject(p.port).contains("CN = localhost"),
        "{}",
        subject(p.port)
    );
    let reloads = |result: &str| {
        metric(
            &p,
            &format!("shardproxy_config_reloads_total{{result=\"{result}\"}} "),
        )
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0)
    };
    // The files change: the proxy reloads by itself.
    copy("rotated");
    within(10, "the rotated certificate is served", || {
        subject(p.port).contains("CN = rotated.example")
    });
    let (code, out) = cli(&c, p.port, None, &["PING"]);
    assert_eq!((code, out.trim()), (0, "PONG"), "{out}");
    // A broken certificate file: the reload fails, the old one is served.
    std::fs::write(live("crt"), "not a certificate").unwrap_or_else(|e| panic!("{e}"));
    within(10, "the reload fails", || reloads("error") >= 1);
    assert!(p.log().contains("tls_cert"), "{}", p.log());
    assert!(subject(p.port).contains("CN = rotated.example"));
    // SIGUSR1 re-reads the files too.
    let ok = reloads("ok");
    copy("server");
    p.signal(libc::SIGUSR1);
    within(10, "the first certificate is served again", || {
        reloads("ok") > ok && subject(p.port).contains("CN = localhost")
    });
}

/// `-t` checks that every TLS file exists and parses, and says which is wrong.
#[test]
fn dash_t_names_the_wrong_file() {
    let c = Certs::new();
    let base = format!(
        "alpha:\n  listen: 127.0.0.1:22199\n  redis: true\n  tls_cert: {}\n  tls_key: {}\n  servers:\n   - 127.0.0.1:6379:1\n",
        c.path("server.crt"),
        c.path("server.key")
    );
    let check = support::check_conf;
    let (ok, err) = check(&base);
    assert!(ok, "{err}");
    for (text, want) in [
        (
            base.replace("server.key", "missing.key"),
            "tls_key: cannot read",
        ),
        (
            base.replace(&c.path("server.crt"), &c.path("server.key")),
            "tls_cert",
        ),
        (base.replace("server.key", "client.key"), "does not go with"),
        (
            format!("{base}  tls_ca: {}\n", c.path("nothing.crt")),
            "tls_ca: cannot read",
        ),
        (
            base.replace("  tls_key:", "  server_tls_name: x\n  tls_key:"),
            "needs \"server_tls: true\"",
        ),
    ] {
        let (ok, err) = check(&text);
        assert!(!ok, "accepted: {text}");
        assert!(err.contains(want), "{want} not in {err}");
    }
}
