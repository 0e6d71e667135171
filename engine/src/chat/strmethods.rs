//! Python `str` methods that minijinja-contrib's pycompat lacks or spells differently from
//! Python: whitespace-sensitive `strip`/`split` (Python's whitespace set is wider than Rust's),
//! `title`, `rsplit`, `partition`, `index`, padding. Anything else falls through to pycompat.

use minijinja::value::{from_args, Value};
use minijinja::{Error, ErrorKind};

use super::python::is_py_space;

/// Padding methods may not grow a string by more than this; a template must not be able to
/// allocate at will (fuel is only charged after a value exists).
const MAX_PAD: usize = 1 << 16;

/// `Ok(None)`: not handled here, let pycompat try.
pub(super) fn call(s: &str, method: &str, args: &[Value]) -> Result<Option<Value>, Error> {
    let rv = match method {
        "strip" | "lstrip" | "rstrip" => {
            let (chars,): (Option<&str>,) = from_args(args)?;
            let pat = |c: char| match chars {
                Some(chars) => chars.contains(c),
                None => is_py_space(c),
            };
            Value::from(match method {
                "strip" => s.trim_matches(pat),
                "lstrip" => s.trim_start_matches(pat),
                _ => s.trim_end_matches(pat),
            })
        }
        "split" | "rsplit" => {
            let (sep, maxsplit): (Option<&str>, Option<i64>) = from_args(args)?;
            let max = usize::try_from(maxsplit.unwrap_or(-1)).ok();
            let parts = match sep {
                Some("") => return Err(value_error("empty separator")),
                Some(sep) => split_on(s, sep, max, method == "rsplit"),
                None => split_whitespace(s, max, method == "rsplit"),
            };
            parts.into_iter().map(Value::from).collect()
        }
        "partition" | "rpartition" => {
            let (sep,): (&str,) = from_args(args)?;
            if sep.is_empty() {
                return Err(value_error("empty separator"));
            }
            let found = if method == "partition" {
                s.find(sep)
            } else {
                s.rfind(sep)
            };
            let (a, b, c) = match (found, method) {
                (Some(i), _) => (&s[..i], sep, &s[i + sep.len()..]),
                (None, "partition") => (s, "", ""),
                (None, _) => ("", "", s),
            };
            Value::from((a, b, c))
        }
        "index" | "rindex" => {
            let (sub,): (&str,) = from_args(args)?;
            let found = if method == "index" {
                s.find(sub)
            } else {
                s.rfind(sub)
            };
            match found {
                // Python indexes by code point, not byte.
                Some(i) => Value::from(s[..i].chars().count()),
                None => return Err(value_error("substring not found")),
            }
        }
        "title" => {
            let () = from_args(args)?;
            Value::from(py_title(s))
        }
        "swapcase" => {
            let () = from_args(args)?;
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                if c.is_uppercase() {
                    out.extend(c.to_lowercase());
                } else if c.is_lowercase() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
            }
            Value::from(out)
        }
        "zfill" | "center" | "ljust" | "rjust" => {
            let (width, fill): (i64, Option<&str>) = from_args(args)?;
            let fill = match fill.map(|f| f.chars().collect::<Vec<_>>()) {
                None => {
                    if method == "zfill" {
                        '0'
                    } else {
                        ' '
                    }
                }
                Some(f) if f.len() == 1 && method != "zfill" => f[0],
                Some(_) => {
                    return Err(type_error(
                        "the fill character must be exactly one character long",
                    ))
                }
            };
            Value::from(pad(s, method, width, fill)?)
        }
        _ => return Ok(None),
    };
    Ok(Some(rv))
}

fn value_error(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("ValueError: {msg}"))
}

fn type_error(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("TypeError: {msg}"))
}

fn split_on<'a>(s: &'a str, sep: &str, max: Option<usize>, from_right: bool) -> Vec<&'a str> {
    match (max, from_right) {
        (None, _) => s.split(sep).collect(),
        (Some(n), false) => s.splitn(n + 1, sep).collect(),
        (Some(n), true) => {
            let mut parts: Vec<&str> = s.rsplitn(n + 1, sep).collect();
            parts.reverse();
            parts
        }
    }
}

/// Python's `split()` without a separator: runs of whitespace separate, ends are ignored, and
/// after `max` splits the rest is kept whole, whitespace at its far end included.
fn split_whitespace(s: &str, max: Option<usize>, from_right: bool) -> Vec<&str> {
    let words: Vec<(usize, usize)> = {
        let mut v = Vec::new();
        let mut start = None;
        for (i, c) in s.char_indices() {
            match (is_py_space(c), start) {
                (true, Some(b)) => {
                    v.push((b, i));
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        if let Some(b) = start {
            v.push((b, s.len()));
        }
        v
    };
    let n = words.len();
    match max {
        Some(m) if m < n => {
            if from_right {
                let keep = n - m;
                let mut out = vec![&s[..words[keep - 1].1]];
                out.extend(words[keep..].iter().map(|&(a, b)| &s[a..b]));
                out
            } else {
                let mut out: Vec<&str> = words[..m].iter().map(|&(a, b)| &s[a..b]).collect();
                out.push(&s[words[m].0..]);
                out
            }
        }
        _ => words.iter().map(|&(a, b)| &s[a..b]).collect(),
    }
}

/// Python's `str.title()`: a cased character following another cased one is lowered, any
/// other is raised, so "they're" becomes "They'Re" (unlike jinja's `title` filter).
fn py_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_cased = c.is_lowercase() || c.is_uppercase();
    }
    out
}

fn pad(s: &str, method: &str, width: i64, fill: char) -> Result<String, Error> {
    let len = s.chars().count();
    let width = usize::try_from(width).unwrap_or(0);
    if width <= len {
        return Ok(s.to_owned());
    }
    let total = width - len;
    if total > MAX_PAD {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "padding width is too large",
        ));
    }
    let fill_n = |n: usize| std::iter::repeat_n(fill, n).collect::<String>();
    Ok(match method {
        "ljust" => format!("{s}{}", fill_n(total)),
        "rjust" => format!("{}{s}", fill_n(total)),
        "center" => {
            // CPython puts the odd extra column on the left when the width is odd.
            let left = total / 2 + (total & width & 1);
            format!("{}{s}{}", fill_n(left), fill_n(total - left))
        }
        _ => {
            let (sign, digits) = match s.chars().next() {
                Some(c @ ('+' | '-')) => (c.to_string(), &s[1..]),
                _ => (String::new(), s),
            };
            format!("{sign}{}{digits}", fill_n(total))
        }
    })
}
