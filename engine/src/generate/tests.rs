use super::*;

#[test]
fn partial_stop_strings_are_held_back() {
    let stops = vec!["</s>".to_string(), "STOP".to_string()];
    assert_eq!(safe_prefix_len("hello </", &stops), 6);
    assert_eq!(safe_prefix_len("hello ST", &stops), 6);
    assert_eq!(safe_prefix_len("hello", &stops), 5);
    assert_eq!(find_stop("a STOP b", &stops, 0), Some((2, "STOP")));
    assert_eq!(find_stop("a ST", &stops, 0), None);
}

#[test]
fn stop_search_finds_matches_straddling_shown_text() {
    let stops = vec!["abc".to_string()];
    assert_eq!(find_stop("xxabc", &stops, 3), Some((2, "abc")));
    assert_eq!(find_stop("é abc", &stops, 4), Some((3, "abc")));
}

use crate::backend::LogitEdit;
use crate::constraint::{HookError, LogitsHook};
use crate::tokenizer::{Tokenizer, TokenizerConfig};

const VOCAB: usize = 26;

/// A sequence whose logits are a fixed function of its history, counting where tokens are
/// chosen: what a backend would read back is what the loop asks for.
struct Scripted {
    tokenizer: Tokenizer,
    history: Vec<u32>,
    deferred: bool,
    /// Rows of logits read back to the host, the prompt's included.
    reads: usize,
    /// Tokens chosen where the logits are (`sample_deferred`).
    device_picks: usize,
}

impl Scripted {
    fn new() -> Self {
        let tokens = (b'a'..=b'z').map(|c| char::from(c).to_string()).collect();
        let cfg = TokenizerConfig { model: "gpt2".into(), pre: Some("gpt-2".into()), tokens, token_types: Some(vec![1; VOCAB]), merges: Some(Vec::new()), ..TokenizerConfig::default() };
        let tokenizer = Tokenizer::from_config(cfg).expect("a vocabulary of 26 letters");
        Scripted { tokenizer, history: Vec::new(), deferred: false, reads: 0, device_picks: 0 }
    }

    /// Logits in [-3, 3), hashed from the history.
    fn logits(&self) -> Vec<f32> {
        let h = self.history.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| (h ^ u64::from(t)).wrapping_mul(0x100_0000_01b3));
        (0..VOCAB as u64)
            .map(|j| {
                let mut z = h ^ (j + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z ^= z >> 31;
                (z >> 40) as f32 / (1u32 << 24) as f32 * 6.0 - 3.0
            })
            .collect()
    }
}

impl Exec for Scripted {
    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    fn n_vocab(&self) -> usize {
        VOCAB
    }
    fn history(&self) -> &[u32] {
        &self.history
    }
    fn n_ctx(&self) -> usize {
        1024
    }
    fn eval_chunk(&mut self, chunk: &[u32], _which: Logits, need_logits: bool) -> Result<Vec<f32>, EngineError> {
        assert!(!self.deferred, "a deferred token was never picked");
        self.history.extend_from_slice(chunk);
        self.reads += usize::from(need_logits);
        Ok(self.logits())
    }
    fn shift(&mut self, n_keep: usize, n_discard: usize) -> Result<(), EngineError> {
        self.history.drain(n_keep..n_keep + n_discard);
        Ok(())
    }
    fn defer(&mut self, tok: u32) -> Result<(), EngineError> {
        assert!(!self.deferred, "a deferred token was never picked");
        self.history.push(tok);
        self.deferred = true;
        Ok(())
    }
    fn sample_deferred(&mut self, p: &DeviceSampling, u: f32, banned: &[u32], edits: &[LogitEdit]) -> Result<u32, EngineError> {
        if !std::mem::take(&mut self.deferred) {
            return Err(nothing_deferred());
        }
        self.device_picks += 1;
        let mut l = self.logits();
        crate::cpu::ops::mask_logits(&mut l, VOCAB, banned);
        crate::cpu::ops::edit_logits(&mut l, edits);
        Ok(crate::cpu::ops::sample(&l, p, u))
    }
    fn read_deferred(&mut self) -> Result<Vec<f32>, EngineError> {
        if !std::mem::take(&mut self.deferred) {
            return Err(nothing_deferred());
        }
        self.reads += 1;
        Ok(self.logits())
    }
}

const PROMPT: [u32; 3] = [1, 2, 3];
const N: usize = 24;

/// llama.cpp's default sampling (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05), seeded;
/// end-of-generation never stops it early.
fn sampled(seed: Option<u64>) -> GenerateParams {
    let sampling = SamplingParams { seed, ..SamplingParams::default() };
    GenerateParams { sampling, max_tokens: N, min_tokens: N, ..GenerateParams::default() }
}

fn generate(params: &GenerateParams, hooks: Hooks<'_>) -> (GenerateOutput, Scripted) {
    let mut exec = Scripted::new();
    let out = run(&mut exec, &PROMPT, params, hooks, |_| true).expect("generates");
    assert_eq!(out.tokens.len(), N);
    (out, exec)
}

#[test]
fn sampled_decoding_reads_back_only_token_ids_and_is_fixed_by_its_seed() {
    let (out, exec) = generate(&sampled(Some(11)), Hooks::default());
    // The prompt's logits are on the host anyway; every later token is picked where its
    // logits are.
    assert_eq!((exec.reads, exec.device_picks), (1, N - 1));
    assert_eq!(out.seed, 11);
    let distinct: std::collections::HashSet<_> = out.tokens.iter().collect();
    assert!(distinct.len() >= 6, "temperature 0.8 should wander: {:?}", out.tokens);
    assert_eq!(generate(&sampled(Some(11)), Hooks::default()).0.tokens, out.tokens);
    assert_ne!(generate(&sampled(Some(12)), Hooks::default()).0.tokens, out.tokens);
}

/// `SampleOnDevice::Auto` (the default) draws on the device where the two-stage top-k kernel
/// serves the settings (llama.cpp's top-k 40 here) and on the host where only the general
/// kernel would (top-k off or past `TOP_K_MAX`); `Always` and `Never` force either side. Both
/// sides give the same tokens, and greedy picks are on the device whatever the setting.
#[test]
fn sampled_draws_go_to_the_device_where_the_top_k_kernel_serves_them() {
    use super::SampleOnDevice::{Always, Never};
    let (dev, exec) = generate(&sampled(Some(11)), Hooks::default());
    assert_eq!((exec.reads, exec.device_picks), (1, N - 1), "top-k 40 draws on the device by default");
    let (host, exec) = generate(&GenerateParams { sample_on_device: Never, ..sampled(Some(11)) }, Hooks::default());
    // The prompt's logits and one read-back per generated token but the last.
    assert_eq!((exec.reads, exec.device_picks), (N, 0));
    assert_eq!(host.tokens, dev.tokens, "the CPU twin draws as the device does");
    for top_k in [0, crate::backend::DeviceSampling::TOP_K_MAX + 1] {
        let wide = |sample_on_device| {
            let mut p = GenerateParams { sample_on_device, ..sampled(Some(11)) };
            p.sampling.top_k = top_k;
            p
        };
        let (host, exec) = generate(&wide(super::SampleOnDevice::Auto), Hooks::default());
        assert_eq!((exec.reads, exec.device_picks), (N, 0), "top-k {top_k} draws on the host by default");
        let (dev, exec) = generate(&wide(Always), Hooks::default());
        assert_eq!((exec.reads, exec.device_picks), (1, N - 1), "top-k {top_k} on the device when asked");
        assert_eq!(host.tokens, dev.tokens);
    }
    let greedy = GenerateParams { sampling: SamplingParams::greedy(), sample_on_device: Never, ..sampled(Some(1)) };
    assert_eq!(generate(&greedy, Hooks::default()).1.device_picks, N - 1, "greedy picks are always on the device");
}

#[test]
fn the_last_token_is_never_fed_back_whatever_picks_it() {
    let greedy = GenerateParams { sampling: SamplingParams::greedy(), ..sampled(Some(1)) };
    for params in [sampled(Some(3)), GenerateParams { sample_on_device: super::SampleOnDevice::Never, ..sampled(Some(3)) }, greedy] {
        let (out, exec) = generate(&params, Hooks::default());
        assert!(!exec.deferred, "a forward pass was left pending after the last token");
        assert_eq!(exec.history.len(), PROMPT.len() + N - 1);
        assert_eq!(&exec.history[PROMPT.len()..], &out.tokens[..N - 1]);
    }
}

#[test]
fn an_unseeded_run_reports_the_seed_that_reproduces_it() {
    let (out, _) = generate(&sampled(None), Hooks::default());
    assert_eq!(generate(&sampled(Some(out.seed)), Hooks::default()).0.tokens, out.tokens);
}

#[test]
fn log_probabilities_read_logits_back_and_leave_the_tokens_unchanged() {
    let (plain, _) = generate(&sampled(Some(11)), Hooks::default());
    let (out, exec) = generate(&GenerateParams { logprobs: Some(3), ..sampled(Some(11)) }, Hooks::default());
    // The prompt's, and one per generated token but the last.
    assert_eq!((exec.reads, exec.device_picks), (N, 0));
    assert_eq!(out.tokens, plain.tokens, "the device sampler's CPU twin draws on the host");
    assert_eq!(out.logprobs.len(), N);
    assert!(out.logprobs.iter().zip(&out.tokens).all(|(lp, &t)| lp.token == t && lp.logprob < 0.0 && lp.top.len() == 3));
}

fn with(sampling: SamplingParams) -> GenerateParams {
    GenerateParams { sampling, ..sampled(None) }
}

#[test]
fn logit_bias_and_penalties_are_applied_where_the_logits_are() {
    let base = sampled(Some(5)).sampling;
    let plain = generate(&with(base.clone()), Hooks::default()).0.tokens;
    // A large bias makes its token dominate; a ban removes it again (ids past the vocabulary
    // are ignored); a huge presence penalty forbids repeats while unseen tokens remain.
    let biased = with(SamplingParams { logit_bias: vec![(4, 20.0)], ..base.clone() });
    let banned = with(SamplingParams { logit_bias: vec![(4, 20.0), (4, f32::NEG_INFINITY), (99, 1.0)], ..base.clone() });
    let penalised = with(SamplingParams { repetition_penalty: 2.0, presence_penalty: 100.0, penalty_last_n: 64, ..base });
    for (name, params) in [("biased", &biased), ("banned", &banned), ("penalised", &penalised)] {
        let (out, exec) = generate(params, Hooks::default());
        assert_eq!((exec.reads, exec.device_picks), (1, N - 1), "{name}");
        assert_ne!(out.tokens, plain, "{name}: the edits changed nothing");
        let (with_lp, lp_exec) = generate(&GenerateParams { logprobs: Some(1), ..params.clone() }, Hooks::default());
        assert_eq!(lp_exec.device_picks, 0);
        assert_eq!(with_lp.tokens, out.tokens, "{name}: the host's edits differ from the device's");
    }
    assert!(generate(&biased, Hooks::default()).0.tokens.iter().filter(|&&t| t == 4).count() > N / 2);
    assert!(!generate(&banned, Hooks::default()).0.tokens.contains(&4));
    let out = generate(&penalised, Hooks::default()).0.tokens;
    let mut all = PROMPT.to_vec();
    all.extend_from_slice(&out);
    let unseen_left = VOCAB - PROMPT.len();
    assert!(out[..unseen_left].iter().enumerate().all(|(i, t)| !all[..PROMPT.len() + i].contains(t)), "{out:?} repeats a token");
}

#[test]
fn greedy_decoding_picks_the_argmax_where_the_logits_are() {
    let params = GenerateParams { sampling: SamplingParams::greedy(), ..sampled(Some(1)) };
    let (out, exec) = generate(&params, Hooks::default());
    assert_eq!((exec.reads, exec.device_picks), (1, N - 1));
    let mut replay = Scripted::new();
    replay.history.extend_from_slice(&PROMPT);
    for &t in &out.tokens {
        assert_eq!(t, crate::sampling::argmax(&replay.logits()));
        replay.history.push(t);
    }
}

/// Bans every third token, on the device (as a bitset) or only on host logits.
struct BanThirds {
    bits: bool,
}

impl LogitsHook for BanThirds {
    fn mask(&mut self, logits: &mut [f32]) -> Result<(), HookError> {
        logits.iter_mut().step_by(3).for_each(|l| *l = f32::NEG_INFINITY);
        Ok(())
    }
    fn accept(&mut self, _token: u32) -> Result<(), HookError> {
        Ok(())
    }
    fn banned_bits(&mut self, n_vocab: usize) -> Result<Option<Vec<u32>>, HookError> {
        let mut words = vec![0u32; n_vocab.div_ceil(32)];
        (0..n_vocab).step_by(3).for_each(|c| words[c / 32] |= 1 << (c % 32));
        Ok(self.bits.then_some(words))
    }
}

#[test]
fn a_hook_bans_the_same_tokens_on_the_device_as_on_host_logits() {
    let mut on_device = BanThirds { bits: true };
    let mut hooks = Hooks::default();
    hooks.logits.push(&mut on_device);
    let (dev, dev_exec) = generate(&sampled(Some(3)), hooks);
    let mut on_host = BanThirds { bits: false };
    let mut hooks = Hooks::default();
    hooks.logits.push(&mut on_host);
    let (host, host_exec) = generate(&sampled(Some(3)), hooks);
    assert_eq!((dev_exec.reads, dev_exec.device_picks), (1, N - 1));
    // Logits come back for every pick but the prompt's: the hook can only edit host logits.
    assert_eq!((host_exec.reads, host_exec.device_picks), (N, 0));
    assert_eq!(dev.tokens, host.tokens);
    assert!(dev.tokens.iter().all(|t| t % 3 != 0), "a banned token was drawn: {:?}", dev.tokens);
}
