//! twemproxy's random: a uniformly random live server per key (weights, hash and
//! hash tag are not used).

use super::{BuildArgs, Distributor, Empty, NoServer, RouteKey};

#[derive(Debug)]
pub struct Random {
    live: Vec<u32>,
}

impl Distributor for Random {
    #[inline]
    fn dispatch(&self, _key: RouteKey<'_>) -> Result<usize, NoServer> {
        let i = fastrand::usize(..self.live.len());
        self.live
            .get(i)
            .map(|&s| s as usize)
            .ok_or(NoServer::AllEjected)
    }
}

pub fn build(args: BuildArgs<'_>) -> Box<dyn Distributor> {
    if args.live.is_empty() {
        return Box::new(Empty);
    }
    Box::new(Random {
        live: args.live.iter().map(|n| n.index as u32).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::nodes;
    use crate::hash::HashFn;

    #[test]
    fn only_live_servers_are_picked_and_all_are() {
        let mut live = nodes(&[("a", 1), ("b", 5), ("c", 1)]);
        live.remove(1);
        let d = build(BuildArgs {
            hash: HashFn::Md5,
            live: &live,
            slots: None,
        });
        let mut seen = [0usize; 3];
        for _ in 0..1000 {
            let i = d
                .dispatch(RouteKey {
                    bytes: b"k",
                    tagged: false,
                })
                .unwrap_or(9);
            seen[i] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(seen[0] > 300 && seen[2] > 300, "{seen:?}");
    }
}
