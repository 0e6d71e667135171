//! The policy engine. Not built yet: the policy issue fills this crate, and nothing here claims to run.
