//! Chat templates: turning a conversation into the prompt text a model was trained on.
//!
//! A model ships its template as Jinja source in the `tokenizer.chat_template` GGUF key. The
//! templates are written for, and tested by their authors with, Python jinja2 as configured by
//! HF transformers' `apply_chat_template`, so that is the behaviour reproduced here on top of
//! minijinja: `trim_blocks` and `lstrip_blocks` on, the trailing newline dropped, loop controls,
//! `raise_exception`, `strftime_now`, `tojson` as Python's `json.dumps`, Python string and dict
//! methods, and values printed the way Python's `str()` prints them. The golden tests in
//! `engine/tests/chat_templates.rs` compare the output with jinja2's byte for byte.

mod generation_tag;
mod python;
mod strftime;
mod strmethods;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::gguf::{GgufFile, MetaArray};

pub use strftime::strftime_utc;

/// The name the template is registered under. Its lack of an `.html` extension is what keeps
/// minijinja from HTML-escaping the output.
const TEMPLATE_NAME: &str = "chat_template";

/// Work budget of one render, in minijinja fuel: a fixed part for the template's own logic plus
/// a part per byte of input. A template comes from a model file, so it must not be able to spin
/// or allocate without bound; fuel also bounds memory (about 64 bytes per unit).
const BASE_FUEL: u64 = 2_000_000;
const FUEL_PER_INPUT_BYTE: u64 = 16;

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// How to render, beyond the messages.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// End with the header that opens the assistant's turn, so the model answers next.
    pub add_generation_prompt: bool,
    /// Further template variables, like the keyword arguments of `apply_chat_template`
    /// (`tools`, `documents`, `enable_thinking`, ...). They override the standard ones.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The clock `strftime_now` reads, in seconds since the Unix epoch; `None` reads the
    /// system clock. Dates are rendered in UTC (transformers uses the local time zone).
    pub now_unix: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The model carries no chat template; the caller decides whether to fall back to raw text.
    #[error("the model has no chat template")]
    NoTemplate,
    #[error("the chat template does not compile: {0}")]
    Syntax(String),
    /// The template called `raise_exception`, usually to reject the conversation's shape
    /// (roles not alternating, an unsupported role). The message is the template's own.
    #[error("the chat template rejected the conversation: {0}")]
    Raised(String),
    #[error("the chat template failed while rendering: {0}")]
    Render(String),
    #[error("the chat template used more than its work budget: {0}")]
    OutOfFuel(String),
}

/// Marks an error as coming from the template's `raise_exception`, so it can be told apart
/// from minijinja's own failures after it has travelled up through the engine.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

/// A compiled chat template with the special-token strings it may print.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token`/`eos_token` are the token strings (not ids) that the
    /// template sees as `bos_token` and `eos_token`.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| ChatError::Syntax(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        env.set_unknown_method_callback(python::unknown_method);
        env.set_formatter(python::format_value);
        env.add_filter("tojson", python::tojson);
        env.add_filter("trim", python::trim_filter);
        env.add_test("sequence", python::is_sequence);
        env.add_function("raise_exception", raise_exception);
        let compiled_source = generation_tag::rewrite(source).unwrap_or_else(|| source.to_owned());
        env.add_template_owned(TEMPLATE_NAME, compiled_source)
            .map_err(|e| ChatError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env: Arc::new(env),
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Like [`ChatTemplate::new`] for a template that may be absent from the model's metadata.
    pub fn from_optional(
        source: Option<&str>,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, ChatError> {
        match source {
            Some(s) => Self::new(s, bos_token, eos_token),
            None => Err(ChatError::NoTemplate),
        }
    }

    /// The template of a GGUF model (`tokenizer.chat_template`), with the texts of its BOS and
    /// EOS tokens looked up in `tokenizer.ggml.tokens`. `NoTemplate` when the key is absent.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ChatError> {
        let source = file
            .get_str("tokenizer.chat_template")
            .ok_or(ChatError::NoTemplate)?;
        let token_text = |key: &str| -> &str {
            let id = file.get_u32(key);
            match (id, file.get_array("tokenizer.ggml.tokens")) {
                (Some(id), Some(MetaArray::String(tokens))) => {
                    tokens.get(id as usize).map(String::as_str).unwrap_or("")
                }
                _ => "",
            }
        };
        Self::new(
            source,
            token_text("tokenizer.ggml.bos_token_id"),
            token_text("tokenizer.ggml.eos_token_id"),
        )
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_with(
            messages,
            &RenderOptions {
                add_generation_prompt,
                ..Default::default()
            },
        )
    }

    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        opts: &RenderOptions,
    ) -> Result<String, ChatError> {
        let input_bytes = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .chain(opts.extra.values().map(json_size))
            .fold(0u64, |acc, n| acc.saturating_add(n as u64));
        let fuel = BASE_FUEL.saturating_add(input_bytes.saturating_mul(FUEL_PER_INPUT_BYTE));

        // Fuel is a setting of the environment, so each render gets its own shallow copy
        // (compiled templates are shared behind Arcs).
        let mut env = (*self.env).clone();
        env.set_fuel(Some(fuel));
        let now = opts.now_unix.unwrap_or_else(system_now);
        env.add_function("strftime_now", move |format: &str| {
            strftime_utc(format, now)
        });

        // transformers always passes `tools` and `documents`, as None when there are none;
        // templates test `tools is not none`, which an undefined value would pass.
        let mut ctx: Vec<(String, Value)> = vec![
            (
                "messages".into(),
                messages.iter().map(message_value).collect(),
            ),
            ("tools".into(), Value::from(())),
            ("documents".into(), Value::from(())),
            (
                "add_generation_prompt".into(),
                Value::from(opts.add_generation_prompt),
            ),
            ("bos_token".into(), Value::from(self.bos_token.as_str())),
            ("eos_token".into(), Value::from(self.eos_token.as_str())),
        ];
        for (k, v) in &opts.extra {
            let v = json_value(v);
            match ctx.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v,
                None => ctx.push((k.clone(), v)),
            }
        }
        let ctx = Value::from_pairs(ctx);

        let tmpl = env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatError::Render(describe(&e)))?;
        tmpl.render(ctx).map_err(classify_render_error)
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedByTemplate(message)))
}

fn system_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn message_value(m: &ChatMessage) -> Value {
    Value::from_pairs([
        ("role", Value::from(m.role.as_str())),
        ("content", Value::from(m.content.as_str())),
    ])
}

/// JSON to template value, keeping object key order: `tojson` and `items()` print keys in the
/// order the caller gave them, as Python dicts do.
fn json_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => a.iter().map(json_value).collect(),
        serde_json::Value::Object(o) => Value::from_pairs(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_value(v))),
        ),
    }
}

/// Bytes of text in a JSON value, without serializing it: the input measure for the fuel budget.
fn json_size(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.len(),
        serde_json::Value::Array(a) => a.iter().map(json_size).fold(1, usize::saturating_add),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| k.len().saturating_add(json_size(v)))
            .fold(1, usize::saturating_add),
        _ => 8,
    }
}

fn classify_render_error(err: Error) -> ChatError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<RaisedByTemplate>() {
            return ChatError::Raised(raised.0.clone());
        }
        source = e.source();
    }
    match err.kind() {
        ErrorKind::OutOfFuel => ChatError::OutOfFuel(describe(&err)),
        _ => ChatError::Render(describe(&err)),
    }
}

/// The error text with its location, but without minijinja's multi-line debug dump.
fn describe(err: &Error) -> String {
    err.to_string()
}
