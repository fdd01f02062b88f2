//! nutcracker's command line: the same flags, long forms, defaults and checks,
//! plus `--threads`. Parsing is done by clap; the values are checked here so that
//! errors read like nutcracker's (`option -s value 0 is not a valid port`) and
//! exit 1 with the usage text.

use clap::error::ErrorKind;
use clap::{ArgAction, Parser};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The version nutcracker-compatible tooling sees in the stats document.
pub const COMPAT_VERSION: &str = "0.5.0";

pub const DEFAULT_CONF: &str = "conf/nutcracker.yml";
pub const DEFAULT_STATS_PORT: u16 = 22222;
pub const DEFAULT_STATS_ADDR: &str = "0.0.0.0";
pub const DEFAULT_STATS_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1";
pub const DEFAULT_MBUF_SIZE: usize = 16384;
pub const MBUF_MIN: usize = 512;
pub const MBUF_MAX: usize = 16_777_216;
pub const DEFAULT_VERBOSITY: u8 = 5;
pub const MAX_VERBOSITY: u8 = 11;

#[derive(Parser, Debug)]
#[command(
    name = "shardproxy",
    disable_help_flag = true,
    disable_version_flag = true
)]
struct Raw {
    #[arg(short = 'h', long = "help", action = ArgAction::SetTrue)]
    help: bool,
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue)]
    version: bool,
    #[arg(short = 't', long = "test-conf", action = ArgAction::SetTrue)]
    test_conf: bool,
    #[arg(short = 'd', long = "daemonize", action = ArgAction::SetTrue)]
    daemonize: bool,
    #[arg(short = 'D', long = "describe-stats", action = ArgAction::SetTrue)]
    describe_stats: bool,
    #[arg(short = 'v', long = "verbose", allow_hyphen_values = true)]
    verbose: Option<String>,
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    #[arg(short = 'c', long = "conf-file")]
    conf_file: Option<String>,
    #[arg(short = 's', long = "stats-port", allow_hyphen_values = true)]
    stats_port: Option<String>,
    #[arg(short = 'a', long = "stats-addr")]
    stats_addr: Option<String>,
    #[arg(short = 'i', long = "stats-interval", allow_hyphen_values = true)]
    stats_interval: Option<String>,
    #[arg(short = 'p', long = "pid-file")]
    pid_file: Option<String>,
    #[arg(short = 'm', long = "mbuf-size", allow_hyphen_values = true)]
    mbuf_size: Option<String>,
    #[arg(long = "threads", allow_hyphen_values = true)]
    threads: Option<String>,
    #[arg(long = "metrics-port", allow_hyphen_values = true)]
    metrics_port: Option<String>,
    #[arg(long = "metrics-addr")]
    metrics_addr: Option<String>,
    #[arg(long = "client-buffer", allow_hyphen_values = true)]
    client_buffer: Option<String>,
    #[arg(long = "watch-config")]
    watch_config: bool,
    #[arg(long = "drain-timeout", allow_hyphen_values = true)]
    drain_timeout: Option<String>,
    #[arg(long = "upgrade-socket")]
    upgrade_socket: Option<String>,
    /// nutcracker ignores positional arguments; so do we.
    #[arg(hide = true)]
    rest: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub help: bool,
    pub version: bool,
    pub test_conf: bool,
    pub daemonize: bool,
    pub describe_stats: bool,
    pub verbosity: u8,
    pub output: Option<String>,
    pub conf_file: String,
    pub stats_port: u16,
    pub stats_addr: String,
    pub stats_interval_ms: u64,
    pub pid_file: Option<String>,
    pub mbuf_size: usize,
    pub threads: usize,
    /// Prometheus `/metrics` and `/healthz` (off unless given).
    pub metrics_port: Option<u16>,
    pub metrics_addr: String,
    /// Unwritten reply bytes per client before it stops being read.
    pub client_buffer: usize,
    /// Reload when the configuration file changes.
    pub watch_config: bool,
    /// After a reload retires a listener (its pool removed, its `listen`
    /// changed): how long its clients are still served.
    pub drain_timeout: std::time::Duration,
    /// Binary upgrade: hand the listeners to a new process / take them
    /// from the running one over this unix socket.
    pub upgrade_socket: Option<String>,
}

/// Default of `--drain-timeout`, in seconds.
pub const DEFAULT_DRAIN_TIMEOUT_S: u64 = 30;

/// A command-line error: the message nutcracker would print (without the
/// program name), to be followed by the usage text and exit status 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Saturate: "99999999999999999999" is still "a number", just a big one.
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

impl Options {
    /// Parses `args` (including the program name).
    pub fn parse<I, T>(args: I) -> Result<Options, CliError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let raw = Raw::try_parse_from(args).map_err(clap_error)?;
        let need_number = |c: char| CliError(format!("option -{c} requires a number"));
        let verbosity = match raw.verbose.as_deref() {
            None => DEFAULT_VERBOSITY,
            Some(v) => digits(v)
                .ok_or_else(|| need_number('v'))?
                .min(u64::from(MAX_VERBOSITY)) as u8,
        };
        let stats_port = match raw.stats_port.as_deref() {
            None => DEFAULT_STATS_PORT,
            Some(v) => {
                let n = digits(v).ok_or_else(|| need_number('s'))?;
                u16::try_from(n)
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| CliError(format!("option -s value {n} is not a valid port")))?
            }
        };
        let stats_interval_ms = match raw.stats_interval.as_deref() {
            None => DEFAULT_STATS_INTERVAL_MS,
            Some(v) => digits(v).ok_or_else(|| need_number('i'))?,
        };
        let mbuf_size = match raw.mbuf_size.as_deref() {
            None => DEFAULT_MBUF_SIZE,
            Some(v) => {
                let n = digits(v)
                    .filter(|&n| n != 0)
                    .ok_or_else(|| CliError("option -m requires a non-zero number".into()))?;
                if n < MBUF_MIN as u64 || n > MBUF_MAX as u64 {
                    return Err(CliError(format!(
                        "mbuf chunk size must be between {MBUF_MIN} and {MBUF_MAX} bytes"
                    )));
                }
                n as usize
            }
        };
        let threads = match raw.threads.as_deref() {
            None => 1,
            Some(v) => digits(v)
                .filter(|&n| (1..=1024).contains(&n))
                .ok_or_else(|| {
                    CliError("option --threads requires a number from 1 to 1024".into())
                })? as usize,
        };
        let metrics_port = match raw.metrics_port.as_deref() {
            None => None,
            Some(v) => {
                let n = digits(v)
                    .ok_or_else(|| CliError("option --metrics-port requires a number".into()))?;
                Some(u16::try_from(n).ok().filter(|&p| p != 0).ok_or_else(|| {
                    CliError(format!(
                        "option --metrics-port value {n} is not a valid port"
                    ))
                })?)
            }
        };
        let client_buffer = match raw.client_buffer.as_deref() {
            None => crate::client::DEFAULT_CLIENT_BUFFER,
            Some(v) => digits(v)
                .filter(|&n| (4096..=1 << 40).contains(&n))
                .ok_or_else(|| {
                    CliError(
                        "option --client-buffer requires a number of bytes from 4096 to 2^40"
                            .into(),
                    )
                })? as usize,
        };
        let drain_timeout = match raw.drain_timeout.as_deref() {
            None => std::time::Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_S),
            Some(v) => std::time::Duration::from_secs(
                digits(v).filter(|&n| n <= 86_400).ok_or_else(|| {
                    CliError(
                        "option --drain-timeout requires a number of seconds (0 to 86400)".into(),
                    )
                })?,
            ),
        };
        Ok(Options {
            help: raw.help,
            version: raw.version,
            test_conf: raw.test_conf,
            daemonize: raw.daemonize,
            describe_stats: raw.describe_stats,
            verbosity,
            output: raw.output,
            conf_file: raw.conf_file.unwrap_or_else(|| DEFAULT_CONF.to_string()),
            stats_port,
            stats_addr: raw
                .stats_addr
                .unwrap_or_else(|| DEFAULT_STATS_ADDR.to_string()),
            stats_interval_ms,
            pid_file: raw.pid_file,
            mbuf_size,
            threads,
            metrics_port,
            metrics_addr: raw
                .metrics_addr
                .unwrap_or_else(|| DEFAULT_METRICS_ADDR.to_string()),
            client_buffer,
            watch_config: raw.watch_config,
            drain_timeout,
            upgrade_socket: raw.upgrade_socket,
        })
    }
}

fn clap_error(e: clap::Error) -> CliError {
    let arg = e
        .get(clap::error::ContextKind::InvalidArg)
        .map(|v| v.to_string())
        .unwrap_or_default();
    // clap renders the argument as "-c <CONF_FILE>" or "--conf-file <CONF_FILE>".
    let flag = arg.split([' ', '=']).next().unwrap_or("").to_string();
    let short = match flag.as_str() {
        "--verbose" => "-v",
        "--output" => "-o",
        "--conf-file" => "-c",
        "--stats-port" => "-s",
        "--stats-addr" => "-a",
        "--stats-interval" => "-i",
        "--pid-file" => "-p",
        "--mbuf-size" => "-m",
        f => f,
    };
    match e.kind() {
        ErrorKind::InvalidValue | ErrorKind::NoEquals => {
            let what = match short {
                "-c" | "-o" | "-p" => "a file name",
                "-a" => "a string",
                _ => "a number",
            };
            CliError(format!("option {short} requires {what}"))
        }
        ErrorKind::UnknownArgument => CliError(format!(
            "invalid option -- '{}'",
            flag.trim_start_matches('-')
        )),
        ErrorKind::ArgumentConflict => CliError(format!("option {short} given twice")),
        _ => CliError(
            e.kind()
                .as_str()
                .unwrap_or("invalid command line")
                .to_string(),
        ),
    }
}

/// The version banner (`-V`, and before `-h`/`-D`).
pub fn banner() -> String {
    format!("This is shardproxy-{VERSION} (nutcracker-{COMPAT_VERSION} compatible)\nasync event backend: tokio\n\n")
}

pub fn usage() -> String {
    format!(
        "Usage: shardproxy [-hVdDt] [-v verbosity level] [-o output file]
                  [-c conf file] [-s stats port] [-a stats addr]
                  [-i stats interval] [-p pid file] [-m mbuf size]
                  [--threads N] [--metrics-port N] [--metrics-addr S]
                  [--client-buffer N] [--watch-config] [--drain-timeout S]
                  [--upgrade-socket PATH]

Options:
  -h, --help             : this help
  -V, --version          : show version and exit
  -t, --test-conf        : test configuration for syntax errors and exit
  -d, --daemonize        : run as a daemon
  -D, --describe-stats   : print stats description and exit
  -v, --verbose=N        : set logging level (default: {DEFAULT_VERBOSITY}, min: 0, max: {MAX_VERBOSITY})
  -o, --output=S         : set logging file (default: stderr)
  -c, --conf-file=S      : set configuration file (default: {DEFAULT_CONF})
  -s, --stats-port=N     : set stats monitoring port (default: {DEFAULT_STATS_PORT})
  -a, --stats-addr=S     : set stats monitoring ip (default: {DEFAULT_STATS_ADDR})
  -i, --stats-interval=N : set stats aggregation interval in msec (default: {DEFAULT_STATS_INTERVAL_MS} msec)
  -p, --pid-file=S       : set pid file (default: off)
  -m, --mbuf-size=N      : set size of mbuf chunk in bytes (default: {DEFAULT_MBUF_SIZE} bytes)
      --threads=N        : worker threads (default: 1, nutcracker's topology)
      --metrics-port=N   : serve Prometheus /metrics and /healthz on this port (default: off)
      --metrics-addr=S   : address for --metrics-port (default: {DEFAULT_METRICS_ADDR})
      --client-buffer=N  : unwritten reply bytes per client before it stops being read (default: 16 MiB)
      --watch-config     : reload the configuration file when it changes (as SIGUSR1 does)
      --drain-timeout=S  : after a reload retires a listener, serve its clients this long (default: {DEFAULT_DRAIN_TIMEOUT_S} s)
      --upgrade-socket=P : binary upgrade: a new process started with the same P takes the listeners over (default: off)

"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, CliError> {
        Options::parse(std::iter::once("shardproxy").chain(args.iter().copied()))
    }

    fn err(args: &[&str]) -> String {
        match parse(args) {
            Ok(o) => panic!("accepted {args:?}: {o:?}"),
            Err(CliError(m)) => m,
        }
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(o.conf_file, "conf/nutcracker.yml");
        assert_eq!(
            (o.stats_port, o.stats_addr.as_str(), o.stats_interval_ms),
            (22222, "0.0.0.0", 30000)
        );
        assert_eq!((o.verbosity, o.mbuf_size, o.threads), (5, 16384, 1));
        assert!(!o.test_conf && !o.daemonize && o.pid_file.is_none() && o.output.is_none());
        assert_eq!(
            (o.metrics_port, o.metrics_addr.as_str()),
            (None, "127.0.0.1")
        );
    }

    #[test]
    fn metrics_port_and_addr() {
        let o = parse(&["--metrics-port", "9100", "--metrics-addr=::1"])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (o.metrics_port, o.metrics_addr.as_str()),
            (Some(9100), "::1")
        );
        assert_eq!(
            err(&["--metrics-port", "70000"]),
            "option --metrics-port value 70000 is not a valid port"
        );
        assert_eq!(
            err(&["--metrics-port=x"]),
            "option --metrics-port requires a number"
        );
        let o = parse(&["--client-buffer", "65536"]).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(o.client_buffer, 65536);
        assert!(err(&["--client-buffer", "10"]).starts_with("option --client-buffer requires"));
    }

    #[test]
    fn every_flag_short_long_and_bundled() {
        let o = parse(&[
            "-tdD",
            "-v",
            "7",
            "-o",
            "l",
            "-c",
            "c.yml",
            "-s",
            "1",
            "-a",
            "127.0.0.1",
            "-i",
            "5",
            "-p",
            "p",
            "-m",
            "512",
            "--threads",
            "2",
        ])
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(o.test_conf && o.daemonize && o.describe_stats);
        assert_eq!(
            (
                o.verbosity,
                o.stats_port,
                o.stats_interval_ms,
                o.mbuf_size,
                o.threads
            ),
            (7, 1, 5, 512, 2)
        );
        let o = parse(&[
            "--verbose=12",
            "--conf-file=x",
            "--stats-port=2",
            "--stats-addr=::1",
            "--stats-interval=9",
            "--pid-file=p",
            "--mbuf-size=16777216",
            "-hV",
            "ignored",
        ])
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (o.verbosity, o.conf_file.as_str(), o.stats_port, o.mbuf_size),
            (11, "x", 2, 16777216)
        );
        assert!(o.help && o.version);
    }

    #[test]
    fn nutcracker_messages() {
        assert_eq!(err(&["-v", "abc"]), "option -v requires a number");
        assert_eq!(err(&["-v", "-1"]), "option -v requires a number");
        assert_eq!(err(&["-s", "0"]), "option -s value 0 is not a valid port");
        assert_eq!(
            err(&["-s", "70000"]),
            "option -s value 70000 is not a valid port"
        );
        assert_eq!(err(&["-s", "x"]), "option -s requires a number");
        assert_eq!(err(&["-i", "-5"]), "option -i requires a number");
        assert_eq!(err(&["-m", "0"]), "option -m requires a non-zero number");
        assert_eq!(
            err(&["-m", "100"]),
            "mbuf chunk size must be between 512 and 16777216 bytes"
        );
        assert_eq!(err(&["-c"]), "option -c requires a file name");
        assert_eq!(err(&["-a"]), "option -a requires a string");
        assert_eq!(err(&["-x"]), "invalid option -- 'x'");
        assert_eq!(err(&["--bogus"]), "invalid option -- 'bogus'");
        assert_eq!(
            err(&["--threads", "0"]),
            "option --threads requires a number from 1 to 1024"
        );
    }
}
