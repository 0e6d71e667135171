//! Log-probabilities of generated tokens under the model's raw (unbiased, untempered)
//! distribution, as OpenAI-style APIs report them.

/// One alternative and its natural-log probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Alternative {
    pub token: u32,
    pub logprob: f32,
}

/// The chosen token's log-probability and the most likely tokens at that step.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// Best first; ties broken by the lower token id so output is reproducible.
    pub top: Vec<Alternative>,
}

/// The log-softmax normaliser of `logits`: log(sum(exp(l))). Computed in f64 around the max so
/// large logits neither overflow nor lose the small terms.
pub(crate) fn log_normaliser(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().filter(|l| l.is_finite()).fold(f32::NEG_INFINITY, f32::max) as f64;
    if !max.is_finite() {
        return 0.0;
    }
    let sum: f64 = logits.iter().filter(|l| l.is_finite()).map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln()
}

/// The `top_n` most likely tokens of `logits`, with log-probabilities against `norm`.
pub(crate) fn top_alternatives(logits: &[f32], norm: f64, top_n: usize) -> Vec<Alternative> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(top_n + 1);
    for (i, &l) in logits.iter().enumerate() {
        if top_n == 0 || !l.is_finite() {
            continue;
        }
        if best.len() == top_n && best.last().is_some_and(|&(_, w)| l <= w) {
            continue;
        }
        let at = best.partition_point(|&(_, w)| w >= l);
        best.insert(at, (i as u32, l));
        best.truncate(top_n);
    }
    best.into_iter().map(|(token, l)| Alternative { token, logprob: (l as f64 - norm) as f32 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_of_a_uniform_distribution_are_minus_log_n() {
        let logits = [3.0f32; 4];
        let norm = log_normaliser(&logits);
        let top = top_alternatives(&logits, norm, 2);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].token, top[1].token), (0, 1), "ties go to the lower id");
        assert!((top[0].logprob - (-(4f32).ln())).abs() < 1e-6);
    }

    #[test]
    fn top_alternatives_are_sorted_and_skip_banned_tokens() {
        let logits = [0.0f32, 5.0, f32::NEG_INFINITY, 2.0, 4.0];
        let norm = log_normaliser(&logits);
        let top = top_alternatives(&logits, norm, 3);
        let ids: Vec<u32> = top.iter().map(|a| a.token).collect();
        assert_eq!(ids, vec![1, 4, 3]);
        let total: f64 = [0.0f64, 5.0, 2.0, 4.0].iter().map(|l| (l - norm).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
}
