//! CRC-based hashes: `crc16` (XMODEM table, unmasked 32-bit accumulator),
//! `crc32` (libmemcached's 15-bit variant) and `crc32a` (plain CRC-32).

/// CRC-16/XMODEM table (poly 0x1021, MSB first), built at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x1021
            } else {
                c << 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// nutcracker's crc16: the accumulator is a `uint32_t` that is never masked, so the
/// high 16 bits keep shifted-out history (the low 16 bits are CRC-16/XMODEM).
pub fn crc16(key: &[u8]) -> u32 {
    let mut c: u32 = 0;
    for &b in key {
        c = (c << 8) ^ u32::from(CRC16_TABLE[(((c >> 8) ^ u32::from(b)) & 0xff) as usize]);
    }
    c
}

/// libmemcached-compatible crc32: bits 16..30 of the standard CRC-32.
pub fn crc32(key: &[u8]) -> u32 {
    (crc32a(key) >> 16) & 0x7fff
}

/// The standard CRC-32 (IEEE 802.3, zlib), full 32 bits.
pub fn crc32a(key: &[u8]) -> u32 {
    crc32fast::hash(key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_matches_the_polynomial() {
        assert_eq!(super::CRC16_TABLE[0], 0);
        assert_eq!(super::CRC16_TABLE[1], 0x1021);
        assert_eq!(super::CRC16_TABLE[255], 0x1ef0);
    }
}
