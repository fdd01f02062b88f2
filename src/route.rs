//! From a request key to a server index: `hash_tag`, then the pool's
//! distribution (spec §4.1). The distribution is rebuilt from the live servers
//! on ejection and published with `arc-swap`, so routing is lock-free.

use crate::dist::{BuildArgs, Distributor, NoServer, Node, RouteKey, Strategy};
use crate::hash::HashFn;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

/// The routing part of a key (spec §4.1 step 2): with a tag `LR`, the bytes
/// between the first `L` and the first `R` after it, when that is non-empty;
/// otherwise the whole key.
#[inline]
pub fn route_key(tag: Option<[u8; 2]>, key: &[u8]) -> RouteKey<'_> {
    if let Some([l, r]) = tag {
        if let Some(start) = memchr::memchr(l, key) {
            let rest = &key[start + 1..];
            if let Some(len) = memchr::memchr(r, rest) {
                if len > 0 {
                    return RouteKey {
                        bytes: &rest[..len],
                        tagged: true,
                    };
                }
            }
        }
    }
    RouteKey {
        bytes: key,
        tagged: false,
    }
}

/// A pool's router: hash tag + the current distribution.
#[derive(Debug)]
pub struct Router {
    tag: Option<[u8; 2]>,
    hash: HashFn,
    strategy: &'static Strategy,
    nodes: Vec<Node>,
    /// `redis_cluster`: the slot map.
    slots: Option<Arc<Vec<u16>>>,
    current: ArcSwap<Box<dyn Distributor>>,
    /// Every server is in the current distribution (none ejected).
    whole: AtomicBool,
}

impl Router {
    /// Builds a router over every server of the pool.
    pub fn new(
        strategy: &'static Strategy,
        hash: HashFn,
        tag: Option<[u8; 2]>,
        nodes: Vec<Node>,
        slots: Option<Arc<Vec<u16>>>,
    ) -> Router {
        let built = (strategy.build)(BuildArgs {
            hash,
            live: &nodes,
            slots: slots.as_ref(),
        });
        Router {
            tag,
            hash,
            strategy,
            nodes,
            slots,
            current: ArcSwap::from_pointee(built),
            whole: AtomicBool::new(true),
        }
    }

    /// The server index for `key`.
    #[inline]
    pub fn dispatch(&self, key: &[u8]) -> Result<usize, NoServer> {
        self.routing().dispatch(key)
    }

    /// The current distribution, for routing several keys (one load for all
    /// the keys of a multi-key request).
    #[inline]
    pub fn routing(&self) -> Routing {
        // nutcracker: a pool with one server never hashes.
        let single =
            self.nodes.len() == 1 && self.strategy.own_hash.is_none() && self.whole.load(Relaxed);
        Routing {
            tag: self.tag,
            current: (!single).then(|| self.current.load()),
        }
    }

    /// Rebuilds the distribution over the servers for which `live(index)` holds,
    /// and publishes it. Concurrent `dispatch` calls see the old or the new one.
    pub fn rebuild(&self, live: impl Fn(usize) -> bool) {
        let nodes: Vec<Node> = self
            .nodes
            .iter()
            .filter(|n| live(n.index))
            .cloned()
            .collect();
        let built = (self.strategy.build)(BuildArgs {
            hash: self.hash,
            live: &nodes,
            slots: self.slots.as_ref(),
        });
        self.whole.store(nodes.len() == self.nodes.len(), Relaxed);
        self.current.store(Arc::new(built));
    }

    /// Every server of the pool, in index order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
}

/// A snapshot of a router's distribution (see [`Router::routing`]).
#[derive(Debug)]
pub struct Routing {
    tag: Option<[u8; 2]>,
    /// None: the pool's one server takes every key.
    current: Option<arc_swap::Guard<Arc<Box<dyn Distributor>>>>,
}

impl Routing {
    /// Whether every key that starts with `prefix` routes where `prefix`
    /// does: the pool has one server, or `prefix` holds a whole hash tag
    /// (SORT's `BY w_{t}*` patterns make keys the proxy cannot see).
    pub fn routes_every_extension(&self, prefix: &[u8]) -> bool {
        self.current.is_none() || route_key(self.tag, prefix).tagged
    }

    /// The server index for `key`.
    #[inline]
    pub fn dispatch(&self, key: &[u8]) -> Result<usize, NoServer> {
        match &self.current {
            None => Ok(0),
            Some(d) => d.dispatch(route_key(self.tag, key)),
        }
    }

    /// Whether keys have slots (`redis_cluster`).
    #[inline]
    pub fn has_slots(&self) -> bool {
        self.current.as_ref().is_some_and(|d| d.has_slots())
    }

    /// `redis_cluster`: the server index and the slot of `key`.
    #[inline]
    pub fn dispatch_slot(&self, key: &[u8]) -> Result<(usize, Option<u16>), NoServer> {
        match &self.current {
            None => Ok((0, None)),
            Some(d) => {
                let k = route_key(self.tag, key);
                Ok((d.dispatch(k)?, d.slot(k)))
            }
        }
    }
}

/// The `server_name` token of a key in a pool (for error messages).
pub fn server_token<'a>(conf: &crate::conf::PoolConf, key: &'a [u8]) -> &'a [u8] {
    crate::dist::server_name::token(route_key(conf.hash_tag, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::{self, nodes};

    #[test]
    fn hash_tag_edge_cases() {
        let t = Some(*b"{}");
        let cases: [(&[u8], &[u8], bool); 8] = [
            (b"{user1}:a", b"user1", true),
            (b"user1", b"user1", false),
            (b"a{}b", b"a{}b", false),
            (b"a{}b{c}", b"a{}b{c}", false),
            (b"a}b{c}", b"c", true),
            (b"{a}{b}", b"a", true),
            (b"{{a}}", b"{a", true),
            (b"{abc", b"{abc", false),
        ];
        for (key, want, tagged) in cases {
            assert_eq!(
                route_key(t, key),
                RouteKey {
                    bytes: want,
                    tagged
                },
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
        assert_eq!(route_key(Some(*b"$$"), b"q$$r$s$").bytes, b"q$$r$s$");
        assert_eq!(route_key(Some(*b"$$"), b"a$bc$d").bytes, b"bc");
        assert_eq!(route_key(None, b"{a}b").bytes, b"{a}b");
    }

    #[test]
    fn rebuild_moves_keys_off_dead_servers_and_back() {
        let s = dist::strategy("ketama").unwrap_or_else(|| dist::default_strategy());
        let r = Router::new(
            s,
            HashFn::Md5,
            None,
            nodes(&[("a", 1), ("b", 1), ("c", 1)]),
            None,
        );
        let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        let before: Vec<_> = keys.iter().map(|k| r.dispatch(k.as_bytes())).collect();
        r.rebuild(|i| i != 1);
        for (k, b) in keys.iter().zip(&before) {
            let now = r.dispatch(k.as_bytes());
            assert_ne!(now, Ok(1));
            if *b != Ok(1) {
                // ketama recomputes points from scratch with n and W of the live set,
                // but for equal weights surviving servers keep their points.
                assert_eq!(now, *b);
            }
        }
        r.rebuild(|_| false);
        assert_eq!(r.dispatch(b"k1"), Err(NoServer::AllEjected));
        r.rebuild(|_| true);
        let after: Vec<_> = keys.iter().map(|k| r.dispatch(k.as_bytes())).collect();
        assert_eq!(after, before);
    }
}
