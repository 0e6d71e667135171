//! Chat templates rendered by the engine against Python jinja2's renders of the same templates
//! and conversations (tests/golden/chat, from scripts/gen_chat_goldens.py).

use std::path::PathBuf;

use hangar_engine::chat::{strftime_utc, ChatError, ChatMessage, ChatTemplate, RenderOptions};
use hangar_engine::gguf::GgufFile;
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    name: String,
    template: String,
    bos_token: String,
    eos_token: String,
    now_unix: i64,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    extra: serde_json::Map<String, serde_json::Value>,
    expected: Option<String>,
    error: Option<ExpectedError>,
}

#[derive(Deserialize)]
struct ExpectedError {
    kind: String,
    message: String,
}

#[derive(Deserialize)]
struct Misc {
    strftime: Vec<StrftimeCase>,
    syntax_errors: Vec<SyntaxCase>,
}

#[derive(Deserialize)]
struct StrftimeCase {
    unix: i64,
    format: String,
    expected: String,
}

#[derive(Deserialize)]
struct SyntaxCase {
    name: String,
    template: String,
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/chat")
}

fn load<T: for<'de> Deserialize<'de>>(file: &str) -> T {
    let path = golden_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (regenerate with scripts/gen_chat_goldens.py)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Renders every case of one golden file and reports all mismatches at once.
fn check(file: &str) {
    let golden: Golden = load(file);
    let tmpl = ChatTemplate::new(&golden.template, &golden.bos_token, &golden.eos_token)
        .unwrap_or_else(|e| panic!("{}: template does not compile: {e}", golden.name));
    assert!(!golden.cases.is_empty());
    let mut failures = Vec::new();
    for case in &golden.cases {
        let opts = RenderOptions {
            add_generation_prompt: case.add_generation_prompt,
            extra: case.extra.clone(),
            now_unix: Some(golden.now_unix),
        };
        let got = tmpl.render_with(&case.messages, &opts);
        let ok = match (&case.expected, &case.error, &got) {
            (Some(want), None, Ok(out)) => out == want,
            (None, Some(want), Err(ChatError::Raised(msg))) => {
                want.kind == "raised" && *msg == want.message
            }
            (None, Some(want), Err(ChatError::Render(_))) => want.kind == "render",
            _ => false,
        };
        if !ok {
            let want = match (&case.expected, &case.error) {
                (Some(s), _) => format!("Ok({s:?})"),
                (_, Some(e)) => format!("{} error: {:?}", e.kind, e.message),
                _ => "nothing".to_owned(),
            };
            failures.push(format!(
                "case {}:\n  want {want}\n  got  {got:?}",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} of {} cases differ from jinja2\n{}",
        golden.name,
        failures.len(),
        golden.cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_template_renders_like_jinja2() {
    check("smollm2.json");
}

#[test]
fn qwen25_coder_template_with_tools_renders_like_jinja2() {
    check("qwen2.5-coder.json");
}

#[test]
fn command_r_template_renders_and_raises_like_jinja2() {
    check("command-r.json");
}

#[test]
fn phi3_template_renders_like_jinja2() {
    check("phi-3.json");
}

#[test]
fn qwen2_vocab_template_renders_like_jinja2() {
    check("qwen2.json");
}

#[test]
fn gemma4_template_with_macros_tools_and_thinking_renders_like_jinja2() {
    check("gemma-4.json");
}

#[test]
fn chatml_template_renders_like_jinja2() {
    check("chatml.json");
}

#[test]
fn llama3_template_renders_like_jinja2() {
    check("llama3.json");
}

#[test]
fn llama31_template_with_date_and_indented_tools_renders_like_jinja2() {
    check("llama3.1-tools.json");
}

#[test]
fn gemma3_style_template_renders_and_raises_like_jinja2() {
    check("gemma3-style.json");
}

#[test]
fn mistral_style_template_renders_and_raises_like_jinja2() {
    check("mistral-style.json");
}

#[test]
fn generation_block_template_renders_like_jinja2() {
    check("generation-tag.json");
}

#[test]
fn python_printing_methods_and_tojson_match_jinja2() {
    check("python-semantics.json");
}

#[test]
fn strftime_matches_python_datetime() {
    let misc: Misc = load("misc.json");
    let mut failures = Vec::new();
    for c in &misc.strftime {
        let got = strftime_utc(&c.format, c.unix);
        if got != c.expected {
            failures.push(format!(
                "{:?} at {}: want {:?} got {:?}",
                c.format, c.unix, c.expected, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn syntax_errors_are_reported_at_construction() {
    let misc: Misc = load("misc.json");
    assert!(!misc.syntax_errors.is_empty());
    for c in &misc.syntax_errors {
        match ChatTemplate::new(&c.template, "", "") {
            Err(ChatError::Syntax(_)) => {}
            other => panic!("{}: want a Syntax error, got {other:?}", c.name),
        }
    }
}

#[test]
fn raise_exception_surfaces_the_templates_message() {
    let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
    match t.render(&[], true) {
        Err(ChatError::Raised(msg)) => assert_eq!(msg, "roles must alternate"),
        other => panic!("want Raised, got {other:?}"),
    }
}

#[test]
fn raise_exception_inside_a_macro_is_still_raised() {
    let src = "{% macro check(m) %}{% if m.role == 'bad' %}{{ raise_exception('bad role') }}{% endif %}{% endmacro %}\
               {% for m in messages %}{{ check(m) }}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    match t.render(&[ChatMessage::new("bad", "x")], false) {
        Err(ChatError::Raised(msg)) => assert_eq!(msg, "bad role"),
        other => panic!("want Raised, got {other:?}"),
    }
}

#[test]
fn missing_template_is_a_typed_error() {
    assert!(matches!(
        ChatTemplate::from_optional(None, "<s>", "</s>"),
        Err(ChatError::NoTemplate)
    ));
}

#[test]
fn runaway_template_is_stopped_by_the_work_budget() {
    let src =
        "{% for i in range(10000) %}{% for j in range(10000) %}{{ j }}{% endfor %}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert!(matches!(t.render(&[], false), Err(ChatError::OutOfFuel(_))));
}

#[test]
fn extra_variables_override_the_standard_ones() {
    let t = ChatTemplate::new(
        "{{ bos_token }}|{{ tools is none }}|{{ enable_thinking }}",
        "<s>",
        "",
    )
    .unwrap();
    let mut extra = serde_json::Map::new();
    extra.insert("bos_token".into(), "<B>".into());
    extra.insert("enable_thinking".into(), true.into());
    let out = t
        .render_with(
            &[],
            &RenderOptions {
                extra,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out, "<B>|True|True");
}

fn model_path(file: &str) -> PathBuf {
    let dir = std::env::var_os("HANGAR_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hangar/models")
        });
    let path = dir.join(file);
    assert!(
        path.exists(),
        "model {} is missing: fetch it with fetch-models.sh into $HANGAR_MODEL_DIR",
        path.display()
    );
    path
}

/// Reading the template out of the real model file gives exactly what gguf-py read for the
/// goldens, special-token texts included, and renders the same.
fn check_model(model: &str, golden_file: &str) {
    let file = GgufFile::open(model_path(model)).unwrap_or_else(|e| panic!("open {model}: {e}"));
    let tmpl = ChatTemplate::from_gguf(&file).unwrap_or_else(|e| panic!("{model}: {e}"));
    let golden: Golden = load(golden_file);
    assert_eq!(tmpl.source(), golden.template, "{model}: template text");
    assert_eq!(
        (tmpl.bos_token(), tmpl.eos_token()),
        (golden.bos_token.as_str(), golden.eos_token.as_str())
    );
    let case = golden
        .cases
        .iter()
        .find(|c| c.name == "multi_turn/gen")
        .expect("multi_turn/gen case");
    let out = tmpl
        .render(&case.messages, true)
        .unwrap_or_else(|e| panic!("{model}: {e}"));
    assert_eq!(Some(out), case.expected);
}

#[test]
fn smollm2_gguf_template_is_read_and_rendered() {
    check_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2.json");
}

#[test]
fn qwen25_coder_gguf_template_is_read_and_rendered() {
    check_model(
        "qwen2.5-coder-0.5b-instruct.Q4_K_M-mix.gguf",
        "qwen2.5-coder.json",
    );
}

#[test]
fn gemma3_base_model_has_no_template() {
    let file = GgufFile::open(model_path("gemma-3-270m-q4_k_m.gguf")).expect("open gemma-3");
    assert!(matches!(
        ChatTemplate::from_gguf(&file),
        Err(ChatError::NoTemplate)
    ));
}

#[test]
fn long_conversations_fit_the_work_budget() {
    // 400 turns of 4 KiB through the heaviest template here (gemma-4: split, trim, macros).
    let golden: Golden = load("gemma-4.json");
    let t = ChatTemplate::new(&golden.template, &golden.bos_token, &golden.eos_token).unwrap();
    let text = "word ".repeat(800) + "<|channel>thinking<channel|>tail";
    let messages: Vec<ChatMessage> = (0..400)
        .map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, text.clone()))
        .collect();
    let out = t.render(&messages, true).expect("a long but ordinary conversation renders");
    assert!(out.len() > 400 * 3000);
}

#[test]
fn templates_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatTemplate>();
}
