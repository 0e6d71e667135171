//! Shared helpers for the cross-crate tests: locating test models and golden files.
