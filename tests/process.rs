//! Process behaviour that differs from nutcracker on purpose: graceful
//! SIGTERM/SIGINT, and a daemon that validates its config before detaching.

mod support;
use std::time::Duration;
use support::{resp, shardproxy, Conn};

fn pool(r: &support::Proc) -> impl Fn(u16) -> String {
    let s = support::servers(&[r]);
    move |port| format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n{s}")
}

#[test]
fn sigterm_and_sigint_finish_in_flight_requests_and_exit_0() {
    let r = support::redis_with(&["--enable-debug-command", "yes"]);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut p = shardproxy(&pool(&r), &[]);
        let mut k = Conn::new(p.port);
        assert_eq!(k.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
        // Idle clients (one that never sent anything, one between requests)
        // are closed at once, not left to the drain timeout.
        let mut idle = Conn::new(p.port);
        let mut between = Conn::new(p.port);
        assert_eq!(between.cmd(&[b"PING"]), b"+PONG\r\n");
        // A request in flight when the signal arrives still gets its reply.
        let mut blocker = Conn::new(r.port);
        blocker.send(&resp(&[b"DEBUG", b"SLEEP", b"0.3"]));
        std::thread::sleep(Duration::from_millis(50));
        k.send(&resp(&[b"GET", b"k"]));
        std::thread::sleep(Duration::from_millis(50));
        p.signal(sig);
        assert_eq!(k.reply(), b"$1\r\nv\r\n");
        assert_eq!(
            p.wait_exit(Duration::from_secs(10)),
            Some(0),
            "signal {sig}"
        );
        assert_eq!(blocker.reply(), b"+OK\r\n");
        assert!(idle.closed() && between.closed(), "signal {sig}");
        assert!(
            !p.log().contains("still busy"),
            "signal {sig}: idle clients waited for the drain timeout:\n{}",
            p.log()
        );
    }
}

#[test]
fn daemonize_with_a_bad_config_fails_before_detaching() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let conf = dir.path().join("bad.yml");
    std::fs::write(
        &conf,
        "alpha:\n  listen: 127.0.0.1:1\n  hash: nosuch\n  servers:\n   - 127.0.0.1:2:1\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let conf = conf.to_string_lossy().to_string();
    let (code, stderr) = support::run(env!("CARGO_BIN_EXE_shardproxy"), &["-d", "-c", &conf]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("hash"), "{stderr}");
}

/// A crash is logged as nutcracker logs it (upstream's `test_signal` checks
/// the line), then the process dies of the signal (a core dump where the
/// system keeps them).
#[test]
fn sigsegv_is_logged_before_the_core_dump() {
    // No core file from this test, wherever the system would write it.
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: setrlimit with a valid struct; only this test process (and the
    // proxy it starts) is affected.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &none);
    }
    let r = support::redis();
    let mut p = shardproxy(&pool(&r), &[]);
    let mut k = Conn::new(p.port);
    assert_eq!(k.cmd(&[b"PING"]), b"+PONG\r\n");
    p.signal(libc::SIGSEGV);
    let status = p.wait_status(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        Some(libc::SIGSEGV),
        "{status:?}"
    );
    let log = p.log();
    assert!(
        log.lines()
            .any(|l| l.ends_with("ERROR signal 11 (SIGSEGV) received, core dumping")),
        "{log}"
    );
}
