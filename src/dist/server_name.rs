//! `distribution: server_name` — the key names its server.
//!
//! The routing token is the hash-tag content when the pool has a `hash_tag` and
//! the key carries one (`{r3}user:42` → `r3`), else the part of the key before
//! the first `:` (`r3:user:42` → `r3`), else the whole key. The token is looked up
//! in a map from server name to server index (O(1)); a token that names no live
//! server is [`NoServer::Unroutable`] and the client gets an error reply.
//!
//! Every server of such a pool must carry an explicit, unique name; several names
//! may point at the same `host:port`.

use super::{BuildArgs, Distributor, NoServer, Node, RouteKey};
use std::collections::HashMap;

#[derive(Debug)]
pub struct ServerName {
    by_name: HashMap<Box<[u8]>, usize>,
}

/// The token of a key (see the module docs).
#[inline]
pub fn token<'a>(key: RouteKey<'a>) -> &'a [u8] {
    if key.tagged {
        return key.bytes;
    }
    match memchr::memchr(b':', key.bytes) {
        Some(i) => &key.bytes[..i],
        None => key.bytes,
    }
}

impl Distributor for ServerName {
    #[inline]
    fn dispatch(&self, key: RouteKey<'_>) -> Result<usize, NoServer> {
        self.by_name
            .get(token(key))
            .copied()
            .ok_or(NoServer::Unroutable)
    }
}

pub fn validate(servers: &[Node]) -> Result<(), String> {
    match servers.iter().find(|s| !s.named || s.name.is_empty()) {
        Some(s) => Err(format!(
            "server \"{}\" has no name, but distribution server_name routes by name: write \"host:port:weight name\"",
            s.name
        )),
        None => Ok(()),
    }
}

pub fn build(args: BuildArgs<'_>) -> Box<dyn Distributor> {
    Box::new(ServerName {
        by_name: args
            .live
            .iter()
            .map(|n| (n.name.as_bytes().into(), n.index))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::nodes;
    use crate::hash::HashFn;

    fn key(bytes: &[u8], tagged: bool) -> RouteKey<'_> {
        RouteKey { bytes, tagged }
    }

    #[test]
    fn tokens() {
        assert_eq!(token(key(b"r3:user:42", false)), b"r3");
        assert_eq!(token(key(b"r3", false)), b"r3");
        assert_eq!(token(key(b":x", false)), b"");
        assert_eq!(token(key(b"r3:x", true)), b"r3:x");
    }

    #[test]
    fn routes_by_name_and_refuses_unknown() {
        let live = nodes(&[("r1", 1), ("r2", 1), ("r3", 1)]);
        let d = build(BuildArgs {
            hash: HashFn::Md5,
            live: &live,
            slots: None,
        });
        assert_eq!(d.dispatch(key(b"r2:a", false)), Ok(1));
        assert_eq!(d.dispatch(key(b"r3", false)), Ok(2));
        assert_eq!(d.dispatch(key(b"r9:a", false)), Err(NoServer::Unroutable));
        assert_eq!(d.dispatch(key(b"", false)), Err(NoServer::Unroutable));
    }

    #[test]
    fn every_server_needs_a_name() {
        let mut live = nodes(&[("r1", 1)]);
        assert!(validate(&live).is_err());
        live[0].named = true;
        assert!(validate(&live).is_ok());
    }
}
