//! Hangar's services as a library: the gRPC server, so tests and embedders can start it
//! in-process exactly as `hangar serve` does.

pub mod server;
