//! The simulated provider: an in-process cloud with cold starts, capacity, exits, restarts and
//! injected failures, behind the same [`crate::provider::Provider`] trait as the real adapters.
//!
//! Pods steer it with annotations: `sim.burstgate.io/exit-after-seconds` (containers exit after
//! running this long), `sim.burstgate.io/exit-code` (their exit code, default 0). An image on the
//! registry `invalid.example` is refused with ACI's `InaccessibleImage`.
//!
//! Logs grow by one line per second of run time (so `kubectl logs -f` has something to follow);
//! exec runs a tiny built-in command set (`echo`, `hostname`, `env` of the plain variables,
//! `true`, `false`, `exit N`).

mod client;
mod retry;
mod settings;
mod status;
mod translate;

pub use client::{SimCloud, SimProvider};
pub use settings::Settings;
pub use translate::{ANNOTATION_EXIT_AFTER, ANNOTATION_EXIT_CODE};
