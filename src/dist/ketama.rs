//! twemproxy's ketama continuum, point for point.
//!
//! For each live server (index order) the number of points is computed in IEEE
//! single precision exactly as nutcracker does (so weights give the same counts,
//! including the case of a server with zero points), each `<name>-<i>` string
//! gives four points from its MD5 digest, and the points are sorted by value.
//! Lookup takes the first point ≥ hash, wrapping to the first.

use super::{key_hash, BuildArgs, Distributor, Empty, NoServer, Node, RouteKey};
use crate::hash::{md5_digest, HashFn};

const POINTS_PER_SERVER: u32 = 160;
const POINTS_PER_HASH: u32 = 4;
/// nutcracker formats `<name>-<i>` into a 273-byte buffer: longer strings are
/// truncated to 272 bytes before hashing.
const MAX_POINT_STRING: usize = 272;

/// One point on the continuum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub value: u32,
    pub index: u32,
}

/// A built ketama continuum.
#[derive(Debug)]
pub struct Ketama {
    hash: HashFn,
    points: Vec<Point>,
}

/// Points a server of weight `w` gets when `n` live servers weigh `total` together,
/// with nutcracker's float arithmetic (spec §4.3 step 2).
pub fn points_for(w: u32, total: u32, n: u32) -> u32 {
    let pct = w as f32 / total as f32;
    let t = pct * POINTS_PER_SERVER as f32 / 4.0 * n as f32;
    let t = (f64::from(t) + 0.000_000_000_1) as f32;
    (t.floor() * 4.0) as u32
}

impl Ketama {
    /// Builds the continuum over `live` servers.
    pub fn new(hash: HashFn, live: &[Node]) -> Ketama {
        let n = live.len() as u32;
        let total: u32 = live.iter().map(|s| s.weight).sum();
        let mut points = Vec::with_capacity(live.len() * POINTS_PER_SERVER as usize);
        let mut buf = Vec::with_capacity(MAX_POINT_STRING + 12);
        for node in live {
            let count = points_for(node.weight, total, n);
            for i in 0..count / POINTS_PER_HASH {
                buf.clear();
                buf.extend_from_slice(node.name.as_bytes());
                buf.push(b'-');
                buf.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
                buf.truncate(MAX_POINT_STRING);
                let d = md5_digest(&buf);
                for x in 0..POINTS_PER_HASH as usize {
                    let value =
                        u32::from_le_bytes([d[4 * x], d[4 * x + 1], d[4 * x + 2], d[4 * x + 3]]);
                    points.push(Point {
                        value,
                        index: node.index as u32,
                    });
                }
            }
        }
        points.sort_unstable_by_key(|p| p.value);
        Ketama { hash, points }
    }

    /// The sorted continuum.
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// The server owning `hash`: the first point ≥ hash, wrapping to the first.
    #[inline]
    pub fn lookup(&self, hash: u32) -> Option<usize> {
        let i = self.points.partition_point(|p| p.value < hash);
        let p = self.points.get(i).or_else(|| self.points.first())?;
        Some(p.index as usize)
    }
}

impl Distributor for Ketama {
    #[inline]
    fn dispatch(&self, key: RouteKey<'_>) -> Result<usize, NoServer> {
        self.lookup(key_hash(self.hash, key.bytes))
            .ok_or(NoServer::AllEjected)
    }
}

pub fn build(args: BuildArgs<'_>) -> Box<dyn Distributor> {
    if args.live.is_empty() {
        return Box::new(Empty);
    }
    Box::new(Ketama::new(args.hash, args.live))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::nodes;

    #[test]
    fn point_counts_follow_weights() {
        assert_eq!(points_for(1, 3, 3), 160);
        assert_eq!(points_for(1, 6, 3), 80);
        assert_eq!(points_for(2, 6, 3), 160);
        assert_eq!(points_for(3, 6, 3), 240);
        // A tiny share can get no points at all (spec §4.3).
        assert_eq!(points_for(1, 101, 2), 0);
        assert_eq!(points_for(100, 101, 2), 316);
    }

    #[test]
    fn upstream_ketama_hash_samples() {
        let d = md5_digest(b"server1-8");
        assert_eq!(u32::from_le_bytes([d[0], d[1], d[2], d[3]]), 3853726576);
        assert_eq!(u32::from_le_bytes([d[12], d[13], d[14], d[15]]), 2667054752);
    }

    #[test]
    fn lookup_wraps_past_the_last_point() {
        let k = Ketama::new(HashFn::Md5, &nodes(&[("a", 1), ("b", 1)]));
        assert_eq!(k.points().len(), 320);
        let last = k.points()[319];
        let first = k.points()[0];
        assert_eq!(
            k.lookup(u32::MAX),
            if last.value == u32::MAX {
                Some(last.index as usize)
            } else {
                Some(first.index as usize)
            }
        );
        assert_eq!(k.lookup(0), Some(first.index as usize));
        assert_eq!(k.lookup(last.value), Some(last.index as usize));
    }

    #[test]
    fn no_live_server_fails() {
        let d = build(BuildArgs {
            hash: HashFn::Md5,
            live: &[],
        });
        assert_eq!(
            d.dispatch(RouteKey {
                bytes: b"k",
                tagged: false
            }),
            Err(NoServer::AllEjected)
        );
    }
}
