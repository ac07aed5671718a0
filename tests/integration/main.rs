//! Integration tests: the library driven as the binary drives it, in-process.

mod connections;
mod server;
mod simulation;
