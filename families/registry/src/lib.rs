//! The one registration point: every in-tree family is listed here and nowhere else. The
//! exhaustiveness test in `tests/` checks the architectures it claims against the fixtures.

use hangar_engine::family::{Family, FamilyError, Registry};

/// Every in-tree family, in registration order.
pub fn families() -> Vec<Box<dyn Family>> {
    vec![
        Box::new(hangar_family_llama::Llama),
        Box::new(hangar_family_phi::Phi),
        Box::new(hangar_family_qwen2::Qwen2),
        Box::new(hangar_family_falcon::Falcon),
        Box::new(hangar_family_neox::NeoX),
        Box::new(hangar_family_gemma::Gemma),
    ]
}

/// A registry of `families()`, or the clash if two claim the same architecture.
pub fn try_registry() -> Result<Registry, FamilyError> {
    let mut r = Registry::new();
    for f in families() {
        r.register(f)?;
    }
    Ok(r)
}

/// A registry holding every in-tree family.
pub fn registry() -> Registry {
    try_registry().unwrap_or_else(|e| {
        // In-tree families claim disjoint architecture strings (the test below checks it), so
        // this is unreachable in a tested build; degrade to the families that did register.
        tracing::error!("family registration failed: {e}");
        let mut r = Registry::new();
        for f in families() {
            let _ = r.register(f);
        }
        r
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn in_tree_families_register_without_clashes() {
        let r = super::try_registry().expect("no two families claim one architecture");
        let mut claimed: Vec<&str> = super::families().iter().flat_map(|f| f.architectures().iter().copied()).collect();
        claimed.sort_unstable();
        assert_eq!(r.architectures(), claimed);
    }
}
