//! The layers every cloud call of an adapter goes through: rate limit, timeout, retry, circuit
//! breaker, metrics. Adapters only say which class of request a call is and classify errors;
//! they never sleep, retry or count on their own.
//!
//! One [`Layers`] per target. A call waits in each token bucket of its class (shared with other
//! targets where the cloud's limit is shared), runs with a per-attempt timeout, retries transient
//! and throttled errors with backoff and jitter (never sooner than `Retry-After`) until a
//! deadline, and reports every outcome to the target's circuit breaker. Past the deadline, or
//! with the circuit open, the call fails as a target-level error, so the pod falls back to
//! another target.
pub mod circuit;
pub mod limiter;
pub mod observer;
pub mod retry;
pub mod target;
pub mod whole;

pub use circuit::State as CircuitState;
pub use limiter::Buckets;
pub use observer::{Observer, Unobserved};
pub use target::{Layers, Settings};
pub use whole::Layered;
