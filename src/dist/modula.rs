//! twemproxy's modula: each live server appears `weight` times in a list (index
//! order) and `hash % len` picks the slot.

use super::{key_hash, BuildArgs, Distributor, Empty, NoServer, RouteKey};
use crate::hash::HashFn;

#[derive(Debug)]
pub struct Modula {
    hash: HashFn,
    slots: Vec<u32>,
}

impl Distributor for Modula {
    #[inline]
    fn dispatch(&self, key: RouteKey<'_>) -> Result<usize, NoServer> {
        let h = key_hash(self.hash, key.bytes);
        let len = self.slots.len() as u32;
        // `slots` is never empty: build() returns `Empty` then.
        match self.slots.get((h % len.max(1)) as usize) {
            Some(i) => Ok(*i as usize),
            None => Err(NoServer::AllEjected),
        }
    }
}

pub fn build(args: BuildArgs<'_>) -> Box<dyn Distributor> {
    let slots: Vec<u32> = args
        .live
        .iter()
        .flat_map(|n| std::iter::repeat_n(n.index as u32, n.weight as usize))
        .collect();
    if slots.is_empty() {
        return Box::new(Empty);
    }
    Box::new(Modula {
        hash: args.hash,
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::nodes;

    #[test]
    fn weights_repeat_slots() {
        let live = nodes(&[("a", 1), ("b", 2)]);
        let d = build(BuildArgs {
            hash: HashFn::Md5,
            live: &live,
            slots: None,
        });
        // md5("apple") = 3195025439; % 3 = 2 -> slot 2 -> "b".
        assert_eq!(
            d.dispatch(RouteKey {
                bytes: b"apple",
                tagged: false
            }),
            Ok(1)
        );
        // empty key -> hash 0 -> slot 0.
        assert_eq!(
            d.dispatch(RouteKey {
                bytes: b"",
                tagged: false
            }),
            Ok(0)
        );
    }
}
