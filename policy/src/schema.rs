//! A documented subset of JSON Schema compiled to a regex over compact JSON (no insignificant
//! whitespace; object properties in the schema's order).
//!
//! Supported: `type` (`object`, `array`, `string`, `number`, `integer`, `boolean`, `null`, or a
//! list of them), `properties`, `required`, `additionalProperties` (extra properties are never
//! generated), `items`, `minItems`, `maxItems`, `minLength`, `maxLength`, `enum`, `const`,
//! `anyOf`, and annotations (`title`, `description`, `default`, `examples`, `$schema`, `$id`,
//! `$comment`). Anything else is refused with the keyword named: a constraint that silently
//! ignored a keyword would let invalid output through.
//!
//! Numbers are bounded (at most 16 digits before and after the point, 3 exponent digits) so
//! that every output can end.

use serde_json::{Map, Value};

use crate::error::PolicyError;

const MAX_DEPTH: usize = 32;
const MAX_PROPERTIES: usize = 64;
const MAX_REPEAT: u64 = 256;

const ANNOTATIONS: &[&str] = &["title", "description", "default", "examples", "$schema", "$id", "$comment"];

/// One JSON string character: anything but `"`, `\` and control characters, or an escape.
const CHAR: &str = r#"(?:[^"\\\x00-\x1F]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})"#;
const INTEGER: &str = r"-?(?:0|[1-9][0-9]{0,15})";
const FRACTION: &str = r"(?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,3})?";

/// The regex every JSON text valid under `schema` (and generated compactly) matches.
pub fn to_regex(schema: &Value) -> Result<String, PolicyError> {
    compile(schema, "#", 0)
}

fn err(path: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::Schema { path: path.into(), message: message.into() }
}

fn compile(schema: &Value, path: &str, depth: usize) -> Result<String, PolicyError> {
    if depth > MAX_DEPTH {
        return Err(err(path, format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let obj = match schema {
        Value::Object(o) => o,
        Value::Bool(_) => return Err(err(path, "boolean schemas are not supported; give a type")),
        _ => return Err(err(path, "a schema must be an object")),
    };
    for k in obj.keys() {
        let known = ANNOTATIONS.contains(&k.as_str())
            || matches!(
                k.as_str(),
                "type" | "properties" | "required" | "additionalProperties" | "items" | "minItems" | "maxItems" | "minLength" | "maxLength" | "enum" | "const" | "anyOf"
            );
        if !known {
            return Err(err(path, format!("keyword {k:?} is not supported")));
        }
    }
    if let Some(c) = obj.get("const") {
        return Ok(literal(c));
    }
    if let Some(e) = obj.get("enum") {
        let Value::Array(items) = e else { return Err(err(path, "`enum` must be an array")) };
        if items.is_empty() {
            return Err(err(path, "`enum` is empty, so nothing is valid"));
        }
        return Ok(format!("(?:{})", items.iter().map(literal).collect::<Vec<_>>().join("|")));
    }
    if let Some(any) = obj.get("anyOf") {
        let Value::Array(subs) = any else { return Err(err(path, "`anyOf` must be an array")) };
        if subs.is_empty() || obj.contains_key("type") {
            return Err(err(path, "`anyOf` must be non-empty and stand without `type`"));
        }
        let alts = subs.iter().enumerate().map(|(i, s)| compile(s, &format!("{path}/anyOf/{i}"), depth + 1)).collect::<Result<Vec<_>, _>>()?;
        return Ok(format!("(?:{})", alts.join("|")));
    }
    let types: Vec<&str> = match obj.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) if !ts.is_empty() => ts.iter().map(|t| t.as_str().ok_or_else(|| err(path, "`type` entries must be strings"))).collect::<Result<_, _>>()?,
        Some(_) => return Err(err(path, "`type` must be a string or a non-empty array of strings")),
        None => return Err(err(path, "no `type`, `enum`, `const` or `anyOf`: unconstrained values are not supported")),
    };
    let alts = types.iter().map(|t| compile_type(t, obj, path, depth)).collect::<Result<Vec<_>, _>>()?;
    Ok(if alts.len() == 1 { alts.into_iter().next().unwrap_or_default() } else { format!("(?:{})", alts.join("|")) })
}

fn compile_type(ty: &str, obj: &Map<String, Value>, path: &str, depth: usize) -> Result<String, PolicyError> {
    match ty {
        "null" => Ok("null".into()),
        "boolean" => Ok("(?:true|false)".into()),
        "integer" => Ok(INTEGER.into()),
        "number" => Ok(format!("{INTEGER}{FRACTION}")),
        "string" => {
            let (min, max) = bounds(obj, "minLength", "maxLength", path)?;
            Ok(format!("\"{CHAR}{}\"", repeat(min, max)))
        }
        "array" => {
            let item = match obj.get("items") {
                Some(s) => compile(s, &format!("{path}/items"), depth + 1)?,
                None => return Err(err(path, "an array needs `items`")),
            };
            let (min, max) = bounds(obj, "minItems", "maxItems", path)?;
            let rest = |lo: u64| repeat(lo, max.map(|m| m - 1));
            Ok(if min == 0 {
                if max == Some(0) {
                    r"\[\]".into()
                } else {
                    format!(r"\[(?:{item}(?:,{item}){})?\]", rest(0))
                }
            } else {
                format!(r"\[{item}(?:,{item}){}\]", rest(min - 1))
            })
        }
        "object" => compile_object(obj, path, depth),
        other => Err(err(path, format!("unknown type {other:?}"))),
    }
}

/// `"k1":v1,"k2":v2` in schema order: required properties always, optional ones maybe, and
/// commas only between properties present.
fn compile_object(obj: &Map<String, Value>, path: &str, depth: usize) -> Result<String, PolicyError> {
    let empty = Map::new();
    let props = match obj.get("properties") {
        Some(Value::Object(p)) => p,
        None => &empty,
        Some(_) => return Err(err(path, "`properties` must be an object")),
    };
    if props.len() > MAX_PROPERTIES {
        return Err(err(path, format!("more than {MAX_PROPERTIES} properties")));
    }
    let required: Vec<&str> = match obj.get("required") {
        Some(Value::Array(r)) => r.iter().map(|v| v.as_str().ok_or_else(|| err(path, "`required` entries must be strings"))).collect::<Result<_, _>>()?,
        None => Vec::new(),
        Some(_) => return Err(err(path, "`required` must be an array")),
    };
    if let Some(missing) = required.iter().find(|r| !props.contains_key(**r)) {
        return Err(err(path, format!("required property {missing:?} is not in `properties`")));
    }
    let mut items = Vec::with_capacity(props.len());
    for (k, v) in props {
        let value = compile(v, &format!("{path}/properties/{k}"), depth + 1)?;
        items.push((format!("{}:{value}", literal(&Value::String(k.clone()))), required.contains(&k.as_str())));
    }
    // After the first property present, each later one is written with a leading comma.
    let tail = |from: usize| -> String {
        items[from..].iter().map(|(p, req)| if *req { format!(",{p}") } else { format!("(?:,{p})?") }).collect()
    };
    let mut firsts = Vec::new();
    for (i, (p, req)) in items.iter().enumerate() {
        firsts.push(format!("{p}{}", tail(i + 1)));
        if *req {
            break;
        }
    }
    let body = firsts.join("|");
    Ok(if required.is_empty() { format!(r"\{{(?:{body})?\}}") } else { format!(r"\{{(?:{body})\}}") })
}

fn bounds(obj: &Map<String, Value>, lo: &str, hi: &str, path: &str) -> Result<(u64, Option<u64>), PolicyError> {
    let get = |k: &str| -> Result<Option<u64>, PolicyError> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| err(path, format!("`{k}` must be a non-negative integer"))),
        }
    };
    let (min, max) = (get(lo)?.unwrap_or(0), get(hi)?);
    if max.is_some_and(|m| m < min) {
        return Err(err(path, format!("`{hi}` is below `{lo}`")));
    }
    if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT) {
        return Err(err(path, format!("`{lo}`/`{hi}` above {MAX_REPEAT} are not supported")));
    }
    Ok((min, max))
}

fn repeat(min: u64, max: Option<u64>) -> String {
    match max {
        Some(m) if m == min => format!("{{{min}}}"),
        Some(m) => format!("{{{min},{m}}}"),
        None => format!("{{{min},}}"),
    }
}

/// The compact JSON text of `v`, as a regex.
fn literal(v: &Value) -> String {
    regex_syntax::escape(&v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full(re: &str, text: &str) -> bool {
        regex::Regex::new(&format!("^(?:{re})$")).unwrap().is_match(text)
    }

    #[test]
    fn objects_accept_exactly_the_allowed_property_subsets() {
        let s = json!({"type": "object", "properties": {
            "a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "null"}}, "required": ["b"]});
        let re = to_regex(&s).unwrap();
        for ok in [r#"{"b":true}"#, r#"{"a":1,"b":false}"#, r#"{"b":true,"c":null}"#, r#"{"a":-3,"b":true,"c":null}"#] {
            assert!(full(&re, ok), "{ok}");
        }
        for bad in [r#"{}"#, r#"{"a":1}"#, r#"{"b":true,}"#, r#"{,"b":true}"#, r#"{"b":true"a":1}"#, r#"{"a":01,"b":true}"#] {
            assert!(!full(&re, bad), "{bad}");
        }
    }

    #[test]
    fn strings_arrays_and_enums_respect_their_bounds() {
        let re = to_regex(&json!({"type": "array", "items": {"type": "string", "maxLength": 2}, "minItems": 1, "maxItems": 2})).unwrap();
        assert!(full(&re, r#"["ab"]"#) && full(&re, r#"["","\n"]"#));
        assert!(!full(&re, "[]") && !full(&re, r#"["abc"]"#) && !full(&re, r#"["a","b","c"]"#));
        let re = to_regex(&json!({"enum": ["x", 1, null, {"k": [true]}]})).unwrap();
        assert!(full(&re, r#""x""#) && full(&re, "1") && full(&re, "null") && full(&re, r#"{"k":[true]}"#));
        assert!(!full(&re, r#""y""#));
    }

    #[test]
    fn unsupported_keywords_are_refused_by_name() {
        for (s, want) in [
            (json!({"type": "integer", "minimum": 3}), "\"minimum\""),
            (json!({"$ref": "#/x"}), "\"$ref\""),
            (json!({"type": "string", "pattern": "a+"}), "\"pattern\""),
            (json!({}), "unconstrained"),
            (json!({"type": "object", "properties": {}, "required": ["x"]}), "not in `properties`"),
        ] {
            let e = to_regex(&s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
