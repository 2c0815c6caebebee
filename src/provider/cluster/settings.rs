//! What one cluster target is, as `provider/factories.rs` builds it from the policy's cluster
//! target (the API client is built there too, from the gateway's own or the target's kubeconfig).

/// One cluster target's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The policy target's name.
    pub target: String,
    /// Namespace of the shadow pods (`burstgate-shadow`); it must exist.
    pub namespace: String,
}
