use std::fs::File;
use std::path::PathBuf;

use anyhow::{bail, Context};
use hangar_engine::gguf::{GgufFile, GgufWriter, MetaValue, TensorDesc};
use hangar_engine::quant::{self, GgmlType};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

#[derive(clap::Args)]
pub struct Args {
    input: PathBuf,
    output: PathBuf,
    /// Target type for weight matrices: q8_0, q4_0, q4_1, q5_0, q4_K, q6_K, f16, ..., or the
    /// mix q4_K_M (llama.cpp's: q4_K, with q6_K for the output and for the V and FFN-down
    /// matrices of the first and last eighth of the layers and every third one between).
    #[arg(value_name = "TYPE")]
    ty: String,
}

/// llama.cpp's `general.file_type` code for a file whose matrices are mostly `ty`.
fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q2K => 10,
        GgmlType::Q3K => 11,
        GgmlType::Q4K => 14,
        GgmlType::Q5K => 16,
        GgmlType::Q6K => 18,
        GgmlType::BF16 => 32,
        _ => 0,
    }
}

/// What a tensor becomes: matrices take the target type (or llama.cpp's fallback when rows do
/// not split into K-quant super-blocks); vectors stay as they are, since they are tiny and
/// quality-critical.
fn target_type(dims: &[u64], current: GgmlType, target: GgmlType) -> GgmlType {
    if dims.len() < 2 || dims.iter().skip(1).all(|&d| d == 1) {
        return current;
    }
    if dims[0] % target.block_size() as u64 == 0 {
        return target;
    }
    let fallback = match target {
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        _ => GgmlType::Q8_0,
    };
    if dims[0] % fallback.block_size() as u64 == 0 {
        fallback
    } else {
        GgmlType::F16
    }
}

/// llama.cpp's `use_more_bits`: which layers of `n` the Q4_K_M mix gives Q6_K.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i >= n / 8 && (i - n / 8) % 3 == 2)
}

/// The type tensor `name` takes under the Q4_K_M mix, before the row-size fallback.
fn q4_k_m(name: &str, n_layer: usize) -> GgmlType {
    if name == "output.weight" {
        return GgmlType::Q6K;
    }
    let layer = name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|i| i.parse::<usize>().ok());
    match layer {
        Some(i) if (name.contains("attn_v.") || name.contains("ffn_down.")) && use_more_bits(i, n_layer) => GgmlType::Q6K,
        _ => GgmlType::Q4K,
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mix = a.ty.eq_ignore_ascii_case("q4_k_m");
    let target = if mix { GgmlType::Q4K } else { GgmlType::parse(&a.ty).with_context(|| format!("unknown type {:?}", a.ty))? };
    if !quant::supports_quantize(target) {
        bail!("quantizing to {target} is not supported");
    }
    let file = GgufFile::open(&a.input).with_context(|| format!("opening {}", a.input.display()))?;
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        w.set(k, v.clone());
    }
    // llama.cpp's code for the Q4_K_M mix is 15.
    w.set("general.file_type", MetaValue::U32(if mix { 15 } else { file_type(target) }));
    let n_layer = file.architecture().and_then(|arch| file.get_u32(&format!("{arch}.block_count"))).unwrap_or(0) as usize;
    w.set("general.quantized_by", MetaValue::String("hangar".into()));
    let mut plan = Vec::new();
    for t in file.tensors() {
        let ty = target_type(&t.dims, t.ty, if mix { q4_k_m(&t.name, n_layer) } else { target });
        w.add_tensor(TensorDesc { name: t.name.clone(), ty, dims: t.dims.clone() })?;
        plan.push((t, ty));
    }
    let out = File::create(&a.output).with_context(|| format!("creating {}", a.output.display()))?;
    let bar = ProgressBar::new(plan.len() as u64);
    bar.set_style(ProgressStyle::with_template("quantizing [{bar:30}] {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    w.write::<_, anyhow::Error>(out, |i, _| {
        let (info, ty) = plan[i];
        bar.set_message(info.name.clone());
        bar.inc(1);
        let view = file.view(info);
        if ty == info.ty {
            return Ok(view.data.to_vec());
        }
        // Row-parallel: each row is dequantized and re-quantized independently.
        let rows: Vec<Vec<u8>> = (0..info.n_rows())
            .into_par_iter()
            .map(|r| {
                let src = view.row(r).context("row out of range")?;
                let f = quant::dequantize_to_vec(info.ty, src)?;
                Ok(quant::quantize(ty, &f)?)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(rows.concat())
    })?;
    bar.finish_and_clear();
    eprintln!("wrote {} ({} tensors, matrices as {target})", a.output.display(), plan.len());
    Ok(())
}
