//! Model names and the files they resolve to. A name comes from the network, so it is held to a
//! small alphabet and the resolved file must stay inside the model directory even through
//! symlinks.

use std::path::{Path, PathBuf};

use super::error::ServiceError;

/// Longest model name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks that `name` is a plain model name: 1..=128 of `[A-Za-z0-9._-]`, not starting with
/// '.', so it can never be `..`, a path, or a hidden file.
pub fn validate_name(name: &str) -> Result<(), ServiceError> {
    let bad = |reason: &str| ServiceError::InvalidModelName { name: truncate(name), reason: reason.to_string() };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 128 bytes"));
    }
    if name.starts_with('.') {
        return Err(bad("it starts with '.'"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(bad(&format!("it contains {c:?}; only letters, digits, '.', '_' and '-' are allowed")));
    }
    Ok(())
}

/// A name cut to a printable length for error messages.
pub fn truncate(name: &str) -> String {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let mut s: String = name[..end].chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if end < name.len() {
        s.push('…');
    }
    s
}

/// Resolves `relative` (a file name or a relative path from a `LoadModel` request or the
/// config) inside `model_dir`, refusing anything that leaves it: absolute paths, `..`
/// components, and symlinks that point outside.
pub fn resolve_in_dir(model_dir: &Path, name: &str, relative: &str) -> Result<PathBuf, ServiceError> {
    let rel = Path::new(relative);
    let escapes = rel.is_absolute()
        || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if relative.is_empty() || escapes {
        return Err(ServiceError::InvalidArgument {
            field: "path".into(),
            reason: format!("{:?} must be a relative path inside the model directory without '..'", truncate(relative)),
        });
    }
    let dir = model_dir.canonicalize().map_err(|e| ServiceError::ModelNotFound {
        name: name.to_string(),
        hint: format!("the model directory {} cannot be read: {e}", model_dir.display()),
    })?;
    let full = dir.join(rel);
    let real = full.canonicalize().map_err(|_| ServiceError::ModelNotFound {
        name: name.to_string(),
        hint: format!("no file {relative} in the model directory"),
    })?;
    if !real.starts_with(&dir) {
        return Err(ServiceError::InvalidArgument {
            field: "name".into(),
            reason: format!("{:?} resolves outside the model directory", truncate(relative)),
        });
    }
    if !real.is_file() {
        return Err(ServiceError::ModelNotFound { name: name.to_string(), hint: format!("{relative} is not a file") });
    }
    Ok(real)
}

/// Model names available in `model_dir`: its `*.gguf` files (not following into
/// subdirectories), sorted.
pub fn available_in_dir(model_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(model_dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".gguf")).map(str::to_string))
        .filter(|n| validate_name(n).is_ok())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        for bad in ["", "..", "../x", "/etc/passwd", "a/b", ".hidden", "a\\b", "a b", "x\0y", &"a".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["SmolLM2-135M-Instruct.Q4_1", "a", "gemma-3_270m"] {
            validate_name(good).unwrap();
        }
    }

    #[test]
    fn symlinks_out_of_the_model_dir_are_refused() {
        let base = std::env::temp_dir().join(format!("hangar-names-{}", std::process::id()));
        let dir = base.join("models");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(base.join("secret.gguf"), b"x").unwrap();
        std::fs::write(dir.join("ok.gguf"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(base.join("secret.gguf"), dir.join("link.gguf")).unwrap();
        assert!(resolve_in_dir(&dir, "ok", "ok.gguf").is_ok());
        #[cfg(unix)]
        assert!(matches!(resolve_in_dir(&dir, "link", "link.gguf"), Err(ServiceError::InvalidArgument { .. })));
        assert!(matches!(resolve_in_dir(&dir, "x", "../secret.gguf"), Err(ServiceError::InvalidArgument { .. })));
        assert!(matches!(resolve_in_dir(&dir, "x", "missing.gguf"), Err(ServiceError::ModelNotFound { .. })));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
