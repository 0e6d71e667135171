//! The CPU reference backend: multi-threaded (rayon), reading weights in their quantized form
//! straight from the file mapping. It is both a serving backend and the oracle-checked
//! reference the GPU kernels are compared against.

mod attention;
pub mod ops;
pub(crate) mod sample;
mod sample_topk;

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::{Act, AttnParams, Backend, BackendError, KvFormat, NormParams, SeqId, WeightId};
use crate::gguf::GgufFile;
use crate::quant::{self, GgmlType};
use crate::spec::{Activation, RopeConfig};
pub use attention::{attend, attend_policy, KvCache};

enum Weight {
    /// A matrix left in the mapping: `rows` rows of `cols` elements of `ty`.
    Mapped { file: Arc<GgufFile>, index: usize, ty: GgmlType, rows: usize, cols: usize },
    /// Vectors (norms, biases), dequantized once because they are tiny and read every step.
    Dense(Vec<f32>),
}

struct Mat {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

#[derive(Default)]
pub struct CpuBackend {
    weights: Vec<Weight>,
    acts: Vec<Mat>,
    seqs: HashMap<u32, KvCache>,
    next_seq: u32,
}

fn act_in(acts: &[Mat], a: Act) -> Result<&Mat, BackendError> {
    acts.get(a.0 as usize).ok_or_else(|| BackendError::BadHandle(format!("{a:?}")))
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn act(&self, a: Act) -> Result<&Mat, BackendError> {
        act_in(&self.acts, a)
    }

    fn push(&mut self, m: Mat) -> Act {
        self.acts.push(m);
        Act(self.acts.len() as u32 - 1)
    }

    fn weight(&self, w: WeightId) -> Result<&Weight, BackendError> {
        self.weights.get(w.0 as usize).ok_or_else(|| BackendError::BadHandle(format!("{w:?}")))
    }

    fn dense(&self, w: Option<WeightId>) -> Result<Option<&[f32]>, BackendError> {
        w.map(|w| match self.weight(w)? {
            Weight::Dense(v) => Ok(v.as_slice()),
            Weight::Mapped { .. } => Err(BackendError::Shape { op: "vector", detail: format!("{w:?} is a matrix") }),
        })
        .transpose()
    }

    /// Elementwise map of a copy of `x`.
    fn map(&mut self, x: Act, f: impl Fn(&mut [f32])) -> Result<Act, BackendError> {
        let m = self.act(x)?;
        let mut data = m.data.clone();
        f(&mut data);
        let (rows, cols) = (m.rows, m.cols);
        Ok(self.push(Mat { rows, cols, data }))
    }

    /// `linear`, with every row computed as a one-row matvec when `row_exact` (batched decode)
    /// rather than by the dequantize-once matmul a prefill chunk gets.
    fn linear_with(&mut self, x: Act, w: WeightId, bias: Option<WeightId>, row_exact: bool) -> Result<Act, BackendError> {
        let xm = self.act(x)?;
        let Weight::Mapped { file, index, ty, rows, cols } = self.weight(w)? else {
            return Err(BackendError::Shape { op: "linear", detail: "weight is a vector".into() });
        };
        if xm.cols != *cols {
            return Err(BackendError::Shape { op: "linear", detail: format!("input width {} vs weight rows of {cols}", xm.cols) });
        }
        let data_bytes = file.view(&file.tensors()[*index]).data;
        let mut out = vec![0.0f32; xm.rows * rows];
        let r = if xm.rows == 1 {
            quant::matvec(*ty, data_bytes, *rows, &xm.data, &mut out)
        } else if row_exact {
            quant::matvec_rows(*ty, data_bytes, *rows, &xm.data, xm.rows, &mut out)
        } else {
            quant::matmul(*ty, data_bytes, *rows, &xm.data, xm.rows, &mut out)
        };
        r.map_err(|e| quant_err(&file.tensors()[*index].name, e))?;
        if let Some(b) = self.dense(bias)? {
            for row in out.chunks_mut(*rows) {
                row.iter_mut().zip(b).for_each(|(o, &c)| *o += c);
            }
        }
        let (n, m) = (xm.rows, *rows);
        Ok(self.push(Mat { rows: n, cols: m, data: out }))
    }
}

fn quant_err(name: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Shape { op: "dequantize", detail: format!("{name}: {e}") }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn load_weight(&mut self, file: &Arc<GgufFile>, name: &str) -> Result<WeightId, BackendError> {
        let index = file
            .tensors()
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| BackendError::MissingTensor(name.to_string()))?;
        let info = &file.tensors()[index];
        if !quant::supports_dequantize(info.ty) {
            return Err(BackendError::UnsupportedType { name: name.to_string(), ty: info.ty, backend: "cpu" });
        }
        let w = if info.dims.iter().skip(1).all(|&d| d == 1) {
            Weight::Dense(quant::dequantize_to_vec(info.ty, file.view(info).data).map_err(|e| quant_err(name, e))?)
        } else {
            Weight::Mapped { file: file.clone(), index, ty: info.ty, rows: info.n_rows(), cols: info.row_len() }
        };
        self.weights.push(w);
        Ok(WeightId(self.weights.len() as u32 - 1))
    }

    fn new_sequence(&mut self, n_layer: usize, kv_dim: usize, n_ctx: usize, format: KvFormat) -> Result<SeqId, BackendError> {
        let bytes = (n_layer as u128) * (kv_dim as u128) * (n_ctx as u128) * 8;
        if bytes > (1u128 << 40) {
            return Err(BackendError::OutOfMemory(format!("KV cache of {bytes} bytes")));
        }
        let cache = KvCache::new(n_layer, kv_dim, n_ctx, format)?;
        let id = self.next_seq;
        self.next_seq += 1;
        self.seqs.insert(id, cache);
        Ok(SeqId(id))
    }

    fn free_sequence(&mut self, seq: SeqId) {
        self.seqs.remove(&seq.0);
    }

    fn begin_step(&mut self) {
        self.acts.clear();
    }

    fn mask_logits(&mut self, x: Act, banned: &[u32]) -> Result<Act, BackendError> {
        if banned.is_empty() {
            return Ok(x);
        }
        let cols = self.act(x)?.cols;
        self.map(x, |d| ops::mask_logits(d, cols, banned))
    }

    fn edit_logits(&mut self, x: Act, edits: &[crate::backend::LogitEdit]) -> Result<Act, BackendError> {
        self.map(x, |d| ops::edit_logits(d, edits))
    }

    fn embed(&mut self, table: WeightId, tokens: &[u32]) -> Result<Act, BackendError> {
        let Weight::Mapped { file, index, ty, rows, cols } = self.weight(table)? else {
            return Err(BackendError::Shape { op: "embed", detail: "embedding table is a vector".into() });
        };
        let view = file.view(&file.tensors()[*index]);
        let mut data = vec![0.0f32; tokens.len() * cols];
        for (&t, out) in tokens.iter().zip(data.chunks_mut(*cols)) {
            let row = view.row(t as usize).filter(|_| (t as usize) < *rows);
            let row = row.ok_or(BackendError::TokenOutOfRange { id: t, n_vocab: *rows })?;
            quant::dequantize(*ty, row, out).map_err(|e| quant_err(&view.info.name, e))?;
        }
        let cols = *cols;
        Ok(self.push(Mat { rows: tokens.len(), cols, data }))
    }

    fn linear(&mut self, x: Act, w: WeightId, bias: Option<WeightId>) -> Result<Act, BackendError> {
        self.linear_with(x, w, bias, false)
    }

    fn norm(&mut self, x: Act, w: Option<WeightId>, b: Option<WeightId>, p: NormParams) -> Result<Act, BackendError> {
        let (w, b) = (self.dense(w)?.map(<[f32]>::to_vec), self.dense(b)?.map(<[f32]>::to_vec));
        let cols = self.act(x)?.cols;
        if p.group == 0 || cols % p.group != 0 || w.as_ref().is_some_and(|w| w.len() != p.group) {
            return Err(BackendError::Shape { op: "norm", detail: format!("row {cols}, group {}", p.group) });
        }
        self.map(x, |d| ops::norm(d, w.as_deref(), b.as_deref(), p))
    }

    fn rope(&mut self, x: Act, head_dim: usize, pos0: usize, rope: &RopeConfig) -> Result<Act, BackendError> {
        let cols = self.act(x)?.cols;
        if head_dim == 0 || cols % head_dim != 0 || rope.n_rot > head_dim || rope.n_rot % 2 != 0 {
            return Err(BackendError::Shape { op: "rope", detail: format!("row {cols}, head_dim {head_dim}, n_rot {}", rope.n_rot) });
        }
        let f = ops::rope_inv_freq(rope);
        self.map(x, |d| {
            for (r, row) in d.chunks_mut(cols).enumerate() {
                ops::rope_row(row, head_dim, pos0 + r, rope, &f);
            }
        })
    }

    fn attention(&mut self, seq: SeqId, layer: usize, pos0: usize, q: Act, k: Act, v: Act, p: &AttnParams) -> Result<Act, BackendError> {
        // Borrow the activations and the caches as disjoint fields, so no copy is needed.
        let (qm, km, vm) = (act_in(&self.acts, q)?, act_in(&self.acts, k)?, act_in(&self.acts, v)?);
        let n = qm.rows;
        let cache = self.seqs.get_mut(&seq.0).ok_or_else(|| BackendError::BadHandle(format!("{seq:?}")))?;
        let kv_dim = cache.kv_dim;
        if qm.cols != p.n_head * p.head_dim
            || km.cols != kv_dim
            || vm.cols != kv_dim
            || kv_dim != p.n_head_kv * p.head_dim
            || p.n_head_kv == 0
            || p.n_head % p.n_head_kv != 0
            || km.rows != n
            || vm.rows != n
            || layer >= cache.n_layer()
            || p.head_dim != cache.format.head_dim
        {
            return Err(BackendError::Shape { op: "attention", detail: format!("q {}x{}, k/v width {} vs cache {kv_dim}", n, qm.cols, km.cols) });
        }
        if pos0 + n > cache.n_ctx {
            return Err(BackendError::ContextFull { pos: pos0, n, n_ctx: cache.n_ctx });
        }
        cache.write(layer, pos0, &km.data, &vm.data, cache.format.policy.centers(p.softcap));
        let out = cache.attend(layer, &qm.data, n, pos0, p);
        let cols = p.n_head * p.head_dim;
        Ok(self.push(Mat { rows: n, cols, data: out }))
    }

    fn ffn_act(&mut self, gate: Option<Act>, up: Act, act: Activation) -> Result<Act, BackendError> {
        let g = gate.map(|g| self.act(g).map(|m| m.data.clone())).transpose()?;
        if g.as_ref().is_some_and(|g| g.len() != self.act(up).map(|m| m.data.len()).unwrap_or(0)) {
            return Err(BackendError::Shape { op: "ffn_act", detail: "gate and up differ in size".into() });
        }
        self.map(up, |d| ops::ffn_act(g.as_deref(), d, act))
    }

    fn add(&mut self, a: Act, b: Act) -> Result<Act, BackendError> {
        let bm = self.act(b)?;
        let am = self.act(a)?;
        if (am.rows, am.cols) != (bm.rows, bm.cols) {
            return Err(BackendError::Shape { op: "add", detail: format!("{}x{} + {}x{}", am.rows, am.cols, bm.rows, bm.cols) });
        }
        let data = am.data.iter().zip(&bm.data).map(|(x, y)| x + y).collect();
        let (rows, cols) = (am.rows, am.cols);
        Ok(self.push(Mat { rows, cols, data }))
    }

    fn scale(&mut self, x: Act, s: f32) -> Result<Act, BackendError> {
        self.map(x, |d| d.iter_mut().for_each(|v| *v *= s))
    }

    fn softcap(&mut self, x: Act, cap: f32) -> Result<Act, BackendError> {
        self.map(x, |d| d.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh()))
    }

    fn split_cols(&mut self, x: Act, widths: &[usize]) -> Result<Vec<Act>, BackendError> {
        let m = self.act(x)?;
        if widths.iter().sum::<usize>() != m.cols {
            return Err(BackendError::Shape { op: "split_cols", detail: format!("{widths:?} of {}", m.cols) });
        }
        let (rows, cols) = (m.rows, m.cols);
        let mut parts: Vec<Mat> = widths.iter().map(|&w| Mat { rows, cols: w, data: Vec::with_capacity(rows * w) }).collect();
        for row in m.data.chunks(cols) {
            let mut off = 0;
            for p in parts.iter_mut() {
                p.data.extend_from_slice(&row[off..off + p.cols]);
                off += p.cols;
            }
        }
        Ok(parts.into_iter().map(|p| self.push(p)).collect())
    }

    fn last_row(&mut self, x: Act) -> Result<Act, BackendError> {
        let m = self.act(x)?;
        let cols = m.cols;
        if m.rows == 0 {
            return Err(BackendError::Shape { op: "last_row", detail: "no rows".into() });
        }
        let data = m.data[m.data.len() - cols..].to_vec();
        Ok(self.push(Mat { rows: 1, cols, data }))
    }

    fn read(&mut self, x: Act) -> Result<Vec<f32>, BackendError> {
        Ok(self.act(x)?.data.clone())
    }

    fn batches_rows(&self) -> bool {
        true
    }

    fn shift_kv(&mut self, seq: SeqId, n_keep: usize, n_discard: usize, len: usize, ropes: &[&RopeConfig]) -> Result<(), BackendError> {
        let cache = self.seqs.get_mut(&seq.0).ok_or_else(|| BackendError::BadHandle(format!("{seq:?}")))?;
        cache.shift(n_keep, n_discard, len, ropes)
    }

    fn copy_kv(&mut self, src: SeqId, dst: SeqId, pos0: usize, n: usize) -> Result<(), BackendError> {
        let bad = |s: SeqId| BackendError::BadHandle(format!("{s:?}"));
        if src == dst {
            return Err(bad(dst));
        }
        let from = self.seqs.remove(&src.0).ok_or_else(|| bad(src))?;
        let r = self.seqs.get_mut(&dst.0).ok_or_else(|| bad(dst)).and_then(|to| to.copy_from(&from, pos0, n));
        self.seqs.insert(src.0, from);
        r
    }

    fn linear_rows(&mut self, x: Act, w: WeightId, bias: Option<WeightId>) -> Result<Act, BackendError> {
        self.linear_with(x, w, bias, true)
    }

    fn row_slice(&mut self, x: Act, r0: usize, n: usize) -> Result<Act, BackendError> {
        let m = self.act(x)?;
        if r0.checked_add(n).is_none_or(|end| end > m.rows) {
            return Err(BackendError::Shape { op: "row_slice", detail: format!("rows {r0}..+{n} of {}", m.rows) });
        }
        let cols = m.cols;
        let data = m.data[r0 * cols..(r0 + n) * cols].to_vec();
        Ok(self.push(Mat { rows: n, cols, data }))
    }

    fn concat_rows(&mut self, parts: &[Act]) -> Result<Act, BackendError> {
        let first = parts.first().ok_or_else(|| BackendError::Shape { op: "concat_rows", detail: "no parts".into() })?;
        let cols = self.act(*first)?.cols;
        let (mut rows, mut data) = (0, Vec::new());
        for &p in parts {
            let m = self.act(p)?;
            if m.cols != cols {
                return Err(BackendError::Shape { op: "concat_rows", detail: format!("widths {cols} and {}", m.cols) });
            }
            rows += m.rows;
            data.extend_from_slice(&m.data);
        }
        Ok(self.push(Mat { rows, cols, data }))
    }
}
