//! The packed weights of a compiled model: a side file next to the executable, memory-mapped
//! and checked (size and content hash) against what the executable was built for, and typed
//! views into it for the kernels.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot open the weights file {}: {source} (set QWEN_WEIGHTS to its path)", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("weights file {} has {found} bytes, this executable was built for {expected}: rebuild, or point QWEN_WEIGHTS at the right file", path.display())]
    Size {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("weights file {} has content hash {found:016x}, this executable was built for {expected:016x}: it belongs to another build", path.display())]
    Hash {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
}

/// Memory-mapped packed weights (page-aligned, so every 64-byte-aligned region is aligned).
pub struct Weights {
    map: Mmap,
    pub path: PathBuf,
}

impl Weights {
    /// Open `QWEN_WEIGHTS` if set, else `<executable>.weights`, and verify it.
    pub fn open_default(expected_len: u64, expected_hash: u64) -> Result<Weights, WeightsError> {
        let path = std::env::var_os("QWEN_WEIGHTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("qwen"));
                let mut name = exe
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_default();
                name.push(".weights");
                exe.with_file_name(name)
            });
        Self::open(&path, expected_len, expected_hash)
    }

    pub fn open(
        path: &Path,
        expected_len: u64,
        expected_hash: u64,
    ) -> Result<Weights, WeightsError> {
        let open_err = |source| WeightsError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(open_err)?;
        let found = file.metadata().map_err(open_err)?.len();
        if found != expected_len {
            return Err(WeightsError::Size {
                path: path.to_path_buf(),
                found,
                expected: expected_len,
            });
        }
        // SAFETY: read-only map of a file we do not modify; a concurrent writer could change
        // the numbers we read, never the memory safety of the bounds-checked views below.
        // Populated: the hash below reads every page anyway, and one system call maps them
        // faster than a fault per page.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(open_err)?;
        let found = weights_hash(&map);
        if found != expected_hash {
            return Err(WeightsError::Hash {
                path: path.to_path_buf(),
                found,
                expected: expected_hash,
            });
        }
        Ok(Weights {
            map,
            path: path.to_path_buf(),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// A fast 64-bit content hash. Integrity check against a stale or foreign weights file, not a
/// security measure. The bytes are cut into 16 MiB segments hashed in parallel (the threads
/// of [`crate::threads`]), each as four interleaved FNV-1a streams over 8-byte words with
/// extra mixing (four independent multiply chains instead of one), and the segment hashes are
/// folded in order: the value does not depend on the thread count. At start-up this checks
/// the 423 MB of a w4g32 build; one serial chain took most of a 0.65 s `qwen info`.
pub fn weights_hash(bytes: &[u8]) -> u64 {
    const SEGMENT: usize = 16 << 20;
    let segments: Vec<&[u8]> = bytes.chunks(SEGMENT).collect();
    let mut hashes = vec![0u64; segments.len()];
    crate::threads::for_each_chunk_mut(&mut hashes, 1, |i, h| h[0] = segment_hash(segments[i]));
    let mut h = FNV_OFFSET ^ bytes.len() as u64;
    for s in hashes {
        h = mix(h ^ s);
    }
    h ^ (h >> 32)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline(always)]
fn mix(h: u64) -> u64 {
    let h = h.wrapping_mul(FNV_PRIME);
    h ^ (h >> 29)
}

/// One segment: four streams over interleaved words, then the tail bytes.
fn segment_hash(bytes: &[u8]) -> u64 {
    let mut lanes = [0u64; 4];
    for (i, l) in lanes.iter_mut().enumerate() {
        *l = FNV_OFFSET ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (l, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *l = mix(*l ^ u64::from_le_bytes(w.try_into().expect("chunks of 8")));
        }
    }
    let mut h = FNV_OFFSET ^ bytes.len() as u64;
    for l in lanes {
        h = mix(h ^ l);
    }
    for &b in blocks.remainder() {
        h = mix(h ^ b as u64);
    }
    h
}

/// Code `i` of a little-endian bit stream of `bits`-bit codes (the group-wise weight
/// schemes: `w4`, `w3`, `w2`).
#[inline(always)]
pub fn code_at(packed: &[u8], bits: usize, i: usize) -> u8 {
    let bit = i * bits;
    let lo = packed[bit / 8] as u16;
    let hi = if bit % 8 + bits > 8 {
        packed[bit / 8 + 1] as u16
    } else {
        0
    };
    (((lo | hi << 8) >> (bit % 8)) & ((1 << bits) - 1)) as u8
}

/// A typed view of `len` elements at byte `offset`. The layout is fixed at build time and the
/// file verified at start-up, so a bad offset is a generator bug: it panics with the numbers.
pub fn view<T: Pod>(bytes: &[u8], offset: usize, len: usize) -> &[T] {
    let size = std::mem::size_of::<T>();
    let region = &bytes[offset..offset + len * size];
    assert_eq!(
        region.as_ptr() as usize % std::mem::align_of::<T>(),
        0,
        "misaligned weights region at {offset}"
    );
    // SAFETY: in bounds (sliced above), aligned (checked), and T is plain old data.
    unsafe { std::slice::from_raw_parts(region.as_ptr() as *const T, len) }
}

/// Types valid for any bit pattern.
pub trait Pod: Copy {}
impl Pod for f32 {}
impl Pod for u16 {}
impl Pod for i8 {}
impl Pod for u8 {}

/// IEEE half to f32 (the scales of `w4` weights).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if mant == 0 => sign,
        0 => {
            // Subnormal: normalize.
            let shift = mant.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((mant << shift) & 0x3ff) << 13
        }
        31 => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 bits to f32.
#[inline]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_half_on_every_value() {
        for bits in 0..=u16::MAX {
            let want = half_reference(bits);
            let got = f16_to_f32(bits);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }

    /// Slow textbook decoding of a binary16 value.
    fn half_reference(bits: u16) -> f32 {
        let sign = if bits & 0x8000 != 0 { -1.0f64 } else { 1.0 };
        let exp = ((bits >> 10) & 0x1f) as i32;
        let mant = (bits & 0x3ff) as f64;
        let v = match exp {
            0 => sign * mant * 2f64.powi(-24),
            31 if mant == 0.0 => sign * f64::INFINITY,
            31 => f64::NAN,
            _ => sign * (1.0 + mant / 1024.0) * 2f64.powi(exp - 15),
        };
        v as f32
    }

    #[test]
    fn hash_sees_every_byte() {
        let a = vec![7u8; 1001];
        let mut b = a.clone();
        b[1000] = 8;
        let mut c = a.clone();
        c[3] = 0;
        assert_ne!(weights_hash(&a), weights_hash(&b));
        assert_ne!(weights_hash(&a), weights_hash(&c));
        assert_ne!(weights_hash(&a[..1000]), weights_hash(&a));
        // Across segments and lanes: every position of a 40 MB buffer (3 segments) matters,
        // and swapping two words of different lanes changes the value.
        let big: Vec<u8> = (0..40u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let h = weights_hash(&big);
        for at in [0, 9, 31, 16 << 20, (16 << 20) + 17, big.len() - 1] {
            let mut m = big.clone();
            m[at] ^= 1;
            assert_ne!(weights_hash(&m), h, "byte {at}");
        }
        let mut swapped = big.clone();
        swapped.copy_within(0..8, 8);
        swapped[..8].copy_from_slice(&big[8..16]);
        assert_ne!(weights_hash(&swapped), h);
    }

    #[test]
    fn hash_does_not_depend_on_the_thread_count() {
        // The pooled hash against its definition computed on this thread alone.
        let big: Vec<u8> = (0..35u32 << 20).map(|i| (i >> 7) as u8).collect();
        let mut h = FNV_OFFSET ^ big.len() as u64;
        for segment in big.chunks(16 << 20) {
            h = mix(h ^ segment_hash(segment));
        }
        assert_eq!(weights_hash(&big), h ^ (h >> 32));
    }
}
