//! Where the layers report what happens: the gateway's metrics and target health listen here.

use crate::provider::layers::CircuitState;

/// Where the layers report what happens (the gateway's metrics and target health).
pub trait Observer: Send + Sync {
    /// One attempt of a cloud call finished: `result` is `ok` or a [`ProviderError::metric_label`]
    /// (`timeout` for an attempt over its time limit).
    fn request(&self, provider: &str, region: &str, api: &str, result: &str, seconds: f64);
    /// A call waited `seconds` in the rate limiter of `class` before it could go.
    fn waited(&self, provider: &str, region: &str, class: &str, seconds: f64);
    /// The circuit of `target` changed state.
    fn circuit(&self, target: &str, state: CircuitState);
}

/// An observer that ignores everything (unit tests, one-off tools).
pub struct Unobserved;

impl Observer for Unobserved {
    fn request(&self, _: &str, _: &str, _: &str, _: &str, _: f64) {}
    fn waited(&self, _: &str, _: &str, _: &str, _: f64) {}
    fn circuit(&self, _: &str, _: CircuitState) {}
}
