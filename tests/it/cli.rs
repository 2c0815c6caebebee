//! The `burstgate` binary as operators call it: `policy check|explain|test` and `simulate`.
