//! The places where Python jinja2 and minijinja disagree and chat templates notice: how values
//! print (`str()` of Python objects), `tojson` (transformers swaps in `json.dumps`), and which
//! characters count as whitespace for `strip`/`split`/`trim`.

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind, Output, State};

/// Deeper values than this are refused rather than recursed into; JSON input is already capped
/// shallower by serde_json, so only a template building a pathological value gets here.
const MAX_DEPTH: usize = 256;

/// Largest `tojson(indent=N)`; Python has no cap, but a template-chosen N must not allocate freely.
const MAX_INDENT: usize = 256;

/// Python's `str.isspace`: Unicode White_Space plus the ASCII information separators
/// U+001C..U+001F, which Python counts and Rust's `char::is_whitespace` does not.
pub(super) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn write_out(out: &mut Output, s: &str) -> Result<(), Error> {
    out.write_str(s)
        .map_err(|_| Error::new(ErrorKind::WriteFailure, "formatting failed"))
}

/// Prints `{{ value }}` as jinja2 does, i.e. as Python's `str(value)`: `True`, `None`, `1e+16`,
/// `['a', 1]`. Strings and undefined values keep minijinja's handling (no escaping: templates
/// are registered without an HTML extension).
pub(super) fn format_value(
    out: &mut Output,
    state: &mut State,
    value: &Value,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::Seq | ValueKind::Map => {
            let mut s = String::new();
            py_str(value, &mut s, 0)?;
            write_out(out, &s)
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Python `str()`: like `repr()` except that a top-level string prints bare.
fn py_str(value: &Value, out: &mut String, depth: usize) -> Result<(), Error> {
    match value.as_str() {
        Some(s) if value.kind() == ValueKind::String => {
            out.push_str(s);
            Ok(())
        }
        _ => py_repr(value, out, depth),
    }
}

fn py_repr(value: &Value, out: &mut String, depth: usize) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "value nested too deeply to print",
        ));
    }
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => push_number(value, out, false),
        ValueKind::String => push_str_repr(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq => {
            let tuple = value.is_tuple();
            out.push(if tuple { '(' } else { '[' });
            let mut n = 0usize;
            for item in value.try_iter()? {
                if n > 0 {
                    out.push_str(", ");
                }
                py_repr(&item, out, depth + 1)?;
                n += 1;
            }
            if tuple && n == 1 {
                out.push(',');
            }
            out.push(if tuple { ')' } else { ']' });
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(&key, out, depth + 1)?;
                out.push_str(": ");
                py_repr(&value.get_item(&key)?, out, depth + 1)?;
            }
            out.push('}');
        }
        _ => out.push_str(&value.to_string()),
    }
    Ok(())
}

/// Python's `repr(str)`: single quotes unless the text has a single quote and no double one.
fn push_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_py_printable(c) => {
                let cp = c as u32;
                let escaped = if cp < 0x100 {
                    format!("\\x{cp:02x}")
                } else if cp < 0x10000 {
                    format!("\\u{cp:04x}")
                } else {
                    format!("\\U{cp:08x}")
                };
                out.push_str(&escaped);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable` for the characters that matter in practice: controls, separators
/// other than the space, format characters, surrogates and private use. Unassigned code points
/// (which Python also escapes) would need the Unicode database and are printed as they are.
fn is_py_printable(c: char) -> bool {
    let cp = c as u32;
    !(cp < 0x20
        || (0x7f..=0xa0).contains(&cp)
        || cp == 0xad
        || (0x600..=0x605).contains(&cp)
        || matches!(cp, 0x61c | 0x6dd | 0x70f | 0x8e2 | 0x1680 | 0x180e | 0xfeff)
        || (0x2000..=0x200f).contains(&cp)
        || (0x2028..=0x202f).contains(&cp)
        || (0x205f..=0x2064).contains(&cp)
        || (0x2066..=0x206f).contains(&cp)
        || cp == 0x3000
        || (0xd800..=0xf8ff).contains(&cp)
        || (0xfff9..=0xfffb).contains(&cp)
        || cp == 0xe0001
        || (0xe0020..=0xe007f).contains(&cp)
        || cp >= 0xf0000)
}

fn push_number(value: &Value, out: &mut String, json: bool) {
    if value.is_integer() {
        out.push_str(&value.to_string());
        return;
    }
    match f64::try_from(value.clone()) {
        Ok(x) => push_float(x, out, json),
        Err(_) => out.push_str(&value.to_string()),
    }
}

/// Python's `repr(float)` (shortest round-trip digits; exponent form below 1e-4 and from 1e16),
/// or `json.dumps`'s spelling of it, which differs only for the non-finite values.
pub(super) fn push_float(x: f64, out: &mut String, json: bool) {
    if x.is_nan() {
        out.push_str(if json { "NaN" } else { "nan" });
        return;
    }
    if x.is_infinite() {
        let s = match (json, x > 0.0) {
            (true, true) => "Infinity",
            (true, false) => "-Infinity",
            (false, true) => "inf",
            (false, false) => "-inf",
        };
        out.push_str(s);
        return;
    }
    // `{:e}` gives the shortest round-trip digits as d.ddde±x; only the layout needs redoing.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        ));
    }
}

/// The `tojson` filter as transformers defines it: `json.dumps(x, ensure_ascii=False,
/// indent=None, separators=None, sort_keys=False)`, each option overridable by keyword.
pub(super) fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(indent_string(&v)?),
    };
    let separators = match kwargs.get::<Option<Value>>("separators")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] => match (a.as_str(), b.as_str()) {
                    (Some(a), Some(b)) => Some((a.to_owned(), b.to_owned())),
                    _ => return Err(bad_arg("tojson separators must be two strings")),
                },
                _ => return Err(bad_arg("tojson separators must be two strings")),
            }
        }
    };
    kwargs.assert_all_used()?;
    // Python drops the space after the comma when indenting, since a newline follows anyway.
    let (item_sep, key_sep) = separators.unwrap_or_else(|| {
        (
            if indent.is_some() { "," } else { ", " }.to_owned(),
            ": ".to_owned(),
        )
    });
    let mut w = JsonWriter {
        item_sep,
        key_sep,
        indent,
        ensure_ascii,
        sort_keys,
        out: String::new(),
    };
    w.value(value, 0)?;
    Ok(Value::from(w.out))
}

fn bad_arg(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.to_owned())
}

fn indent_string(v: &Value) -> Result<String, Error> {
    if let Some(s) = v.as_str() {
        if s.len() > MAX_INDENT {
            return Err(bad_arg("tojson indent is too long"));
        }
        return Ok(s.to_owned());
    }
    match v.as_i64() {
        // Python multiplies a space by the count, so negative counts indent by nothing.
        Some(n) if n <= MAX_INDENT as i64 => Ok(" ".repeat(n.max(0) as usize)),
        Some(_) => Err(bad_arg("tojson indent is too large")),
        None => Err(bad_arg("tojson indent must be an integer or a string")),
    }
}

struct JsonWriter {
    item_sep: String,
    key_sep: String,
    indent: Option<String>,
    ensure_ascii: bool,
    sort_keys: bool,
    out: String,
}

impl JsonWriter {
    fn value(&mut self, v: &Value, level: usize) -> Result<(), Error> {
        if level > MAX_DEPTH {
            return Err(bad_arg("value nested too deeply for tojson"));
        }
        match v.kind() {
            ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => push_number(v, &mut self.out, true),
            ValueKind::String => self.string(v.as_str().unwrap_or_default()),
            ValueKind::Seq => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container('[', ']', items.len(), level, |w, i, level| {
                    w.value(&items[i], level)
                })?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in v.try_iter()? {
                    let item = v.get_item(&key)?;
                    entries.push((json_key(&key)?, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container('{', '}', entries.len(), level, |w, i, level| {
                    w.string(&entries[i].0);
                    w.out.push_str(&w.key_sep.clone());
                    w.value(&entries[i].1, level)
                })?;
            }
            kind => {
                return Err(bad_arg(&format!(
                    "Object of type {kind} is not JSON serializable"
                )));
            }
        }
        Ok(())
    }

    fn container(
        &mut self,
        open: char,
        close: char,
        len: usize,
        level: usize,
        mut item: impl FnMut(&mut Self, usize, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.out.push(open);
        if len == 0 {
            self.out.push(close);
            return Ok(());
        }
        let inner = level + 1;
        for i in 0..len {
            if i > 0 {
                let sep = self.item_sep.clone();
                self.out.push_str(&sep);
            }
            self.newline(inner);
            item(self, i, inner)?;
        }
        self.newline(level);
        self.out.push(close);
        Ok(())
    }

    fn newline(&mut self, level: usize) {
        if let Some(indent) = &self.indent {
            self.out.push('\n');
            for _ in 0..level {
                self.out.push_str(indent);
            }
        }
    }

    fn string(&mut self, s: &str) {
        let out = &mut self.out;
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !(' '..='~').contains(&c)) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// `json.dumps` turns non-string keys into strings the way it prints them as values.
fn json_key(key: &Value) -> Result<String, Error> {
    let mut s = String::new();
    match key.kind() {
        ValueKind::String => s.push_str(key.as_str().unwrap_or_default()),
        ValueKind::Number => push_number(key, &mut s, true),
        ValueKind::Bool => s.push_str(if key.is_true() { "true" } else { "false" }),
        ValueKind::None => s.push_str("null"),
        kind => {
            return Err(bad_arg(&format!(
                "keys must be str, int, float, bool or None, not {kind}"
            )));
        }
    }
    Ok(s)
}

/// jinja2's `trim` is Python's `str.strip(chars)`.
pub(super) fn trim_filter(value: &str, chars: Option<&str>) -> String {
    match chars {
        Some(chars) => value.trim_matches(|c| chars.contains(c)).to_owned(),
        None => value.trim_matches(is_py_space).to_owned(),
    }
}

/// Python string/dict/list methods: the string ones that differ from or are missing in
/// minijinja-contrib's pycompat first, then pycompat.
pub(super) fn unknown_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let (Some(s), ValueKind::String) = (value.as_str(), value.kind()) {
        if let Some(rv) = super::strmethods::call(s, method, args)? {
            return Ok(rv);
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// jinja2's `sequence` test asks for `len()` and `[]`, which strings and dicts also have.
pub(super) fn is_sequence(value: &Value) -> bool {
    matches!(
        value.kind(),
        ValueKind::String | ValueKind::Seq | ValueKind::Map
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float_repr(x: f64) -> String {
        let mut s = String::new();
        push_float(x, &mut s, false);
        s
    }

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (2.5e-7, "2.5e-07"),
            (1e-4, "0.0001"),
            (1e16, "1e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (123456789.125, "123456789.125"),
            (1.2345678901234568e20, "1.2345678901234568e+20"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NAN, "nan"),
        ];
        for (x, want) in cases {
            assert_eq!(float_repr(x), want, "repr of {x:e}");
        }
    }

    #[test]
    fn python_whitespace_includes_information_separators() {
        assert!(is_py_space('\u{1f}'));
        assert!(is_py_space('\u{3000}'));
        assert!(!is_py_space('\u{200b}'));
        assert_eq!(trim_filter("\u{1c} x \u{85}", None), "x");
    }
}
