//! The safetensors header, validated against the file it heads: every problem names the file
//! and the tensor. Shared by the Hugging Face loader and the compressed-model reader, which
//! differ only in the dtypes they accept.

use std::path::Path;

use serde_json::Value;

use crate::model_io::error::{LoadError, Result};

/// Headers larger than this are refused (the format's own limit is 100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor of the header, with its byte range made absolute in the file.
pub struct HeaderEntry<D> {
    pub name: String,
    pub dtype: D,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

/// Parse and check the header of the safetensors file `bytes`. `dtype` maps a dtype name to
/// the caller's type and its element size (None = unsupported; `supported` lists what is,
/// for the message). Returns the entries and the data section's length.
pub fn parse_header<D>(
    path: &Path,
    bytes: &[u8],
    dtype: impl Fn(&str) -> Option<(D, usize)>,
    supported: &str,
) -> Result<(Vec<HeaderEntry<D>>, usize)> {
    if bytes.len() < 8 {
        return Err(LoadError::format(
            path,
            format!(
                "file is {} bytes, too short for a safetensors header",
                bytes.len()
            ),
        ));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes checked"));
    if header_len > MAX_HEADER_BYTES {
        return Err(LoadError::format(
            path,
            format!("header length {header_len} exceeds the 100 MB limit"),
        ));
    }
    let data_start = 8 + header_len as usize;
    if data_start > bytes.len() {
        return Err(LoadError::format(
            path,
            format!(
                "header length {header_len} runs past the end of the {}-byte file (truncated?)",
                bytes.len()
            ),
        ));
    }
    let header = std::str::from_utf8(&bytes[8..data_start])
        .map_err(|_| LoadError::format(path, "header is not UTF-8"))?;
    let json: Value = serde_json::from_str(header.trim_end_matches(' '))
        .map_err(|e| LoadError::format(path, format!("header is not valid JSON: {e}")))?;
    let object = json
        .as_object()
        .ok_or_else(|| LoadError::format(path, "header is not a JSON object"))?;
    let data_len = bytes.len() - data_start;

    let mut entries = Vec::new();
    for (name, info) in object {
        if name == "__metadata__" {
            continue;
        }
        let bad = |problem: String| LoadError::tensor(path, name, problem);
        let dtype_name = info
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing `dtype`".into()))?;
        let (dtype, size) = dtype(dtype_name)
            .ok_or_else(|| bad(format!("unsupported dtype `{dtype_name}` ({supported})")))?;
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("missing `shape`".into()))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape has a non-integer dimension".into()))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .and_then(|a| a.iter().map(Value::as_u64).collect())
            .ok_or_else(|| bad("`data_offsets` must be two integers".into()))?;
        let (begin, end) = (offsets[0], offsets[1]);
        if begin > end || end > data_len as u64 {
            return Err(bad(format!(
                "data offsets [{begin}, {end}) lie outside the {data_len}-byte data section (truncated file?)"
            )));
        }
        let expected = shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
        if (end - begin) as usize != expected {
            return Err(bad(format!(
                "shape {shape:?} of {dtype_name} needs {expected} bytes but data_offsets span {}",
                end - begin
            )));
        }
        entries.push(HeaderEntry {
            name: name.clone(),
            dtype,
            shape,
            start: data_start + begin as usize,
            end: data_start + end as usize,
        });
    }
    Ok((entries, data_len))
}
