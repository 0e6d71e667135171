//! The `Family` trait and the registry families are registered into. A family turns a GGUF's
//! metadata into a `ModelSpec`; it never computes anything and never sees a backend.

use crate::gguf::GgufFile;
use crate::spec::ModelSpec;

#[derive(Debug, thiserror::Error)]
pub enum FamilyError {
    #[error("unknown architecture {arch:?}; supported: {}", supported.join(", "))]
    UnknownArchitecture { arch: String, supported: Vec<String> },
    #[error("the file has no general.architecture key")]
    NoArchitecture,
    #[error("missing metadata key {0:?}")]
    MissingKey(String),
    #[error("metadata key {key:?} has a bad value: {why}")]
    BadValue { key: String, why: String },
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
    #[error("tensor {name:?} has shape {got:?}, expected {expected:?}")]
    BadTensorShape { name: String, got: Vec<u64>, expected: Vec<u64> },
    #[error("architecture {0:?} is registered twice")]
    DuplicateArchitecture(String),
}

pub trait Family: Send + Sync {
    /// A short name for logs ("llama").
    fn name(&self) -> &'static str;
    /// The `general.architecture` strings this family serves.
    fn architectures(&self) -> &'static [&'static str];
    /// Parses hparams and names the tensors each block reads. Implementations should check
    /// every tensor's presence and shape with `check_tensors`.
    fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError>;
}

/// Families by architecture string. Built once at startup by the one registration point
/// (`hangar_families::registry()`).
#[derive(Default)]
pub struct Registry {
    families: Vec<Box<dyn Family>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, family: Box<dyn Family>) -> Result<(), FamilyError> {
        for arch in family.architectures() {
            if self.find(arch).is_some() {
                return Err(FamilyError::DuplicateArchitecture(arch.to_string()));
            }
        }
        self.families.push(family);
        Ok(())
    }

    fn find(&self, arch: &str) -> Option<&dyn Family> {
        self.families.iter().find(|f| f.architectures().contains(&arch)).map(|f| f.as_ref())
    }

    pub fn resolve(&self, arch: &str) -> Result<&dyn Family, FamilyError> {
        self.find(arch).ok_or_else(|| FamilyError::UnknownArchitecture {
            arch: arch.to_string(),
            supported: self.architectures().into_iter().map(String::from).collect(),
        })
    }

    /// Every registered architecture string, sorted.
    pub fn architectures(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.families.iter().flat_map(|f| f.architectures().iter().copied()).collect();
        v.sort_unstable();
        v
    }

    pub fn build_spec(&self, file: &GgufFile) -> Result<ModelSpec, FamilyError> {
        let arch = file.architecture().ok_or(FamilyError::NoArchitecture)?;
        self.resolve(arch)?.build_spec(file)
    }
}

/// Reads `{arch}.*` hparams with typed errors.
pub struct Hp<'a> {
    pub file: &'a GgufFile,
    pub arch: &'a str,
}

impl<'a> Hp<'a> {
    pub fn new(file: &'a GgufFile) -> Result<Self, FamilyError> {
        Ok(Hp { file, arch: file.architecture().ok_or(FamilyError::NoArchitecture)? })
    }

    /// The full key name (`{arch}.{k}`), also for error messages.
    pub fn key(&self, k: &str) -> String {
        format!("{}.{}", self.arch, k)
    }

    pub fn opt_usize(&self, k: &str) -> Result<Option<usize>, FamilyError> {
        let key = self.key(k);
        match self.file.get(&key) {
            None => Ok(None),
            Some(v) => v
                .as_u32()
                .map(|x| Some(x as usize))
                .ok_or(FamilyError::BadValue { key, why: "expected an unsigned integer below 2^32".into() }),
        }
    }

    pub fn usize(&self, k: &str) -> Result<usize, FamilyError> {
        self.opt_usize(k)?.ok_or_else(|| FamilyError::MissingKey(self.key(k)))
    }

    /// A positive count that sizes buffers: zero is refused here rather than deep in a kernel.
    pub fn count(&self, k: &str) -> Result<usize, FamilyError> {
        match self.usize(k)? {
            0 => Err(FamilyError::BadValue { key: self.key(k), why: "must be positive".into() }),
            n => Ok(n),
        }
    }

    pub fn opt_f32(&self, k: &str) -> Result<Option<f32>, FamilyError> {
        let key = self.key(k);
        match self.file.get(&key) {
            None => Ok(None),
            Some(v) => v.as_f32().filter(|x| x.is_finite()).map(Some).ok_or(FamilyError::BadValue { key, why: "expected a finite number".into() }),
        }
    }

    pub fn f32(&self, k: &str) -> Result<f32, FamilyError> {
        self.opt_f32(k)?.ok_or_else(|| FamilyError::MissingKey(self.key(k)))
    }

    pub fn opt_bool(&self, k: &str) -> Result<Option<bool>, FamilyError> {
        let key = self.key(k);
        match self.file.get(&key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or(FamilyError::BadValue { key, why: "expected a boolean".into() }),
        }
    }

    pub fn opt_str(&self, k: &str) -> Option<&'a str> {
        self.file.get_str(&self.key(k))
    }
}

/// Checks that each tensor exists with the expected ggml-order shape.
pub fn check_tensor(file: &GgufFile, name: &str, expected: &[usize]) -> Result<(), FamilyError> {
    let info = file.tensor_info(name).ok_or_else(|| FamilyError::MissingTensor(name.to_string()))?;
    let got: Vec<u64> = info.dims.clone();
    let want: Vec<u64> = expected.iter().map(|&d| d as u64).collect();
    // Trailing 1s are equivalent (a [n, 1] tensor is an [n] tensor).
    let trim = |v: &[u64]| v.iter().rposition(|&d| d != 1).map_or(0, |i| i + 1);
    if got[..trim(&got)] != want[..trim(&want)] {
        return Err(FamilyError::BadTensorShape { name: name.to_string(), got, expected: want });
    }
    Ok(())
}
