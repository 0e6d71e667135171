//! Typed GGUF metadata values.

/// On-disk metadata value type ids.
pub(crate) mod tag {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(MetaArray),
}

/// Arrays are stored typed, so a 262k-entry vocabulary costs its payload and not an enum per
/// element.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<MetaArray>),
}

impl MetaValue {
    /// Any integer that fits in i128, for lossless conversions below.
    fn as_int(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// Integer value if it fits in u32: files disagree on the integer width of the same key.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_int().and_then(|v| u32::try_from(v).ok())
    }

    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(|v| u64::try_from(v).ok())
    }

    pub fn as_i64(&self) -> Option<i64> {
        self.as_int().and_then(|v| i64::try_from(v).ok())
    }

    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetaValue::F32(v) => Some(v),
            MetaValue::F64(v) => Some(v as f32),
            _ => self.as_int().map(|v| v as f32),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn tag(&self) -> u32 {
        match self {
            MetaValue::U8(_) => tag::U8,
            MetaValue::I8(_) => tag::I8,
            MetaValue::U16(_) => tag::U16,
            MetaValue::I16(_) => tag::I16,
            MetaValue::U32(_) => tag::U32,
            MetaValue::I32(_) => tag::I32,
            MetaValue::U64(_) => tag::U64,
            MetaValue::I64(_) => tag::I64,
            MetaValue::F32(_) => tag::F32,
            MetaValue::F64(_) => tag::F64,
            MetaValue::Bool(_) => tag::BOOL,
            MetaValue::String(_) => tag::STRING,
            MetaValue::Array(_) => tag::ARRAY,
        }
    }

    /// A short human rendering for `hangar inspect`: arrays show their length and head.
    pub fn summary(&self) -> String {
        match self {
            MetaValue::String(s) if s.len() > 80 => {
                let cut = (0..=80).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                format!("{:?}… ({} bytes)", &s[..cut], s.len())
            }
            MetaValue::String(s) => format!("{s:?}"),
            MetaValue::Array(a) => a.summary(),
            MetaValue::Bool(v) => v.to_string(),
            MetaValue::F32(v) => v.to_string(),
            MetaValue::F64(v) => v.to_string(),
            other => other.as_int().map(|v| v.to_string()).unwrap_or_default(),
        }
    }
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::F64(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn elem_tag(&self) -> u32 {
        match self {
            MetaArray::U8(_) => tag::U8,
            MetaArray::I8(_) => tag::I8,
            MetaArray::U16(_) => tag::U16,
            MetaArray::I16(_) => tag::I16,
            MetaArray::U32(_) => tag::U32,
            MetaArray::I32(_) => tag::I32,
            MetaArray::U64(_) => tag::U64,
            MetaArray::I64(_) => tag::I64,
            MetaArray::F32(_) => tag::F32,
            MetaArray::F64(_) => tag::F64,
            MetaArray::Bool(_) => tag::BOOL,
            MetaArray::String(_) => tag::STRING,
            MetaArray::Array(_) => tag::ARRAY,
        }
    }

    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            MetaArray::String(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f32s(&self) -> Option<&[f32]> {
        match self {
            MetaArray::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Integer arrays of any width as i64 (token types, per-layer counts).
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        Some(match self {
            MetaArray::U8(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::I8(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::U16(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::I16(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::U32(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::I32(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::U64(v) => v
                .iter()
                .map(|&x| i64::try_from(x).ok())
                .collect::<Option<_>>()?,
            MetaArray::I64(v) => v.clone(),
            MetaArray::Bool(v) => v.iter().map(|&x| x.into()).collect(),
            _ => return None,
        })
    }

    fn summary(&self) -> String {
        let head = match self {
            MetaArray::String(v) => format!("{:?}", &v[..v.len().min(4)]),
            MetaArray::F32(v) => format!("{:?}", &v[..v.len().min(4)]),
            other => match other.to_i64s() {
                Some(v) => format!("{:?}", &v[..v.len().min(4)]),
                None => String::from("[...]"),
            },
        };
        format!("array[{}] {head}", self.len())
    }
}
