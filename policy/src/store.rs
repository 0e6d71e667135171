//! Named rule sets loaded from a policy directory (`<name>.toml`), with hot reload: a changed
//! file is recompiled and swapped in atomically; a file that no longer compiles is refused and
//! the last good version keeps serving, with the error reported; a deleted file's set goes
//! away (requests naming it are then refused, never run unfiltered).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::error::PolicyError;
use crate::ruleset::RuleSet;

#[derive(Default)]
struct Inner {
    sets: HashMap<String, Arc<RuleSet>>,
    /// Modification time and length of each file as last read.
    stamps: HashMap<PathBuf, (SystemTime, u64)>,
}

pub struct PolicyStore {
    dir: PathBuf,
    inner: RwLock<Inner>,
}

/// What one reload pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub loaded: Vec<String>,
    pub removed: Vec<String>,
    /// Sets whose new file was refused (the previous version, if any, stays), with the error.
    pub failed: Vec<(String, String)>,
}

impl PolicyStore {
    /// Loads every `*.toml` in `dir`. Any file that fails refuses the whole store: a server
    /// must not start with a policy silently missing.
    pub fn open(dir: impl AsRef<Path>) -> Result<PolicyStore, PolicyError> {
        let store = PolicyStore { dir: dir.as_ref().into(), inner: RwLock::new(Inner::default()) };
        let mut inner = Inner::default();
        for (path, stamp) in store.scan()? {
            let set = RuleSet::from_file(&path)?;
            inner.sets.insert(set.name().to_string(), Arc::new(set));
            inner.stamps.insert(path, stamp);
        }
        *store.inner.write().unwrap_or_else(|e| e.into_inner()) = inner;
        Ok(store)
    }

    fn scan(&self) -> Result<Vec<(PathBuf, (SystemTime, u64))>, PolicyError> {
        let io = |source| PolicyError::Io { path: self.dir.clone(), source };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let meta = std::fs::metadata(&path).map_err(|source| PolicyError::Io { path: path.clone(), source })?;
                out.push((path, (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len())));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The set named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<RuleSet>, PolicyError> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.sets.get(name).cloned().ok_or_else(|| PolicyError::UnknownSet(name.into()))
    }

    /// The sets named, in order (a model's sets, then a request's).
    pub fn resolve(&self, names: &[impl AsRef<str>]) -> Result<Vec<Arc<RuleSet>>, PolicyError> {
        names.iter().map(|n| self.get(n.as_ref())).collect()
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.inner.read().unwrap_or_else(|e| e.into_inner()).sets.keys().cloned().collect();
        n.sort();
        n
    }

    /// Rereads files that changed, appeared or disappeared since the last pass.
    pub fn reload(&self) -> ReloadReport {
        let mut report = ReloadReport::default();
        let files = match self.scan() {
            Ok(f) => f,
            Err(e) => {
                report.failed.push((String::new(), e.to_string()));
                return report;
            }
        };
        let stamps = self.inner.read().unwrap_or_else(|e| e.into_inner()).stamps.clone();
        let mut fresh = Vec::new();
        for (path, stamp) in &files {
            if stamps.get(path) == Some(stamp) {
                continue;
            }
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            // Compiled outside the lock: a big set must not stall requests.
            match RuleSet::from_file(path) {
                Ok(set) => fresh.push((path.clone(), *stamp, Some(Arc::new(set)))),
                Err(e) => {
                    tracing::warn!(target: "hangar_policy", set = %name, error = %e, "policy reload refused; keeping the previous version");
                    report.failed.push((name, e.to_string()));
                    fresh.push((path.clone(), *stamp, None));
                }
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for (path, stamp, set) in fresh {
            inner.stamps.insert(path, stamp);
            if let Some(set) = set {
                report.loaded.push(set.name().to_string());
                inner.sets.insert(set.name().to_string(), set);
            }
        }
        let gone: Vec<PathBuf> = inner.stamps.keys().filter(|p| !files.iter().any(|(f, _)| f == *p)).cloned().collect();
        for path in gone {
            inner.stamps.remove(&path);
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            if inner.sets.remove(&name).is_some() {
                report.removed.push(name);
            }
        }
        report
    }

    /// Polls the directory every `every` and reloads on change, until the returned watcher
    /// is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let (store, flag) = (Arc::clone(self), Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::park_timeout(every);
                if !flag.load(Ordering::Relaxed) {
                    store.reload();
                }
            }
        });
        Watcher { stop, handle: Some(handle) }
    }
}

/// Stops the reload thread when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}
