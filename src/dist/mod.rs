//! Distributions: how a routing key becomes a server index.
//!
//! Every strategy is reached through one trait, [`Distributor`], and registered
//! in one table, [`STRATEGIES`]: adding a strategy means writing one module with a
//! `build` function and adding one row (see `docs/routing.md`). The built
//! distributor is immutable; when the set of live servers changes (ejection,
//! §7.3) a new one is built from the live [`Node`]s and published atomically by
//! the pool (`arc-swap`), so routing never waits for a rebuild.
//!
//! Pure code: no I/O, no tokio.

pub mod cluster;
pub mod ketama;
pub mod modula;
pub mod random;
pub mod server_name;

use crate::hash::HashFn;
use std::fmt;

/// One server as a distribution sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The server's index in the pool (nutcracker's sorted order, §1.4.10). This is
    /// what dispatch returns, also when some servers are left out of a rebuild.
    pub index: usize,
    /// The server name: the configured name, or `host` for port 11211, or
    /// `host:port`, or `path:` for an unnamed unix socket (spec §1.4.7).
    pub name: String,
    /// Whether the name was given explicitly in the configuration.
    pub named: bool,
    /// The configured weight (≥ 1).
    pub weight: u32,
}

/// The part of a key that routes it: the hash-tag content when the pool has a
/// `hash_tag` and the key carries a non-empty tag, else the whole key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKey<'a> {
    /// The bytes to route by.
    pub bytes: &'a [u8],
    /// True when `bytes` is the content of a hash tag.
    pub tagged: bool,
}

/// Why a key could not be given a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoServer {
    /// No live server is left (every server ejected): nutcracker answers
    /// "Connection refused" without touching a backend.
    AllEjected,
    /// The strategy found no server for this key (e.g. `server_name` with a token
    /// that names no server).
    Unroutable,
    /// `redis_cluster`: no master serves the key's slot (as the proxy knows
    /// the slot map).
    NoSlotOwner,
}

/// A built distribution: maps a routing key to a server index.
///
/// Implementations are immutable after `build` and shared across worker threads.
pub trait Distributor: Send + Sync + fmt::Debug {
    /// Picks the server index for `key`.
    fn dispatch(&self, key: RouteKey<'_>) -> Result<usize, NoServer>;

    /// `redis_cluster`: the key's slot. A multi-key request is split per
    /// slot, not per server, where the strategy has slots (a cluster node
    /// refuses keys of several slots in one command).
    fn slot(&self, _key: RouteKey<'_>) -> Option<u16> {
        None
    }

    /// Whether [`Distributor::slot`] says anything (asked once per request,
    /// not per key).
    fn has_slots(&self) -> bool {
        false
    }
}

/// The inputs every strategy's `build` gets.
#[derive(Debug, Clone, Copy)]
pub struct BuildArgs<'a> {
    /// The pool's hash function (ignored by strategies that do not hash).
    pub hash: HashFn,
    /// The live servers, in server index order.
    pub live: &'a [Node],
    /// `redis_cluster`: the slot map (slot → server index).
    pub slots: Option<&'a std::sync::Arc<Vec<u16>>>,
}

/// A registered strategy: its configuration name and how to build and check it.
#[derive(Debug)]
pub struct Strategy {
    /// The value of `distribution:` that selects it.
    pub name: &'static str,
    /// A `hash:` value that belongs to this strategy alone (e.g. `server_name`):
    /// such a strategy does not hash keys, and `hash:` may only be absent or this
    /// value. `None` for strategies that use the pool's hash function.
    pub own_hash: Option<&'static str>,
    /// Extra validation of the pool's servers, with a message that says why.
    pub validate: fn(&[Node]) -> Result<(), String>,
    /// Builds the distributor over the live servers (`live` may be empty only when
    /// every server is ejected; the result then answers `AllEjected`).
    pub build: fn(BuildArgs<'_>) -> Box<dyn Distributor>,
}

fn no_validation(_: &[Node]) -> Result<(), String> {
    Ok(())
}

/// Every strategy shardproxy knows, by configuration name.
pub static STRATEGIES: &[Strategy] = &[
    Strategy {
        name: "ketama",
        own_hash: None,
        validate: no_validation,
        build: ketama::build,
    },
    Strategy {
        name: "modula",
        own_hash: None,
        validate: no_validation,
        build: modula::build,
    },
    Strategy {
        name: "random",
        own_hash: None,
        validate: no_validation,
        build: random::build,
    },
    Strategy {
        name: "server_name",
        own_hash: Some("server_name"),
        validate: server_name::validate,
        build: server_name::build,
    },
    Strategy {
        name: "redis_cluster",
        own_hash: Some("redis_cluster"),
        validate: cluster::validate,
        build: cluster::build,
    },
];

/// The strategy for a `distribution:` value.
pub fn strategy(name: &str) -> Option<&'static Strategy> {
    STRATEGIES.iter().find(|s| s.name == name)
}

/// The strategy that claims a `hash:` value, if any (e.g. `server_name`).
pub fn strategy_owning_hash(hash: &str) -> Option<&'static Strategy> {
    STRATEGIES.iter().find(|s| s.own_hash == Some(hash))
}

/// nutcracker's default distribution.
pub fn default_strategy() -> &'static Strategy {
    &STRATEGIES[0]
}

/// The distributor used when no server is live: every key fails.
#[derive(Debug)]
pub(crate) struct Empty;

impl Distributor for Empty {
    fn dispatch(&self, _: RouteKey<'_>) -> Result<usize, NoServer> {
        Err(NoServer::AllEjected)
    }
}

/// The hash value nutcracker routes by: 0 for an empty key, else `H(bytes)`.
#[inline]
pub fn key_hash(hash: HashFn, key: &[u8]) -> u32 {
    if key.is_empty() {
        0
    } else {
        hash.hash(key)
    }
}

#[cfg(test)]
pub(crate) fn nodes(names: &[(&str, u32)]) -> Vec<Node> {
    names
        .iter()
        .enumerate()
        .map(|(index, (name, weight))| Node {
            index,
            name: (*name).to_string(),
            named: false,
            weight: *weight,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_found() {
        for (i, s) in STRATEGIES.iter().enumerate() {
            assert_eq!(strategy(s.name).map(|x| x.name), Some(s.name));
            assert!(STRATEGIES[i + 1..].iter().all(|o| o.name != s.name));
        }
        assert!(strategy("Ketama").is_none());
        assert_eq!(default_strategy().name, "ketama");
        assert_eq!(
            strategy_owning_hash("server_name").map(|s| s.name),
            Some("server_name")
        );
        assert!(strategy_owning_hash("md5").is_none());
    }

    #[test]
    fn empty_key_hashes_to_zero() {
        assert_eq!(key_hash(HashFn::Md5, b""), 0);
        assert_eq!(key_hash(HashFn::Md5, b"apple"), 3195025439);
    }
}
