//! A streaming safetensors writer: the layout (every tensor's name, dtype and shape) is fixed
//! up front, the header written, and then each tensor's data is written at its offset whenever
//! it is ready, in any order, so that only one tensor needs to be in memory at a time.
//!
//! The file is a regular safetensors file: 8-byte little-endian header length, a JSON header
//! (sorted names, `__metadata__` first, padded with spaces to a multiple of 8 bytes), then the
//! data section, contiguous, ordered by decreasing element size and then by name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::{PartSpec, StoredDtype};

/// Borrowed tensor data, written little-endian.
#[derive(Clone, Copy, Debug)]
pub enum PartData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    I8(&'a [i8]),
    U8(&'a [u8]),
}

impl PartData<'_> {
    pub fn dtype(&self) -> StoredDtype {
        match self {
            PartData::F32(_) => StoredDtype::F32,
            PartData::F16(_) => StoredDtype::F16,
            PartData::BF16(_) => StoredDtype::BF16,
            PartData::I8(_) => StoredDtype::I8,
            PartData::U8(_) => StoredDtype::U8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            PartData::F32(v) => v.len(),
            PartData::F16(v) => v.len(),
            PartData::BF16(v) => v.len(),
            PartData::I8(v) => v.len(),
            PartData::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the little-endian bytes through a bounded buffer (no full-size copy).
    pub fn write_le(&self, out: &mut impl Write) -> io::Result<()> {
        const CHUNK: usize = 1 << 16; // elements per write
        fn chunked<T, const N: usize>(
            values: &[T],
            out: &mut impl Write,
            bytes: impl Fn(&T) -> [u8; N],
        ) -> io::Result<()> {
            let mut buf = Vec::with_capacity(CHUNK.min(values.len()) * N);
            for chunk in values.chunks(CHUNK) {
                buf.clear();
                buf.extend(chunk.iter().flat_map(&bytes));
                out.write_all(&buf)?;
            }
            Ok(())
        }
        match self {
            PartData::F32(v) => chunked(v, out, |x| x.to_le_bytes()),
            PartData::F16(v) => chunked(v, out, |x| x.to_le_bytes()),
            PartData::BF16(v) => chunked(v, out, |x| x.to_le_bytes()),
            PartData::I8(v) => chunked(v, out, |x| x.to_le_bytes()),
            PartData::U8(v) => out.write_all(v),
        }
    }
}

struct Slot {
    dtype: StoredDtype,
    n_elements: usize,
    /// Byte range inside the data section.
    start: u64,
    end: u64,
    written: bool,
}

/// A safetensors file being written; see the module documentation.
pub struct SafetensorsWriter {
    path: PathBuf,
    file: File,
    data_start: u64,
    data_len: u64,
    slots: BTreeMap<String, Slot>,
}

/// Where each part goes in the data section (largest dtype first, then by name), and the
/// section's length: the one layout that [`file_len`] measures and
/// [`SafetensorsWriter::create`] writes.
fn layout(parts: &[PartSpec]) -> io::Result<(BTreeMap<String, Slot>, u64)> {
    let mut sorted: Vec<&PartSpec> = parts.iter().collect();
    sorted.sort_by(|a, b| {
        b.dtype
            .size()
            .cmp(&a.dtype.size())
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut slots = BTreeMap::new();
    let mut offset = 0u64;
    for part in sorted {
        let n_bytes = part.n_bytes() as u64;
        let slot = Slot {
            dtype: part.dtype,
            n_elements: part.n_elements(),
            start: offset,
            end: offset + n_bytes,
            written: false,
        };
        offset += n_bytes;
        if slots.insert(part.name.clone(), slot).is_some() {
            return Err(io::Error::other(format!(
                "tensor `{}` is laid out twice",
                part.name
            )));
        }
    }
    Ok((slots, offset))
}

/// The size of the file [`SafetensorsWriter::create`] lays out for `parts`: header and data.
pub fn file_len(parts: &[PartSpec], metadata: &BTreeMap<String, String>) -> u64 {
    let (slots, data_len) = layout(parts).expect("parts with distinct names");
    8 + header_json(parts, &slots, metadata).len() as u64 + data_len
}

impl SafetensorsWriter {
    /// Create (truncate) `path`, lay out `parts`, write the header and size the file.
    /// `metadata` goes into the header's `__metadata__` (omitted when empty).
    pub fn create(
        path: &Path,
        parts: &[PartSpec],
        metadata: &BTreeMap<String, String>,
    ) -> io::Result<Self> {
        let (slots, offset) = layout(parts)?;
        let header = header_json(parts, &slots, metadata);
        let data_start = 8 + header.len() as u64;
        let mut file = File::create(path)?;
        file.write_all(&(header.len() as u64).to_le_bytes())?;
        file.write_all(header.as_bytes())?;
        file.set_len(data_start + offset)?;
        Ok(SafetensorsWriter {
            path: path.to_path_buf(),
            file,
            data_start,
            data_len: offset,
            slots,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the data section (the sum of the tensors' sizes).
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Write the data of the tensor `name`; its dtype and length must match the layout.
    pub fn write(&mut self, name: &str, data: PartData<'_>) -> io::Result<()> {
        let slot = self
            .slots
            .get_mut(name)
            .ok_or_else(|| io::Error::other(format!("tensor `{name}` is not in the layout")))?;
        if slot.dtype != data.dtype() || slot.n_elements != data.len() {
            return Err(io::Error::other(format!(
                "tensor `{name}`: laid out as {} × {} elements, given {} × {}",
                slot.dtype.name(),
                slot.n_elements,
                data.dtype().name(),
                data.len()
            )));
        }
        if slot.written {
            return Err(io::Error::other(format!("tensor `{name}` written twice")));
        }
        self.file
            .seek(SeekFrom::Start(self.data_start + slot.start))?;
        let mut out = io::BufWriter::with_capacity(1 << 20, &mut self.file);
        data.write_le(&mut out)?;
        out.flush()?;
        slot.written = true;
        Ok(())
    }

    /// Check that every tensor was written and flush; returns the file size.
    pub fn finish(mut self) -> io::Result<u64> {
        if let Some((name, _)) = self.slots.iter().find(|(_, s)| !s.written) {
            return Err(io::Error::other(format!(
                "tensor `{name}` was never written"
            )));
        }
        self.file.flush()?;
        Ok(self.data_start + self.data_len)
    }
}

/// The header: `__metadata__` then the tensors in name order, each
/// `{"dtype":..,"shape":[..],"data_offsets":[b,e]}`, padded with spaces so that the data
/// section starts at a multiple of 8. Written by hand so the bytes never depend on a JSON
/// library's map ordering.
fn header_json(
    parts: &[PartSpec],
    slots: &BTreeMap<String, Slot>,
    metadata: &BTreeMap<String, String>,
) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let mut entries = Vec::with_capacity(slots.len() + 1);
    if !metadata.is_empty() {
        let fields: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
            .collect();
        entries.push(format!("\"__metadata__\":{{{}}}", fields.join(",")));
    }
    let shapes: BTreeMap<&str, &PartSpec> = parts.iter().map(|p| (p.name.as_str(), p)).collect();
    for (name, slot) in slots {
        let shape: Vec<String> = shapes[name.as_str()]
            .shape
            .iter()
            .map(usize::to_string)
            .collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            quote(name),
            slot.dtype.name(),
            shape.join(","),
            slot.start,
            slot.end
        ));
    }
    let mut header = format!("{{{}}}", entries.join(","));
    while (8 + header.len()) % 8 != 0 {
        header.push(' ');
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safetensors_crate_reads_what_we_write_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let parts = vec![
            PartSpec {
                name: "b.q".into(),
                dtype: StoredDtype::U8,
                shape: vec![3, 1],
            },
            PartSpec {
                name: "a".into(),
                dtype: StoredDtype::F32,
                shape: vec![2],
            },
            PartSpec {
                name: "b.scale".into(),
                dtype: StoredDtype::F16,
                shape: vec![3],
            },
            PartSpec {
                name: "c".into(),
                dtype: StoredDtype::I8,
                shape: vec![1, 2],
            },
        ];
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "x".to_string());
        let mut w = SafetensorsWriter::create(&path, &parts, &meta).unwrap();
        w.write("c", PartData::I8(&[-1, 7])).unwrap();
        let scales = [f16::from_f32(0.5), f16::from_f32(-2.0), f16::ONE];
        w.write("b.scale", PartData::F16(&scales)).unwrap();
        assert!(
            w.write("a", PartData::F32(&[1.0])).is_err(),
            "length is checked"
        );
        assert!(
            w.write("a", PartData::I8(&[1, 2])).is_err(),
            "dtype is checked"
        );
        w.write("a", PartData::F32(&[1.5, -3.0])).unwrap();
        assert!(
            w.write("a", PartData::F32(&[1.5, -3.0])).is_err(),
            "written twice"
        );
        w.write("b.q", PartData::U8(&[1, 2, 0xf0])).unwrap();
        let size = w.finish().unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, size);
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + header_len) % 8, 0);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let a = st.tensor("a").unwrap();
        assert_eq!(a.dtype(), safetensors::Dtype::F32);
        assert_eq!(
            a.data(),
            [1.5f32.to_le_bytes(), (-3.0f32).to_le_bytes()].concat()
        );
        assert_eq!(st.tensor("b.q").unwrap().data(), [1, 2, 0xf0]);
        assert_eq!(st.tensor("b.q").unwrap().shape(), [3, 1]);
        assert_eq!(st.tensor("c").unwrap().data(), [0xff, 7]);
        assert_eq!(
            st.tensor("b.scale").unwrap().dtype(),
            safetensors::Dtype::F16
        );
        // Data section: F32 first, then F16, then the bytes in name order.
        assert_eq!(&bytes[8 + header_len..][..4], 1.5f32.to_le_bytes());
    }

    #[test]
    fn unwritten_tensors_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let parts = vec![PartSpec {
            name: "a".into(),
            dtype: StoredDtype::F32,
            shape: vec![2],
        }];
        let w = SafetensorsWriter::create(&dir.path().join("t"), &parts, &BTreeMap::new()).unwrap();
        let err = w.finish().unwrap_err();
        assert!(err.to_string().contains("`a` was never written"), "{err}");
    }
}
