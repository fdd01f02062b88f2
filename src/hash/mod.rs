//! The twelve key hash functions of twemproxy's `hashkit`, bit-exact.
//!
//! Every function returns the `u32` nutcracker would compute for the same bytes,
//! quirks included (spec §4.2): bytes are read as C *signed* chars where the C code
//! does so (`one_at_a_time`, the FNV family, hsieh's 3-byte tail), `fnv1a_64` is a
//! 32-bit computation with a truncated prime, `crc32` is libmemcached's 15-bit
//! variant and `crc16` keeps the high bits of an unmasked accumulator. These are
//! kept on purpose: a user who switches from nutcracker keeps every key where it was.
//!
//! Pure code: no I/O, no allocation.

pub(crate) mod crc;
mod fnv;
mod jenkins;
mod misc;

pub use misc::md5_digest;

use std::fmt;
use std::str::FromStr;

/// A key hash function, as named by the `hash:` configuration key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // the names mirror the configuration values
pub enum HashFn {
    OneAtATime,
    Md5,
    Crc16,
    Crc32,
    Crc32a,
    Fnv1_64,
    Fnv1a_64,
    Fnv1_32,
    Fnv1a_32,
    Hsieh,
    Murmur,
    Jenkins,
}

impl HashFn {
    /// Every function with its configuration name, in nutcracker's order.
    pub const ALL: [(HashFn, &'static str); 12] = [
        (HashFn::OneAtATime, "one_at_a_time"),
        (HashFn::Md5, "md5"),
        (HashFn::Crc16, "crc16"),
        (HashFn::Crc32, "crc32"),
        (HashFn::Crc32a, "crc32a"),
        (HashFn::Fnv1_64, "fnv1_64"),
        (HashFn::Fnv1a_64, "fnv1a_64"),
        (HashFn::Fnv1_32, "fnv1_32"),
        (HashFn::Fnv1a_32, "fnv1a_32"),
        (HashFn::Hsieh, "hsieh"),
        (HashFn::Murmur, "murmur"),
        (HashFn::Jenkins, "jenkins"),
    ];

    /// nutcracker's default (`fnv1a_64`).
    pub const DEFAULT: HashFn = HashFn::Fnv1a_64;

    /// The configuration name of this function.
    pub fn name(self) -> &'static str {
        // ALL is indexed in declaration order.
        Self::ALL[self as usize].1
    }

    /// Hashes `key` exactly as nutcracker's function of the same name does.
    ///
    /// Note that the *proxy* never calls this for an empty key (it uses 0; see
    /// [`crate::route`]); this is the bare function, as in the golden vectors.
    #[inline]
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashFn::OneAtATime => misc::one_at_a_time(key),
            HashFn::Md5 => misc::md5(key),
            HashFn::Crc16 => crc::crc16(key),
            HashFn::Crc32 => crc::crc32(key),
            HashFn::Crc32a => crc::crc32a(key),
            HashFn::Fnv1_64 => fnv::fnv1_64(key),
            HashFn::Fnv1a_64 => fnv::fnv1a_64(key),
            HashFn::Fnv1_32 => fnv::fnv1_32(key),
            HashFn::Fnv1a_32 => fnv::fnv1a_32(key),
            HashFn::Hsieh => misc::hsieh(key),
            HashFn::Murmur => misc::murmur(key),
            HashFn::Jenkins => jenkins::hashlittle(key),
        }
    }
}

impl fmt::Display for HashFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown hash name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownHash;

impl FromStr for HashFn {
    type Err = UnknownHash;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(h, _)| *h)
            .ok_or(UnknownHash)
    }
}

/// A byte read as a C `signed char` and widened to `u32` (sign-extended).
#[inline(always)]
pub(crate) fn sb32(b: u8) -> u32 {
    b as i8 as i32 as u32
}

/// A byte read as a C `signed char` and widened to `u64` (sign-extended).
#[inline(always)]
pub(crate) fn sb64(b: u8) -> u64 {
    b as i8 as i64 as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_declaration_order() {
        for (i, (h, name)) in HashFn::ALL.iter().enumerate() {
            assert_eq!(*h as usize, i);
            assert_eq!(h.name(), *name);
            assert_eq!(name.parse::<HashFn>(), Ok(*h));
        }
        assert_eq!("FNV1A_64".parse::<HashFn>(), Err(UnknownHash));
        assert_eq!("server_name".parse::<HashFn>(), Err(UnknownHash));
    }

    #[test]
    fn apple_row_of_upstream_test_all() {
        let want = [
            2297466611u32,
            3195025439,
            3662830516,
            10542,
            2838417488,
            473199127,
            1488911807,
            67176023,
            280767167,
            3738850110,
            4142305122,
            1442444624,
        ];
        for ((h, _), w) in HashFn::ALL.iter().zip(want) {
            assert_eq!(h.hash(b"apple"), w, "{h}");
        }
    }
}
