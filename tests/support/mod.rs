//! Test support: real redis-server, memcached, nutcracker and shardproxy
//! processes, each in its own temp dir on a free loopback port (never a fixed
//! port: the machine is shared), started with retries on port collisions,
//! killed on drop (and by the kernel if the test process dies), with their log
//! printed when a test fails.
#![allow(dead_code, unsafe_code)]

use shardproxy::proto::Scan;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running child process.
pub struct Proc {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Proxies: the stats port (`-s`); shardproxy: the `--metrics-port`.
    pub stats_port: u16,
    pub metrics_port: u16,
    pub dir: tempfile::TempDir,
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!(
                "---- {} (port {}) log tail ----\n{tail}\n----",
                self.name, self.port
            );
        }
    }
}

impl Proc {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
    /// Waits for the process to end; returns how it ended.
    pub fn wait_status(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits for the process to exit; returns its status code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// A port that was free a moment ago (bind 127.0.0.1:0 and release), and
/// never handed out before by this test process: the kernel may offer a
/// just-released port again, and two proxies started with `--threads 2`
/// (`SO_REUSEPORT`) would then both bind it and share its connections.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no port that was not handed out already")
}

pub fn require(bin: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin")])
                .any(|d| d.join(bin).exists())
        })
        .unwrap_or(false);
    assert!(
        found,
        "{bin} is not installed: run scripts/test, which installs it"
    );
}

fn wait_port(host: &str, port: u16, child: &mut std::process::Child, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect((host, port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Starts `cmd(port, dir)` on a free port, retrying on collisions.
pub fn start(name: &str, mut cmd: impl FnMut(u16, &std::path::Path) -> Command) -> Proc {
    start_on(
        name,
        || ("127.0.0.1".to_string(), free_port()),
        |_, port, dir| cmd(port, dir),
    )
}

/// Starts `cmd(host, port, dir)` at the address `pick()` chooses, retrying with
/// a new pick on collisions.
pub fn start_on(
    name: &str,
    mut pick: impl FnMut() -> (String, u16),
    mut cmd: impl FnMut(&str, u16, &std::path::Path) -> Command,
) -> Proc {
    for _ in 0..8 {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let (host, port) = pick();
        let log = dir.path().join("out.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let mut c = cmd(&host, port, dir.path());
        c.stdin(Stdio::null()).stdout(out).stderr(err);
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = c.spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
        if wait_port(&host, port, &mut child, Duration::from_secs(10)) {
            return Proc {
                name: name.to_string(),
                host,
                port,
                stats_port: 0,
                metrics_port: 0,
                dir,
                child,
                log,
            };
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "{name} did not start on port {port}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    panic!("{name} could not be started");
}

pub fn redis() -> Proc {
    redis_with(&[])
}

pub fn redis_with(extra: &[&str]) -> Proc {
    redis_on(|| ("127.0.0.1".to_string(), free_port()), extra)
}

/// A redis-server on a given port (to restart one where it was).
pub fn redis_at(port: u16, extra: &[&str]) -> Proc {
    redis_on(move || ("127.0.0.1".to_string(), port), extra)
}

fn redis_on(pick: impl FnMut() -> (String, u16), extra: &[&str]) -> Proc {
    require("redis-server");
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    start_on("redis-server", pick, |_, port, dir| {
        let mut c = Command::new("redis-server");
        c.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        c.arg("--dir").arg(dir);
        c.args(&extra);
        c
    })
}

pub fn memcached() -> Proc {
    memcached_with(&[])
}

pub fn memcached_with(extra: &[&str]) -> Proc {
    memcached_on(|| ("127.0.0.1".to_string(), free_port()), extra)
}

/// A memcached on port 11211 (nutcracker names such servers by host alone),
/// on a random loopback address so that it cannot collide with a real one.
pub fn memcached_11211() -> Proc {
    // The pid and the wall clock: another address each run.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = std::process::id() as u64 ^ now;
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    memcached_on(
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            (format!("127.{}.{}.{}", b[0], b[1], 2 + b[2] % 250), 11211)
        },
        &[],
    )
}

fn memcached_on(pick: impl FnMut() -> (String, u16), extra: &[&str]) -> Proc {
    require("memcached");
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    start_on("memcached", pick, |host, port, _| {
        let mut c = Command::new("memcached");
        c.args(&extra);
        c.args([
            "-l",
            host,
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-u",
            "root",
            "-m",
            "64",
        ]);
        c
    })
}

/// A proxy configuration: `yaml(port)` renders it for the listen port. The
/// stats port (and, for shardproxy, the metrics port) are free ports too.
fn proxy(name: &str, bin: &str, yaml: &dyn Fn(u16) -> String, extra: &[&str]) -> Proc {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let ports = std::cell::Cell::new((0u16, 0u16));
    let metrics = name == "shardproxy";
    let mut p = start(name, |port, dir| {
        let conf = dir.join("proxy.yml");
        std::fs::write(&conf, yaml(port)).unwrap_or_else(|e| panic!("{e}"));
        let (sp, mp) = (free_port(), if metrics { free_port() } else { 0 });
        ports.set((sp, mp));
        let mut c = Command::new(bin);
        c.arg("-c")
            .arg(&conf)
            .args(["-s", &sp.to_string(), "-a", "127.0.0.1"]);
        if metrics {
            c.args(["--metrics-port", &mp.to_string()]);
        }
        c.args(&extra);
        c
    });
    (p.stats_port, p.metrics_port) = ports.get();
    p
}

impl Proc {
    /// The stats port's JSON document (read to EOF).
    pub fn stats(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.stats_port))
            .unwrap_or_else(|e| panic!("stats port {}: {e}", self.stats_port));
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut doc = String::new();
        s.read_to_string(&mut doc)
            .unwrap_or_else(|e| panic!("stats: {e}"));
        doc
    }

    /// `GET path` on the metrics port: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port))
            .unwrap_or_else(|e| panic!("metrics port {}: {e}", self.metrics_port));
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut resp = String::new();
        s.read_to_string(&mut resp)
            .unwrap_or_else(|e| panic!("metrics: {e}"));
        let status = resp
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"));
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

/// A shardproxy. Without an explicit `--threads`, `$SHARDPROXY_THREADS` (if
/// set) picks the worker count, so scripts/test can run a whole suite again
/// with `--threads 2`.
pub fn shardproxy(yaml: &dyn Fn(u16) -> String, extra: &[&str]) -> Proc {
    let threads = std::env::var("SHARDPROXY_THREADS").ok();
    let mut args: Vec<&str> = extra.to_vec();
    if let Some(t) = threads.as_deref() {
        if !extra.contains(&"--threads") {
            args.extend(["--threads", t]);
        }
    }
    proxy("shardproxy", env!("CARGO_BIN_EXE_shardproxy"), yaml, &args)
}

pub fn nutcracker(yaml: &dyn Fn(u16) -> String) -> Proc {
    nutcracker_with(yaml, &[])
}

pub fn nutcracker_with(yaml: &dyn Fn(u16) -> String, extra: &[&str]) -> Proc {
    require("nutcracker");
    proxy("nutcracker", "nutcracker", yaml, extra)
}

/// The `servers:` lines for backends.
pub fn servers(backends: &[&Proc]) -> String {
    backends
        .iter()
        .map(|b| format!("   - 127.0.0.1:{}:1\n", b.port))
        .collect()
}

/// A raw connection that speaks bytes and reads whole RESP replies.
pub struct Conn {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl From<TcpStream> for Conn {
    fn from(s: TcpStream) -> Conn {
        Conn { s, buf: Vec::new() }
    }
}

impl Conn {
    pub fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect {port}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        s.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
        Conn { s, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write: {e}"));
    }

    /// Reads until `scan` finds one complete reply at the start of the buffer.
    fn read_reply(&mut self, what: &str, scan: impl Fn(&[u8]) -> Result<Scan, ()>) -> Vec<u8> {
        loop {
            match scan(&self.buf) {
                Ok(Scan::Complete(n)) => return self.buf.drain(..n).collect(),
                Err(()) => panic!(
                    "not a {what} reply: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Scan::Incomplete { .. }) => {}
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = self.s.read(&mut chunk).unwrap_or_else(|e| {
                panic!("read: {e}; have {:?}", String::from_utf8_lossy(&self.buf))
            });
            assert!(
                n > 0,
                "connection closed; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads one complete RESP reply.
    pub fn reply(&mut self) -> Vec<u8> {
        self.read_reply("RESP", |b| {
            shardproxy::proto::redis::reply::scan_reply(b).map_err(|_| ())
        })
    }

    /// Reads one complete frame: a reply, or a RESP3 push (pub/sub).
    pub fn frame(&mut self) -> Vec<u8> {
        self.read_reply("RESP", |b| {
            shardproxy::proto::redis::reply::scan_frame(b).map_err(|_| ())
        })
    }

    /// Sends a command and reads one frame (RESP3 clients).
    pub fn frame_of(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&resp(args));
        self.frame()
    }

    /// Reads one complete memcache reply.
    pub fn mc_reply(&mut self) -> Vec<u8> {
        self.read_reply("memcache", |b| {
            shardproxy::proto::memcache::scan_reply(b).map_err(|_| ())
        })
    }

    /// Sends a memcache request and reads its reply.
    pub fn mc(&mut self, req: &[u8]) -> Vec<u8> {
        self.send(req);
        self.mc_reply()
    }

    /// True when nothing at all arrives for `d` (a `noreply` request).
    pub fn silent_for(&mut self, d: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.s
            .set_read_timeout(Some(d))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut b = [0u8; 64];
        let r = self.s.read(&mut b);
        self.s
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        match r {
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                false
            }
            Err(_) => true,
        }
    }

    /// Sends a command (RESP) and reads its reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&resp(args));
        self.reply()
    }

    /// True once the peer has closed the connection (EOF), within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0))
    }
}

/// RESP encoding of a command.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs a binary with args; returns (exit code, stderr).
pub fn run(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The python with redis-py, pymemcache and prometheus-client:
/// `target/pyenv` (made by scripts/test), else `$SHARDPROXY_PYTHON`, else
/// python3.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SHARDPROXY_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python3");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// A parsed RESP reply (RESP2 and the RESP3 types the tests meet).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
    /// RESP3 map, as key/value pairs.
    Map(Vec<(Value, Value)>),
    Double(String),
}

impl Value {
    /// Parses one complete reply (as `Conn::reply` returns it).
    pub fn parse(b: &[u8]) -> Value {
        let (v, n) = Value::parse_at(b, 0);
        assert_eq!(n, b.len(), "trailing bytes after a reply");
        v
    }

    fn parse_at(b: &[u8], pos: usize) -> (Value, usize) {
        let nl = pos
            + b[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .unwrap_or_else(|| panic!("no CRLF"));
        let line = String::from_utf8_lossy(&b[pos + 1..nl]).into_owned();
        let next = nl + 2;
        let num = || {
            line.parse::<i64>()
                .unwrap_or_else(|e| panic!("{line:?}: {e}"))
        };
        match b[pos] {
            b'+' => (Value::Status(line), next),
            b'-' => (Value::Error(line), next),
            b':' => (Value::Int(num()), next),
            b',' => (Value::Double(line), next),
            b'_' => (Value::Nil, next),
            b'$' | b'=' if num() < 0 => (Value::Nil, next),
            b'$' | b'=' => {
                let n = num() as usize;
                (Value::Bulk(b[next..next + n].to_vec()), next + n + 2)
            }
            b'*' | b'~' | b'>' if num() < 0 => (Value::Nil, next),
            b'*' | b'~' | b'>' => {
                let mut at = next;
                let mut items = Vec::new();
                for _ in 0..num() {
                    let (v, n) = Value::parse_at(b, at);
                    items.push(v);
                    at = n;
                }
                (Value::Array(items), at)
            }
            b'%' => {
                let mut at = next;
                let mut items = Vec::new();
                for _ in 0..num() {
                    let (k, n) = Value::parse_at(b, at);
                    let (v, n) = Value::parse_at(b, n);
                    items.push((k, v));
                    at = n;
                }
                (Value::Map(items), at)
            }
            other => panic!("unknown RESP type {:?}", other as char),
        }
    }

    /// The text of a status or bulk reply.
    pub fn text(&self) -> String {
        match self {
            Value::Status(s) | Value::Error(s) | Value::Double(s) => s.clone(),
            Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Int(n) => n.to_string(),
            other => panic!("not text: {other:?}"),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Value::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(v) => v,
            Value::Nil => &[],
            other => panic!("not an array: {other:?}"),
        }
    }

    /// A RESP2 flat key/value array (or a RESP3 map) as pairs of texts to
    /// values.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.iter().find(|(k, _)| k.text() == name).map(|(_, v)| v),
            Value::Array(v) => v
                .chunks(2)
                .find(|p| matches!(&p[0], Value::Bulk(_) | Value::Status(_)) && p[0].text() == name)
                .and_then(|p| p.get(1)),
            _ => None,
        }
    }
}

impl Conn {
    /// Sends a command and parses its reply.
    pub fn value(&mut self, args: &[&[u8]]) -> Value {
        Value::parse(&self.cmd(args))
    }
}

/// Runs a client script of tests/clients with the venv's python (`scripts/test`
/// installs the libraries into `target/pyenv`); fails the test if it fails.
pub fn run_python(script: &str, args: &[String]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = std::process::Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "{stderr}\nthe python clients are missing: run scripts/test (it installs them into target/pyenv)"
    );
    assert!(
        out.status.success(),
        "{script} failed:\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}

/// The node client libraries (`scripts/test` installs them into
/// `target/node`).
pub fn run_node(script: &str, args: &[String]) {
    run_node_with(script, args, "ioredis");
}

/// A node client script that needs `module` (and what `scripts/test`
/// installs with it into `target/node`).
pub fn run_node_with(script: &str, args: &[String], module: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("target/node/node_modules");
    assert!(
        modules.join(module).exists() && modules.join("bullmq").exists(),
        "{module} is missing: run scripts/test (it installs it into target/node)"
    );
    let out = std::process::Command::new("node")
        .arg(root.join("tests/clients").join(script))
        .args(args)
        .env("NODE_PATH", &modules)
        .output()
        .unwrap_or_else(|e| panic!("node: {e}"));
    assert!(
        out.status.success(),
        "{script} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}

/// Polls `f` until it holds (generous bound for a loaded machine).
pub fn eventually(what: &str, f: impl FnMut() -> bool) {
    within(10, what, f);
}

/// Polls `f` until it holds, for at most `secs` seconds.
pub fn within(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A redis pool `alpha` of named servers (`s0`, `s1`…: placement depends on
/// the keys alone, not on the ports the test got), murmur, plus `extra`
/// pool keys (each line indented by two spaces).
pub fn named_pool(backends: &[&Proc], extra: &str) -> impl Fn(u16) -> String {
    let s: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("   - 127.0.0.1:{}:1 s{i}\n", b.port))
        .collect();
    let extra = extra.to_string();
    move |port| {
        format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: murmur\n{extra}  servers:\n{s}")
    }
}

/// `shardproxy_pinned_connections`, summed over the pool's servers (from
/// the proxy's `/metrics`).
pub fn pinned_connections(p: &Proc) -> i64 {
    let (_, body) = p.http_get("/metrics");
    body.lines()
        .filter(|l| l.starts_with("shardproxy_pinned_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// `calls` of `cmdstat_<cmd>` in a redis node's `INFO commandstats`.
pub fn commandstat_calls(port: u16, cmd: &str) -> i64 {
    let info = Conn::new(port).value(&[b"INFO", b"commandstats"]).text();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `shardproxy -t` on a configuration text: (accepted, stderr).
pub fn check_conf(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let conf = dir.path().join("p.yml");
    std::fs::write(&conf, text).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_shardproxy"))
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
