//! 2- and 3-bit codes in the tiled layout: a compact form of the w4 tiled code bytes that a
//! kernel expands, one tile at a time, back into exactly those bytes and then multiplies with
//! its w4 passes (so every ISA, matrix unit and twin reads narrow matrices unchanged).
//!
//! The compact form is defined per *chunk* (one tile of w4 code bytes, a whole number of
//! 32-byte units), read as little-endian u64 words `W[0..n]`, every nibble below 2^bits:
//! - `w2`, `k = n/2`: stored words `X[j] = (W[j] & M2) | (W[j+k] & M2) << 2` (M2 = 0x33…), so
//!   `W[j] = X[j] & M2` and `W[j+k] = (X[j] >> 2) & M2`.
//! - `w3`, `k = n/4`: three runs of `k` words, `L0`, `L1`, `H`: `L0` pairs `W[j]` with
//!   `W[j+k]` and `L1` pairs `W[j+2k]` with `W[j+3k]` as `w2` does, and bit `4i + m` of
//!   `H[j]` is the third bit of nibble `i` of `W[j+mk]`.
//!
//! Words that expand together sit a quarter or half chunk apart, so expansion is one loop of
//! loads, shifts, masks and stores over consecutive words: no table, shuffle or lane
//! crossing, and the compiler vectorizes it at the calling kernel's width (a tile of decode
//! work is about 40 vector operations per KiB of w4 codes). Expansion also adds `offset` to
//! each nibble: a symmetric `b`-bit code stands for `q − 2^(b−1)`, a w4 kernel's for
//! `code − 8`.

const M1: u64 = 0x1111_1111_1111_1111;
const M2: u64 = 0x3333_3333_3333_3333;

/// The granule of a chunk: a chunk of w4 codes is a whole number of these bytes (so that
/// both widths split it into 2 or 4 runs of whole words).
pub const CHUNK_GRANULE: usize = 32;

/// What a w4 kernel adds to each expanded code so it means the same value: 0 for asymmetric
/// schemes, `8 − 2^(bits−1)` for symmetric ones.
pub const fn expand_offset(bits: usize, asymmetric: bool) -> u8 {
    if asymmetric {
        0
    } else {
        8 - (1 << (bits - 1))
    }
}

/// How many w4 words one stored word, or run, stands for: 2 for `w2`, 4 for `w3`.
const fn runs(bits: usize) -> usize {
    match bits {
        2 => 2,
        3 => 4,
        _ => panic!("narrow codes are 2 or 3 bits"),
    }
}

fn word(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes"))
}

/// The narrow form of `w4` (tiled w4 code bytes, every nibble below 2^bits, no offset
/// added), chunk by chunk of `chunk` bytes (a multiple of [`CHUNK_GRANULE`] that divides
/// `w4.len()`).
pub fn compress(bits: usize, w4: &[u8], chunk: usize) -> Vec<u8> {
    assert!(
        chunk > 0 && chunk.is_multiple_of(CHUNK_GRANULE) && w4.len().is_multiple_of(chunk),
        "w4 codes are whole chunks of whole granules"
    );
    let k = chunk / 8 / runs(bits);
    let mut out = Vec::with_capacity(w4.len() * bits / 4);
    for c in w4.chunks_exact(chunk) {
        let w: Vec<u64> = (0..chunk / 8).map(|i| word(c, i)).collect();
        debug_assert!(
            w.iter()
                .all(|x| (0..16).all(|n| (x >> (4 * n)) & 15 < 1 << bits)),
            "a nibble above {bits} bits"
        );
        let pair = |a: u64, b: u64| (a & M2) | (b & M2) << 2;
        let mut words: Vec<u64> = (0..k).map(|j| pair(w[j], w[j + k])).collect();
        if bits == 3 {
            words.extend((0..k).map(|j| pair(w[j + 2 * k], w[j + 3 * k])));
            words
                .extend((0..k).map(|j| (0..4).fold(0, |h, m| h | ((w[j + m * k] >> 2) & M1) << m)));
        }
        for x in words {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

/// Expands one chunk of narrow codes `src` into its w4 code bytes `dst`
/// (`src.len() · 4 / bits` bytes, a multiple of [`CHUNK_GRANULE`]), adding `offset` to every
/// nibble.
#[inline(always)]
pub fn expand<const BITS: usize>(src: &[u8], dst: &mut [u8], offset: u8) {
    let off = offset as u64 * M1;
    assert!(
        src.len() * 4 == dst.len() * BITS && dst.len().is_multiple_of(CHUNK_GRANULE),
        "narrow and w4 lengths"
    );
    let k = dst.len() / 8 / runs(BITS);
    let (s, d) = (src.as_ptr() as *const u64, dst.as_mut_ptr() as *mut u64);
    // SAFETY: the assert above bounds every index: `src` holds `k` (w2) or `3k` (w3) words
    // and `dst` `2k` or `4k`; the accesses are unaligned-safe. Plain indexed loops so the
    // compiler vectorizes them.
    unsafe {
        let ld = |i: usize| u64::from_le(s.add(i).read_unaligned());
        let st = |i: usize, v: u64| d.add(i).write_unaligned(v.to_le());
        let low = |x: u64, m: usize| (x >> (2 * m)) & M2;
        if BITS == 2 {
            for j in 0..k {
                let x = ld(j);
                st(j, low(x, 0) + off);
                st(j + k, low(x, 1) + off);
            }
        } else {
            for j in 0..k {
                let (l0, l1, h) = (ld(j), ld(j + k), ld(j + 2 * k));
                let high = |m: usize| ((h >> m) & M1) << 2;
                st(j, (low(l0, 0) | high(0)) + off);
                st(j + k, (low(l0, 1) | high(1)) + off);
                st(j + 2 * k, (low(l1, 0) | high(2)) + off);
                st(j + 3 * k, (low(l1, 1) | high(3)) + off);
            }
        }
    }
}

/// Byte `i` of [`expand`]'s output for the chunk `src`, alone (for gathering one embedding
/// row).
pub fn expanded_byte(bits: usize, src: &[u8], i: usize, offset: u8) -> u8 {
    let k = src.len() * 4 / bits / 8 / runs(bits);
    let (m, j, byte) = ((i / 8) / k, (i / 8) % k, i % 8);
    let x = if bits == 2 {
        (word(src, j) >> (2 * m)) & M2
    } else {
        ((word(src, (m / 2) * k + j) >> (2 * (m % 2))) & M2)
            | ((word(src, 2 * k + j) >> m) & M1) << 2
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

    /// Expands every `chunk`-byte chunk of `narrow` as a kernel does, tile by tile.
    fn expand_all(bits: usize, narrow: &[u8], chunk: usize, off: u8) -> Vec<u8> {
        let mut back = vec![0u8; narrow.len() * 4 / bits];
        for (s, d) in narrow
            .chunks_exact(chunk * bits / 4)
            .zip(back.chunks_exact_mut(chunk))
        {
            if bits == 2 {
                expand::<2>(s, d, off);
            } else {
                expand::<3>(s, d, off);
            }
        }
        back
    }

    #[test]
    fn expand_inverts_compress_for_both_widths_offsets_and_chunk_sizes() {
        for bits in [2, 3] {
            for chunk in [32, 96, 256] {
                let w4 = w4_codes(bits, 3 * chunk);
                let narrow = compress(bits, &w4, chunk);
                assert_eq!(narrow.len(), w4.len() * bits / 4);
                for asymmetric in [false, true] {
                    let off = expand_offset(bits, asymmetric);
                    let back = expand_all(bits, &narrow, chunk, off);
                    let want: Vec<u8> = w4.iter().map(|b| b + off * 0x11).collect();
                    assert_eq!(back, want, "w{bits}, chunk {chunk}, offset {off}");
                    for (c, src) in narrow.chunks_exact(chunk * bits / 4).enumerate() {
                        for i in 0..chunk {
                            let b = expanded_byte(bits, src, i, off);
                            assert_eq!(b, want[c * chunk + i], "w{bits} chunk {c} byte {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_code_value_survives_in_every_position() {
        // One nibble set to each value in turn, the rest zero: catches a bit sent to the
        // wrong nibble, word or run.
        let chunk = 64;
        for bits in [2usize, 3] {
            for pos in 0..2 * chunk {
                for v in 1..(1u8 << bits) {
                    let mut w4 = vec![0u8; chunk];
                    w4[pos / 2] = v << (4 * (pos % 2));
                    let narrow = compress(bits, &w4, chunk);
                    assert_eq!(expand_all(bits, &narrow, chunk, 0), w4, "w{bits} pos {pos}");
                    for (i, &b) in w4.iter().enumerate() {
                        assert_eq!(expanded_byte(bits, &narrow, i, 0), b, "w{bits} pos {pos}");
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "whole chunks")]
    fn a_chunk_that_is_not_whole_granules_is_refused() {
        compress(2, &[0u8; 48], 48);
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
