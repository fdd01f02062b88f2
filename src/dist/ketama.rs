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
///
/// Lookup is nutcracker's (the first point ≥ hash), found through a bucket
/// index instead of a binary search: the hash space is cut into a power of
/// two buckets, at least as many as there are points, and each bucket knows
/// its first point. A lookup reads its bucket's bounds and steps over the
/// (on average fewer than one) points inside it: a constant number of
/// predictable loads instead of ~log2(points) unpredictable branches (320
/// points: 9; 1,000 servers: 18).
#[derive(Debug)]
pub struct Ketama {
    hash: HashFn,
    points: Vec<Point>,
    /// `first[b]`: the index of the first point with `value >> shift >= b`;
    /// one entry more than there are buckets (the last is `points.len()`).
    first: Vec<u32>,
    shift: u32,
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
        let (first, shift) = buckets(&points);
        Ketama {
            hash,
            points,
            first,
            shift,
        }
    }

    /// The sorted continuum.
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// The server owning `hash`: the first point ≥ hash, wrapping to the first.
    #[inline]
    pub fn lookup(&self, hash: u32) -> Option<usize> {
        let b = (hash >> self.shift) as usize;
        let (Some(&lo), Some(&hi)) = (self.first.get(b), self.first.get(b + 1)) else {
            return None;
        };
        // The answer is in [lo, hi]: every point of the bucket is below the
        // next bucket's first point.
        let mut i = lo as usize;
        while i < hi as usize && self.points.get(i).is_some_and(|p| p.value < hash) {
            i += 1;
        }
        let p = self.points.get(i).or_else(|| self.points.first())?;
        Some(p.index as usize)
    }
}

/// The bucket index of a sorted continuum: `first` and the shift that takes
/// a hash to its bucket.
fn buckets(points: &[Point]) -> (Vec<u32>, u32) {
    let bits = points
        .len()
        .max(2)
        .next_power_of_two()
        .trailing_zeros()
        .min(24);
    let shift = 32 - bits;
    let n = 1usize << bits;
    let mut first = Vec::with_capacity(n + 1);
    let mut i = 0;
    for b in 0..n {
        while i < points.len() && ((points[i].value >> shift) as usize) < b {
            i += 1;
        }
        first.push(i as u32);
    }
    first.push(points.len() as u32);
    (first, shift)
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

    /// The bucket index finds what a binary search over the continuum finds,
    /// for continua of every size, weights, and hashes on, next to and
    /// between points.
    #[test]
    fn bucket_lookup_is_the_binary_search() {
        let reference = |k: &Ketama, hash: u32| {
            let i = k.points().partition_point(|p| p.value < hash);
            k.points()
                .get(i)
                .or_else(|| k.points().first())
                .map(|p| p.index as usize)
        };
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for n in [1usize, 2, 3, 5, 16, 100, 1000] {
            let names: Vec<(String, u32)> = (0..n)
                .map(|i| (format!("10.0.0.{i}:6379"), 1 + (i as u32 % 3)))
                .collect();
            let refs: Vec<(&str, u32)> = names.iter().map(|(s, w)| (s.as_str(), *w)).collect();
            let k = Ketama::new(HashFn::Md5, &nodes(&refs));
            let mut probes = vec![0, 1, u32::MAX, u32::MAX - 1];
            for p in k.points().iter().step_by(7) {
                probes.extend([p.value, p.value.wrapping_sub(1), p.value.wrapping_add(1)]);
            }
            probes.extend((0..2000).map(|_| next() as u32));
            for h in probes {
                assert_eq!(k.lookup(h), reference(&k, h), "{n} servers, hash {h}");
            }
        }
    }

    #[test]
    fn no_live_server_fails() {
        let d = build(BuildArgs {
            hash: HashFn::Md5,
            live: &[],
            slots: None,
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
