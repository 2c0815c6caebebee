//! Integration tests, one binary: the CLI as operators call it, and the real peers.
mod cli;
