//! The what-if simulator: replays a workload through the policy engine and ledger on a virtual
//! clock, against simulated providers with their published limits, and reports what happened.
//!
//! `burstgate simulate` reads a [`Workload`] file ([`workload`] documents the format), runs it
//! with [`run_file`] and prints [`Report::table`]; [`Report::write`] saves `report.json` and the
//! `running.svg` chart. Same policy, workload and seed: same report, byte for byte.

pub mod bucket;
mod chart;
mod cloud;
pub mod error;
mod random;
pub mod replay;
pub mod report;
pub mod workload;

pub use error::{Error, Result};
pub use replay::{run, run_file};
pub use report::Report;
pub use workload::Workload;
