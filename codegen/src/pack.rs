//! Weight packing: every fused matrix and vector of the plan laid out in one byte blob, in
//! exactly the layout the emitted kernels read (no repacking at run time). Each region starts
//! on a 64-byte boundary so kernels can use aligned loads.
//!
//! Scalar layout (the reference layout; SIMD backends add their own):
//! - `f32`:  `{m}.w` f32 `[rows, cols]`
//! - `bf16`: `{m}.w` bf16 bits `[rows, cols]`
//! - `w8`:   `{m}.q` i8 `[rows, cols]`, `{m}.scale` f32 `[rows]`
//! - `w4gG`: `{m}.q` u8 `[rows, cols / 2]` (low nibble = even column), `{m}.scale` f16 bits
//!   `[rows, cols / G]`, and `{m}.min` likewise when asymmetric
//! - vectors: f32

use std::collections::BTreeMap;

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::plan::Plan;
use crate::quant::{quantize_rtn, QuantizedData, QuantizedMatrix, Scheme};

pub const ALIGN: usize = 64;

/// Where the quantized tensors come from: a compressed model directory, or a checkpoint
/// quantized on the fly.
pub trait WeightSource {
    /// The Hugging Face tensor `name` (`[rows, cols]`) in `scheme`.
    fn matrix(&self, name: &str, rows: usize, cols: usize, scheme: Scheme) -> Result<QuantizedMatrix>;
    /// An f32 vector (norm weight, bias) of `len` values.
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>>;
}

/// Round-to-nearest quantization straight from a checkpoint.
pub struct QuantizeOnTheFly<'a>(pub &'a Checkpoint);

impl WeightSource for QuantizeOnTheFly<'_> {
    fn matrix(&self, name: &str, rows: usize, cols: usize, scheme: Scheme) -> Result<QuantizedMatrix> {
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
    fn push(&mut self, name: String, data: &[u8]) {
        let offset = self.bytes.len().next_multiple_of(ALIGN);
        self.bytes.resize(offset, 0);
        self.bytes.extend_from_slice(data);
        self.regions.insert(name, Region { offset, len: data.len() });
    }

    pub fn region(&self, name: &str) -> Region {
        *self.regions.get(name).unwrap_or_else(|| panic!("no packed region `{name}`"))
    }
}

/// Stack same-scheme matrices along rows.
fn stack(parts: Vec<QuantizedMatrix>) -> QuantizedMatrix {
    let mut it = parts.into_iter();
    let mut acc = it.next().expect("a fused matrix has at least one part");
    for m in it {
        assert_eq!((m.cols, m.scheme), (acc.cols, acc.scheme), "fused parts share cols and scheme");
        acc.rows += m.rows;
        match (&mut acc.data, m.data) {
            (QuantizedData::F32(a), QuantizedData::F32(b)) => a.extend(b),
            (QuantizedData::Bf16(a), QuantizedData::Bf16(b)) => a.extend(b),
            (QuantizedData::W8 { q, scales }, QuantizedData::W8 { q: q2, scales: s2 }) => {
                q.extend(q2);
                scales.extend(s2);
            }
            (
                QuantizedData::W4 { packed, scales, mins },
                QuantizedData::W4 { packed: p2, scales: s2, mins: m2 },
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
pub fn pack(plan: &Plan, source: &dyn WeightSource, progress: &mut dyn FnMut(usize, usize, &str)) -> Result<Packed> {
    let mut packed = Packed::default();
    let matrices: Vec<_> = plan.matrices().collect();
    let total = matrices.len() + 1;
    for (i, m) in matrices.iter().enumerate() {
        progress(i, total, &m.name);
        let parts = m
            .parts
            .iter()
            .map(|name| {
                let rows = part_rows(plan, name);
                source.matrix(name, rows, m.shape.cols, m.shape.scheme)
            })
            .collect::<Result<Vec<_>>>()?;
        let q = stack(parts);
        debug_assert_eq!(q.rows, m.shape.rows);
        match &q.data {
            QuantizedData::F32(w) => packed.push(format!("{}.w", m.name), &le_bytes(w, f32::to_le_bytes)),
            QuantizedData::Bf16(w) => packed.push(format!("{}.w", m.name), &le_bytes(w, |x| x.to_le_bytes())),
            QuantizedData::W8 { q, scales } => {
                packed.push(format!("{}.q", m.name), &le_bytes(q, i8::to_le_bytes));
                packed.push(format!("{}.scale", m.name), &le_bytes(scales, f32::to_le_bytes));
            }
            QuantizedData::W4 { packed: codes, scales, mins } => {
                packed.push(format!("{}.q", m.name), codes);
                packed.push(format!("{}.scale", m.name), &le_bytes(scales, |x| x.to_le_bytes()));
                if let Some(mins) = mins {
                    packed.push(format!("{}.min", m.name), &le_bytes(mins, |x| x.to_le_bytes()));
                }
            }
        }
    }
    progress(total - 1, total, "norms and biases");
    for (name, parts) in plan.vectors() {
        let mut values = Vec::new();
        for part in &parts {
            values.extend(source.vector(part, vector_len(plan, part))?);
        }
        packed.push(name, &le_bytes(&values, f32::to_le_bytes));
    }
    progress(total, total, "");
    Ok(packed)
}

/// Rows of one Hugging Face matrix that goes into a fused matrix.
fn part_rows(plan: &Plan, name: &str) -> usize {
    let c = &plan.config;
    if name.contains(".q_proj.") {
        c.q_dim()
    } else if name.contains(".k_proj.") || name.contains(".v_proj.") {
        c.kv_dim()
    } else if name.contains(".gate_proj.") || name.contains(".up_proj.") {
        c.intermediate_size
    } else if name.contains(".o_proj.") || name.contains(".down_proj.") {
        c.hidden_size
    } else {
        c.vocab_size // embedding, lm_head
    }
}

fn vector_len(plan: &Plan, name: &str) -> usize {
    let c = &plan.config;
    if name.contains(".q_proj.") {
        c.q_dim()
    } else if name.contains(".k_proj.") || name.contains(".v_proj.") {
        c.kv_dim()
    } else {
        c.hidden_size
    }
}

pub use qwenc_runtime::weights::weights_hash;
