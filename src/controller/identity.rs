//! A burst pod's service-account identity, given as the kubelet gives it: each projected
//! `serviceAccountToken` source becomes a TokenRequest for the pod's service account, bound to
//! the pod (so it dies with the pod), with the source's audience and expiry; the gateway renews it
//! when the kubelet would (at 80% of its lifetime, or after 24 h).

use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use secrecy::SecretBox;

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod's service account does not exist (yet). Retryable, as on a kubelet.
    #[error("service account {0} not found")]
    NoServiceAccount(String),
    /// The API server refused or failed. Retryable.
    #[error("requesting a token for service account {account}: {source}")]
    Api {
        /// The service account.
        account: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// The API server answered without a token or expiry.
    #[error("the token request for service account {0} came back without a token")]
    Empty(String),
}

/// The kubelet's default lifetime of a projected token with no `expirationSeconds`.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The kubelet renews a token it has held this long, whatever its lifetime.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A token the API server issued for a pod.
pub struct Token {
    /// The JWT; secret.
    pub value: SecretBox<Vec<u8>>,
    /// When to ask for a new one.
    pub renew_at: SystemTime,
}

/// The service account a pod runs as (`default` when unset).
pub fn account_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The TokenRequest a kubelet sends for `source` of `pod`: bound to the pod, with the source's
/// audience (none: the API server's own) and lifetime.
pub fn request_for(pod: &Pod, source: &ServiceAccountTokenProjection) -> TokenRequest {
    TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: source
                .audience
                .clone()
                .filter(|a| !a.is_empty())
                .map(|a| vec![a]),
            expiration_seconds: Some(
                source
                    .expiration_seconds
                    .unwrap_or(DEFAULT_EXPIRATION_SECONDS),
            ),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// When the kubelet would renew a token that expires at `expires` and was asked for with a
/// lifetime of `requested`: 20% of that lifetime before expiry, or 24 h after it was issued,
/// whichever is first. An API server that extends admission's 3607-second tokens to a year (as
/// 1.20+ do by default) reports 3607 s; [`token`] reads the real lifetime from the JWT and renews
/// such a token at 80% of it instead.
pub fn renew_at(expires: SystemTime, requested: Duration) -> SystemTime {
    let before_expiry = expires - requested / 5;
    let issued = expires - requested;
    before_expiry.min(issued + MAX_AGE)
}

/// Asks the API server for a token of `pod`'s service account as `source` describes.
pub async fn token(
    client: &Client,
    pod: &Pod,
    source: &ServiceAccountTokenProjection,
) -> Result<Token, Error> {
    let account = account_of(pod);
    let api: Api<ServiceAccount> =
        Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let request = request_for(pod, source);
    let answer = match api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
    {
        Ok(a) => a,
        Err(kube::Error::Api(e)) if e.code == 404 => return Err(Error::NoServiceAccount(account)),
        Err(source) => return Err(Error::Api { account, source }),
    };
    let status = answer.status.ok_or_else(|| Error::Empty(account.clone()))?;
    let expires = status
        .expiration_timestamp
        .map(|t| SystemTime::from(t.0))
        .ok_or_else(|| Error::Empty(account.clone()))?;
    let token = status.token.ok_or_else(|| Error::Empty(account.clone()))?;
    let asked = request.spec.and_then(|s| s.expiration_seconds);
    let requested = Duration::from_secs(asked.unwrap_or(DEFAULT_EXPIRATION_SECONDS) as u64);
    let renew = match lifetime(&token) {
        // The API server extended the token past what it reported (it does so for the 3607 s
        // tokens of admission's volumes, reporting 3607 s and signing a year): renewing it
        // hourly as a kubelet does would restart a burst pod's containers on targets that
        // cannot swap files in place, for a token still valid for months. Such a token is
        // renewed at 80% of its real lifetime (no 24 h hygiene renewal: that costs a restart).
        Some((issued, until)) if until > expires => {
            until - until.duration_since(issued).unwrap_or(requested) / 5
        }
        _ => renew_at(expires, requested),
    };
    Ok(Token {
        value: SecretBox::new(Box::new(token.into_bytes())),
        renew_at: renew,
    })
}

/// The `iat` and `exp` claims of a JWT (read, not verified: the API server just issued it).
fn lifetime(jwt: &str) -> Option<(SystemTime, SystemTime)> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Claims {
        iat: u64,
        exp: u64,
    }
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    Some((at(claims.iat), at(claims.exp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwts_issue_and_expiry_are_read_from_its_claims_and_anything_else_is_none() {
        use base64::Engine;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iat":1000,"exp":31537000,"sub":"x"}"#);
        let (iat, exp) = lifetime(&format!("e30.{claims}.sig")).unwrap();
        assert_eq!(iat, SystemTime::UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(
            exp,
            SystemTime::UNIX_EPOCH + Duration::from_secs(31_537_000)
        );
        assert_eq!(lifetime("not-a-jwt"), None);
    }

    fn pod(account: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {"serviceAccountName": account, "containers": []}
        }))
        .unwrap()
    }

    #[test]
    fn the_token_request_is_bound_to_the_pod_with_the_sources_audience_and_lifetime() {
        let source = ServiceAccountTokenProjection {
            audience: Some("vault".into()),
            expiration_seconds: Some(600),
            path: "token".into(),
            ..Default::default()
        };
        let spec = request_for(&pod(Some("api")), &source).spec.unwrap();
        assert_eq!(spec.audiences, Some(vec!["vault".to_string()]));
        assert_eq!(spec.expiration_seconds, Some(600));
        let bound = spec.bound_object_ref.unwrap();
        assert_eq!(
            (
                bound.kind.as_deref(),
                bound.name.as_deref(),
                bound.uid.as_deref()
            ),
            (Some("Pod"), Some("web"), Some("u-1"))
        );
    }

    #[test]
    fn a_source_without_audience_or_expiry_gets_the_api_servers_audience_and_an_hour() {
        let source = ServiceAccountTokenProjection {
            path: "token".into(),
            ..Default::default()
        };
        let spec = request_for(&pod(None), &source).spec.unwrap();
        assert_eq!(spec.audiences, None);
        assert_eq!(spec.expiration_seconds, Some(3600));
    }

    #[test]
    fn a_pod_without_a_service_account_name_runs_as_default() {
        assert_eq!(account_of(&pod(None)), "default");
        assert_eq!(account_of(&pod(Some("api"))), "api");
    }

    #[test]
    fn a_token_is_renewed_at_eighty_percent_of_its_lifetime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(renew_at(now + hour, hour), now + hour * 4 / 5);
    }

    #[test]
    fn a_long_lived_token_is_renewed_after_a_day() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(renew_at(now + week, week), now + MAX_AGE);
    }

    #[test]
    fn an_extended_token_is_renewed_shortly_before_its_real_expiry_as_on_a_kubelet() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let year = Duration::from_secs(365 * 24 * 3600);
        let asked = Duration::from_secs(3607);
        let at = renew_at(now + year, asked);
        assert_eq!(at, now + year - asked / 5);
    }
}
