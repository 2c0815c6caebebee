//! The adapter kit: what every adapter shares so none copies it: one [`TranslateError`], the
//! pod-level refusals that admission and every translator apply, the features a pod uses that
//! adapters declare in their [`Capabilities`](crate::provider::Capabilities), the ownership keys
//! workloads are tagged with and read back by orphan GC, and the status cadence a read bucket
//! allows.

pub mod cadence;
#[cfg(test)]
pub(crate) mod corpus;
pub mod expansion;
pub mod features;
pub mod kubectl;
pub mod ownership;
pub mod translate_error;
pub mod usage;

pub use features::{Feature, declared, exclusions, ignored, pod_features, refusal};
pub use translate_error::{TranslateError, invalid, pod_spec, unsupported};
