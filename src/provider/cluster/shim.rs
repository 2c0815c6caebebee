//! Stand-in for the lead's `crate::provider::layers::Layers` (same signatures) until it lands on
//! main; removed by the merge.

use std::future::Future;

use crate::policy::model::{OperationClass, ProviderKind};
use crate::provider::contract::ProviderError;

/// One target's layers: here, a plain pass-through.
#[derive(Clone, Debug)]
pub struct Layers {
    target: String,
}

impl Layers {
    /// No limits, no retries, no circuit: for unit tests and quick checks.
    pub fn unlimited(_provider: ProviderKind, target: &str, _region: &str) -> Layers {
        Layers { target: target.into() }
    }

    /// The target these layers guard.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs one call of `class` (named `api` in metrics).
    pub async fn call<T, F, Fut>(&self, _class: OperationClass, _api: &'static str, mut f: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, ProviderError>> + Send,
        T: Send,
    {
        f().await
    }
}
