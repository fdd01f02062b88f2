//! The `shardproxy` binary: command line, `-t`, daemonizing, logging, run.
//! Everything else lives in the library (see `src/lib.rs`).

use shardproxy::cli::{self, CliError, Options};
use shardproxy::conf::Conf;
use shardproxy::daemon::{self, PidFile};
use shardproxy::log::Logger;
use std::process::ExitCode;

/// mimalloc: the request path allocates small, short-lived objects (reply
/// slots, fragments, buffers) at a high rate; glibc malloc/free took ~15% of
/// the proxy's instructions under callgrind (docs/performance.md). Built
/// with `no_thp`: mimalloc otherwise asks for transparent huge pages on its
/// arenas, and a proxy that has barely allocated anything starts with 12 MB
/// resident (2 MB pages) instead of 4.5 MB, at no measurable gain in speed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args_os()) {
        Ok(o) => o,
        Err(CliError(msg)) => {
            eprint!("shardproxy: {msg}\n{}", cli::usage());
            return ExitCode::FAILURE;
        }
    };
    if opts.help || opts.version || opts.describe_stats {
        let mut out = cli::banner();
        if opts.help {
            out.push_str(&cli::usage());
        } else if opts.describe_stats {
            out.push_str(&shardproxy::stats::describe());
        }
        eprint!("{out}");
        return ExitCode::SUCCESS;
    }
    let conf = match Conf::load(&opts.conf_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardproxy: {e}");
            eprintln!(
                "shardproxy: configuration file '{}' syntax is invalid",
                opts.conf_file
            );
            return ExitCode::FAILURE;
        }
    };
    if opts.test_conf {
        eprintln!(
            "shardproxy: configuration file '{}' syntax is ok",
            opts.conf_file
        );
        return ExitCode::SUCCESS;
    }
    match run(opts, conf) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("shardproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: Options, conf: Conf) -> anyhow::Result<()> {
    // The log file is opened before daemonizing so that a bad -o is reported on
    // the terminal; the configuration was validated before too (unlike
    // nutcracker, `-d` with a bad configuration exits 1).
    let logger = Logger::init(opts.verbosity, opts.output.as_deref()).map_err(|e| {
        anyhow::anyhow!(
            "opening log file '{}' failed: {e}",
            opts.output.as_deref().unwrap_or("")
        )
    })?;
    if opts.daemonize {
        daemon::daemonize()?;
    }
    // A crash says so in the log before it dumps core, as nutcracker does.
    shardproxy::crash::install();
    // With --upgrade-socket, the pid file is written once this process
    // serves (after a take-over): a new process that fails to start must
    // not replace the running one's.
    let _pid = match &opts.pid_file {
        Some(_) if opts.upgrade_socket.is_some() => None,
        Some(p) => Some(
            PidFile::create(p)
                .map_err(|e| anyhow::anyhow!("writing pid file '{p}' failed: {e}"))?,
        ),
        None => None,
    };
    tracing::info!(
        "shardproxy-{} (nutcracker-{} compatible) started on pid {} with {} worker thread(s)",
        cli::VERSION,
        cli::COMPAT_VERSION,
        std::process::id(),
        opts.threads
    );
    shardproxy::proxy::run(conf, opts, logger)?;
    tracing::info!("done, rabbit done");
    Ok(())
}
