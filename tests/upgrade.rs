//! Binary upgrade: a new process takes the listening sockets over from the
//! running one (`--upgrade-socket`) while a client loop connects and sends
//! PING continuously: no connection refused, no error; the old process
//! drains and exits 0; the pid file names the new process.

mod support;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{eventually, free_port, redis, shardproxy, start_on, Conn};

/// One PING on a new connection; the error if it failed.
fn ping(port: u16) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"PING\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
    if &buf != b"+PONG\r\n" {
        return Err(format!("reply {buf:?}"));
    }
    Ok(())
}

#[test]
fn a_new_process_takes_over_without_a_refused_connection() {
    let r = redis();
    let ctl = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sock = ctl.path().join("upgrade.sock");
    let pidf = ctl.path().join("proxy.pid");
    let (sock_s, pid_s) = (
        sock.to_string_lossy().into_owned(),
        pidf.to_string_lossy().into_owned(),
    );
    let rport = r.port;
    let args = [
        "--upgrade-socket",
        sock_s.as_str(),
        "-p",
        pid_s.as_str(),
        "--drain-timeout",
        "2",
    ];
    let mut old = shardproxy(
        &move |port| {
            format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - 127.0.0.1:{rport}:1\n")
        },
        &args,
    );
    let port = old.port;
    let conf = old.dir.path().join("proxy.yml");
    let old_pid = old.pid();
    eventually("the old process wrote its pid", || {
        std::fs::read_to_string(&pidf).is_ok_and(|s| s.trim() == old_pid.to_string())
    });
    // A new process that cannot start (its configuration is invalid) leaves
    // the running one, and its pid file, alone.
    let bad = ctl.path().join("bad.yml");
    std::fs::write(&bad, "alpha:\n  listen: [\n").unwrap_or_else(|e| panic!("{e}"));
    let st = Command::new(env!("CARGO_BIN_EXE_shardproxy"))
        .args(["-c", &bad.to_string_lossy(), "-s", &free_port().to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&pidf)
            .map(|s| s.trim().to_string())
            .ok(),
        Some(old_pid.to_string())
    );
    assert!(ping(port).is_ok());
    // A client that stays connected across the upgrade.
    let mut kept = Conn::new(port);
    assert_eq!(kept.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    // The client loop: a new connection per PING, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                match ping(port) {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // The new process: the same configuration, the same upgrade socket.
    let bin = env!("CARGO_BIN_EXE_shardproxy");
    let conf_s = conf.to_string_lossy().into_owned();
    // The same options, the stats and metrics ports included (the old
    // process holds them until it exits: they are taken over too).
    let (sp, mp) = (old.stats_port.to_string(), old.metrics_port.to_string());
    let new = start_on(
        "shardproxy-new",
        || ("127.0.0.1".to_string(), port),
        |_, _, _| {
            let mut c = Command::new(bin);
            c.args([
                "-c",
                &conf_s,
                "-s",
                &sp,
                "-a",
                "127.0.0.1",
                "--metrics-port",
                &mp,
            ])
            .args(args);
            c
        },
    );
    // The old process drains (the kept client is served meanwhile) and exits 0.
    assert_eq!(kept.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    let status = old.wait_status(Duration::from_secs(15));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{status:?}\n{}",
        old.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = looper
        .join()
        .unwrap_or_else(|_| panic!("the client loop panicked"));
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 50, "only {ok} PINGs");
    println!("{ok} PINGs on new connections across the upgrade, none refused or failed");
    assert!(
        old.log().contains("a new process took the listeners over"),
        "{}",
        old.log()
    );
    assert!(new.log().contains("taken over"), "{}", new.log());
    // The pid file names the new process; it serves.
    assert_eq!(
        std::fs::read_to_string(&pidf)
            .map(|s| s.trim().to_string())
            .ok(),
        Some(new.pid().to_string())
    );
    let mut after = Conn::new(port);
    assert_eq!(after.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    // The stats and metrics ports answer, now from the new process.
    let (status, body) = old.http_get("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(old.stats().contains("\"alpha\""));
    // And it can hand over in turn: its upgrade socket answers.
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_ok());
}
