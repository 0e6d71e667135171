//! Decode throughput measurement for `hangar bench` (the subcommand lives in services).
