//! Who is asking and whether they may: client certificates (CN = user, O = groups) or bearer
//! tokens (TokenReview), then a SubjectAccessReview with the kubelet's own request mapping.
//!
//! The mapping is the real kubelet's (`pkg/kubelet/server/auth.go`): the resource is always
//! `nodes` named after this node; `/stats/*` is the subresource `stats`, `/metrics/*` `metrics`,
//! `/logs/*` `log`, and everything else (`/containerLogs`, `/exec`, `/run`, `/attach`,
//! `/portForward`, `/healthz`) `proxy`; the verb comes from the HTTP method. There is no
//! allow-all fallback: a request nobody vouches for is refused.

use std::collections::BTreeMap;

use axum::http::Method;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::kubelet::error::{Error, Result};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// User UID, when the authenticator knows it.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (from a TokenReview), passed on to the SubjectAccessReview.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a request asks for, in RBAC terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `create`, `update`, `patch` or `delete`.
    pub verb: &'static str,
    /// `stats`, `metrics`, `log` or `proxy`.
    pub subresource: &'static str,
}

/// The kubelet's mapping of a request to RBAC attributes; `None` for a method it has no verb for.
pub fn attributes(method: &Method, path: &str) -> Option<Attributes> {
    let verb = match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return None,
    };
    let subresource = if is_subpath(path, "/stats") {
        "stats"
    } else if is_subpath(path, "/metrics") {
        "metrics"
    } else if is_subpath(path, "/logs") {
        "log"
    } else {
        "proxy"
    };
    Some(Attributes { verb, subresource })
}

/// `path` is `prefix` or below it (`/statsfoo` is not below `/stats`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The identity in a client certificate that the TLS layer already verified against the client
/// CA: the subject's CN is the user, each O a group (as the apiserver reads them).
pub fn identity_from_certificate(der: &[u8]) -> Result<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        Error::Unauthorized(format!("the client certificate cannot be parsed: {e}"))
    })?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    if user.is_empty() {
        return Err(Error::Unauthorized(
            "the client certificate has no subject CN (the user name)".into(),
        ));
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok(Identity {
        user,
        uid: None,
        groups,
        extra: BTreeMap::new(),
    })
}

/// The bearer token of an `Authorization` header value, if it is one.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Asks the apiserver who a token belongs to and what they may do on this node.
#[derive(Clone)]
pub struct Reviewer {
    client: kube::Client,
    node: String,
}

impl Reviewer {
    /// A reviewer for `node`, asking through `client` (which needs `create` on `tokenreviews` and
    /// `subjectaccessreviews`, as `system:auth-delegator` grants).
    pub fn new(client: kube::Client, node: String) -> Reviewer {
        Reviewer { client, node }
    }

    /// The identity behind a bearer token (TokenReview); 401 when the apiserver does not know it.
    pub async fn authenticate_token(&self, token: &str) -> Result<Identity> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| Error::Review {
                what: "review the bearer token",
                source,
            })?;
        let status = answer.status.unwrap_or_default();
        let user = status.user.filter(|_| status.authenticated == Some(true));
        let Some(user) = user else {
            let why = status.error.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(Error::Unauthorized(format!(
                "the bearer token is not valid{why}"
            )));
        };
        Ok(Identity {
            user: user.username.unwrap_or_default(),
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        })
    }

    /// Allowed when a SubjectAccessReview for `attrs` on this node says so; 403 otherwise.
    pub async fn authorize(&self, who: &Identity, attrs: &Attributes) -> Result<()> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.user.clone()),
                uid: who.uid.clone(),
                groups: Some(who.groups.clone()),
                extra: (!who.extra.is_empty()).then(|| who.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.to_string()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.to_string()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| Error::Review {
                what: "review the access",
                source,
            })?;
        let status = answer.status.unwrap_or_default();
        if status.allowed && status.denied != Some(true) {
            return Ok(());
        }
        let reason = status
            .reason
            .filter(|r| !r.is_empty())
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        Err(Error::Forbidden {
            user: who.user.clone(),
            verb: attrs.verb.into(),
            subresource: attrs.subresource.into(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(method: Method, path: &str) -> Option<(&'static str, &'static str)> {
        attributes(&method, path).map(|a| (a.verb, a.subresource))
    }

    #[test]
    fn stats_metrics_and_logs_have_their_own_subresources_and_everything_else_is_proxy() {
        assert_eq!(map(Method::GET, "/stats/summary"), Some(("get", "stats")));
        assert_eq!(
            map(Method::GET, "/metrics/resource"),
            Some(("get", "metrics"))
        );
        assert_eq!(map(Method::GET, "/metrics"), Some(("get", "metrics")));
        assert_eq!(map(Method::GET, "/logs/syslog"), Some(("get", "log")));
        assert_eq!(
            map(Method::GET, "/containerLogs/ns/pod/app"),
            Some(("get", "proxy"))
        );
        assert_eq!(
            map(Method::POST, "/exec/ns/pod/app"),
            Some(("create", "proxy"))
        );
        assert_eq!(map(Method::GET, "/exec/ns/pod/app"), Some(("get", "proxy")));
        assert_eq!(
            map(Method::POST, "/run/ns/pod/app"),
            Some(("create", "proxy"))
        );
        assert_eq!(map(Method::GET, "/healthz"), Some(("get", "proxy")));
    }

    #[test]
    fn a_path_that_only_starts_like_stats_is_proxy() {
        assert_eq!(map(Method::GET, "/statsfoo"), Some(("get", "proxy")));
        assert_eq!(map(Method::GET, "/logsx/a"), Some(("get", "proxy")));
    }

    #[test]
    fn the_verb_follows_the_http_method_and_unknown_methods_have_none() {
        assert_eq!(map(Method::PUT, "/x"), Some(("update", "proxy")));
        assert_eq!(map(Method::PATCH, "/x"), Some(("patch", "proxy")));
        assert_eq!(map(Method::DELETE, "/x"), Some(("delete", "proxy")));
        assert_eq!(map(Method::OPTIONS, "/x"), None);
    }

    #[test]
    fn only_a_non_empty_bearer_token_is_a_token() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn a_client_certificate_names_the_user_in_its_cn_and_the_groups_in_its_os() {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let id = identity_from_certificate(cert.der()).unwrap();
        assert_eq!(id.user, "kube-apiserver-kubelet-client");
        assert_eq!(id.groups, vec!["system:masters".to_string()]);
    }

    #[test]
    fn a_client_certificate_without_a_cn_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert!(matches!(
            identity_from_certificate(cert.der()),
            Err(Error::Unauthorized(_))
        ));
    }
}
