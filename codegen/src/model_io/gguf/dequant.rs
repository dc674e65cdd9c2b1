//! Dequantization of ggml tensor data to f32.
//!
//! The block layouts and formulas follow ggml's reference `dequantize_row_*` functions
//! (llama.cpp, `ggml/src/ggml-quants.c`; block structs in `ggml/src/ggml-common.h`), operation
//! for operation in f32, so that the results are bit-identical to ggml's and to gguf-py's.
//! Each format is decoded one block at a time; a tensor is split into runs of whole rows that
//! rayon decodes in parallel.

use half::{bf16, f16};
use rayon::prelude::*;

use super::types::{GgmlType, QK_K};

// Bytes per block of each format, spelled out field by field as in ggml-common.h.
const QK4_0: usize = 32;
const Q4_0_BYTES: usize = 2 + QK4_0 / 2; // d, qs
const Q4_1_BYTES: usize = 2 + 2 + QK4_0 / 2; // d, m, qs
const Q5_0_BYTES: usize = 2 + 4 + QK4_0 / 2; // d, qh, qs
const Q5_1_BYTES: usize = 2 + 2 + 4 + QK4_0 / 2; // d, m, qh, qs
const Q8_0_BYTES: usize = 2 + QK4_0; // d, qs
const K_SCALE_SIZE: usize = 12;
const Q2_K_BYTES: usize = QK_K / 16 + QK_K / 4 + 2 + 2; // scales, qs, d, dmin
const Q3_K_BYTES: usize = QK_K / 8 + QK_K / 4 + 12 + 2; // hmask, qs, scales, d
const Q4_K_BYTES: usize = 2 + 2 + K_SCALE_SIZE + QK_K / 2; // d, dmin, scales, qs
const Q5_K_BYTES: usize = 2 + 2 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2; // d, dmin, scales, qh, qs
const Q6_K_BYTES: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2; // ql, qh, scales, d

const fn layout_is(t: GgmlType, values: usize, bytes: usize) -> bool {
    match t.layout() {
        Some((v, b)) => v == values && b == bytes,
        None => false,
    }
}

const _: () = assert!(Q4_0_BYTES == 18 && layout_is(GgmlType::Q4_0, QK4_0, Q4_0_BYTES));
const _: () = assert!(Q4_1_BYTES == 20 && layout_is(GgmlType::Q4_1, QK4_0, Q4_1_BYTES));
const _: () = assert!(Q5_0_BYTES == 22 && layout_is(GgmlType::Q5_0, QK4_0, Q5_0_BYTES));
const _: () = assert!(Q5_1_BYTES == 24 && layout_is(GgmlType::Q5_1, QK4_0, Q5_1_BYTES));
const _: () = assert!(Q8_0_BYTES == 34 && layout_is(GgmlType::Q8_0, QK4_0, Q8_0_BYTES));
const _: () = assert!(Q2_K_BYTES == 84 && layout_is(GgmlType::Q2_K, QK_K, Q2_K_BYTES));
const _: () = assert!(Q3_K_BYTES == 110 && layout_is(GgmlType::Q3_K, QK_K, Q3_K_BYTES));
const _: () = assert!(Q4_K_BYTES == 144 && layout_is(GgmlType::Q4_K, QK_K, Q4_K_BYTES));
const _: () = assert!(Q5_K_BYTES == 176 && layout_is(GgmlType::Q5_K, QK_K, Q5_K_BYTES));
const _: () = assert!(Q6_K_BYTES == 210 && layout_is(GgmlType::Q6_K, QK_K, Q6_K_BYTES));
const _: () = assert!(layout_is(GgmlType::F32, 1, 4));
const _: () = assert!(layout_is(GgmlType::F16, 1, 2) && layout_is(GgmlType::BF16, 1, 2));

/// Tensors with fewer values than this are decoded on the calling thread.
const PARALLEL_MIN_VALUES: usize = 1 << 16;
/// Values per parallel task (rounded to whole rows).
const TASK_VALUES: usize = 1 << 16;

/// Decode `src` (the tensor's bytes) into `dst` (its values), rows of `row_len` values.
/// Errors (as a message) when the type cannot be dequantized or the sizes disagree.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32], row_len: usize) -> Result<(), String> {
    let decode: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => block_f32,
        GgmlType::F16 => block_f16,
        GgmlType::BF16 => block_bf16,
        GgmlType::Q4_0 => block_q4_0,
        GgmlType::Q4_1 => block_q4_1,
        GgmlType::Q5_0 => block_q5_0,
        GgmlType::Q5_1 => block_q5_1,
        GgmlType::Q8_0 => block_q8_0,
        GgmlType::Q2_K => block_q2_k,
        GgmlType::Q3_K => block_q3_k,
        GgmlType::Q4_K => block_q4_k,
        GgmlType::Q5_K => block_q5_k,
        GgmlType::Q6_K => block_q6_k,
        other => {
            return Err(format!(
                "ggml type {} (id {}) cannot be dequantized by qwenc (supported: F32 F16 BF16 \
                 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K)",
                other.name(),
                other.id()
            ))
        }
    };
    let (blck, bsize) = ty.layout().ok_or("unknown ggml type")?;
    if row_len == 0 || !row_len.is_multiple_of(blck) || !dst.len().is_multiple_of(row_len) {
        return Err(format!(
            "row length {row_len} is not a whole number of {} blocks of {blck} values, \
             or does not divide the {} values",
            ty.name(),
            dst.len()
        ));
    }
    let n_blocks = dst.len() / blck;
    if n_blocks.checked_mul(bsize) != Some(src.len()) {
        return Err(format!(
            "{} bytes of {} data for {} values (expected {} blocks of {bsize} bytes)",
            src.len(),
            ty.name(),
            dst.len(),
            n_blocks
        ));
    }
    let decode_run = |s: &[u8], d: &mut [f32]| {
        for (sb, db) in s.chunks_exact(bsize).zip(d.chunks_exact_mut(blck)) {
            decode(sb, db);
        }
    };
    if dst.len() < PARALLEL_MIN_VALUES {
        decode_run(src, dst);
    } else {
        let rows_per_task = (TASK_VALUES / row_len).max(1);
        let task_values = rows_per_task * row_len;
        let task_bytes = task_values / blck * bsize;
        dst.par_chunks_mut(task_values)
            .zip(src.par_chunks(task_bytes))
            .for_each(|(d, s)| decode_run(s, d));
    }
    Ok(())
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn block_f32(b: &[u8], y: &mut [f32]) {
    y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
}

fn block_f16(b: &[u8], y: &mut [f32]) {
    y[0] = f16_at(b, 0);
}

fn block_bf16(b: &[u8], y: &mut [f32]) {
    y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32();
}

/// Q4_0: `d` (f16), 16 bytes of nibbles; value = (nibble - 8) * d. Low nibbles are the
/// first 16 values, high nibbles the last 16.
fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..2 + QK4_0 / 2];
    for (j, &q) in qs.iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + QK4_0 / 2] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1: `d`, `m` (f16), nibbles; value = nibble * d + m.
fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..4 + QK4_0 / 2];
    for (j, &q) in qs.iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + QK4_0 / 2] = (q >> 4) as f32 * d + m;
    }
}

/// The fifth bits of Q5_0 / Q5_1: bit `j` of the little-endian `qh` word belongs to value `j`.
#[inline]
fn q5_high_bits(qh: u32, j: usize) -> (u8, u8) {
    let h0 = (((qh >> j) << 4) & 0x10) as u8;
    let h1 = ((qh >> (j + 12)) & 0x10) as u8;
    (h0, h1)
}

/// Q5_0: `d`, `qh` (u32), nibbles; value = (nibble | fifth bit << 4) - 16, times d.
fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..6 + QK4_0 / 2];
    for (j, &q) in qs.iter().enumerate() {
        let (h0, h1) = q5_high_bits(qh, j);
        let x0 = ((q & 0x0F) | h0) as i32 - 16;
        let x1 = ((q >> 4) | h1) as i32 - 16;
        y[j] = x0 as f32 * d;
        y[j + QK4_0 / 2] = x1 as f32 * d;
    }
}

/// Q5_1: `d`, `m`, `qh`, nibbles; value = (nibble | fifth bit << 4) * d + m.
fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..8 + QK4_0 / 2];
    for (j, &q) in qs.iter().enumerate() {
        let (h0, h1) = q5_high_bits(qh, j);
        y[j] = ((q & 0x0F) | h0) as f32 * d + m;
        y[j + QK4_0 / 2] = ((q >> 4) | h1) as f32 * d + m;
    }
}

/// Q8_0: `d`, 32 signed bytes; value = q * d.
fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..2 + QK4_0].iter().enumerate() {
        y[j] = (q as i8) as f32 * d;
    }
}

/// Q2_K: 16 bytes of (4-bit scale | 4-bit min << 4) for 16 groups of 16, 64 bytes of 2-bit
/// quants, `d`, `dmin`. value = d * scale * q - dmin * min.
fn block_q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut is = 0;
    for half in 0..2 {
        let q = &b[16 + 32 * half..16 + 32 * half + 32];
        for j in 0..4 {
            let shift = 2 * j;
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let out = &mut y[128 * half + 32 * j + 16 * part..][..16];
                for (l, o) in out.iter_mut().enumerate() {
                    *o = dl * ((q[16 * part + l] >> shift) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// The 16 signed 6-bit scales of a Q3_K block, unpacked from 12 bytes: low nibbles in bytes
/// 0..8 (value j < 8 in the low nibble of byte j, j >= 8 in the high nibble of byte j - 8),
/// high 2-bit pairs in bytes 8..12.
fn q3_k_scales(s: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i32 - 32;
    }
    out
}

/// Q3_K: 32 bytes of high-bit mask, 64 bytes of 2-bit quants, 12 bytes of 6-bit scales, `d`.
/// value = d * (scale - 32) * (q - (high bit clear ? 4 : 0)).
fn block_q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let scales = q3_k_scales(&b[96..108]);
    let d_all = f16_at(b, 108);
    let mut is = 0;
    let mut m: u8 = 1;
    for half in 0..2 {
        let q = &b[32 + 32 * half..32 + 32 * half + 32];
        for j in 0..4 {
            let shift = 2 * j;
            for part in 0..2 {
                let dl = d_all * scales[is] as f32;
                is += 1;
                let out = &mut y[128 * half + 32 * j + 16 * part..][..16];
                for (l, o) in out.iter_mut().enumerate() {
                    let i = 16 * part + l;
                    let sub = if hmask[i] & m != 0 { 0 } else { 4 };
                    *o = dl * (((q[i] >> shift) & 3) as i32 - sub) as f32;
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K block: 6 bits each, packed in 12
/// bytes (ggml's `get_scale_min_k4`).
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: `d`, `dmin`, 12 bytes of scales/mins, 128 bytes of nibbles. Each 64 values take 32
/// bytes: low nibbles are sub-block 2i, high nibbles sub-block 2i+1.
/// value = d * scale * q - dmin * min.
fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..4 + K_SCALE_SIZE];
    for j in 0..4 {
        let q = &b[16 + 32 * j..16 + 32 * j + 32];
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let out = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            out[l] = d1 * (q[l] & 0x0F) as f32 - m1;
            out[32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// Q5_K: as Q4_K plus 32 bytes `qh` of fifth bits: for the 64 values of group `j`, bit 2j of
/// `qh[l]` belongs to the low-nibble value `l`, bit 2j+1 to the high-nibble value.
fn block_q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..4 + K_SCALE_SIZE];
    let qh = &b[16..48];
    for j in 0..4 {
        let ql = &b[48 + 32 * j..48 + 32 * j + 32];
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let out = &mut y[64 * j..64 * j + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            out[l] = d1 * ((ql[l] & 0x0F) + h1) as f32 - m1;
            out[32 + l] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// Q6_K: 128 bytes `ql` (low nibbles), 64 bytes `qh` (2-bit high parts), 16 signed 8-bit
/// scales (one per 16 values), `d`. value = d * scale * (q - 32).
fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| (sc[is + k] as i8) as f32;
            out[l] = d * s(0) * q1 as f32;
            out[l + 32] = d * s(2) * q2 as f32;
            out[l + 64] = d * s(4) * q3 as f32;
            out[l + 96] = d * s(6) * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    fn run(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
        let (blck, bsize) = ty.layout().unwrap();
        let n = bytes.len() / bsize * blck;
        let mut out = vec![f32::NAN; n];
        dequantize(ty, bytes, &mut out, n).unwrap();
        out
    }

    #[test]
    fn plain_floats() {
        let mut b = Vec::new();
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-2.25f32).to_le_bytes());
        assert_eq!(run(GgmlType::F32, &b), vec![1.5, -2.25]);

        let b = [h(0.5), h(-3.0), [0x00, 0x7C]].concat(); // 0x7C00 = +inf
        assert_eq!(run(GgmlType::F16, &b), vec![0.5, -3.0, f32::INFINITY]);

        // bf16 is the top half of an f32: 1.0 = 0x3F80, -2.5 = 0xC020.
        let b = [0x80, 0x3F, 0x20, 0xC0];
        assert_eq!(run(GgmlType::BF16, &b), vec![1.0, -2.5]);
    }

    #[test]
    fn q4_0() {
        // d = -0.5; byte j = low nibble j%16, high nibble 15 - j%16.
        let mut b = h(-0.5).to_vec();
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let y = run(GgmlType::Q4_0, &b);
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * -0.5);
            assert_eq!(y[j + 16], (7.0 - j as f32) * -0.5);
        }
        assert_eq!(y[0], 4.0);
        assert_eq!(y[16], -3.5);
    }

    #[test]
    fn q4_1() {
        // d = 0.25, m = -1: value = nibble / 4 - 1.
        let mut b = [h(0.25), h(-1.0)].concat();
        for j in 0..16u8 {
            b.push(j | (3 << 4));
        }
        let y = run(GgmlType::Q4_1, &b);
        assert_eq!(y[0], -1.0);
        assert_eq!(y[15], 15.0 * 0.25 - 1.0);
        assert!(y[16..].iter().all(|&v| v == -0.25));
    }

    #[test]
    fn q5_0_high_bits() {
        // d = 2; all nibbles zero; qh sets bit 0 (value 0) and bit 16 (value 16) and bit 31.
        let qh: u32 = 1 | (1 << 16) | (1 << 31);
        let mut b = h(2.0).to_vec();
        b.extend_from_slice(&qh.to_le_bytes());
        b.extend_from_slice(&[0u8; 16]);
        b[6] = 0xF5; // value 0: low nibble 5, value 16: high nibble 15
        let y = run(GgmlType::Q5_0, &b);
        assert_eq!(y[0], ((5 | 16) - 16) as f32 * 2.0); // 10
        assert_eq!(y[16], ((15 | 16) - 16) as f32 * 2.0); // 30
        assert_eq!(y[1], -32.0); // 0 - 16, no high bit
        assert_eq!(y[31], 0.0); // 16 - 16
        assert_eq!(y[17], -32.0);
    }

    #[test]
    fn q5_1_high_bits() {
        // d = 0.5, m = -8; value = q5 / 2 - 8.
        let qh: u32 = (1 << 3) | (1 << 19);
        let mut b = [h(0.5), h(-8.0)].concat();
        b.extend_from_slice(&qh.to_le_bytes());
        b.extend_from_slice(&[0x21u8; 16]); // low nibble 1, high nibble 2
        let y = run(GgmlType::Q5_1, &b);
        assert_eq!(y[0], 1.0 * 0.5 - 8.0);
        assert_eq!(y[3], 17.0 * 0.5 - 8.0);
        assert_eq!(y[16], 2.0 * 0.5 - 8.0);
        assert_eq!(y[19], 18.0 * 0.5 - 8.0);
    }

    #[test]
    fn q8_0() {
        let mut b = h(-0.125).to_vec();
        for j in 0..32i32 {
            b.push((j * 8 - 128) as i8 as u8);
        }
        let y = run(GgmlType::Q8_0, &b);
        for (j, &v) in y.iter().enumerate() {
            assert_eq!(v, (j as f32 * 8.0 - 128.0) * -0.125);
        }
        assert_eq!(y[0], 16.0);
    }

    /// Builds a Q4_K/Q5_K 12-byte scale field from 8 six-bit scales and mins, the way
    /// ggml's quantizer packs them.
    fn pack_k4(sc: [u8; 8], mn: [u8; 8]) -> [u8; 12] {
        let mut q = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                q[j] = sc[j];
                q[j + 4] = mn[j];
            } else {
                q[j + 4] = (sc[j] & 0xF) | ((mn[j] & 0xF) << 4);
                q[j - 4] |= (sc[j] >> 4) << 6;
                q[j] |= (mn[j] >> 4) << 6;
            }
        }
        q
    }

    #[test]
    fn k4_scale_packing_round_trips() {
        let sc = [1, 63, 17, 32, 5, 48, 63, 33];
        let mn = [62, 0, 9, 40, 63, 16, 31, 47];
        let q = pack_k4(sc, mn);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &q), (sc[j], mn[j]));
        }
    }

    #[test]
    fn q4_k() {
        let sc = [1, 2, 3, 4, 5, 6, 7, 63];
        let mn = [0, 1, 0, 2, 0, 3, 0, 63];
        let d = 0.5f32;
        let dmin = -0.25f32; // a negative dmin turns mins into additions
        let mut b = [h(d), h(dmin)].concat();
        b.extend_from_slice(&pack_k4(sc, mn));
        for g in 0..4u8 {
            for l in 0..32u8 {
                let lo = (l + g) & 0xF;
                let hi = 15 - (l & 0xF);
                b.push(lo | (hi << 4));
            }
        }
        let y = run(GgmlType::Q4_K, &b);
        for g in 0..4usize {
            for l in 0..32usize {
                let lo = ((l + g) & 0xF) as f32;
                let hi = (15 - (l & 0xF)) as f32;
                let s1 = 2 * g;
                let s2 = 2 * g + 1;
                let e1 = d * sc[s1] as f32 * lo - dmin * mn[s1] as f32;
                let e2 = d * sc[s2] as f32 * hi - dmin * mn[s2] as f32;
                assert_eq!(y[64 * g + l], e1, "g{g} l{l}");
                assert_eq!(y[64 * g + 32 + l], e2, "g{g} l{l}");
            }
        }
        // Spot checks by hand: value 0 = 0.5*1*0 + 0.25*0 = 0; value 255 (sub-block 7,
        // high nibble 15 - 31%16 = 0) = 0.5*63*0 + 0.25*63 = 15.75.
        assert_eq!(y[0], 0.0);
        assert_eq!(y[255], 15.75);
        // value 32 (sub-block 1, hi nibble 15): 0.5*2*15 + 0.25*1 = 15.25
        assert_eq!(y[32], 15.25);
    }

    #[test]
    fn q5_k_high_bits() {
        let sc = [2, 2, 2, 2, 2, 2, 2, 2];
        let mn = [1, 1, 1, 1, 1, 1, 1, 40];
        let mut b = [h(1.0), h(0.5)].concat();
        b.extend_from_slice(&pack_k4(sc, mn));
        let mut qh = [0u8; 32];
        qh[0] = 0b0000_0001; // value 0 (group 0, low)
        qh[1] = 0b0000_0010; // value 33 (group 0, high)
        qh[2] = 0b1000_0000; // value 3*64+32+2 = 226 (group 3, high)
        b.extend_from_slice(&qh);
        b.extend_from_slice(&[0x37u8; 128]); // low nibble 7, high nibble 3
        let y = run(GgmlType::Q5_K, &b);
        // value = 1 * 2 * q - 0.5 * min
        assert_eq!(y[0], 2.0 * 23.0 - 0.5); // 7 + 16
        assert_eq!(y[1], 2.0 * 7.0 - 0.5);
        assert_eq!(y[32], 2.0 * 3.0 - 0.5);
        assert_eq!(y[33], 2.0 * 19.0 - 0.5); // 3 + 16
        assert_eq!(y[226], 2.0 * 19.0 - 20.0); // sub-block 7: min 40
        assert_eq!(y[227], 2.0 * 3.0 - 20.0);
        assert_eq!(y[192], 2.0 * 7.0 - 0.5); // sub-block 6
    }

    #[test]
    fn q6_k_high_bits_and_negative_scales() {
        let mut b = vec![0u8; 210];
        // ql: value l (l < 32) low nibble of ql[l]; value l+64 high nibble of ql[l];
        // value l+32 low nibble of ql[l+32]; value l+96 high nibble of ql[l+32].
        b[..64].fill(0x5A); // low 10, high 5
        b[64..128].fill(0x0F); // second half: low 15, high 0
                               // qh[0] for the first half: bits 0-1 -> value 0, 2-3 -> value 32, 4-5 -> 64, 6-7 -> 96.
        b[128] = 0b11_10_01_00;
        // qh of the second half, l = 0: value 128 gets high 3.
        b[128 + 32] = 0b00_00_00_11;
        // scales: 16 signed bytes.
        let scales: [i8; 16] = [1, -1, 2, -2, 3, -3, 4, -4, -128, 127, 1, 1, 1, 1, 1, 1];
        for (i, s) in scales.iter().enumerate() {
            b[192 + i] = *s as u8;
        }
        b[208..210].copy_from_slice(&h(0.5));
        let y = run(GgmlType::Q6_K, &b);
        // value 0: q = 10 | 0 << 4 = 10 -> 10 - 32 = -22, scale sc[0] = 1 -> -11
        assert_eq!(y[0], 0.5 * 1.0 * -22.0);
        // value 32: q = 10 | 1 << 4 = 26 -> -6, scale sc[2] = 2 -> -6
        assert_eq!(y[32], 0.5 * 2.0 * -6.0);
        // value 64: q = 5 | 2 << 4 = 37 -> 5, scale sc[4] = 3
        assert_eq!(y[64], 0.5 * 3.0 * 5.0);
        // value 96: q = 5 | 3 << 4 = 53 -> 21, scale sc[6] = 4
        assert_eq!(y[96], 0.5 * 4.0 * 21.0);
        // value 16 uses scale sc[1] = -1: q = 10 - 32 = -22 -> 11
        assert_eq!(y[16], 11.0);
        // value 128: q = 15 | 3 << 4 = 63 -> 31, scale sc[8] = -128 -> -1984
        assert_eq!(y[128], 0.5 * -128.0 * 31.0);
        // value 144 (l = 16 of the second half): q = 15 - 32 = -17, scale sc[9] = 127
        assert_eq!(y[144], 0.5 * 127.0 * -17.0);
        // value 192 (high nibble of ql[64] = 0): q = -32, scale sc[12] = 1
        assert_eq!(y[192], -16.0);
    }

    #[test]
    fn q2_k() {
        let mut b = vec![0u8; 84];
        // scales: group i has scale (i % 16) and min (15 - i) in the high nibble.
        for (i, s) in b[..16].iter_mut().enumerate() {
            *s = (i as u8 & 0xF) | ((15 - i as u8) << 4);
        }
        // qs[0] = 0b11_10_01_00: value 0 -> 0, value 32 -> 1, value 64 -> 2, value 96 -> 3.
        b[16] = 0b11_10_01_00;
        b[16 + 32 + 16] = 0b00_00_00_11; // second half, l = 16: value 128 + 16 -> 3
        b[80..82].copy_from_slice(&h(2.0));
        b[82..84].copy_from_slice(&h(-1.0));
        let y = run(GgmlType::Q2_K, &b);
        // value = 2 * scale * q + 1 * min
        assert_eq!(y[0], 2.0 * 0.0 * 0.0 + 15.0); // group 0: scale 0, min 15
        assert_eq!(y[32], 2.0 * 2.0 * 1.0 + 13.0); // group 2
        assert_eq!(y[64], 2.0 * 4.0 * 2.0 + 11.0); // group 4
        assert_eq!(y[96], 2.0 * 6.0 * 3.0 + 9.0); // group 6
        assert_eq!(y[144], 2.0 * 9.0 * 3.0 + 6.0); // group 9
        assert_eq!(y[1], 15.0);
    }

    #[test]
    fn q3_k() {
        let mut b = vec![0u8; 110];
        // hmask: all high bits set except value 0 (bit 0 of hmask[0]) and value 32+16 = 48
        // (bit 1 of hmask[16]).
        b[..32].fill(0xFF);
        b[0] = 0xFE;
        b[16] = 0xFD;
        // qs: value 0 -> q 3; value 48 -> q 2 (l = 16 part, shift 2 -> qs[16] bits 2-3).
        b[32] = 0b0000_0011;
        b[32 + 16] = 0b0000_1000;
        // scales: scale j = j + 30 (6-bit, minus 32 -> j - 2); scale 15 = 63 -> 31.
        let mut want = [0i32; 16];
        let mut packed = [0u8; 12];
        for j in 0..16 {
            let l: u8 = if j == 15 { 63 } else { j as u8 + 30 };
            want[j] = l as i32 - 32;
            if j < 8 {
                packed[j] |= l & 0xF;
            } else {
                packed[j - 8] |= (l & 0xF) << 4;
            }
            packed[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
        }
        assert_eq!(q3_k_scales(&packed), want);
        b[96..108].copy_from_slice(&packed);
        b[108..110].copy_from_slice(&h(0.5));
        let y = run(GgmlType::Q3_K, &b);
        // value 0: group 0, scale -2, q 3, high bit clear -> 3 - 4 = -1 -> 0.5 * -2 * -1 = 1
        assert_eq!(y[0], 1.0);
        // value 1: q 0, high bit set -> 0
        assert_eq!(y[1], 0.0);
        // value 48: group 3 (j = 1, second 16), scale 1, q 2, high bit clear -> -2 -> -1
        assert_eq!(y[48], 0.5 * 1.0 * -2.0);
        // value 255: group 15, scale 31, q 0 with high bit set -> 0
        assert_eq!(y[255], 0.0);
    }

    #[test]
    fn parallel_matches_serial() {
        // 512 rows of 256 Q8_0 values: enough to take the parallel path.
        let rows = 512;
        let row_len = 256;
        let mut b = Vec::new();
        for i in 0..rows * row_len / 32 {
            b.extend_from_slice(&h(1.0 / (1 + i % 7) as f32));
            for j in 0..32 {
                b.push(((i * 31 + j * 7) % 256) as u8);
            }
        }
        let mut par = vec![0.0; rows * row_len];
        dequantize(GgmlType::Q8_0, &b, &mut par, row_len).unwrap();
        let mut ser = vec![0.0; rows * row_len];
        for (s, d) in b.chunks(34).zip(ser.chunks_mut(32)) {
            block_q8_0(s, d);
        }
        assert_eq!(par, ser);
    }

    #[test]
    fn errors() {
        let mut out = vec![0.0; 32];
        let e = dequantize(GgmlType::IQ2_XXS, &[], &mut out, 32).unwrap_err();
        assert!(e.contains("IQ2_XXS"), "{e}");
        let e = dequantize(GgmlType::Q8_0, &[0; 33], &mut out, 32).unwrap_err();
        assert!(e.contains("33 bytes"), "{e}");
        let e = dequantize(GgmlType::Q8_0, &[0; 34], &mut out, 16).unwrap_err();
        assert!(e.contains("row length"), "{e}");
    }
}
