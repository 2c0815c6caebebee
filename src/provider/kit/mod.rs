//! The adapter kit: what every adapter shares so none copies it: one [`TranslateError`], the
//! pod-level refusals that admission and every translator apply, and the features a pod uses
//! that adapters declare in their [`Capabilities`](crate::provider::Capabilities).

pub mod features;
pub mod translate_error;

pub use features::{Feature, declared, exclusions, host_namespace_refusal, pod_features};
pub use translate_error::{TranslateError, invalid, unsupported};
