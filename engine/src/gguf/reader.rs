//! Bounds-checked cursor over the GGUF header. Every length read from the file is checked
//! against the bytes that remain before anything is allocated for it, so a hostile size field
//! can make us allocate at most what the file itself holds.

use super::value::{tag, MetaArray, MetaValue};
use super::GgufError;

/// Longest metadata string we accept (chat templates are the longest seen, a few KiB).
pub const MAX_STRING_LEN: u64 = 16 << 20;
/// Most elements in one metadata array (vocabularies and merge lists are ~262k).
pub const MAX_ARRAY_LEN: u64 = 16 << 20;
/// Most tensors in one file (an 8B model has ~300).
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most metadata entries in one file.
pub const MAX_KV: u64 = 1 << 20;
/// Arrays of arrays deeper than this are refused rather than recursed into.
pub const MAX_NESTING: usize = 4;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            });
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn string(&mut self) -> Result<String, GgufError> {
        let offset = self.pos as u64;
        let len = self.u64()?;
        if len > MAX_STRING_LEN {
            return Err(GgufError::StringTooLong {
                offset,
                len,
                limit: MAX_STRING_LEN,
            });
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8(offset))
    }

    /// A count that will size an allocation: capped, and no larger than the bytes left could
    /// hold at `min_elem_bytes` each.
    pub fn count(
        &mut self,
        what: &'static str,
        limit: u64,
        min_elem_bytes: u64,
    ) -> Result<usize, GgufError> {
        let offset = self.pos as u64;
        let n = self.u64()?;
        if n > limit {
            return Err(GgufError::TooMany {
                what,
                count: n,
                limit,
            });
        }
        let needed = n.saturating_mul(min_elem_bytes);
        if needed > self.remaining() {
            return Err(GgufError::Truncated {
                offset,
                needed,
                len: self.buf.len() as u64,
            });
        }
        Ok(n as usize)
    }

    pub fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue, GgufError> {
        Ok(match ty {
            tag::U8 => MetaValue::U8(self.u8()?),
            tag::I8 => MetaValue::I8(self.u8()? as i8),
            tag::U16 => MetaValue::U16(self.u16()?),
            tag::I16 => MetaValue::I16(self.u16()? as i16),
            tag::U32 => MetaValue::U32(self.u32()?),
            tag::I32 => MetaValue::I32(self.u32()? as i32),
            tag::U64 => MetaValue::U64(self.u64()?),
            tag::I64 => MetaValue::I64(self.u64()? as i64),
            tag::F32 => MetaValue::F32(f32::from_bits(self.u32()?)),
            tag::F64 => MetaValue::F64(f64::from_bits(self.u64()?)),
            tag::BOOL => MetaValue::Bool(self.u8()? != 0),
            tag::STRING => MetaValue::String(self.string()?),
            tag::ARRAY => MetaValue::Array(self.meta_array(depth + 1)?),
            other => return Err(GgufError::BadValueType(other)),
        })
    }

    fn meta_array(&mut self, depth: usize) -> Result<MetaArray, GgufError> {
        if depth > MAX_NESTING {
            return Err(GgufError::NestingTooDeep(MAX_NESTING));
        }
        let ty = self.u32()?;
        let min = match ty {
            tag::U8 | tag::I8 | tag::BOOL => 1,
            tag::U16 | tag::I16 => 2,
            tag::U32 | tag::I32 | tag::F32 => 4,
            tag::U64 | tag::I64 | tag::F64 | tag::STRING => 8,
            tag::ARRAY => 12,
            other => return Err(GgufError::BadValueType(other)),
        };
        let n = self.count("array element", MAX_ARRAY_LEN, min)?;
        macro_rules! prim {
            ($variant:ident, $read:expr) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push($read(&mut *self)?);
                }
                MetaArray::$variant(v)
            }};
        }
        Ok(match ty {
            tag::U8 => prim!(U8, |c: &mut Self| c.u8()),
            tag::I8 => prim!(I8, |c: &mut Self| c.u8().map(|x| x as i8)),
            tag::BOOL => prim!(Bool, |c: &mut Self| c.u8().map(|x| x != 0)),
            tag::U16 => prim!(U16, |c: &mut Self| c.u16()),
            tag::I16 => prim!(I16, |c: &mut Self| c.u16().map(|x| x as i16)),
            tag::U32 => prim!(U32, |c: &mut Self| c.u32()),
            tag::I32 => prim!(I32, |c: &mut Self| c.u32().map(|x| x as i32)),
            tag::F32 => prim!(F32, |c: &mut Self| c.u32().map(f32::from_bits)),
            tag::U64 => prim!(U64, |c: &mut Self| c.u64()),
            tag::I64 => prim!(I64, |c: &mut Self| c.u64().map(|x| x as i64)),
            tag::F64 => prim!(F64, |c: &mut Self| c.u64().map(f64::from_bits)),
            tag::STRING => prim!(String, |c: &mut Self| c.string()),
            _ => prim!(Array, |c: &mut Self| c.meta_array(depth + 1)),
        })
    }
}
