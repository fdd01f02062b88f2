//! The stats port and Prometheus metrics against real backends:
//!
//! * a differential with nutcracker: the same workload through both, then the
//!   two JSON documents have the same bytes once numbers are masked, and the
//!   same values but for the documented differences (`fragments` is counted);
//! * exact counters after a known workload (sets, gets, fragmented MGETs, a
//!   failed request, an ejection) with two worker threads, and the same values
//!   in `/metrics`, parsed by Prometheus' own python parser.

mod support;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use support::{memcached, nutcracker_with, redis, resp, shardproxy, Conn, Proc};

fn key(i: usize) -> Vec<u8> {
    format!("key:{i}").into_bytes()
}

fn val(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(i % 7)).into_bytes()
}

fn bulk(v: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", v.len()).into_bytes();
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
    out
}

fn json(doc: &str) -> Value {
    assert!(
        doc.ends_with("}\n"),
        "stats document ends with '}}\\n': {doc:?}"
    );
    serde_json::from_str(doc).unwrap_or_else(|e| panic!("not JSON ({e}): {doc}"))
}

fn num(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(*p)
            .unwrap_or_else(|| panic!("no {path:?} in the stats document"));
    }
    cur.as_i64()
        .unwrap_or_else(|| panic!("{path:?} is not an integer: {cur}"))
}

/// The document with every number replaced by `N`: what must be identical.
fn masked(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut in_num = false;
    let mut prev = ' ';
    for c in doc.chars() {
        if c.is_ascii_digit() && (in_num || prev == ':') {
            if !in_num {
                out.push('N');
            }
            in_num = true;
        } else {
            in_num = false;
            out.push(c);
        }
        prev = c;
    }
    out
}

/// The second pool listens on `second`, a free port of its own (not
/// `port + 1`, which another test's process may hold).
fn two_pools(r1: &Proc, r2: &Proc, mc: &Proc, dead: u16, second: u16) -> impl Fn(u16) -> String {
    let (a, b, m) = (r1.addr(), r2.addr(), mc.addr());
    move |port| {
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: murmur\n  servers:\n   - {a}:1\n   - {b}:1 beta_node\ngamma:\n  listen: 127.0.0.1:{second}\n  hash: md5\n  servers:\n   - {m}:1\n   - 127.0.0.1:{dead}:1 dead\n"
        )
    }
}

/// The same requests, byte for byte, through a proxy at `port` (redis pool)
/// and `second` (memcache pool). Returns a client left open.
fn workload(port: u16, second: u16) -> Conn {
    let mut c = Conn::new(port);
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.extend(resp(&[b"SET", &key(i), &val(i)]));
    }
    c.send(&batch);
    for _ in 0..40 {
        assert_eq!(c.reply(), b"+OK\r\n");
    }
    for i in 0..30 {
        assert_eq!(c.cmd(&[b"GET", &key(i)]), bulk(&val(i)));
    }
    for m in 0..3 {
        let keys: Vec<Vec<u8>> = (m * 10..m * 10 + 10).map(key).collect();
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(keys.iter().map(|k| k.as_slice()));
        let r = c.cmd(&args);
        assert!(
            r.starts_with(b"*10\r\n"),
            "{:?}",
            String::from_utf8_lossy(&r)
        );
    }
    assert_eq!(
        c.cmd(&[b"DEL", &key(0), &key(1), &key(2), b"nosuch"]),
        b":3\r\n"
    );
    drop(c);
    let mut q = Conn::new(port);
    q.send(&resp(&[b"SET", b"quitter", b"1"]));
    assert_eq!(q.reply(), b"+OK\r\n");
    drop(q);

    let mut m = Conn::new(second);
    // The first key stored on the live server (the same for both proxies).
    let live = (0..40)
        .find(|i| {
            let r = m.mc(format!("set mk{i} 0 0 3\r\nabc\r\n").as_bytes());
            r == b"STORED\r\n"
        })
        .unwrap_or_else(|| panic!("no key on the live memcache server"));
    assert_eq!(
        m.mc(format!("get mk{live}\r\n").as_bytes()),
        format!("VALUE mk{live} 0 3\r\nabc\r\nEND\r\n").as_bytes()
    );
    // Keys on the dead server fail; find one (deterministic: same hash).
    let mut failed = 0;
    for i in 0..40 {
        let r = m.mc(format!("get dk{i}\r\n").as_bytes());
        if r.starts_with(b"SERVER_ERROR") {
            failed += 1;
        } else {
            assert_eq!(r, b"END\r\n");
        }
    }
    assert!(failed > 0, "no key on the dead memcache server");
    drop(m);

    let mut open = Conn::new(port);
    assert_eq!(open.cmd(&[b"SET", b"open", b"1"]), b"+OK\r\n");
    open
}

/// Reads the stats document until `ready` holds and it stops changing
/// (nutcracker publishes with a lag of up to two intervals).
fn settled(p: &Proc, ready: impl Fn(&Value) -> bool) -> (String, Value) {
    let end = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    loop {
        let doc = p.stats();
        let v = json(&doc);
        let strip = |d: &str| {
            let v = json(d);
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("uptime");
                o.remove("timestamp");
            }
            v.to_string()
        };
        if ready(&v) && !last.is_empty() && strip(&last) == strip(&doc) {
            return (doc, v);
        }
        assert!(
            Instant::now() < end,
            "{}'s stats never settled: {doc}",
            p.name
        );
        last = doc;
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn json_matches_nutcracker() {
    let (r1, r2, mc) = (redis(), redis(), memcached());
    let dead = support::free_port();
    let mut docs = Vec::new();
    for which in ["nutcracker", "shardproxy"] {
        let second = support::free_port();
        let conf = two_pools(&r1, &r2, &mc, dead, second);
        for b in [&r1, &r2] {
            assert_eq!(Conn::new(b.port).cmd(&[b"FLUSHALL"]), b"+OK\r\n");
        }
        let p = if which == "nutcracker" {
            nutcracker_with(&conf, &["-i", "100"])
        } else {
            // nutcracker's topology: one worker, so one connection per server
            // (with more workers each opens its own; exact_counters_… covers
            // the aggregation across workers).
            shardproxy(&conf, &["--threads", "1"])
        };
        let open = workload(p.port, second);
        let (doc, v) = settled(&p, |v| {
            num(v, &["alpha", "client_connections"]) == 1
                && num(v, &["gamma", "client_connections"]) == 0
        });
        drop(open);
        docs.push((which, doc, v));
    }
    let (_, nc_doc, nc) = &docs[0];
    let (_, sp_doc, sp) = &docs[1];
    // Same bytes but for the numbers: names, order, separators, header.
    assert_eq!(masked(sp_doc), masked(nc_doc));
    for field in ["service", "source", "version"] {
        assert_eq!(sp[field], nc[field], "{field}");
    }
    for field in ["total_connections", "curr_connections"] {
        assert_eq!(num(sp, &[field]), num(nc, &[field]), "{field}");
    }
    for pool in ["alpha", "gamma"] {
        let (Some(ps), Some(pn)) = (sp[pool].as_object(), nc[pool].as_object()) else {
            panic!("pool {pool} missing");
        };
        for (name, want) in pn {
            let got = &ps[name];
            if let Some(server) = want.as_object() {
                for (f, w) in server {
                    assert_eq!(&got[f], w, "{pool}.{name}.{f}");
                }
            } else if name == "fragments" {
                // nutcracker never counts them (spec §9.9); we do: 3 MGETs and
                // a DEL over two servers.
                assert_eq!(want.as_i64(), Some(0));
                assert!(
                    got.as_i64().unwrap_or(0) >= if pool == "alpha" { 4 } else { 0 },
                    "{pool}.fragments = {got}"
                );
            } else {
                assert_eq!(got, want, "{pool}.{name}");
            }
        }
    }
    assert!(num(nc, &["alpha", "beta_node", "requests"]) > 0, "{nc_doc}");
    assert!(num(nc, &["gamma", "forward_error"]) > 0, "{nc_doc}");
}

fn pools_with_dead(r1: &Proc, r2: &Proc, dead: u16, second: u16) -> impl Fn(u16) -> String {
    let (a, b) = (r1.addr(), r2.addr());
    move |port| {
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: murmur\n  servers:\n   - {a}:1 one\n   - {b}:1 two\nbeta:\n  listen: 127.0.0.1:{second}\n  redis: true\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 600000\n  servers:\n   - 127.0.0.1:{dead}:1 gone\n"
        )
    }
}

/// The keys a backend holds.
fn keys_on(b: &Proc) -> BTreeSet<Vec<u8>> {
    let mut c = Conn::new(b.port);
    let r = c.cmd(&[b"KEYS", b"key:*"]);
    let mut ranges = Vec::new();
    shardproxy::proto::redis::reply::array_elements(&r, &mut ranges)
        .unwrap_or_else(|_| panic!("KEYS reply {:?}", String::from_utf8_lossy(&r)));
    ranges
        .into_iter()
        .map(|rg| {
            let b = &r[rg];
            let start = b.iter().position(|&c| c == b'\n').map_or(0, |i| i + 1);
            b[start..b.len() - 2].to_vec()
        })
        .collect()
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Prometheus' python parser on the `/metrics` text: sample name and sorted
/// labels → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/prom_parse.py");
    let mut child = Command::new(support::python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("python: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "{stderr}\nprometheus-client is missing: run scripts/test (it installs it into target/pyenv)"
    );
    assert!(
        out.status.success(),
        "/metrics does not parse: {stderr}\n{text}"
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    samples
        .into_iter()
        .map(|s| {
            let labels: BTreeMap<String, String> = s["labels"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (
                format!("{}{{{}}}", s["name"].as_str().unwrap_or(""), l.join(",")),
                s["value"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

fn sample(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    *m.get(name)
        .unwrap_or_else(|| panic!("no sample {name} in /metrics"))
}

#[test]
fn exact_counters_and_prometheus() {
    let (r1, r2) = (redis(), redis());
    let dead = support::free_port();
    let second = support::free_port();
    let p = shardproxy(
        &pools_with_dead(&r1, &r2, dead, second),
        &["--threads", "2"],
    );
    let (n_set, n_get) = (30usize, 20usize);
    let mgets: [std::ops::Range<usize>; 2] = [0..10, 5..25];

    // Three connections (spread over both workers by the kernel).
    let mut conns: Vec<Conn> = (0..3).map(|_| Conn::new(p.port)).collect();
    for (part, c) in conns.iter_mut().enumerate() {
        for i in (0..n_set).filter(|i| i % 3 == part) {
            assert_eq!(c.cmd(&[b"SET", &key(i), &val(i)]), b"+OK\r\n");
        }
    }
    for (part, c) in conns.iter_mut().enumerate() {
        for i in (0..n_get).filter(|i| i % 3 == part) {
            assert_eq!(c.cmd(&[b"GET", &key(i)]), bulk(&val(i)));
        }
    }
    for m in &mgets {
        let keys: Vec<Vec<u8>> = m.clone().map(key).collect();
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(keys.iter().map(|k| k.as_slice()));
        let mut want = format!("*{}\r\n", m.len()).into_bytes();
        for i in m.clone() {
            want.extend(bulk(&val(i)));
        }
        assert_eq!(conns[0].cmd(&args), want);
    }
    drop(conns);
    // beta: the only server is down. The first request fails and ejects it;
    // the second finds every server ejected.
    let before = unix_micros();
    let mut b = Conn::new(second);
    assert_eq!(b.cmd(&[b"GET", b"x"]), b"-ERR Connection refused\r\n");
    assert_eq!(b.cmd(&[b"GET", b"x"]), b"-ERR Connection refused\r\n");
    let after = unix_micros();
    drop(b);

    // Expected values, from where the keys really are.
    let on = [keys_on(&r1), keys_on(&r2)];
    assert_eq!(on[0].len() + on[1].len(), n_set);
    let server_of = |i: usize| usize::from(!on[0].contains(&key(i)));
    let mut requests = [0i64; 2];
    let mut request_bytes = [0i64; 2];
    let mut response_bytes = [0i64; 2];
    let mut fragments = 0;
    for i in 0..n_set {
        let s = server_of(i);
        requests[s] += 1;
        request_bytes[s] += resp(&[b"SET", &key(i), &val(i)]).len() as i64;
        response_bytes[s] += 5;
    }
    for i in 0..n_get {
        let s = server_of(i);
        requests[s] += 1;
        request_bytes[s] += resp(&[b"GET", &key(i)]).len() as i64;
        response_bytes[s] += bulk(&val(i)).len() as i64;
    }
    for m in &mgets {
        for s in 0..2 {
            let mine: Vec<usize> = m.clone().filter(|&i| server_of(i) == s).collect();
            if mine.is_empty() {
                continue;
            }
            fragments += 1;
            let keys: Vec<Vec<u8>> = mine.iter().map(|&i| key(i)).collect();
            let mut args: Vec<&[u8]> = vec![b"mget"];
            args.extend(keys.iter().map(|k| k.as_slice()));
            requests[s] += 1;
            request_bytes[s] += resp(&args).len() as i64;
            let mut reply = format!("*{}\r\n", mine.len()).into_bytes();
            for &i in &mine {
                reply.extend(bulk(&val(i)));
            }
            response_bytes[s] += reply.len() as i64;
        }
    }

    // Client closes are processed asynchronously: wait for them.
    let end = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = json(&p.stats());
        if num(&v, &["alpha", "client_connections"]) == 0
            && num(&v, &["beta", "client_connections"]) == 0
        {
            break v;
        }
        assert!(Instant::now() < end, "clients never closed: {v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let pool = |p: &str, f: &str| num(&v, &[p, f]);
    let server = |p: &str, s: &str, f: &str| num(&v, &[p, s, f]);
    // Three clients, and the harness' probe that the port is open.
    assert_eq!(pool("alpha", "client_eof"), 4);
    assert_eq!(pool("alpha", "client_err"), 0);
    assert_eq!(pool("alpha", "forward_error"), 0);
    assert_eq!(pool("alpha", "server_ejects"), 0);
    assert_eq!(pool("alpha", "fragments"), fragments);
    for (i, name) in ["one", "two"].iter().enumerate() {
        assert_eq!(server("alpha", name, "requests"), requests[i], "{name}");
        assert_eq!(
            server("alpha", name, "request_bytes"),
            request_bytes[i],
            "{name}"
        );
        assert_eq!(server("alpha", name, "responses"), requests[i], "{name}");
        assert_eq!(
            server("alpha", name, "response_bytes"),
            response_bytes[i],
            "{name}: {v} want {response_bytes:?} {request_bytes:?} {requests:?}"
        );
        for f in [
            "server_eof",
            "server_err",
            "server_timedout",
            "server_ejected_at",
        ] {
            assert_eq!(server("alpha", name, f), 0, "{name}.{f}");
        }
        for f in ["in_queue", "in_queue_bytes", "out_queue", "out_queue_bytes"] {
            assert_eq!(server("alpha", name, f), 0, "{name}.{f}");
        }
        let conns = server("alpha", name, "server_connections");
        assert!((1..=2).contains(&conns), "{name}: {conns} connections");
    }
    assert_eq!(pool("beta", "client_eof"), 1);
    assert_eq!(pool("beta", "forward_error"), 2);
    assert_eq!(pool("beta", "server_ejects"), 1);
    assert_eq!(server("beta", "gone", "requests"), 1);
    assert_eq!(
        server("beta", "gone", "request_bytes"),
        resp(&[b"GET", b"x"]).len() as i64
    );
    assert_eq!(server("beta", "gone", "responses"), 0);
    assert_eq!(server("beta", "gone", "server_err"), 1);
    assert_eq!(server("beta", "gone", "server_connections"), 0);
    let at = server("beta", "gone", "server_ejected_at");
    assert!(
        (before..=after).contains(&at),
        "ejected at {at}, not in [{before}, {after}]"
    );
    let server_conns: i64 = ["one", "two"]
        .iter()
        .map(|s| server("alpha", s, "server_connections"))
        .sum();
    assert_eq!(num(&v, &["curr_connections"]), 2 + server_conns, "{v}");

    // /metrics: parses, and says the same.
    let (status, text) = p.http_get("/metrics");
    assert_eq!(status, 200);
    let m = parse_prometheus(&text);
    for (i, name) in ["one", "two"].iter().enumerate() {
        let l = format!("pool=alpha,server={name}");
        assert_eq!(
            sample(&m, &format!("shardproxy_requests_total{{{l}}}")),
            requests[i] as f64
        );
        assert_eq!(
            sample(&m, &format!("shardproxy_request_bytes_total{{{l}}}")),
            request_bytes[i] as f64
        );
        assert_eq!(
            sample(&m, &format!("shardproxy_response_bytes_total{{{l}}}")),
            response_bytes[i] as f64
        );
        assert_eq!(
            sample(
                &m,
                &format!("shardproxy_server_response_duration_seconds_count{{{l}}}")
            ),
            requests[i] as f64
        );
        assert_eq!(
            sample(
                &m,
                &format!("shardproxy_server_response_duration_seconds_bucket{{le=+Inf,{l}}}")
            ),
            requests[i] as f64
        );
    }
    // Every stats-port field has its series, with the same value.
    for (pname, pv) in v.as_object().into_iter().flatten() {
        let Some(po) = pv.as_object() else { continue };
        for (f, fv) in po {
            if let Some(so) = fv.as_object() {
                for (sf, sv) in so {
                    if sf == "server_ejected_at" {
                        let got = sample(
                            &m,
                            &format!(
                                "shardproxy_server_ejected_at_seconds{{pool={pname},server={f}}}"
                            ),
                        );
                        assert!((got * 1e6 - sv.as_f64().unwrap_or(0.0)).abs() < 2.0);
                        continue;
                    }
                    let suffix = if sf.contains("queue") || sf == "server_connections" {
                        ""
                    } else {
                        "_total"
                    };
                    assert_eq!(
                        sample(
                            &m,
                            &format!("shardproxy_{sf}{suffix}{{pool={pname},server={f}}}")
                        ),
                        sv.as_f64().unwrap_or(f64::NAN),
                        "{pname}.{f}.{sf}"
                    );
                }
            } else {
                let suffix = if f == "client_connections" {
                    ""
                } else {
                    "_total"
                };
                assert_eq!(
                    sample(&m, &format!("shardproxy_{f}{suffix}{{pool={pname}}}")),
                    fv.as_f64().unwrap_or(f64::NAN),
                    "{pname}.{f}"
                );
            }
        }
    }
    let class = |pool: &str, c: &str| {
        sample(
            &m,
            &format!("shardproxy_request_duration_seconds_count{{class={c},pool={pool}}}"),
        )
    };
    assert_eq!(class("alpha", "write"), n_set as f64);
    assert_eq!(class("alpha", "read"), n_get as f64);
    assert_eq!(class("alpha", "multi"), mgets.len() as f64);
    assert_eq!(class("alpha", "local"), 0.0);
    // beta: one forwarded GET that failed, one refused by the proxy itself.
    assert_eq!(class("beta", "read"), 1.0);
    assert_eq!(class("beta", "local"), 1.0);
    assert_eq!(
        sample(&m, "shardproxy_server_ejected{pool=beta,server=gone}"),
        1.0
    );
    assert_eq!(sample(&m, "shardproxy_worker_threads{}"), 2.0);
    assert_eq!(sample(&m, "shardproxy_pool_listening{pool=alpha}"), 1.0);
    assert!(sample(&m, "process_resident_memory_bytes{}") > 0.0);

    // Every metric the Grafana dashboard and the docs query exists.
    for file in ["contrib/grafana/shardproxy.json", "docs/observability.md"] {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        for (at, _) in text.match_indices("shardproxy_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name == "shardproxy_" || name.ends_with('_') {
                continue; // prose: "shardproxy_<field>"
            }
            if [
                "shardproxy_sentinel_up",
                "shardproxy_replica",
                "shardproxy_tls_certificate_expiry_timestamp_seconds",
            ]
            .contains(&name.as_str())
            {
                // One series per sentinel, replica or certificate file:
                // none here (tests/sentinel.rs and tests/tls.rs have them).
                continue;
            }
            assert!(
                m.keys().any(|k| k.starts_with(&format!("{name}{{"))
                    || ["_bucket{", "_count{", "_sum{"]
                        .iter()
                        .any(|suffix| k.starts_with(&format!("{name}{suffix}")))),
                "{file} uses {name}, which /metrics does not have"
            );
        }
    }

    // Health and the other paths.
    assert_eq!(p.http_get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(p.http_get("/nope").0, 404);
}

#[test]
fn stats_port_in_use_fails_startup_with_a_reason() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = busy
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let conf = dir.path().join("c.yml");
    std::fs::write(
        &conf,
        format!(
            "alpha:\n  listen: 127.0.0.1:{}\n  servers:\n   - 127.0.0.1:1:1\n",
            support::free_port()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let conf = conf.to_string_lossy().to_string();
    let (code, err) = support::run(
        env!("CARGO_BIN_EXE_shardproxy"),
        &["-c", &conf, "-s", &port.to_string(), "-a", "127.0.0.1"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stats: bind to 127.0.0.1"), "{err}");
}
