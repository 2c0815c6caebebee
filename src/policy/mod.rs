//! The policy engine and the operators' policy files: load, decide, account, explain.
//!
//! `load` is the only part that reads files; everything else is pure and synchronous.

pub mod checked;
pub mod engine;
pub mod explain;
pub mod expression;
pub mod ledger;
pub mod load;
pub mod model;
pub mod pod;
pub mod predicate;
pub mod sizing;
pub mod testing;

pub use checked::{Objective, Policy, Target, TargetId};
pub use engine::{
    Decision, Exclusion, ExclusionReason, Outcome, Placement, Rejection, Verdict, decide,
};
pub use ledger::{Ledger, Reservation, Usage};
pub use load::{LoadError, PolicyError, load_dir, load_files};
pub use pod::PodView;
