//! Stand-in for `crate::provider::layers::Layers` until it lands on main: the same signatures,
//! no limits, no retries, no circuit. Deleted by the merge that brings the real one.

use std::future::Future;

use crate::policy::model::{OperationClass, ProviderKind};
use crate::provider::contract::ProviderError;

/// The target's call layers (here: none).
#[derive(Clone, Debug)]
pub struct Layers {
    target: String,
}

impl Layers {
    /// No limits, no retries, no circuit.
    pub fn unlimited(_provider: ProviderKind, target: &str, _region: &str) -> Layers {
        Layers { target: target.into() }
    }

    /// The target these layers guard.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs one cloud call.
    pub async fn call<T, F, Fut>(&self, _class: OperationClass, _api: &'static str, mut f: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, ProviderError>> + Send,
        T: Send,
    {
        f().await
    }

    /// Takes `n` tokens of `class` (here: returns at once).
    pub async fn take(&self, _class: OperationClass, _n: u32) {}
}
