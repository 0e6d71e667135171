//! GGUF v2/v3 reader (memory-mapped, zero-copy tensor views) and writer.
//!
//! The header is parsed eagerly into owned metadata; tensor data stays in the mapping and is
//! handed out as borrowed slices, so loading a model costs its metadata and nothing more.

mod error;
mod reader;
mod value;
mod writer;

use std::collections::HashMap;
use std::ops::Deref;
use std::path::Path;

pub use error::GgufError;
pub use reader::{MAX_ARRAY_LEN, MAX_KV, MAX_STRING_LEN, MAX_TENSORS};
pub use value::{MetaArray, MetaValue};
pub use writer::{GgufWriter, TensorDesc};

use crate::quant::GgmlType;
use reader::Cursor;

pub const GGUF_MAGIC: u32 = 0x4655_4747; // "GGUF" little-endian
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: u32 = 4;

enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// One tensor's header entry. `dims` is in ggml order: `dims[0]` is the contiguous row length.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    /// Offset from the start of the data section, in bytes.
    pub offset: u64,
    /// Size of the tensor's data, in bytes.
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Elements per row (the contiguous dimension).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }
    /// Number of rows: the product of every dimension after the first.
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
    /// Bytes per row. Exact, because the reader checked that rows are whole blocks.
    pub fn row_bytes(&self) -> usize {
        self.row_len() / self.ty.block_size() * self.ty.type_size()
    }
}

/// A tensor's bytes, borrowed from the mapping.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Row `i`'s bytes, or `None` past the end.
    pub fn row(&self, i: usize) -> Option<&'a [u8]> {
        let rb = self.info.row_bytes();
        self.data
            .get(i.checked_mul(rb)?..i.checked_add(1)?.checked_mul(rb)?)
    }
}

pub struct GgufFile {
    backing: Backing,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_offset: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and private to us; a concurrent truncation of the
        // file by another process is outside what any mmap-based loader can defend against.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(Backing::Mmap(mmap))
    }

    /// Parses an in-memory image (tests, fuzzing, files received over the network).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::parse(Backing::Owned(bytes))
    }

    fn parse(backing: Backing) -> Result<GgufFile, GgufError> {
        let mut c = Cursor::new(&backing);
        let magic = c.u32()?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        // A tensor entry is at least 8 (name) + 4 (n_dims) + 4 (type) + 8 (offset) bytes; a
        // kv entry is at least 8 (key) + 4 (type) + 1 byte.
        let n_tensors = c.count("tensor", MAX_TENSORS, 24)?;
        let n_kv = c.count("metadata entry", MAX_KV, 13)?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut index = HashMap::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let value = c.value(ty, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a != 0 && a.is_power_of_two() => a,
                Some(a) => return Err(GgufError::BadAlignment(a)),
                None => {
                    return Err(GgufError::WrongType {
                        key: "general.alignment".into(),
                        expected: "an unsigned integer",
                    })
                }
            },
        };

        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let id = c.u32()?;
            let ty = GgmlType::from_id(id).ok_or_else(|| GgufError::UnknownTensorType {
                name: name.clone(),
                id,
            })?;
            let offset = c.u64()?;
            raw.push((name, ty, dims, offset));
        }

        let header_end = c.pos() as u64;
        let data_offset = header_end
            .div_ceil(alignment)
            .checked_mul(alignment)
            .unwrap_or(u64::MAX);
        let data_len = (backing.len() as u64).saturating_sub(data_offset);
        if data_offset > backing.len() as u64 && !raw.is_empty() {
            return Err(GgufError::Truncated {
                offset: header_end,
                needed: data_offset - header_end,
                len: backing.len() as u64,
            });
        }

        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for (name, ty, dims, offset) in raw {
            let size = check_shape(&name, ty, &dims)?;
            if offset % alignment != 0 {
                return Err(GgufError::Misaligned {
                    name,
                    offset,
                    alignment,
                });
            }
            if offset.checked_add(size).is_none_or(|end| end > data_len) {
                return Err(GgufError::OutOfBounds {
                    name,
                    offset,
                    size,
                    data_len,
                });
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor(name));
            }
            tensors.push(TensorInfo {
                name,
                ty,
                dims,
                offset,
                size,
            });
        }

        let data_offset = data_offset.min(backing.len() as u64) as usize;
        Ok(GgufFile {
            backing,
            version,
            alignment,
            metadata,
            index,
            tensors,
            tensor_index,
            data_offset,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn alignment(&self) -> u64 {
        self.alignment
    }
    /// Metadata entries in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }
    pub fn get_u32(&self, key: &str) -> Option<u32> {
        self.get(key)?.as_u32()
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }
    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key)?.as_f32()
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }
    pub fn get_array(&self, key: &str) -> Option<&MetaArray> {
        self.get(key)?.as_array()
    }
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.tensor_info(name).map(|info| self.view(info))
    }
    /// The view of an entry of `self.tensors()`.
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        // In bounds: checked against the data section when the file was parsed.
        let start = self.data_offset + info.offset as usize;
        TensorView {
            info,
            data: &self.backing[start..start + info.size as usize],
        }
    }
}

/// Validates a shape and returns the tensor's byte size.
fn check_shape(name: &str, ty: GgmlType, dims: &[u64]) -> Result<u64, GgufError> {
    let bad = |why| GgufError::BadShape {
        name: name.to_string(),
        dims: dims.to_vec(),
        ty,
        why,
    };
    if dims.contains(&0) {
        return Err(bad("zero-length dimension"));
    }
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("element count overflows"))?;
    if n > i64::MAX as u64 {
        return Err(bad("element count overflows"));
    }
    let row = dims.first().copied().unwrap_or(1);
    if row % ty.block_size() as u64 != 0 {
        return Err(bad("row length is not a whole number of blocks"));
    }
    ty.row_bytes(n).ok_or_else(|| bad("byte size overflows"))
}

#[cfg(test)]
mod tests;
