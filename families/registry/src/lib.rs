//! The one registration point: every in-tree family is listed here and nowhere else. The
//! exhaustiveness test in `tests/` checks this list against the fixtures.

use hangar_engine::family::Registry;

/// A registry holding every in-tree family.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    let families: Vec<Box<dyn hangar_engine::family::Family>> = vec![Box::new(hangar_family_llama::Llama)];
    for f in families {
        // In-tree families claim disjoint architecture strings; a clash is a bug caught by the
        // test below, so it is reported rather than unwrapped.
        if let Err(e) = r.register(f) {
            tracing::error!("family registration failed: {e}");
        }
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn in_tree_families_register_without_clashes() {
        let mut r = hangar_engine::family::Registry::new();
        r.register(Box::new(hangar_family_llama::Llama)).unwrap();
        assert_eq!(super::registry().architectures(), r.architectures());
    }
}
