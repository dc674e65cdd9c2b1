//! 2- and 3-bit codes in the tiled layout: a compact form of the w4 tiled code bytes that a
//! kernel expands, one tile at a time, back into exactly those bytes and then multiplies with
//! its w4 passes (so every ISA, matrix unit and twin reads narrow matrices unchanged).
//!
//! The w4 tiled codes are read as little-endian u64 words, each 16 nibbles. With every
//! nibble below 2^bits:
//! - `w2`: words `2i, 2i+1` become one word `X`: `W[2i] = X & M2`, `W[2i+1] = (X >> 2) & M2`
//!   (M2 = 0x33…): bits `4n, 4n+1` of `X` are nibble `n` of the first word, bits `4n+2, 4n+3`
//!   of the second.
//! - `w3`: words `4i..4i+4` become three words `L0, L1, H`: the low two bits of each nibble
//!   as `w2` (`L0` for words 0-1, `L1` for 2-3), and bit `4n + k` of `H` is the third bit of
//!   nibble `n` of word `k`.
//!
//! Expanding is two or three shift-and-mask steps per word, no table or shuffle, so it
//! vectorizes on any ISA. Expansion also adds `offset` to each nibble: a symmetric `b`-bit
//! code stands for `q − 2^(b−1)`, a w4 kernel's for `code − 8`.

const M1: u64 = 0x1111_1111_1111_1111;
const M2: u64 = 0x3333_3333_3333_3333;

/// Bytes of w4 codes that one unit of narrow words expands to (`w2`: 2 words, `w3`: 4).
pub const fn unit_bytes(bits: usize) -> usize {
    match bits {
        2 => 16,
        3 => 32,
        _ => panic!("narrow codes are 2 or 3 bits"),
    }
}

/// What a w4 kernel adds to each expanded code so it means the same value: 0 for asymmetric
/// schemes, `8 − 2^(bits−1)` for symmetric ones.
pub const fn expand_offset(bits: usize, asymmetric: bool) -> u8 {
    if asymmetric {
        0
    } else {
        8 - (1 << (bits - 1))
    }
}

fn word(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes"))
}

/// The narrow form of `w4` (tiled w4 code bytes, a whole number of units, every nibble below
/// 2^bits, no offset added).
pub fn compress(bits: usize, w4: &[u8]) -> Vec<u8> {
    let unit = unit_bytes(bits);
    assert_eq!(w4.len() % unit, 0, "w4 codes are a whole number of units");
    let mut out = Vec::with_capacity(w4.len() * bits / 4);
    for u in w4.chunks_exact(unit) {
        let w: Vec<u64> = (0..unit / 8).map(|i| word(u, i)).collect();
        debug_assert!(
            w.iter()
                .all(|x| (0..16).all(|n| (x >> (4 * n)) & 15 < 1 << bits)),
            "a nibble above {bits} bits"
        );
        let pair = |a: u64, b: u64| (a & M2) | (b & M2) << 2;
        let mut words = vec![pair(w[0], w[1])];
        if bits == 3 {
            words.push(pair(w[2], w[3]));
            words.push((0..4).fold(0, |h, k| h | ((w[k] >> 2) & M1) << k));
        }
        for x in words {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

/// Expands narrow codes `src` into the w4 code bytes `dst` (`src.len() · 4 / bits` bytes),
/// adding `offset` to every nibble.
#[inline(always)]
pub fn expand<const BITS: usize>(src: &[u8], dst: &mut [u8], offset: u8) {
    let off = offset as u64 * M1;
    assert_eq!(src.len() * 4, dst.len() * BITS, "narrow and w4 lengths");
    let (src_unit, dst_unit) = (unit_bytes(BITS) * BITS / 4, unit_bytes(BITS));
    for (s, d) in src
        .chunks_exact(src_unit)
        .zip(dst.chunks_exact_mut(dst_unit))
    {
        let low = |x: u64, k: usize| (x >> (2 * k)) & M2;
        let out: [u64; 4] = if BITS == 2 {
            let x = word(s, 0);
            [low(x, 0) + off, low(x, 1) + off, 0, 0]
        } else {
            let (l0, l1, h) = (word(s, 0), word(s, 1), word(s, 2));
            let high = |k: usize| ((h >> k) & M1) << 2;
            [
                (low(l0, 0) | high(0)) + off,
                (low(l0, 1) | high(1)) + off,
                (low(l1, 0) | high(2)) + off,
                (low(l1, 1) | high(3)) + off,
            ]
        };
        for (i, w) in out.iter().take(dst_unit / 8).enumerate() {
            d[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// Byte `i` of [`expand`]'s output, alone (for gathering one embedding row).
pub fn expanded_byte(bits: usize, src: &[u8], i: usize, offset: u8) -> u8 {
    let unit = unit_bytes(bits);
    let (u, w, byte) = (i / unit, (i % unit) / 8, i % 8);
    let s = &src[u * unit * bits / 4..];
    let x = if bits == 2 {
        (word(s, 0) >> (2 * w)) & M2
    } else {
        ((word(s, w / 2) >> (2 * (w % 2))) & M2) | ((word(s, 2) >> w) & M1) << 2
    };
    ((x >> (8 * byte)) as u8).wrapping_add(offset.wrapping_mul(0x11))
}

thread_local! {
    static EXPANDED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's buffer for one expanded tile: at least `len` bytes, 8-byte aligned, kept
/// and only grown, so that a kernel neither allocates nor zeroes per call.
///
/// The pointer stays valid until this thread calls again with a larger `len`; a kernel asks
/// once per call and uses the buffer only on this thread.
pub fn expansion_buffer(len: usize) -> *mut u8 {
    EXPANDED.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() * 8 < len {
            buf.resize(len.div_ceil(8), 0);
        }
        buf.as_mut_ptr() as *mut u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// w4 code bytes with every nibble below 2^bits (a simple deterministic mix).
    fn w4_codes(bits: usize, len: usize) -> Vec<u8> {
        let top = (1u32 << bits) - 1;
        (0..len as u32)
            .map(|i| {
                let n = |s: u32| (s.wrapping_mul(2_654_435_761) >> 13) % (top + 1);
                (n(2 * i) | n(2 * i + 1) << 4) as u8
            })
            .collect()
    }

    #[test]
    fn expand_inverts_compress_for_both_widths_and_offsets() {
        for bits in [2, 3] {
            let w4 = w4_codes(bits, 4 * unit_bytes(bits));
            let narrow = compress(bits, &w4);
            assert_eq!(narrow.len(), w4.len() * bits / 4);
            for asymmetric in [false, true] {
                let off = expand_offset(bits, asymmetric);
                let mut back = vec![0u8; w4.len()];
                if bits == 2 {
                    expand::<2>(&narrow, &mut back, off);
                } else {
                    expand::<3>(&narrow, &mut back, off);
                }
                let want: Vec<u8> = w4.iter().map(|b| b + off * 0x11).collect();
                assert_eq!(back, want, "w{bits}, offset {off}");
                for (i, &b) in want.iter().enumerate() {
                    assert_eq!(expanded_byte(bits, &narrow, i, off), b, "byte {i}");
                }
            }
        }
    }

    #[test]
    fn every_code_value_survives_in_every_position() {
        // One nibble set to each value in turn, the rest zero: catches a bit sent to the
        // wrong nibble or word.
        for bits in [2usize, 3] {
            let unit = unit_bytes(bits);
            for pos in 0..2 * unit {
                for v in 1..(1u8 << bits) {
                    let mut w4 = vec![0u8; unit];
                    w4[pos / 2] = v << (4 * (pos % 2));
                    let narrow = compress(bits, &w4);
                    for (i, &b) in w4.iter().enumerate() {
                        assert_eq!(expanded_byte(bits, &narrow, i, 0), b, "w{bits} pos {pos}");
                    }
                }
            }
        }
    }

    #[test]
    fn symmetric_offsets_map_the_zero_code() {
        // q − 2^(bits−1) must equal (q + offset) − 8.
        assert_eq!(expand_offset(2, false), 6);
        assert_eq!(expand_offset(3, false), 4);
        assert_eq!(expand_offset(3, true), 0);
    }

    #[test]
    fn the_buffer_grows_and_is_reused() {
        let a = expansion_buffer(64);
        let b = expansion_buffer(32);
        assert_eq!(a, b);
        assert_eq!(a as usize % 8, 0);
    }
}
