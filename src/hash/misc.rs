//! one_at_a_time, md5, hsieh (SuperFastHash) and murmur (MurmurHash2).

use super::sb32;
use md5::{Digest, Md5};

pub fn one_at_a_time(key: &[u8]) -> u32 {
    let mut v: u32 = 0;
    for &b in key {
        v = v.wrapping_add(sb32(b));
        v = v.wrapping_add(v << 10);
        v ^= v >> 6;
    }
    v = v.wrapping_add(v << 3);
    v ^= v >> 11;
    v.wrapping_add(v << 15)
}

/// The full MD5 digest of `bytes` (also used for ketama points).
#[inline]
pub fn md5_digest(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

pub fn md5(key: &[u8]) -> u32 {
    let d = md5_digest(key);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

#[inline(always)]
fn get16(k: &[u8], i: usize) -> u32 {
    u32::from(k[i]) | (u32::from(k[i + 1]) << 8)
}

pub fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut h: u32 = 0;
    let blocks = key.len() / 4;
    let mut i = 0;
    for _ in 0..blocks {
        h = h.wrapping_add(get16(key, i));
        let t = (get16(key, i + 2) << 11) ^ h;
        h = (h << 16) ^ t;
        h = h.wrapping_add(h >> 11);
        i += 4;
    }
    match key.len() & 3 {
        3 => {
            h = h.wrapping_add(get16(key, i));
            h ^= h << 16;
            h ^= sb32(key[i + 2]) << 18;
            h = h.wrapping_add(h >> 11);
        }
        2 => {
            h = h.wrapping_add(get16(key, i));
            h ^= h << 11;
            h = h.wrapping_add(h >> 17);
        }
        1 => {
            h = h.wrapping_add(u32::from(key[i]));
            h ^= h << 10;
            h = h.wrapping_add(h >> 1);
        }
        _ => {}
    }
    h ^= h << 3;
    h = h.wrapping_add(h >> 5);
    h ^= h << 4;
    h = h.wrapping_add(h >> 17);
    h ^= h << 25;
    h.wrapping_add(h >> 6)
}

pub fn murmur(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let n = key.len() as u32;
    let mut h = 0xdead_beef_u32.wrapping_mul(n) ^ n;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut x = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        x = x.wrapping_mul(M);
        x ^= x >> 24;
        x = x.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= x;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}
