//! transformers' `AssistantTracker` extension adds a `{% generation %}...{% endgeneration %}`
//! block that marks assistant text for training masks; for rendering it prints its body
//! unchanged. minijinja has no such tag, so the tags are rewritten to `{% if true %}` and
//! `{% endif %}`, keeping their whitespace-control markers so trimming stays the same.

/// Rewrites the generation tags in `source`; returns `None` when there are none.
pub(super) fn rewrite(source: &str) -> Option<String> {
    if !source.contains("generation") {
        return None;
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut changed = false;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match parse_tag(tag) {
            Some((len, open_mark, keyword, close_mark)) => {
                let body = if keyword == "generation" {
                    "if true"
                } else {
                    "endif"
                };
                out.push_str(&format!("{{%{open_mark} {body} {close_mark}%}}"));
                rest = &tag[len..];
                changed = true;
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Parses `{%[-+]? (generation|endgeneration) [-+]?%}` at the start of `s`: the tag's length,
/// its markers and keyword.
fn parse_tag(s: &str) -> Option<(usize, &str, &str, &str)> {
    let inner = s.strip_prefix("{%")?;
    let (open_mark, inner) = split_mark(inner);
    let trimmed = inner.trim_start();
    let keyword = ["endgeneration", "generation"].into_iter().find(|k| {
        trimmed.starts_with(k)
            && !trimmed[k.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
    })?;
    let after = trimmed[keyword.len()..].trim_start();
    let (close_mark, after) = match after.chars().next() {
        Some(c @ ('-' | '+')) => (&after[..c.len_utf8()], &after[c.len_utf8()..]),
        _ => ("", after),
    };
    let after = after.strip_prefix("%}")?;
    Some((s.len() - after.len(), open_mark, keyword, close_mark))
}

fn split_mark(s: &str) -> (&str, &str) {
    match s.chars().next() {
        Some('-' | '+') => (&s[..1], &s[1..]),
        _ => ("", s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_an_always_true_block() {
        let src = "a{%- generation -%}b{% endgeneration %}c{% if x %}{% generation_x %}";
        assert_eq!(
            rewrite(src).as_deref(),
            Some("a{%- if true -%}b{% endif %}c{% if x %}{% generation_x %}")
        );
        assert_eq!(rewrite("{% if generation %}{% endif %}"), None);
    }
}
