//! Start-up and shutdown: bind every pool's listener (one `SO_REUSEPORT`
//! socket per worker for TCP when there are several workers or the pool asks for
//! `reuseport`; one shared unix listener), start the workers, then handle
//! signals on the main thread until SIGINT/SIGTERM.

use crate::cli::Options;
use crate::conf::{Conf, Listen};
use crate::log::Logger;
use crate::net::{self, StdListener};
use crate::reload::Reloader;
use crate::stats::{self, Registry};
use crate::worker::{self, PoolShared};
use anyhow::Context;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Runs the proxy until SIGINT or SIGTERM.
pub fn run(conf: Conf, opts: Options, logger: Logger) -> anyhow::Result<()> {
    let threads = opts.threads.max(1);
    crate::client::set_client_buffer(opts.client_buffer);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut conf = conf;
    // Cluster pools start with the slot map their seeds give.
    rt.block_on(crate::cluster::initial(&mut conf.pools));
    let pools: Vec<Arc<PoolShared>> = conf
        .pools
        .into_iter()
        .map(|p| Arc::new(PoolShared::new(p)))
        .collect();
    let registry = Arc::new(Registry::new(
        pools.iter().map(|p| p.meta()).collect(),
        threads,
    ));
    // A binary upgrade: the running process's listening sockets, if one
    // answers on the upgrade socket.
    let mut taken = match &opts.upgrade_socket {
        Some(path) => crate::upgrade::take_over(path)
            .with_context(|| format!("upgrade: taking the listeners over from '{path}'"))?,
        None => None,
    };
    let handover = Arc::new(crate::upgrade::Handover::default());
    // Bind everything before starting workers: a busy port fails start-up.
    // The stats port first, as nutcracker. After an upgrade, the stats and
    // metrics ports are taken over like the pools' (the old process holds
    // them until it exits).
    let mut side_port =
        |what: &str, host: &str, port: u16| -> anyhow::Result<tokio::net::TcpListener> {
            let _rt = rt.enter();
            let key = format!("{host}:{port}");
            let name = format!("[{what}]");
            let l = match taken.as_mut().and_then(|t| t.take(&name, &key)) {
                Some(mut fds) if fds.len() == 1 => {
                    let l = std::net::TcpListener::from(fds.remove(0));
                    l.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(l)?
                }
                _ => stats::serve::bind(host, port, what)?,
            };
            let dup = socket2::SockRef::from(&l).try_clone()?;
            handover.set(&name, &key, vec![std::os::fd::OwnedFd::from(dup)]);
            Ok(l)
        };
    // Watched before any listener accepts: a change made once the proxy
    // answers is never missed.
    let watched: crate::watch::Watched = Arc::new(std::sync::Mutex::new(
        std::iter::once(opts.conf_file.clone())
            .chain(
                pools
                    .iter()
                    .flat_map(|p| p.conf.tls.files().into_iter().map(|(_, f)| f.to_string())),
            )
            .collect(),
    ));
    let changes = if opts.watch_config {
        let _rt = rt.enter();
        Some(
            crate::watch::watch(watched.clone())
                .with_context(|| format!("--watch-config: cannot watch '{}'", opts.conf_file))?,
        )
    } else {
        None
    };
    let stats_listener = side_port("stats", &opts.stats_addr, opts.stats_port)?;
    let metrics_listener = match opts.metrics_port {
        Some(port) => Some(side_port("metrics", &opts.metrics_addr, port)?),
        None => None,
    };
    let mut per_worker: Vec<Vec<(Arc<PoolShared>, Vec<StdListener>)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for pool in &pools {
        let c = &pool.conf;
        let inherited = taken.as_mut().and_then(|t| t.take(&c.name, &c.listen_spec));
        let (sockets, how) = match inherited {
            Some(fds) => (listeners_from(c, fds)?, "taken over"),
            None => (bind_pool(c, threads)?, "bound"),
        };
        handover.set(
            &c.name,
            &c.listen_spec,
            sockets
                .iter()
                .map(StdListener::dup_fd)
                .collect::<std::io::Result<Vec<_>>>()?,
        );
        for (w, mine) in per_worker.iter_mut().zip(spread(sockets, threads)?) {
            w.push((pool.clone(), mine));
        }
        tracing::info!(
            "pool '{}' listening on {} ({} server(s), {}; {how})",
            c.name,
            c.listen_spec,
            c.servers.len(),
            if c.redis { "redis" } else { "memcache" }
        );
    }
    let shutdown = worker::Shutdown::default();
    let mut handles = Vec::with_capacity(threads);
    let mut senders = Vec::with_capacity(threads);
    for (i, listeners) in per_worker.into_iter().enumerate() {
        let token = shutdown.clone();
        let wstats = registry.worker(i).context("no stats for a worker thread")?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        senders.push(tx);
        let h = std::thread::Builder::new()
            .name(format!("shardproxy-w{i}"))
            .spawn(move || worker::run(listeners, wstats, token, rx))
            .context("starting a worker thread")?;
        handles.push(h);
    }
    if let Ok(text) = std::fs::read(&opts.conf_file) {
        registry.reloads.loaded(&text);
    }
    // With --upgrade-socket the pid file is written now that this process
    // serves (see main.rs); it names this process from here on.
    let _pid = match (&opts.pid_file, &opts.upgrade_socket) {
        (Some(p), Some(_)) => Some(
            crate::daemon::PidFile::create(p)
                .with_context(|| format!("writing pid file '{p}' failed"))?,
        ),
        _ => None,
    };
    // The workers accept: the process that handed its listeners over may go.
    if let Some(t) = taken {
        for p in &t.pools {
            tracing::warn!(
                "upgrade: pool '{}' on {} of the old process is not in this configuration: its socket closes",
                p.name,
                p.listen
            );
        }
        t.ready().context("upgrade: telling the old process")?;
        tracing::info!("upgrade: took the listeners over; the old process drains and exits");
    }
    let (upgraded_tx, upgraded) = tokio::sync::mpsc::unbounded_channel();
    if let Some(path) = &opts.upgrade_socket {
        crate::upgrade::serve(path, handover.clone(), move || {
            let _ = upgraded_tx.send(());
        })
        .with_context(|| format!("upgrade: listening on '{path}'"))?;
    }
    let (news_tx, news) = tokio::sync::mpsc::unbounded_channel();
    let mut reloader = Reloader::new(
        opts.conf_file.clone(),
        pools,
        crate::reload::With {
            workers: senders,
            registry: registry.clone(),
            drain: opts.drain_timeout,
            handover,
            news: news_tx,
            watched,
        },
    );
    crate::tls::publish(reloader.pools().iter().map(|p| &p.conf));
    for p in reloader.pools() {
        if p.conf.tls.server && !p.conf.tls.server_verify {
            tracing::warn!(
                "pool '{}': server_tls_verify: false: the servers' certificates are not verified (anyone on the path can pose as a server)",
                p.conf.name
            );
        }
    }
    // Pools whose servers Sentinel places.
    {
        let _rt = rt.enter();
        reloader.follow();
    }
    tracing::info!(
        "stats on {}:{}{}",
        opts.stats_addr,
        opts.stats_port,
        match opts.metrics_port {
            Some(p) => format!(
                ", Prometheus metrics on http://{}:{p}/metrics",
                opts.metrics_addr
            ),
            None => String::new(),
        }
    );
    rt.spawn(stats::serve::stats_port(
        stats_listener,
        registry.clone(),
        shutdown.token().clone(),
    ));
    if let Some(l) = metrics_listener {
        rt.spawn(stats::serve::metrics_port(
            l,
            registry.clone(),
            shutdown.token().clone(),
        ));
    }
    rt.block_on(signals(
        &logger,
        shutdown.token(),
        &mut reloader,
        changes,
        upgraded,
        news,
    ))?;
    shutdown.trigger();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("worker failed: {e}"),
            Err(_) => tracing::error!("worker panicked"),
        }
    }
    Ok(())
}

/// Listeners from sockets handed over by the old process (of the kind the
/// pool's `listen` says).
#[allow(unsafe_code)]
fn listeners_from(
    c: &crate::conf::PoolConf,
    fds: Vec<std::os::fd::OwnedFd>,
) -> anyhow::Result<Vec<StdListener>> {
    fds.into_iter()
        .map(|fd| {
            let l = match c.listen {
                Listen::Tcp { .. } => StdListener::Tcp(std::net::TcpListener::from(fd)),
                _ => StdListener::Unix(std::os::unix::net::UnixListener::from(fd)),
            };
            match &l {
                StdListener::Tcp(t) => t.set_nonblocking(true)?,
                StdListener::Unix(u) => u.set_nonblocking(true)?,
            }
            Ok(l)
        })
        .collect()
}

/// A pool's sockets shared out among `threads` workers: every socket is
/// accepted on by some worker (one left out would hold connections nobody
/// accepts); with fewer sockets than workers, they are shared.
fn spread(sockets: Vec<StdListener>, threads: usize) -> anyhow::Result<Vec<Vec<StdListener>>> {
    let n = sockets.len();
    let mut out: Vec<Vec<StdListener>> = (0..threads).map(|_| Vec::new()).collect();
    if n == 0 {
        return Ok(out);
    }
    for i in threads.min(n)..threads {
        out[i].push(sockets[i % n].try_clone()?);
    }
    for (i, s) in sockets.into_iter().enumerate() {
        out[i % threads].push(s);
    }
    Ok(out)
}

/// A pool's listeners, one per worker: a `SO_REUSEPORT` socket each for TCP
/// with several workers (or `reuseport`), else one shared socket.
pub fn bind_pool(c: &crate::conf::PoolConf, threads: usize) -> anyhow::Result<Vec<StdListener>> {
    let reuseport = c.reuseport || threads > 1;
    let first = net::bind(&c.listen, c.backlog, reuseport)
        .with_context(|| format!("pool '{}': bind to '{}' failed", c.name, c.listen_spec))?;
    let mut out = Vec::with_capacity(threads);
    for i in 0..threads {
        let l = if i == 0 {
            first.try_clone()?
        } else if matches!(c.listen, Listen::Tcp { .. }) && reuseport {
            net::bind(&c.listen, c.backlog, true)
                .with_context(|| format!("pool '{}': bind to '{}' failed", c.name, c.listen_spec))?
        } else {
            first.try_clone()?
        };
        out.push(l);
    }
    Ok(out)
}

async fn signals(
    logger: &Logger,
    shutdown: &CancellationToken,
    reloader: &mut Reloader,
    mut changes: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
    mut upgraded: tokio::sync::mpsc::UnboundedReceiver<()>,
    mut news: tokio::sync::mpsc::UnboundedReceiver<crate::sentinel::News>,
) -> anyhow::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN))?;
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU))?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("signal 1 (SIGHUP) received, reopening log file");
                logger.reopen();
            }
            _ = ttin.recv() => {
                tracing::info!("signal 21 (SIGTTIN) received, up logging level");
                let n = logger.adjust(true);
                tracing::info!("up log level to {n}");
            }
            _ = ttou.recv() => {
                tracing::info!("signal 22 (SIGTTOU) received, down logging level");
                let n = logger.adjust(false);
                tracing::info!("down log level to {n}");
            }
            _ = usr1.recv() => {
                tracing::info!("signal 10 (SIGUSR1) received, reloading the configuration");
                reloader.reload();
            }
            _ = usr2.recv() => tracing::info!("signal 12 (SIGUSR2) received"),
            Some(n) = news.recv() => reloader.news(n),
            Some(()) = upgraded.recv() => {
                // A new process accepts on our sockets: stop accepting,
                // serve the clients until they leave or the drain ends.
                reloader.retire_all().await;
                break;
            }
            Some(()) = async {
                match changes.as_mut() {
                    Some(c) => c.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::info!("the configuration file changed, reloading it");
                reloader.reload();
            }
            _ = int.recv() => {
                tracing::info!("signal 2 (SIGINT) received, exiting");
                break;
            }
            _ = term.recv() => {
                tracing::info!("signal 15 (SIGTERM) received, exiting");
                break;
            }
        }
    }
    let _ = shutdown;
    Ok(())
}
