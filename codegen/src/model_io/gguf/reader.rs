//! The binary layout of a GGUF file (v2 and v3, little-endian), read defensively: every read
//! is bounds-checked, every count is checked against the bytes that remain before anything is
//! allocated for it, and every tensor's extent is checked against the file.
//!
//! ```text
//! magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
//! n_kv x       (key: string, value type: u32, value)
//! n_tensors x  (name: string, n_dims: u32, dims: n_dims x u64, ggml type: u32, offset: u64)
//! padding to `general.alignment` (default 32), then the tensor data; offsets are relative
//! to the start of the data and multiples of the alignment.
//! string = length u64 + UTF-8 bytes; array = element type u32 + count u64 + elements
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::model_io::error::{LoadError, Result};

use super::names;
use super::types::{value_type_name, GgmlType, GgufValue};

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Arrays nested deeper than this are refused (a crafted file could otherwise exhaust the stack).
const MAX_ARRAY_DEPTH: u32 = 8;
/// At most this many metadata values in all (each takes ~32 bytes in memory, possibly 1 in the
/// file). A Qwen2 file holds about 300 000 (vocabulary and merges).
const MAX_METADATA_VALUES: u64 = 1 << 25;

/// One tensor as the file describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    /// The GGUF (llama.cpp) name, `blk.0.attn_q.weight`.
    pub name: String,
    /// The Hugging Face name, `model.layers.0.self_attn.q_proj.weight`.
    pub hf_name: String,
    /// ggml dimensions, innermost first: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    /// Bytes of data in the file.
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// The Hugging Face shape: the ggml dimensions reversed (outermost first).
    pub fn hf_shape(&self) -> Vec<usize> {
        // Every dimension fits `usize`: `parse` checked the element count.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// Everything before the tensor data.
pub(crate) struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_start: u64,
}

struct Reader<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
    values_left: u64,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn err(&self, problem: String) -> LoadError {
        LoadError::format(self.path, problem)
    }

    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(self.err(format!(
                "truncated file: {} at byte {} needs {n} bytes, only {} left",
                what(),
                self.pos,
                self.remaining()
            )));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let at = self.pos;
        let bytes = self.bytes(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.err(format!("{} at byte {at} is not valid UTF-8 ({e})", what()))),
        }
    }

    /// One metadata value of type `ty`; `key` names it in messages.
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<GgufValue> {
        let what = || format!("metadata `{key}`");
        let what: &dyn Fn() -> String = &what;
        Ok(match ty {
            0 => GgufValue::U8(u8::from_le_bytes(self.array(what)?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => {
                    return Err(self.err(format!(
                        "metadata `{key}`: invalid bool byte {b} at byte {}",
                        self.pos - 1
                    )))
                }
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!(
                        "metadata `{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH} levels"
                    )));
                }
                let elem_ty = self.u32(&|| format!("array element type of metadata `{key}`"))?;
                let count = self.u64(&|| format!("array length of metadata `{key}`"))?;
                let min = min_value_size(elem_ty).ok_or_else(|| {
                    self.err(format!(
                        "metadata `{key}`: unknown array element type {elem_ty}"
                    ))
                })?;
                if count.saturating_mul(min) > self.remaining() as u64 {
                    return Err(self.err(format!(
                        "metadata `{key}`: array of {count} {} values cannot fit in the {} bytes \
                         left in the file (truncated or corrupt)",
                        value_type_name(elem_ty),
                        self.remaining()
                    )));
                }
                if count > self.values_left {
                    return Err(self.err(format!(
                        "metadata `{key}`: array of {count} values exceeds the limit of \
                         {MAX_METADATA_VALUES} metadata values"
                    )));
                }
                self.values_left -= count;
                // `count` elements of at least `min` bytes each fit in the file.
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.err(format!("metadata `{key}`: unknown value type {other}"))),
        })
    }
}

/// The fewest bytes a value of type `ty` takes in the file, `None` for an unknown type.
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,  // length
        9 => 12, // element type + count
        _ => return None,
    })
}

/// Parse and check everything before the tensor data; `buf` is the whole file.
pub(crate) fn parse(path: &Path, buf: &[u8]) -> Result<Header> {
    let mut r = Reader {
        path,
        buf,
        pos: 0,
        values_left: MAX_METADATA_VALUES,
    };
    let fmt_err = |p: String| LoadError::format(path, p);

    if buf.len() < 4 {
        return Err(fmt_err(format!(
            "not a GGUF file: {} bytes, too short for the magic",
            buf.len()
        )));
    }
    if &buf[..4] != GGUF_MAGIC {
        return Err(fmt_err(format!(
            "not a GGUF file: bad magic {:02x?} (expected \"GGUF\")",
            &buf[..4]
        )));
    }
    r.pos = 4;
    let version = r.u32(&|| "version".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(fmt_err(
                "unsupported GGUF version 1 (only versions 2 and 3 are read)".into(),
            ))
        }
        v if matches!(v.swap_bytes(), 1..=3) => {
            return Err(fmt_err(format!(
                "big-endian GGUF (version {}) is not supported",
                v.swap_bytes()
            )))
        }
        v => {
            return Err(fmt_err(format!(
                "unsupported GGUF version {v} (only versions 2 and 3 are read)"
            )))
        }
    }
    let n_tensors = r.u64(&|| "tensor count".into())?;
    let n_kv = r.u64(&|| "metadata count".into())?;
    // A metadata entry takes at least 8 (key length) + 4 (type) + 1 bytes, a tensor info
    // 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
    let left = r.remaining() as u64;
    if n_kv.saturating_mul(13) > left {
        return Err(fmt_err(format!(
            "metadata count {n_kv} cannot fit in the {left} bytes left in the file \
             (truncated or corrupt)"
        )));
    }
    if n_tensors.saturating_mul(32) > left {
        return Err(fmt_err(format!(
            "tensor count {n_tensors} cannot fit in the {left} bytes left in the file \
             (truncated or corrupt)"
        )));
    }

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = r.string(&|| format!("key of metadata entry #{i}"))?;
        let ty = r.u32(&|| format!("value type of metadata `{key}`"))?;
        let value = r.value(ty, &key, 0)?;
        if metadata.contains_key(&key) {
            return Err(fmt_err(format!("duplicate metadata key `{key}`")));
        }
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 30 => a,
            _ => {
                return Err(fmt_err(format!(
                    "`general.alignment` must be a power of two, got {v:?}"
                )))
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut seen: HashMap<String, ()> = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = r.string(&|| format!("name of tensor #{i}"))?;
        let terr = |p: String| LoadError::tensor(path, &name, p);
        let n_dims = r.u32(&|| format!("n_dims of tensor `{name}`"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(terr(format!("n_dims {n_dims} is outside 1..={MAX_DIMS}")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(r.u64(&|| format!("dimension {d} of tensor `{name}`"))?);
        }
        let type_id = r.u32(&|| format!("type of tensor `{name}`"))?;
        let offset = r.u64(&|| format!("offset of tensor `{name}`"))?;
        let ggml_type = GgmlType::from_id(type_id);
        let Some((block, _)) = ggml_type.layout() else {
            return Err(terr(format!("unknown ggml type id {type_id}")));
        };
        if seen.insert(name.clone(), ()).is_some() {
            return Err(terr("duplicate tensor name".into()));
        }
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64 && usize::try_from(n).is_ok())
            .ok_or_else(|| {
                terr(format!(
                    "dimensions {dims:?} overflow: the element count does not fit in 63 bits"
                ))
            })?;
        if dims[0] % block as u64 != 0 {
            return Err(terr(format!(
                "row length {} is not a multiple of the {} block size {block}",
                dims[0],
                ggml_type.name()
            )));
        }
        // `dims[0]` is a whole number of blocks, so only the byte count can fail here.
        let n_bytes = ggml_type.bytes_for(n_elements).ok_or_else(|| {
            terr(format!(
                "dimensions {dims:?}: the size in bytes of {n_elements} {} elements overflows",
                ggml_type.name()
            ))
        })?;
        let hf_name = names::gguf_to_hf(&name).ok_or_else(|| {
            terr("unknown tensor name: not part of a Qwen2 model (no Hugging Face name)".into())
        })?;
        tensors.push(GgufTensorInfo {
            name,
            hf_name,
            dims,
            ggml_type,
            offset,
            n_elements,
            n_bytes,
        });
    }

    let header_end = r.pos as u64;
    let data_start = header_end.div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    for t in &tensors {
        let terr = |p: String| LoadError::tensor(path, &t.name, p);
        if t.offset % alignment != 0 {
            return Err(terr(format!(
                "data offset {} is not a multiple of the alignment {alignment}",
                t.offset
            )));
        }
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(terr(format!(
                    "data ({} bytes at offset {} of the data section, which starts at byte \
                     {data_start}) extends past the end of the file ({file_len} bytes)",
                    t.n_bytes, t.offset
                )))
            }
        }
    }
    let mut hf_seen = HashMap::with_capacity(tensors.len());
    for t in &tensors {
        if let Some(other) = hf_seen.insert(t.hf_name.as_str(), t.name.as_str()) {
            return Err(LoadError::tensor(
                path,
                &t.name,
                format!("maps to `{}`, as does `{other}`", t.hf_name),
            ));
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}
