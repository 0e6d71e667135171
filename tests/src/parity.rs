//! Real-model parity against a `hangar.parity.v1` golden (`scripts/gen_parity_goldens.py`):
//! the engine runs the quantized file, llama.cpp ran its all-F32 dequant twin. Shared by every
//! model's test and by every backend.

use hangar_engine::graph::Logits;
use hangar_engine::Model;

use crate::{argmax, greedy, ids};

/// How much of a golden to run: CI trims the largest model to fit its time budget.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Use the first this many prompts (all if larger).
    pub max_prompts: usize,
    /// Compare this many greedy tokens per prompt (at most the golden's `n_predict`).
    pub n_greedy: usize,
}

impl Budget {
    pub const FULL: Budget = Budget { max_prompts: usize::MAX, n_greedy: usize::MAX };
}

#[derive(Debug, Default)]
pub struct ParityReport {
    /// Teacher-forced positions whose argmax equals llama.cpp's.
    pub top1_agree: usize,
    pub positions: usize,
    pub max_abs_dlogit: f64,
    pub mean_abs_dlogit: f64,
    pub greedy_same: usize,
    /// Prompts whose greedy continuation was compared.
    pub greedy_checked: usize,
    /// Prompts where llama.cpp's own batched and incremental runs disagree (a true near-tie), so
    /// their greedy text is not a reference; their teacher-forced rows are still checked.
    pub greedy_ambiguous: Vec<String>,
    pub n_greedy: usize,
}

impl ParityReport {
    pub fn top1_rate(&self) -> f64 {
        self.top1_agree as f64 / self.positions.max(1) as f64
    }
    pub fn greedy_rate(&self) -> f64 {
        self.greedy_same as f64 / self.greedy_checked.max(1) as f64
    }
}

/// Runs `golden`'s prompts through `model`: tokenization must equal llama.cpp's, the top-10
/// logits of every teacher-forced position are compared, and so is the greedy continuation.
pub fn check_parity(model: &mut Model, g: &serde_json::Value, budget: Budget) -> ParityReport {
    let n_vocab = model.spec.hparams.n_vocab;
    let n_ctx = g["oracle"]["n_ctx"].as_u64().expect("n_ctx") as usize;
    let mut r = ParityReport::default();
    let mut sum_d = 0f64;
    for p in g["prompts"].as_array().expect("prompts").iter().take(budget.max_prompts) {
        let name = p["name"].as_str().unwrap_or("?");
        let prompt = ids(&p["prompt_ids"]);
        let text = p["text"].as_str().expect("text");
        let parse_special = p["parse_special"].as_bool().unwrap_or(false);
        let ours = model.tokenizer.encode(text, model.tokenizer.add_bos(), parse_special).expect("encode");
        assert_eq!(ours, prompt, "prompt {name}: token ids differ from llama.cpp's");

        let cont = ids(&p["continuation_ids"]);
        let all: Vec<u32> = prompt.iter().chain(&cont).copied().collect();
        let logits = model.session(n_ctx).expect("session").eval(&all, 512, Logits::All).expect("eval");
        let tf_argmax = ids(&p["tf_argmax"]);
        for (i, row) in logits.chunks(n_vocab).enumerate() {
            r.positions += 1;
            r.top1_agree += (argmax(row) as u32 == tf_argmax[i]) as usize;
            for pair in p["tf_top"][i].as_array().expect("tf_top row") {
                let id = pair[0].as_u64().expect("id") as usize;
                let d = (row[id] as f64 - pair[1].as_f64().expect("logit")).abs();
                r.max_abs_dlogit = r.max_abs_dlogit.max(d);
                sum_d += d;
            }
        }
        if !p["greedy_matches_tf"].as_bool().unwrap_or(true) {
            eprintln!("prompt {name}: llama.cpp's batched and incremental greedy differ; greedy not compared");
            r.greedy_ambiguous.push(name.to_string());
            continue;
        }
        let n = budget.n_greedy.min(cont.len());
        r.n_greedy = n;
        let got = greedy(model, &prompt, n, n_ctx);
        r.greedy_checked += 1;
        if got == cont[..n] {
            r.greedy_same += 1;
        } else {
            let at = got.iter().zip(&cont).position(|(a, b)| a != b).unwrap_or(0);
            eprintln!("prompt {name}: greedy diverges at step {at}");
        }
    }
    r.mean_abs_dlogit = sum_d / (r.positions * 10).max(1) as f64;
    r
}
