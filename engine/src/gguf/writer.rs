//! GGUF v3 writer. Tensor data is streamed in header order, so quantizing a model larger than
//! memory needs only one tensor in flight.

use std::io::{self, Write};

use super::value::{MetaArray, MetaValue};
use super::{GgufError, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::quant::GgmlType;

#[derive(Clone, Debug)]
pub struct TensorDesc {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
}

impl TensorDesc {
    pub fn size(&self) -> Result<u64, GgufError> {
        let n = self.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        n.and_then(|n| self.ty.row_bytes(n))
            .ok_or_else(|| GgufError::BadShape {
                name: self.name.clone(),
                dims: self.dims.clone(),
                ty: self.ty,
                why: "not a whole number of blocks",
            })
    }
}

#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorDesc>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a key, replacing an earlier value in place so key order is kept.
    pub fn set(&mut self, key: &str, value: MetaValue) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    pub fn add_tensor(&mut self, desc: TensorDesc) -> Result<(), GgufError> {
        desc.size()?;
        if self.tensors.iter().any(|t| t.name == desc.name) {
            return Err(GgufError::DuplicateTensor(desc.name));
        }
        self.tensors.push(desc);
        Ok(())
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .filter(|a| *a != 0 && a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Writes the file. `data(i)` must return tensor `i`'s bytes; it is called in order.
    pub fn write<W: Write, E: From<GgufError> + From<io::Error>>(
        &self,
        out: W,
        mut data: impl FnMut(usize, &TensorDesc) -> Result<Vec<u8>, E>,
    ) -> Result<(), E> {
        let mut w = Counting {
            inner: io::BufWriter::new(out),
            n: 0,
        };
        let align = self.alignment();
        w.write_all(&GGUF_MAGIC.to_le_bytes())?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (k, v) in &self.metadata {
            write_str(&mut w, k)?;
            w.write_all(&v.tag().to_le_bytes())?;
            write_value(&mut w, v)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_str(&mut w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&(t.ty as u32).to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
            offset = (offset + t.size()?).div_ceil(align) * align;
        }
        pad(&mut w, align)?;
        for (i, t) in self.tensors.iter().enumerate() {
            let bytes = data(i, t)?;
            let expected = t.size()?;
            if bytes.len() as u64 != expected {
                return Err(GgufError::WrongDataSize {
                    name: t.name.clone(),
                    got: bytes.len() as u64,
                    expected,
                }
                .into());
            }
            w.write_all(&bytes)?;
            pad(&mut w, align)?;
        }
        w.inner.flush()?;
        Ok(())
    }
}

struct Counting<W: Write> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counting<W>, align: u64) -> io::Result<()> {
    let rem = w.n % align;
    if rem != 0 {
        w.write_all(&vec![0u8; (align - rem) as usize])?;
    }
    Ok(())
}

fn write_str(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, v: &MetaValue) -> io::Result<()> {
    match v {
        MetaValue::U8(x) => w.write_all(&[*x]),
        MetaValue::I8(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::U16(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::I16(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::U32(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::I32(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::U64(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::I64(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::F32(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::F64(x) => w.write_all(&x.to_le_bytes()),
        MetaValue::Bool(x) => w.write_all(&[*x as u8]),
        MetaValue::String(s) => write_str(w, s),
        MetaValue::Array(a) => write_array(w, a),
    }
}

fn write_array(w: &mut impl Write, a: &MetaArray) -> io::Result<()> {
    w.write_all(&a.elem_tag().to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    macro_rules! each {
        ($v:expr, $f:expr) => {{
            for x in $v {
                $f(w, x)?;
            }
            Ok(())
        }};
    }
    match a {
        MetaArray::U8(v) => w.write_all(v),
        MetaArray::I8(v) => each!(v, |w: &mut _, x: &i8| write_value(w, &MetaValue::I8(*x))),
        MetaArray::U16(v) => each!(v, |w: &mut _, x: &u16| write_value(w, &MetaValue::U16(*x))),
        MetaArray::I16(v) => each!(v, |w: &mut _, x: &i16| write_value(w, &MetaValue::I16(*x))),
        MetaArray::U32(v) => each!(v, |w: &mut _, x: &u32| write_value(w, &MetaValue::U32(*x))),
        MetaArray::I32(v) => each!(v, |w: &mut _, x: &i32| write_value(w, &MetaValue::I32(*x))),
        MetaArray::U64(v) => each!(v, |w: &mut _, x: &u64| write_value(w, &MetaValue::U64(*x))),
        MetaArray::I64(v) => each!(v, |w: &mut _, x: &i64| write_value(w, &MetaValue::I64(*x))),
        MetaArray::F32(v) => each!(v, |w: &mut _, x: &f32| write_value(w, &MetaValue::F32(*x))),
        MetaArray::F64(v) => each!(v, |w: &mut _, x: &f64| write_value(w, &MetaValue::F64(*x))),
        MetaArray::Bool(v) => each!(v, |w: &mut _, x: &bool| write_value(
            w,
            &MetaValue::Bool(*x)
        )),
        MetaArray::String(v) => each!(v, |w: &mut _, x: &String| write_str(w, x)),
        MetaArray::Array(v) => each!(v, |w: &mut _, x: &MetaArray| write_array(w, x)),
    }
}
