//! Proto requests into checked engine parameters, and engine results back into proto. Every
//! check names the offending field, so a client can fix its request from the message alone.

use std::time::Duration;

use hangar_engine::chat::ChatMessage;
use hangar_engine::generate::GenerateParams;
use hangar_engine::logprobs::TokenLogprobs;
use hangar_engine::sampling::SamplingParams;

use super::config::Limits;
use super::error::ServiceError;
use super::pb;
use super::registry::ModelFacts;
use super::worker::{Finish, Finished};

/// Most alternatives per token in `logprobs.top_n`.
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Most stop strings, and the longest one in bytes.
pub const MAX_STOPS: usize = 16;
pub const MAX_STOP_LEN: usize = 256;
/// Longest client `request_id`, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 256;
/// Default `max_tokens` when the request sets none (capped by `limits.max_tokens`).
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// A request checked against the model and the limits, ready for a worker.
pub struct Prepared {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub include_stop_string: bool,
    pub time_limit: Option<Duration>,
}

fn check_range(field: &str, v: f32, lo: f32, hi: f32, lo_open: bool) -> Result<f32, ServiceError> {
    let ok = v.is_finite() && v <= hi && if lo_open { v > lo } else { v >= lo };
    if ok {
        Ok(v)
    } else {
        let lo_b = if lo_open { "(" } else { "[" };
        Err(ServiceError::invalid(field, format!("{v} is outside {lo_b}{lo}, {hi}]")))
    }
}

pub fn check_request_id(id: &str) -> Result<(), ServiceError> {
    if id.len() > MAX_REQUEST_ID_LEN {
        return Err(ServiceError::invalid("request_id", format!("is {} bytes; at most {MAX_REQUEST_ID_LEN}", id.len())));
    }
    Ok(())
}

pub fn chat_messages(messages: &[pb::ChatMessage]) -> Vec<ChatMessage> {
    messages.iter().map(|m| ChatMessage::new(&m.role, &m.content)).collect()
}

/// The prompt's tokens: `prompt` tokenized, or `messages` rendered with the chat template.
fn prompt_tokens(req: &pb::GenerateRequest, facts: &ModelFacts, limits: &Limits) -> Result<Vec<u32>, ServiceError> {
    let tokens = match (req.prompt.is_empty(), req.messages.is_empty()) {
        (true, true) => return Err(ServiceError::invalid("prompt", "is empty; set prompt or messages")),
        (false, false) => return Err(ServiceError::invalid("messages", "set either prompt or messages, not both")),
        (false, true) => facts
            .tokenizer
            .encode(&req.prompt, true, false)
            .map_err(|e| ServiceError::invalid("prompt", e.to_string()))?,
        (true, false) => {
            if facts.chat.is_none() {
                return Err(ServiceError::invalid("messages", format!("model {:?} has no chat template; send a raw prompt", facts.name)));
            }
            hangar_engine::model::encode_chat(&facts.tokenizer, facts.chat.as_ref(), &chat_messages(&req.messages))
                .map_err(|e| ServiceError::invalid("messages", e.to_string()))?
        }
    };
    if tokens.is_empty() {
        return Err(ServiceError::invalid("prompt", "tokenizes to no tokens"));
    }
    if tokens.len() > limits.max_prompt_tokens {
        return Err(ServiceError::invalid(
            "prompt",
            format!("{} tokens exceed the server's limits.max_prompt_tokens of {}", tokens.len(), limits.max_prompt_tokens),
        ));
    }
    if tokens.len() >= facts.n_ctx {
        return Err(ServiceError::invalid(
            "prompt",
            format!("{} tokens do not fit the model's context of {} (one position must stay free to generate)", tokens.len(), facts.n_ctx),
        ));
    }
    Ok(tokens)
}

fn sampling(s: &pb::SamplingParams, facts: &ModelFacts) -> Result<SamplingParams, ServiceError> {
    let d = SamplingParams::default();
    let temperature = match s.temperature {
        Some(t) if !(t.is_finite() && t >= 0.0) => {
            return Err(ServiceError::invalid("sampling.temperature", format!("{t} is not a finite number >= 0")))
        }
        Some(t) => t,
        None => d.temperature,
    };
    let top_p = s.top_p.map(|v| check_range("sampling.top_p", v, 0.0, 1.0, true)).transpose()?.unwrap_or(d.top_p);
    let min_p = s.min_p.map(|v| check_range("sampling.min_p", v, 0.0, 1.0, false)).transpose()?.unwrap_or(d.min_p);
    let repetition_penalty = s
        .repetition_penalty
        .map(|v| check_range("sampling.repetition_penalty", v, 0.0, 10.0, true))
        .transpose()?
        .unwrap_or(d.repetition_penalty);
    let frequency_penalty = s
        .frequency_penalty
        .map(|v| check_range("sampling.frequency_penalty", v, -2.0, 2.0, false))
        .transpose()?
        .unwrap_or(d.frequency_penalty);
    let presence_penalty = s
        .presence_penalty
        .map(|v| check_range("sampling.presence_penalty", v, -2.0, 2.0, false))
        .transpose()?
        .unwrap_or(d.presence_penalty);
    let mut logit_bias = Vec::with_capacity(s.logit_bias.len());
    for (&id, &bias) in &s.logit_bias {
        if id as usize >= facts.n_vocab {
            return Err(ServiceError::invalid(
                "sampling.logit_bias",
                format!("token id {id} is not in the vocabulary of {} tokens", facts.n_vocab),
            ));
        }
        if bias.is_nan() || bias == f32::INFINITY {
            return Err(ServiceError::invalid("sampling.logit_bias", format!("bias {bias} for token {id} must be finite or -inf")));
        }
        logit_bias.push((id, bias));
    }
    logit_bias.sort_by_key(|&(id, _)| id);
    Ok(SamplingParams {
        temperature,
        top_k: s.top_k.map_or(d.top_k, |k| k as usize),
        top_p,
        min_p,
        repetition_penalty,
        frequency_penalty,
        presence_penalty,
        penalty_last_n: s.penalty_last_n.map_or(d.penalty_last_n, |n| n as usize),
        logit_bias,
        seed: s.seed,
    })
}

/// Checks `req` against the model and the limits.
pub fn prepare(req: &pb::GenerateRequest, facts: &ModelFacts, limits: &Limits) -> Result<Prepared, ServiceError> {
    check_request_id(&req.request_id)?;
    let sampling = sampling(&req.sampling.clone().unwrap_or_default(), facts)?;
    let st = req.stopping.clone().unwrap_or_default();
    let max_tokens = match st.max_tokens {
        Some(0) => return Err(ServiceError::invalid("stopping.max_tokens", "is 0; it must be at least 1")),
        Some(n) if n > limits.max_tokens => {
            return Err(ServiceError::invalid(
                "stopping.max_tokens",
                format!("{n} exceeds the server's limits.max_tokens of {}", limits.max_tokens),
            ))
        }
        Some(n) => n,
        None => DEFAULT_MAX_TOKENS.min(limits.max_tokens),
    };
    if st.min_tokens > max_tokens {
        return Err(ServiceError::invalid("stopping.min_tokens", format!("{} is more than max_tokens {max_tokens}", st.min_tokens)));
    }
    if st.stop.len() > MAX_STOPS {
        return Err(ServiceError::invalid("stopping.stop", format!("{} strings; at most {MAX_STOPS}", st.stop.len())));
    }
    if let Some(s) = st.stop.iter().find(|s| s.is_empty() || s.len() > MAX_STOP_LEN) {
        return Err(ServiceError::invalid("stopping.stop", format!("a stop string of {} bytes; each must be 1..={MAX_STOP_LEN}", s.len())));
    }
    if let Some(&id) = st.stop_token_ids.iter().find(|&&id| id as usize >= facts.n_vocab) {
        return Err(ServiceError::invalid(
            "stopping.stop_token_ids",
            format!("token id {id} is not in the vocabulary of {} tokens", facts.n_vocab),
        ));
    }
    let logprobs = match &req.logprobs {
        Some(l) if l.top_n > MAX_TOP_LOGPROBS => {
            return Err(ServiceError::invalid("logprobs.top_n", format!("{} is more than {MAX_TOP_LOGPROBS}", l.top_n)))
        }
        Some(l) => Some(l.top_n as usize),
        None => None,
    };
    let prompt = prompt_tokens(req, facts, limits)?;
    if req.context_shift.is_some() && facts.backend != "cpu" {
        return Err(ServiceError::invalid("context_shift", format!("the {} backend cannot shift a KV cache yet; load the model on the cpu backend", facts.backend)));
    }
    let params = GenerateParams {
        sampling,
        max_tokens: max_tokens as usize,
        stop: st.stop,
        stop_token_ids: st.stop_token_ids,
        min_tokens: st.min_tokens as usize,
        logprobs,
        context_shift: req.context_shift.as_ref().map(|c| c.keep as usize),
        ..GenerateParams::default()
    };
    let time_limit = (st.time_limit_ms > 0).then(|| Duration::from_millis(st.time_limit_ms.into()));
    Ok(Prepared { prompt, params, include_stop_string: st.include_stop_string, time_limit })
}

pub fn stop_reason(f: Finish) -> pb::StopReason {
    match f {
        Finish::Eos => pb::StopReason::Eos,
        Finish::Length => pb::StopReason::Length,
        Finish::StopSequence => pb::StopReason::StopSequence,
        Finish::Cancelled => pb::StopReason::Cancelled,
        Finish::TimeLimit => pb::StopReason::TimeLimit,
        Finish::Policy => pb::StopReason::Policy,
    }
}

pub fn logprobs(lps: &[TokenLogprobs], facts: &ModelFacts) -> Vec<pb::TokenLogprob> {
    let text = |id: u32| String::from_utf8_lossy(facts.tokenizer.token_bytes(id).unwrap_or_default()).into_owned();
    lps.iter()
        .map(|l| pb::TokenLogprob {
            token_id: l.token,
            logprob: l.logprob,
            top: l.top.iter().map(|a| pb::TopLogprob { token_id: a.token, logprob: a.logprob, text: text(a.token) }).collect(),
        })
        .collect()
}

pub fn complete(f: &Finished) -> pb::GenerateComplete {
    pb::GenerateComplete {
        stop_reason: stop_reason(f.finish) as i32,
        seed: f.seed,
        usage: Some(usage(f)),
        timings: Some(pb::Timings { queue_ms: f.queue_ms, prefill_ms: f.prefill_ms, decode_ms: f.decode_ms }),
        policy_rule: f.policy_rule.clone().unwrap_or_default(),
        policy_hits: policy_hits(f),
    }
}

fn policy_hits(f: &Finished) -> Vec<pb::PolicyHit> {
    f.policy_hits.iter().map(|h| pb::PolicyHit { set: h.set.clone(), rule: h.rule.clone(), action: h.action.as_str().into() }).collect()
}

fn usage(f: &Finished) -> pb::Usage {
    pb::Usage { prompt_tokens: f.prompt_tokens as u32, completion_tokens: f.tokens.len() as u32 }
}

pub fn response(f: Finished, request_id: String, facts: &ModelFacts) -> pb::GenerateResponse {
    let c = complete(&f);
    pb::GenerateResponse {
        logprobs: logprobs(&f.logprobs, facts),
        text: f.text,
        token_ids: f.tokens,
        stop_reason: c.stop_reason,
        seed: c.seed,
        usage: c.usage,
        timings: c.timings,
        request_id,
        policy_rule: c.policy_rule,
        policy_hits: c.policy_hits,
    }
}

pub fn model_info(m: &super::registry::LoadedModel) -> pb::ModelInfo {
    let f = &m.facts;
    let b = m.batch_counts();
    let t = &f.tokenizer;
    pb::ModelInfo {
        name: f.name.clone(),
        architecture: f.architecture.clone(),
        family: f.family.clone(),
        plugin: f.plugin.clone(),
        parameters: f.parameters,
        context_length: f.n_ctx as u32,
        trained_context_length: f.trained_ctx as u32,
        tokenizer: Some(pb::TokenizerInfo {
            kind: t.model_kind().to_string(),
            pre: t.pre().unwrap_or_default().to_string(),
            vocab_size: t.n_vocab() as u32,
            bos_token_id: t.bos(),
            eos_token_id: t.eos(),
            eog_token_ids: t.eog_ids().to_vec(),
            add_bos: t.add_bos(),
        }),
        has_chat_template: f.chat.is_some(),
        quant_types: f.quant_types.clone().into_iter().collect(),
        backend: f.backend.clone(),
        file_bytes: f.file_bytes,
        layers: f.layers as u32,
        embedding_length: f.embedding_length as u32,
        load_ms: f.load_ms,
        path: f.path.clone(),
        kv_cache: f.kv_cache.clone(),
        kv_bytes_per_token: f.kv_bytes_per_token as u64,
        kv_caches: b.kv_caches as u32,
        kv_bytes_in_use: b.kv_bytes,
    }
}

pub fn load_options(o: Option<&pb::LoadOptions>) -> super::config::ModelOptions {
    let o = o.cloned().unwrap_or_default();
    super::config::ModelOptions {
        backend: o.backend,
        kv_cache: o.kv_cache,
        context_length: o.context_length,
        max_batch: o.max_batch,
        policy: o.policy,
    }
}
