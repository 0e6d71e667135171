//! BPE pre-tokenizers: the regex list llama.cpp picks from `tokenizer.ggml.pre`, applied the way
//! its `unicode_regex_split` applies them.
//!
//! llama.cpp runs each regex of the list over every fragment left by the previous one; matches
//! and the text between them both become fragments, and a regex never sees past its fragment.
//! It matches either on a "collapsed" text (regexes with `\p{..}`: every non-ASCII code point
//! becomes one byte standing for its category) or with `std::wregex` (the rest). Two effects
//! of that are visible in its output and are reproduced here:
//! - non-ASCII whitespace only ever matches `\s` (and negated classes): it is replaced by U+000B
//!   before matching, which also keeps it out of literal ranges such as DeepSeek's `　-。`;
//! - the collapsed form knows only the categories L, N, P, M and S, and its ASCII table for `S`
//!   lacks `~`: `\p{Lu}`-style subcategories therefore mean `\p{L}`, and `\p{S}` excludes `~`.
//!
//! The GPT-2 and Llama-3 regexes have hand-written splitters in llama.cpp; they follow the
//! regex semantics exactly (leftmost-first alternation, greedy with backtracking), so regex
//! engines with those semantics reproduce them. Most lists run on the `regex` crate, with the
//! one look-ahead they use, a trailing `\s+(?!\S)`, rewritten as `\s+` plus a fix-up of the
//! match end (a unit test checks the rewrite against the backtracking original); lists with
//! other look-arounds (Tekken, GPT-4o, Jais-2) run on `fancy-regex`.

use std::ops::Range;

use fancy_regex::Regex;

use super::TokenizerError;

/// llama.cpp's pre-tokenizer types that we build. Each is a regex list plus flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreKind {
    Default,
    Llama3,
    Dbrx,
    Jais2,
    ChatGlm4,
    DeepseekLlm,
    DeepseekCoder,
    Deepseek3,
    Spark25,
    Falcon,
    Starcoder,
    Gpt2,
    Qwen2,
    Qwen35,
    Bloom,
    Viking,
    Tekken,
    Chameleon,
    Gpt4o,
    BailingMoe,
    SeedCoder,
    Ufakzeka,
    Grok2,
    Laguna,
    ExaoneMoe,
    Gemma4,
    SarvamMoe,
    MiniCpm5,
}

/// Per-name adjustments llama.cpp makes next to choosing the regexes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PreFlags {
    pub no_clean_spaces: bool,
    pub ignore_merges: bool,
    pub add_bos: bool,
    pub no_bos_default: bool,
    pub escape_whitespaces: bool,
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const CONTRACTIONS: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
const LLAMA3_TAIL: &str =
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_TAIL: &str =
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const CJK_KANA: &str = r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+";
const DS3_WORDS: &str =
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"##;
/// `[^(\s|.,!?…。，、।۔،)]`, the class Bloom-style pre-tokenizers split on.
const BLOOM: &str = r" ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{0964}\x{06D4}\x{060C})]+";
const TEKKEN_WORDS: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+";
const TEKKEN_WORDS2: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*";
const TEKKEN_TAIL: &str = r"| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// DeepSeek-LLM's cased-letter class. Written with escapes: several end points (U+1FBE, U+1FD3,
/// U+2126, U+212A, ...) are characters that Unicode normalization would silently replace.
const DEEPSEEK_LETTERS: &str = concat!(
    r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}",
    r"\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}",
    r"\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}",
    r"\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}",
    r"\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}",
    r"\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}",
    r"\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}",
    r"\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}",
    r"\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}",
    r"\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}",
    r"\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}",
    r"\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}",
    r"\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+"
);
const DEEPSEEK_PUNCT: &str =
    r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+";
const DEEPSEEK_CJK: &str = r"[\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+";

impl PreKind {
    /// The names llama.cpp accepts in `tokenizer.ggml.pre`, for the types we build.
    pub fn from_name(name: &str) -> Option<PreKind> {
        use PreKind::*;
        Some(match name {
            "default" => Default,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => Llama3,
            "dbrx" | "smaug-bpe" => Dbrx,
            "jais-2" => Jais2,
            "glm4" | "chatglm-bpe" => ChatGlm4,
            "deepseek-llm" => DeepseekLlm,
            "deepseek-coder" => DeepseekCoder,
            "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => Deepseek3,
            "spark2_5" => Spark25,
            "falcon" => Falcon,
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" | "mellum2" => Starcoder,
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en"
            | "jina-v2-code" | "roberta-bpe" | "exaone4" | "mpt" | "olmo" | "jais" | "trillion"
            | "granite-docling" => Gpt2,
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "hunyuan"
            | "solar-open" | "megrez" => Qwen2,
            "qwen35" => Qwen35,
            "bloom" | "gpt3-finnish" | "poro-chat" => Bloom,
            "viking" => Viking,
            "tekken" => Tekken,
            "chameleon" => Chameleon,
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => Gpt4o,
            "bailingmoe" | "bailingmoe2" | "llada-moe" => BailingMoe,
            "seed-coder" => SeedCoder,
            "ufakzeka" => Ufakzeka,
            "grok-2" => Grok2,
            "laguna" => Laguna,
            "exaone-moe" => ExaoneMoe,
            "gemma4" | "granite-embed-multi-311m" => Gemma4,
            "sarvam-moe" => SarvamMoe,
            "minicpm5" => MiniCpm5,
            _ => return None,
        })
    }

    /// Flags llama.cpp sets per *name*, not per type (e.g. `megrez` keeps clean-up on while
    /// `qwen2` turns it off).
    pub fn flags_for_name(self, name: &str) -> PreFlags {
        let no_clean_spaces = matches!(
            name,
            "deepseek-llm"
                | "deepseek-coder"
                | "deepseek-v3"
                | "spark2_5"
                | "command-r"
                | "qwen2"
                | "deepseek-r1-qwen"
                | "kormo"
                | "f2llmv2"
                | "qwen35"
                | "poro-chat"
                | "viking"
                | "tekken"
                | "smollm"
                | "chameleon"
                | "gpt-4o"
                | "llama4"
                | "kanana2"
                | "talkie"
                | "trillion"
                | "granite-docling"
                | "bailingmoe"
                | "bailingmoe2"
                | "llada-moe"
                | "seed-coder"
                | "hunyuan"
                | "hunyuan-dense"
                | "hy_v4"
                | "joyai-llm"
                | "ufakzeka"
                | "grok-2"
                | "laguna"
                | "minimax-m2"
                | "solar-open"
                | "sarvam-moe"
        );
        PreFlags {
            no_clean_spaces,
            ignore_merges: matches!(self, PreKind::Llama3 | PreKind::Tekken | PreKind::MiniCpm5),
            add_bos: matches!(self, PreKind::Llama3 | PreKind::Tekken | PreKind::Chameleon),
            no_bos_default: self == PreKind::ChatGlm4,
            escape_whitespaces: matches!(self, PreKind::Gemma4 | PreKind::SarvamMoe),
        }
    }

    /// Byte-level (GPT-2) encoding of words before merging; the SPM-style BPEs merge raw UTF-8.
    pub fn byte_encode(self) -> bool {
        !matches!(self, PreKind::Gemma4 | PreKind::SarvamMoe)
    }

    fn regexes(self) -> Vec<String> {
        use PreKind::*;
        let llama3 = format!("{CONTRACTIONS}{LLAMA3_TAIL}");
        let qwen2 = format!("{CONTRACTIONS}{QWEN2_TAIL}");
        let s = |x: &str| x.to_string();
        match self {
            Default => vec![s(r"[\p{P}\$\+<=>\^~\|]+"), s(GPT2), s(r"\p{N}+"), s("[0-9][0-9][0-9]")],
            Llama3 | Dbrx | ChatGlm4 => vec![llama3],
            Jais2 => vec![llama3.replace(
                r"|\s+(?!\S)|\s+",
                r"|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",
            )],
            DeepseekLlm => vec![
                s("[\r\n]"),
                s(DEEPSEEK_LETTERS),
                s(DEEPSEEK_PUNCT),
                s(r"\s+$"),
                s(DEEPSEEK_CJK),
                s(r"\p{N}+"),
            ],
            DeepseekCoder => vec![s("[\r\n]"), s(r"\s?\p{L}+"), s(r"\s?\p{P}+"), s(DEEPSEEK_CJK), s(r"\p{N}")],
            Deepseek3 => vec![
                s(r"\p{N}{1,3}"),
                s(CJK_KANA),
                format!(r"{DS3_WORDS}| ?[\p{{P}}\p{{S}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            ],
            Spark25 => vec![
                s(r"\p{N}{1,3}"),
                s(CJK_KANA),
                format!(r"{DS3_WORDS}| ?[\p{{P}}\p{{S}}]+|[\r\n]|\s+(?!\S)|\s+"),
                s(r"\p{N}"),
            ],
            Falcon => vec![s(r"[\p{P}\$\+<=>\^~\|`]+"), s(GPT2), s("[0-9][0-9][0-9]")],
            Starcoder => vec![s(r"\p{N}"), s(GPT2)],
            Gpt2 => vec![s(GPT2)],
            Qwen2 | Grok2 => vec![qwen2],
            Qwen35 => vec![format!(
                r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?[\p{{L}}\p{{M}}]+|\p{{N}}| ?[^\s\p{{L}}\p{{M}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
            )],
            Bloom => vec![s(BLOOM)],
            Viking => vec![s(BLOOM), s(r"\p{N}")],
            Tekken => vec![format!(r"{TEKKEN_WORDS}|{TEKKEN_WORDS2}|\p{{N}}{TEKKEN_TAIL}")],
            Chameleon => vec![
                s("<sentinel:[0-9]+>"),
                s("(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z"),
                s(r"([\t\n]|    |  )"),
                s(r"\p{N}"),
                s(r"[\p{P}!-/:-@\[-`{-~]"),
                s(GPT2),
            ],
            Gpt4o => vec![format!(
                r"{TEKKEN_WORDS}{CONTRACTIONS}?|{TEKKEN_WORDS2}{CONTRACTIONS}?|\p{{N}}{{1,3}}{TEKKEN_TAIL}"
            )],
            BailingMoe => vec![s(
                r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
            )],
            SeedCoder => vec![format!(
                r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{{1}}| ?[^\s\p{{L}}\p{{N}}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"
            )],
            Ufakzeka => vec![QWEN2_TAIL[1..].to_string()],
            Laguna => vec![s(r"[^\n]+|[\n]+"), qwen2],
            ExaoneMoe => vec![format!(
                r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?(?:\p{{L}}\p{{M}}*(?: \p{{L}}\p{{M}}*)*)+|\p{{N}}| ?[^\s\p{{L}}\p{{N}}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+"
            )],
            Gemma4 | SarvamMoe => vec![s(r"[^\n]+|[\n]+")],
            MiniCpm5 => vec![
                s(r"\p{N}{1,3}"),
                format!(r"{CONTRACTIONS}|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}+| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            ],
        }
    }
}

/// Rewrites a regex with categories the way llama.cpp's collapsed matching understands it.
fn collapse_semantics(re: &str) -> String {
    if !re.contains(r"\p{") {
        return re.to_string();
    }
    let mut out = re.to_string();
    for sub in [r"\p{Lu}", r"\p{Ll}", r"\p{Lt}", r"\p{Lm}", r"\p{Lo}"] {
        out = out.replace(sub, r"\p{L}");
    }
    out.replace(r"\p{S}", r"[\p{S}&&[^~]]")
}

/// How a trailing `\s+(?!\S)` was rewritten for the `regex` crate, which has no look-ahead.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WsTail {
    /// `...|\s+(?!\S)|\s+` became `...|\s+`.
    WithFallback,
    /// `...|\s+(?!\S)` (GPT-2) became `...|\s+`.
    NoFallback,
}

enum Matcher {
    /// The `regex` crate (a DFA, several times faster) with the look-ahead emulated.
    Fast {
        re: regex::Regex,
        tail: Option<WsTail>,
    },
    /// Backtracking, for regexes with other look-arounds.
    Fancy(Regex),
}

pub(crate) struct PreTokenizer {
    matchers: Vec<Matcher>,
}

fn compile(re: &str, allow_fast: bool) -> Result<Matcher, TokenizerError> {
    let re = collapse_semantics(re);
    let err = |e: String| TokenizerError::Regex(format!("{re}: {e}"));
    if allow_fast {
        let (base, tail) = if let Some(b) = re.strip_suffix(r"|\s+(?!\S)|\s+") {
            (format!(r"{b}|\s+"), Some(WsTail::WithFallback))
        } else if let Some(b) = re.strip_suffix(r"|\s+(?!\S)") {
            (format!(r"{b}|\s+"), Some(WsTail::NoFallback))
        } else {
            (re.clone(), None)
        };
        if let Ok(fast) = regex::Regex::new(&base) {
            return Ok(Matcher::Fast { re: fast, tail });
        }
    }
    Regex::new(&re)
        .map(Matcher::Fancy)
        .map_err(|e| err(e.to_string()))
}

impl PreTokenizer {
    pub fn new(kind: PreKind) -> Result<PreTokenizer, TokenizerError> {
        Self::build(kind, true)
    }

    fn build(kind: PreKind, allow_fast: bool) -> Result<PreTokenizer, TokenizerError> {
        let matchers = kind
            .regexes()
            .iter()
            .map(|r| compile(r, allow_fast))
            .collect::<Result<_, _>>()?;
        Ok(PreTokenizer { matchers })
    }

    /// Splits `text` into words, returned as byte ranges of `text` in order and covering it.
    pub fn split(&self, text: &str) -> Result<Vec<Range<usize>>, TokenizerError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let has_wide_ws = text.chars().any(|c| c as u32 > 0x7F && c.is_whitespace());
        if !has_wide_ws {
            return self.split_plain(text);
        }
        // Map each non-ASCII whitespace to U+000B; `orig[i]` is the source offset of byte i.
        let mut t = String::with_capacity(text.len());
        let mut orig = Vec::with_capacity(text.len() + 1);
        for (i, c) in text.char_indices() {
            let c2 = if c as u32 > 0x7F && c.is_whitespace() {
                '\u{0B}'
            } else {
                c
            };
            for _ in 0..c2.len_utf8() {
                orig.push(i);
            }
            t.push(c2);
        }
        orig.push(text.len());
        Ok(self
            .split_plain(&t)?
            .into_iter()
            .map(|r| orig[r.start]..orig[r.end])
            .collect())
    }

    fn split_plain(&self, text: &str) -> Result<Vec<Range<usize>>, TokenizerError> {
        let mut parts = Vec::with_capacity(1);
        parts.push(0..text.len());
        let mut next = Vec::new();
        for m in &self.matchers {
            next.clear();
            for r in &parts {
                let frag = &text[r.clone()];
                let mut push_match = |last: &mut usize, s: usize, e: usize| {
                    if s > *last {
                        next.push(r.start + *last..r.start + s);
                    }
                    if e > s {
                        next.push(r.start + s..r.start + e);
                    }
                    *last = e;
                };
                let mut last = 0;
                match m {
                    Matcher::Fancy(re) => {
                        for mt in re.find_iter(frag) {
                            let mt = mt.map_err(|e| TokenizerError::Regex(e.to_string()))?;
                            push_match(&mut last, mt.start(), mt.end());
                        }
                    }
                    Matcher::Fast { re, tail } => {
                        let mut pos = 0;
                        while let Some(mt) = re.find_at(frag, pos) {
                            let (s, mut e) = (mt.start(), mt.end());
                            if let Some(tail) = tail {
                                e = ws_lookahead_end(frag, s, e, *tail);
                            }
                            push_match(&mut last, s, e);
                            pos = if e > s { e } else { next_char(frag, e) };
                            if pos > frag.len() {
                                break;
                            }
                        }
                    }
                }
                if last < frag.len() {
                    next.push(r.start + last..r.end);
                }
            }
            std::mem::swap(&mut parts, &mut next);
        }
        Ok(parts)
    }
}

fn next_char(s: &str, i: usize) -> usize {
    i + s[i..].chars().next().map_or(1, char::len_utf8)
}

/// Where `\s+(?!\S)` would have ended a match that the rewritten `\s+` ended at `e`.
///
/// A whitespace-only match comes from the rewritten tail, except that `\s*[\r\n]+` (which
/// precedes it in the Llama-3 family) also yields whitespace, always holding a CR or LF; the
/// tail is only reached for runs without one. A run followed by more text gives back its last
/// character, as the look-ahead forces; a single character followed by text keeps its match,
/// which splits the same as the unmatched gap llama.cpp would leave.
fn ws_lookahead_end(frag: &str, s: usize, e: usize, tail: WsTail) -> usize {
    let m = &frag[s..e];
    if e >= frag.len() || !m.chars().all(char::is_whitespace) {
        return e;
    }
    if tail == WsTail::WithFallback && m.bytes().any(|b| b == b'\r' || b == b'\n') {
        return e;
    }
    match m.char_indices().next_back() {
        Some((last, _)) if last > 0 => s + last,
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreKind, text: &str) -> Vec<String> {
        let p = PreTokenizer::new(kind).expect("regexes compile");
        p.split(text)
            .expect("split")
            .into_iter()
            .map(|r| text[r].to_string())
            .collect()
    }

    #[test]
    fn every_pre_tokenizer_regex_compiles() {
        for name in [
            "default",
            "llama3",
            "dbrx",
            "jais-2",
            "glm4",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "spark2_5",
            "falcon",
            "starcoder",
            "gpt-2",
            "qwen2",
            "qwen35",
            "bloom",
            "viking",
            "tekken",
            "chameleon",
            "gpt-4o",
            "bailingmoe",
            "seed-coder",
            "ufakzeka",
            "grok-2",
            "laguna",
            "exaone-moe",
            "gemma4",
            "sarvam-moe",
            "minicpm5",
        ] {
            let kind = PreKind::from_name(name).expect(name);
            PreTokenizer::new(kind).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    /// The `regex`-crate rewrite of `\s+(?!\S)` must split exactly as the backtracking original.
    #[test]
    fn fast_matchers_split_like_backtracking_ones() {
        let pieces = [
            " ", "  ", "\t", "\n", "\r\n", " \n ", "\u{3000}", "\u{A0}", "a", "Ab", "12", "1234",
            "'s", "'LL", "!?", "é", "中文", "🦙", "~", "__",
        ];
        let mut texts: Vec<String> = Vec::new();
        let mut x = 12345u32;
        for _ in 0..3000 {
            let mut t = String::new();
            for _ in 0..(x % 9) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                t.push_str(pieces[(x % pieces.len() as u32) as usize]);
            }
            texts.push(t);
        }
        for name in [
            "default",
            "llama3",
            "deepseek-v3",
            "falcon",
            "starcoder",
            "gpt-2",
            "qwen2",
            "qwen35",
            "chameleon",
            "bailingmoe",
            "seed-coder",
            "ufakzeka",
            "laguna",
            "exaone-moe",
            "minicpm5",
            "spark2_5",
        ] {
            let kind = PreKind::from_name(name).expect(name);
            let fast = PreTokenizer::build(kind, true).expect("fast");
            let slow = PreTokenizer::build(kind, false).expect("slow");
            for t in &texts {
                assert_eq!(
                    fast.split(t).expect("fast split"),
                    slow.split(t).expect("slow split"),
                    "{name}: {t:?}"
                );
            }
        }
    }

    #[test]
    fn gpt2_regex_leaves_one_space_for_the_next_word() {
        assert_eq!(words(PreKind::Gpt2, "a   b\n"), ["a", "  ", " b", "\n"]);
        assert_eq!(words(PreKind::Gpt2, "it's 12"), ["it", "'s", " 12"]);
    }

    #[test]
    fn llama3_groups_digits_by_three_and_keeps_newlines_with_whitespace() {
        assert_eq!(
            words(PreKind::Llama3, "12345 \n\nx"),
            ["123", "45", " \n\n", "x"]
        );
    }

    #[test]
    fn wide_whitespace_matches_only_as_whitespace() {
        // U+3000 is inside DeepSeek's `　-。` range, but llama.cpp never lets it match there,
        // so the punctuation run stops before it (matching it would give one word).
        assert_eq!(
            words(PreKind::DeepseekLlm, "。\u{3000}。"),
            ["。", "\u{3000}", "。"]
        );
        assert_eq!(
            words(PreKind::Gpt2, "a\u{3000}\u{3000}b"),
            ["a", "\u{3000}", "\u{3000}", "b"]
        );
    }

    #[test]
    fn symbol_class_excludes_tilde_like_llama_cpp() {
        // With `~` outside \p{S} it may lead a word, as in llama.cpp's collapsed matching.
        assert_eq!(words(PreKind::Deepseek3, "~é"), ["~é"]);
    }
}
