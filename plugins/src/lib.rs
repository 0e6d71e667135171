//! Plugin loading. Not built yet: the plugin issue fills this crate, and nothing here claims to run.
