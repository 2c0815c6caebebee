//! Stand-in for the lead's `crate::provider::layers::Layers` until it lands on main: the same
//! signatures, no limits, no retries, no circuit. Replace `use super::layers_shim::Layers` with
//! the real one when merging.

use std::future::Future;

use crate::policy::model::{OperationClass, ProviderKind};
use crate::provider::contract::ProviderError;

/// One target's rate limits, retries and circuit breaker (here: none).
#[derive(Debug, Clone)]
pub struct Layers {
    target: String,
}

impl Layers {
    /// No limits, no retries, no circuit: for unit tests and quick checks.
    pub fn unlimited(provider: ProviderKind, target: &str, region: &str) -> Layers {
        let _ = (provider, region);
        Layers {
            target: target.to_string(),
        }
    }

    /// Runs `f` once (the real layer waits for a token, times out, retries and records metrics).
    pub async fn call<T, F, Fut>(
        &self,
        class: OperationClass,
        api: &'static str,
        mut f: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, ProviderError>> + Send,
        T: Send,
    {
        let result = f().await;
        if let Err(e) = &result {
            tracing::debug!(target_name = %self.target, ?class, api, error = %e, "ARM call failed");
        }
        result
    }

    /// Takes `n` more tokens of `class` (nothing to take here).
    pub async fn take(&self, class: OperationClass, n: u32) {
        let _ = (class, n);
    }
}
