//! How `burstgate run` builds each target's adapter from its policy block: the one place where
//! policy settings meet adapter settings.

use std::sync::Arc;

use crate::policy::Target;
use crate::provider::Provider;
use crate::provider::layers::{Layered, Layers};
use crate::provider::registry::Factory;
use crate::provider::sim::{SimCloud, SimProvider};

/// `sim` targets: one in-process cloud shared by all of them; each call goes through the
/// target's layers, so `rateLimits` and circuit breaking behave as with a real cloud.
pub struct SimFactory {
    cloud: Arc<SimCloud>,
}

impl SimFactory {
    /// Adapters over `cloud`.
    pub fn new(cloud: Arc<SimCloud>) -> SimFactory {
        SimFactory { cloud }
    }
}

#[async_trait::async_trait]
impl Factory for SimFactory {
    async fn build(&self, _target: &Target, layers: Layers) -> Result<Arc<dyn Provider>, String> {
        Ok(Arc::new(Layered::new(
            Arc::new(SimProvider::new(self.cloud.clone())),
            layers,
        )))
    }
}
