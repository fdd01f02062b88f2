//! # shardproxy
//!
//! A sharding proxy for Redis and Memcached that twemproxy (nutcracker) users can
//! switch to without changing their setup: the same YAML, flags and key placement
//! (bit-exact hashes and ketama continuum), with multi-core workers, error
//! replies instead of dropped connections, and configuration errors that say why.
//!
//! ## The data path
//!
//! Data flows one way, in twemproxy's words:
//!
//! ```text
//! listener → client → proto (scan) → route (hash_tag → hash → distribution)
//!          → server slot → server connection → backend
//! backend → server connection → reply slot → client (in request order)
//! ```
//!
//! * A **client** ([`client`]) reads bytes into one buffer and asks the protocol
//!   scanner ([`proto`]) for complete requests. Scanners are sans-IO: they return
//!   "complete, N bytes, arguments here" or "need more" and never allocate for a
//!   declared length. A request becomes a zero-copy `Bytes` slice of the buffer.
//! * The **router** ([`route`]) applies `hash_tag`, then the pool's distribution
//!   ([`dist`]), reached through one trait so that strategies are pluggable
//!   (`ketama`, `modula`, `random`, `server_name`).
//! * The request is queued on a **server connection** ([`server`]) of the chosen
//!   server, together with a reply [`msg::Slot`]. Requests from every client of
//!   the worker are pipelined onto that connection and written with vectored
//!   writes; replies are matched strictly FIFO and dropped into the slots.
//! * The client keeps an in-order queue of slots and writes each reply as soon as
//!   every earlier one is written. Multi-key commands (MGET, DEL, MSET, …,
//!   memcache `get`/`gets`/`gat`/`gats`) become one fragment per server and are
//!   merged in key order, in linear time ([`client::frag`]).
//!
//! The server side never imports the client side; both share only [`msg`].
//!
//! ## Two protocols, one engine
//!
//! Redis and memcache differ only where bytes are interpreted: the request and
//! reply scanners ([`proto::redis`], [`proto::memcache`]), the client-side
//! handler that turns a scanned request into forwards and local answers
//! ([`client::redis`], [`client::memcache`]) and the merge of fragments.
//! Everything else — routing, server connections, FIFO matching, timeouts,
//! in-order replies, backpressure — is the same code, selected by
//! [`msg::Protocol`]. memcache `noreply` requests are queued with no reply
//! expected, so they never time out and never desynchronise the FIFO.
//!
//! ## Threading
//!
//! `--threads N` workers ([`worker`]), each a single-threaded tokio runtime with
//! a `LocalSet`: it owns its listeners (one `SO_REUSEPORT` TCP socket per
//! worker, or a shared unix listener), its clients and its own connections to
//! every server. Per-request state is `Rc`/`RefCell`: no locks and no atomic
//! read-modify-write on the request path (stats and health use relaxed loads
//! and stores, plain moves on x86-64). Process-wide state is explicit: the configuration and routing
//! tables (`Arc`, the distribution published with `arc-swap` so a rebuild never
//! blocks routing) and the client counts. `--threads 1` is nutcracker's topology.
//! Workers count into their own stats (single-writer counters, no locks); the
//! main thread serves the stats port and `/metrics` ([`stats`]), summing every
//! worker's counters when asked. The main thread also handles signals
//! ([`proxy`]): SIGHUP reopens the log,
//! SIGTTIN/SIGTTOU change the level, SIGINT/SIGTERM stop accepting and let
//! in-flight requests finish (bounded) before exiting 0.
//!
//! ## Module map
//!
//! | module | twemproxy concept | I/O? |
//! |---|---|---|
//! | [`conf`] | `nc_conf.c`: YAML → validated pools, nutcracker's order | no |
//! | [`hash`] | `hashkit/`: the twelve hash functions | no |
//! | [`dist`] | ketama / modula / random continuum, plus `server_name` | no |
//! | [`route`] | `hash_tag`, key → server index, rebuild over live servers | no |
//! | [`health`] | `server_failure_limit`, `auto_eject_hosts`, retry (process-wide) | no |
//! | [`proto`] | `nc_redis.c` / `nc_memcache.c` parsers, command table | no |
//! | [`msg`] | `nc_message.c`: reply slots, proxy error kinds | no |
//! | [`client`] | `nc_client.c`: client connection, in-order replies, fragments | yes |
//! | [`server`] | `nc_server.c`: server connections, FIFO matching, timeouts | yes |
//! | [`worker`] | `nc_core.c` event loop, one per thread | yes |
//! | [`net`] | listeners, connects, socket options | yes |
//! | [`proxy`] | start-up, signals, shutdown | yes |
//! | [`stats`] | `nc_stats.c`: per-worker counters, the stats port's JSON, Prometheus | yes (its two listeners) |
//! | [`cli`], [`log`], [`daemon`] | `nc.c`, `nc_log.c`, `nc_signal.c` | |

pub mod cli;
pub mod client;
pub mod conf;
pub mod daemon;
pub mod dist;
pub mod hash;
pub mod health;
pub mod log;
pub mod msg;
pub mod net;
pub mod proto;
pub mod proxy;
pub mod route;
pub mod server;
pub mod stats;
pub mod worker;
