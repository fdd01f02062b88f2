//! The FNV family as nutcracker computes it: every byte is a sign-extended C char,
//! and `fnv1a_64` is really a 32-bit hash (truncated basis and prime).

use super::{sb32, sb64};

const FNV_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_32_INIT: u32 = 2_166_136_261;
const FNV_32_PRIME: u32 = 16_777_619;

pub fn fnv1_64(key: &[u8]) -> u32 {
    let mut h = FNV_64_INIT;
    for &b in key {
        h = h.wrapping_mul(FNV_64_PRIME);
        h ^= sb64(b);
    }
    h as u32
}

pub fn fnv1a_64(key: &[u8]) -> u32 {
    // The C code keeps the state in a uint32_t: basis and prime are truncated.
    let mut h = FNV_64_INIT as u32;
    for &b in key {
        h ^= sb32(b);
        h = h.wrapping_mul(FNV_64_PRIME as u32);
    }
    h
}

pub fn fnv1_32(key: &[u8]) -> u32 {
    let mut h = FNV_32_INIT;
    for &b in key {
        h = h.wrapping_mul(FNV_32_PRIME);
        h ^= sb32(b);
    }
    h
}

pub fn fnv1a_32(key: &[u8]) -> u32 {
    let mut h = FNV_32_INIT;
    for &b in key {
        h ^= sb32(b);
        h = h.wrapping_mul(FNV_32_PRIME);
    }
    h
}
