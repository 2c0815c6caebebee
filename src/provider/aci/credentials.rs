//! Who we are to Azure and how we reach it: the credential chain (workload identity, client
//! secret, managed identity), the HTTPS transport with an optional extra CA, and the ARM
//! pipeline that adds the bearer token.
//!
//! HTTP goes through azure_core's `Pipeline` (request ids, user agent, header sanitizing in
//! logs, reqwest transport) with its retry policy switched off: the `Layers` retry. The bearer
//! token comes from a small policy of our own rather than azure_core's
//! `BearerTokenAuthorizationPolicy`, which refuses every non-TLS endpoint: ours requires TLS too,
//! except on loopback addresses, where the test emulator (behind Prism) serves plain HTTP.

use std::sync::Arc;

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientOptions, Context, Pipeline, Request, RetryOptions, Transport, Url};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use crate::provider::aci::retry::AciError;
use crate::provider::aci::settings::DEFAULT_ARM_ENDPOINT;

/// Where [`default_credential`] takes its identity from, in the order it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialSource {
    /// `AZURE_FEDERATED_TOKEN_FILE` (AKS workload identity), with `AZURE_TENANT_ID` and
    /// `AZURE_CLIENT_ID`.
    WorkloadIdentity,
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// The managed identity of the VM or pod; user-assigned when `AZURE_CLIENT_ID` is set.
    ManagedIdentity {
        /// Client id of a user-assigned identity.
        client_id: Option<String>,
    },
}

/// Picks the credential from environment variables (`env` looks one up; empty counts as unset).
pub(crate) fn credential_source(env: impl Fn(&str) -> Option<String>) -> CredentialSource {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if get("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        CredentialSource::WorkloadIdentity
    } else if get("AZURE_TENANT_ID").is_some()
        && get("AZURE_CLIENT_ID").is_some()
        && get("AZURE_CLIENT_SECRET").is_some()
    {
        CredentialSource::ClientSecret
    } else {
        CredentialSource::ManagedIdentity {
            client_id: get("AZURE_CLIENT_ID"),
        }
    }
}

/// The HTTP transport of every Azure call (token endpoint and ARM): the platform's roots, plus
/// the PEM certificates of `extra_ca` when given (Azure Stack Hub, a TLS-inspecting egress proxy,
/// or a test emulator).
pub fn azure_transport(extra_ca: Option<&std::path::Path>) -> Result<Option<Transport>, AciError> {
    let Some(path) = extra_ca else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| {
        AciError::Credential(format!("reading the Azure CA file {}: {e}", path.display()))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        AciError::Credential(format!(
            "the Azure CA file {} is not PEM: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(AciError::Credential(format!(
            "the Azure CA file {} holds no certificate",
            path.display()
        )));
    }
    let client = reqwest::Client::builder()
        .tls_certs_merge(certs)
        .build()
        .map_err(|e| {
            AciError::Credential(format!("an HTTPS client trusting {}: {e}", path.display()))
        })?;
    Ok(Some(Transport::new(Arc::new(client))))
}

/// The standard credential chain: workload identity, then a client secret from the environment,
/// then managed identity. azure_identity honours `AZURE_AUTHORITY_HOST` (it must be https);
/// `transport` (from [`azure_transport`]) replaces the default HTTP client when given.
pub fn default_credential(
    transport: Option<Transport>,
) -> Result<Arc<dyn TokenCredential>, AciError> {
    let env = |k: &str| std::env::var(k).ok();
    let fail = |what: &str, e: azure_core::Error| AciError::Credential(format!("{what}: {e}"));
    let client_options = ClientOptions {
        transport,
        ..Default::default()
    };
    Ok(match credential_source(env) {
        CredentialSource::WorkloadIdentity => {
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                ..Default::default()
            };
            WorkloadIdentityCredential::new(Some(options))
                .map_err(|e| fail("workload identity (AZURE_FEDERATED_TOKEN_FILE)", e))?
        }
        CredentialSource::ClientSecret => {
            let var = |k: &str| std::env::var(k).unwrap_or_default();
            ClientSecretCredential::new(
                &var("AZURE_TENANT_ID"),
                var("AZURE_CLIENT_ID"),
                Secret::new(var("AZURE_CLIENT_SECRET")),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(|e| {
                fail(
                    "client secret (AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET)",
                    e,
                )
            })?
        }
        CredentialSource::ManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.map(UserAssignedId::ClientId),
                client_options,
            };
            ManagedIdentityCredential::new(Some(options))
                .map_err(|e| fail("managed identity", e))?
        }
    })
}

/// Whether `url` points at this machine (where plain HTTP is tolerated: the test emulator).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Adds `Authorization: Bearer` for ARM; TLS only, loopback excepted.
#[derive(Debug)]
struct ArmAuthPolicy {
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

#[async_trait::async_trait]
impl Policy for ArmAuthPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if request.url().scheme() != "https" && !is_loopback(request.url()) {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "ARM tokens are only sent over TLS (or to a loopback address)",
            ));
        }
        let token = self
            .credential
            .get_token(&[self.scope.as_str()], None)
            .await?;
        request.insert_header("authorization", format!("Bearer {}", token.token.secret()));
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The pipeline of every ARM call to `base`: azure_core's, retries off (the `Layers` retry),
/// with [`ArmAuthPolicy`] adding the token and `transport` (from [`azure_transport`]) when given.
pub(crate) fn arm_pipeline(
    base: &Url,
    credential: Arc<dyn TokenCredential>,
    transport: Option<Transport>,
) -> Pipeline {
    // Tokens are for ARM of the cloud the endpoint belongs to; a plain-HTTP (loopback,
    // emulator) endpoint asks for public ARM's audience.
    let scope = if base.scheme() == "https" {
        format!("{}/.default", base.as_str().trim_end_matches('/'))
    } else {
        format!("{DEFAULT_ARM_ENDPOINT}/.default")
    };
    let auth: Arc<dyn Policy> = Arc::new(ArmAuthPolicy { credential, scope });
    let options = ClientOptions {
        retry: RetryOptions::none(),
        transport,
        ..Default::default()
    };
    Pipeline::new(
        Some("burstgate"),
        Some(env!("CARGO_PKG_VERSION")),
        options,
        Vec::new(),
        vec![auth],
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_chain_prefers_workload_identity_then_a_client_secret_then_managed_identity() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            credential_source(env(&[
                ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/t"),
                ("AZURE_CLIENT_SECRET", "s")
            ])),
            CredentialSource::WorkloadIdentity
        );
        assert_eq!(
            credential_source(env(&[
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "s")
            ])),
            CredentialSource::ClientSecret
        );
        assert_eq!(
            credential_source(env(&[
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "")
            ])),
            CredentialSource::ManagedIdentity {
                client_id: Some("c".into())
            }
        );
        assert_eq!(
            credential_source(env(&[])),
            CredentialSource::ManagedIdentity { client_id: None }
        );
    }
}
