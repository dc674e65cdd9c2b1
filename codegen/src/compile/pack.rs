//! Weight packing: every fused matrix and vector of the plan laid out in one byte blob, in
//! exactly the layout the emitted kernels read (no repacking at run time). Each region starts
//! on a 64-byte boundary so kernels can use aligned loads.
//!
//! Scalar layout (the reference layout; tiled backends use `crate::compile::layout`'s, same part names):
//! - `f32`:  `{m}.w` f32 `[rows, cols]`
//! - `bf16`: `{m}.w` bf16 bits `[rows, cols]`
//! - `w8`:   `{m}.q` i8 `[rows, cols]`, `{m}.scale` f32 `[rows]`
//! - `w4gG`: `{m}.q` u8 `[rows, cols / 2]` (low nibble = even column), `{m}.scale` f16 bits
//!   `[rows, cols / G]`, and `{m}.min` likewise when asymmetric
//! - `w2gG`, `w3gG`: as `w4gG` with `[rows, cols · b / 8]` bytes of codes in a little-endian
//!   bit stream
//! - vectors: f32

use std::collections::BTreeMap;

use crate::compile::layout;
use crate::compile::plan::{FusedMatrix, Plan};
use crate::model_io::checkpoint::Checkpoint;
use crate::model_io::error::Result;
use crate::quant::{quantize_rtn, QuantizedData, QuantizedMatrix, Scheme};

pub const ALIGN: usize = 64;

/// Where the quantized tensors come from: a compressed model directory, or a checkpoint
/// quantized on the fly.
pub trait WeightSource {
    /// The Hugging Face tensor `name` (`[rows, cols]`) in `scheme`.
    fn matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        scheme: Scheme,
    ) -> Result<QuantizedMatrix>;
    /// An f32 vector (norm weight, bias) of `len` values.
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>>;
}

/// Round-to-nearest quantization straight from a checkpoint.
pub struct QuantizeOnTheFly<'a>(pub &'a Checkpoint);

impl WeightSource for QuantizeOnTheFly<'_> {
    fn matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        scheme: Scheme,
    ) -> Result<QuantizedMatrix> {
        let w = self.0.load(name, &[rows, cols])?;
        Ok(quantize_rtn(&w, rows, cols, scheme))
    }
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.0.load(name, &[len])
    }
}

/// A byte range of the packed blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub offset: usize,
    pub len: usize,
}

#[derive(Debug, Default)]
pub struct Packed {
    pub bytes: Vec<u8>,
    pub regions: BTreeMap<String, Region>,
}

impl Packed {
    /// Bytes the packed weights take (the end of the last region).
    pub fn packed_len(&self) -> usize {
        self.regions
            .values()
            .map(|r| r.offset + r.len)
            .max()
            .unwrap_or(0)
    }

    pub fn region(&self, name: &str) -> Region {
        *self
            .regions
            .get(name)
            .unwrap_or_else(|| panic!("no packed region `{name}`"))
    }

    fn write(&mut self, name: &str, data: &[u8]) {
        let r = self.region(name);
        assert_eq!(
            r.len,
            data.len(),
            "packed size of `{name}` disagrees with the layout"
        );
        self.bytes[r.offset..r.offset + r.len].copy_from_slice(data);
    }
}

/// The packed parts of one matrix in `scheme` and their byte sizes: in the scalar layout,
/// the stored tensors of the compressed format, byte for byte.
fn matrix_parts(rows: usize, cols: usize, scheme: Scheme) -> Vec<(&'static str, usize)> {
    crate::compress::format::matrix_parts("", rows, cols, scheme)
        .iter()
        .map(|p| {
            let name = match p.name.as_str() {
                "" => "w",
                ".q" => "q",
                ".scale" => "scale",
                ".min" => "min",
                other => unreachable!("no packed part for stored tensor `{other}`"),
            };
            (name, p.n_bytes())
        })
        .collect()
}

/// Where every packed part of the plan goes (depends on shapes and schemes only, not on
/// weight values): the generated code's offsets come from here. `bytes` is left empty.
/// `tile_rows`: rows per tile of the backend's tiled matrices, `None` for the scalar layout.
pub fn layout(plan: &Plan, tile_rows: Option<usize>) -> Packed {
    let mut regions = BTreeMap::new();
    let mut end = 0usize;
    let mut place = |name: String, len: usize| {
        let offset = end.next_multiple_of(ALIGN);
        regions.insert(name, Region { offset, len });
        end = offset + len;
    };
    for m in plan.matrices() {
        let (rows, cols, scheme) = (m.shape.rows, m.shape.cols, m.shape.scheme);
        let parts = match matrix_tile_rows(plan, m, tile_rows) {
            Some(nr) => layout::part_sizes(rows, cols, scheme, nr),
            None => matrix_parts(rows, cols, scheme),
        };
        for (part, len) in parts {
            place(format!("{}.{part}", m.name), len);
        }
    }
    for (name, parts) in plan.vectors() {
        place(name, parts.iter().map(|p| p.rows).sum::<usize>() * 4);
    }
    Packed {
        bytes: Vec::new(),
        regions,
    }
}

/// Stack same-scheme matrices along rows.
fn stack(parts: Vec<QuantizedMatrix>) -> QuantizedMatrix {
    let mut it = parts.into_iter();
    let mut acc = it.next().expect("a fused matrix has at least one part");
    for m in it {
        assert_eq!(
            (m.cols, m.scheme),
            (acc.cols, acc.scheme),
            "fused parts share cols and scheme"
        );
        acc.rows += m.rows;
        match (&mut acc.data, m.data) {
            (QuantizedData::F32(a), QuantizedData::F32(b)) => a.extend(b),
            (QuantizedData::Bf16(a), QuantizedData::Bf16(b)) => a.extend(b),
            (QuantizedData::W8 { q, scales }, QuantizedData::W8 { q: q2, scales: s2 }) => {
                q.extend(q2);
                scales.extend(s2);
            }
            (
                QuantizedData::Grouped {
                    packed,
                    scales,
                    mins,
                },
                QuantizedData::Grouped {
                    packed: p2,
                    scales: s2,
                    mins: m2,
                },
            ) => {
                packed.extend(p2);
                scales.extend(s2);
                if let (Some(a), Some(b)) = (mins.as_mut(), m2) {
                    a.extend(b);
                }
            }
            _ => unreachable!("same scheme implies same data variant"),
        }
    }
    acc
}

fn le_bytes<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// Pack every weight of the plan. `progress(done, total, name)` is called per matrix.
pub fn pack(
    plan: &Plan,
    source: &dyn WeightSource,
    tile_rows: Option<usize>,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Packed> {
    let mut packed = layout(plan, tile_rows);
    packed.bytes = vec![0; packed.packed_len()];
    let matrices: Vec<_> = plan.matrices().collect();
    let total = matrices.len() + 1;
    for (i, m) in matrices.iter().enumerate() {
        progress(i, total, &m.name);
        let parts = m
            .parts
            .iter()
            .map(|p| source.matrix(&p.name, p.rows, m.shape.cols, m.shape.scheme))
            .collect::<Result<Vec<_>>>()?;
        let q = stack(parts);
        debug_assert_eq!(q.rows, m.shape.rows);
        let name = |part: &str| format!("{}.{part}", m.name);
        if let Some(nr) = matrix_tile_rows(plan, m, tile_rows) {
            for (part, bytes) in layout::pack_parts(&q, nr) {
                packed.write(&name(part), &bytes);
            }
            continue;
        }
        match &q.data {
            QuantizedData::F32(w) => packed.write(&name("w"), &le_bytes(w, f32::to_le_bytes)),
            QuantizedData::Bf16(w) => packed.write(&name("w"), &le_bytes(w, |x| x.to_le_bytes())),
            QuantizedData::W8 { q, scales } => {
                packed.write(&name("q"), &le_bytes(q, i8::to_le_bytes));
                packed.write(&name("scale"), &le_bytes(scales, f32::to_le_bytes));
            }
            QuantizedData::Grouped {
                packed: codes,
                scales,
                mins,
            } => {
                packed.write(&name("q"), codes);
                packed.write(&name("scale"), &le_bytes(scales, |x| x.to_le_bytes()));
                if let Some(mins) = mins {
                    packed.write(&name("min"), &le_bytes(mins, |x| x.to_le_bytes()));
                }
            }
        }
    }
    progress(total - 1, total, "norms and biases");
    for (name, parts) in plan.vectors() {
        let mut values = Vec::new();
        for part in &parts {
            values.extend(source.vector(&part.name, part.rows)?);
        }
        packed.write(&name, &le_bytes(&values, f32::to_le_bytes));
    }
    progress(total, total, "");
    Ok(packed)
}

/// Rows per tile of `m` under `backend`, or None for the scalar layout. An untied embedding
/// is only gathered from, never multiplied: it keeps the scalar layout.
pub fn matrix_tile_rows(plan: &Plan, m: &FusedMatrix, tile_rows: Option<usize>) -> Option<usize> {
    if plan.gathered_only(m) {
        None
    } else {
        tile_rows
    }
}

pub use qwenc_runtime::weights::weights_hash;
