//! Who is asking and whether they may: client certificates (CN = user, O = groups) or bearer
//! tokens (TokenReview), then a SubjectAccessReview with the kubelet's own request mapping.
//!
//! The mapping is the real kubelet's (`pkg/kubelet/server/auth.go`): the resource is always
//! `nodes` named after this node; `/stats/*` is the subresource `stats`, `/metrics/*` `metrics`,
//! `/logs/*` `log`, and everything else (`/containerLogs`, `/exec`, `/run`, `/attach`,
//! `/portForward`, `/healthz`) `proxy`; the verb comes from the HTTP method. There is no
//! allow-all fallback: a request nobody vouches for is refused.
//!
//! Answers are reused as the kubelet reuses its webhooks' ([`crate::kubelet::cache`]): an
//! authenticated token for 2 minutes, an allowed access for 5, a denied one for 30 s.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::Method;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::kubelet::cache::{Access, Caches, TOKEN_TTL, access_key, token_key};
use crate::kubelet::error::{Error, Result};
use crate::metrics::Metrics;

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

/// Asks the apiserver who a token belongs to and what they may do on this node, and remembers
/// the answers for a while.
#[derive(Clone)]
pub struct Reviewer {
    client: kube::Client,
    node: String,
    caches: Arc<Caches>,
    metrics: Option<Arc<Metrics>>,
}

impl Reviewer {
    /// A reviewer for `node`, asking through `client` (which needs `create` on `tokenreviews` and
    /// `subjectaccessreviews`, as `system:auth-delegator` grants).
    pub fn new(client: kube::Client, node: String) -> Reviewer {
        Reviewer {
            client,
            node,
            caches: Arc::new(Caches::default()),
            metrics: None,
        }
    }

    /// Counts cache hits and misses in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Reviewer {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, cache: &str, hit: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.kubelet_auth_cache(cache, hit);
        }
    }

    /// The identity behind a bearer token: remembered for 2 minutes once the apiserver
    /// authenticated it (TokenReview); 401 when the apiserver does not know it (not remembered).
    pub async fn authenticate_token(&self, token: &str) -> Result<Identity> {
        let key = token_key(token);
        if let Some(who) = self.caches.tokens.get(&key) {
            self.count("token", true);
            return Ok(who);
        }
        self.count("token", false);
        let who = self.review_token(token).await?;
        self.caches.tokens.insert(key, who.clone(), TOKEN_TTL);
        Ok(who)
    }

    async fn review_token(&self, token: &str) -> Result<Identity> {
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

    /// Allowed when a SubjectAccessReview for `attrs` on this node says so; 403 otherwise. The
    /// answer is remembered for 5 minutes when allowed, 30 s when denied; a review that could
    /// not be made is not.
    pub async fn authorize(&self, who: &Identity, attrs: &Attributes) -> Result<()> {
        let key = access_key(who, attrs);
        let access = match self.caches.access.get(&key) {
            Some(access) => {
                self.count("access", true);
                access
            }
            None => {
                self.count("access", false);
                let access = self.review_access(who, attrs).await?;
                self.caches.access.insert(key, access.clone(), access.ttl());
                access
            }
        };
        match access {
            Access::Allowed => Ok(()),
            Access::Denied { reason } => Err(Error::Forbidden {
                user: who.user.clone(),
                verb: attrs.verb.into(),
                subresource: attrs.subresource.into(),
                reason,
            }),
        }
    }

    async fn review_access(&self, who: &Identity, attrs: &Attributes) -> Result<Access> {
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
            return Ok(Access::Allowed);
        }
        let reason = status
            .reason
            .filter(|r| !r.is_empty())
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        Ok(Access::Denied { reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    /// An in-process apiserver for reviews: the token `good` is alice (group `dev`), alice may
    /// use `proxy` and nothing else; counts the reviews it answers; `down` answers 503.
    #[derive(Clone, Default)]
    struct FakeApiserver {
        token_reviews: Arc<std::sync::atomic::AtomicUsize>,
        access_reviews: Arc<std::sync::atomic::AtomicUsize>,
        down: Arc<std::sync::atomic::AtomicBool>,
    }

    impl FakeApiserver {
        fn reviews(&self) -> (usize, usize) {
            use std::sync::atomic::Ordering::SeqCst;
            (
                self.token_reviews.load(SeqCst),
                self.access_reviews.load(SeqCst),
            )
        }

        fn set_down(&self, down: bool) {
            self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        }

        fn reviewer(&self) -> Reviewer {
            let fake = self.clone();
            let service =
                tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
                    let fake = fake.clone();
                    async move { Ok::<_, std::convert::Infallible>(fake.answer(request).await) }
                });
            Reviewer::new(kube::Client::new(service, "default"), "node-1".into())
                .with_metrics(Arc::new(Metrics::new()))
        }

        async fn answer(
            &self,
            request: axum::http::Request<kube::client::Body>,
        ) -> axum::http::Response<http_body_util::Full<bytes::Bytes>> {
            use http_body_util::BodyExt;
            use std::sync::atomic::Ordering::SeqCst;
            let path = request.uri().path().to_string();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let (status, answer) = if self.down.load(SeqCst) {
                (
                    503,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is down", "reason": "ServiceUnavailable", "code": 503}),
                )
            } else if path.ends_with("/tokenreviews") {
                self.token_reviews.fetch_add(1, SeqCst);
                let status = if review["spec"]["token"] == "good" {
                    serde_json::json!({"authenticated": true, "user": {"username": "alice", "groups": ["dev"]}})
                } else {
                    serde_json::json!({"authenticated": false, "error": "token not found"})
                };
                (
                    201,
                    serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}, "status": status}),
                )
            } else {
                self.access_reviews.fetch_add(1, SeqCst);
                let attrs = &review["spec"]["resourceAttributes"];
                assert_eq!(attrs["name"], "node-1");
                let allowed = review["spec"]["user"] == "alice" && attrs["subresource"] == "proxy";
                let status = if allowed {
                    serde_json::json!({"allowed": true})
                } else {
                    serde_json::json!({"allowed": false, "reason": "no RBAC policy matched"})
                };
                (
                    201,
                    serde_json::json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {}, "status": status}),
                )
            };
            axum::http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(answer.to_string().into()))
                .unwrap()
        }
    }

    fn alice() -> Identity {
        Identity {
            user: "alice".into(),
            groups: vec!["dev".into()],
            ..Default::default()
        }
    }

    const PROXY: Attributes = Attributes {
        verb: "get",
        subresource: "proxy",
    };
    const STATS: Attributes = Attributes {
        verb: "get",
        subresource: "stats",
    };

    fn lookups(reviewer: &Reviewer, cache: &str, result: &str) -> u64 {
        reviewer
            .metrics
            .as_ref()
            .unwrap()
            .kubelet_auth_cache
            .get_or_create(&crate::metrics::AuthCacheLabels {
                cache: cache.into(),
                result: result.into(),
            })
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn an_authenticated_token_is_reviewed_again_only_after_two_minutes() {
        let apiserver = FakeApiserver::default();
        let reviewer = apiserver.reviewer();
        assert_eq!(reviewer.authenticate_token("good").await.unwrap(), alice());
        tokio::time::advance(Duration::from_secs(119)).await;
        assert_eq!(reviewer.authenticate_token("good").await.unwrap(), alice());
        assert_eq!(apiserver.reviews(), (1, 0));
        assert_eq!(
            (
                lookups(&reviewer, "token", "hit"),
                lookups(&reviewer, "token", "miss")
            ),
            (1, 1)
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        reviewer.authenticate_token("good").await.unwrap();
        assert_eq!(apiserver.reviews(), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_the_apiserver_does_not_know_is_reviewed_every_time() {
        let apiserver = FakeApiserver::default();
        let reviewer = apiserver.reviewer();
        for _ in 0..2 {
            let err = reviewer.authenticate_token("forged").await.unwrap_err();
            assert!(matches!(err, Error::Unauthorized(_)), "{err}");
        }
        assert_eq!(apiserver.reviews(), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_allowed_access_is_reviewed_again_after_five_minutes_and_a_denied_one_after_thirty_seconds()
     {
        let apiserver = FakeApiserver::default();
        let reviewer = apiserver.reviewer();
        reviewer.authorize(&alice(), &PROXY).await.unwrap();
        let denied = reviewer.authorize(&alice(), &STATS).await.unwrap_err();
        assert_eq!(apiserver.reviews(), (0, 2));

        tokio::time::advance(Duration::from_secs(29)).await;
        reviewer.authorize(&alice(), &PROXY).await.unwrap();
        let again = reviewer.authorize(&alice(), &STATS).await.unwrap_err();
        assert_eq!(
            again.to_string(),
            denied.to_string(),
            "a remembered denial says the same"
        );
        assert!(
            again.to_string().ends_with(": no RBAC policy matched"),
            "{again}"
        );
        assert_eq!(apiserver.reviews(), (0, 2));

        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(reviewer.authorize(&alice(), &STATS).await.is_err());
        assert_eq!(apiserver.reviews(), (0, 3), "the denial expired after 30 s");

        tokio::time::advance(Duration::from_secs(269)).await;
        reviewer.authorize(&alice(), &PROXY).await.unwrap();
        assert_eq!(apiserver.reviews(), (0, 3));
        tokio::time::advance(Duration::from_secs(1)).await;
        reviewer.authorize(&alice(), &PROXY).await.unwrap();
        assert_eq!(
            apiserver.reviews(),
            (0, 4),
            "the allowance expired after 5 min"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_user_or_group_is_a_new_question() {
        let apiserver = FakeApiserver::default();
        let reviewer = apiserver.reviewer();
        reviewer.authorize(&alice(), &PROXY).await.unwrap();
        let mut admin_alice = alice();
        admin_alice.groups.push("system:masters".into());
        reviewer.authorize(&admin_alice, &PROXY).await.unwrap();
        let bob = Identity {
            user: "bob".into(),
            ..alice()
        };
        assert!(reviewer.authorize(&bob, &PROXY).await.is_err());
        assert_eq!(apiserver.reviews(), (0, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_review_the_apiserver_could_not_make_is_not_remembered() {
        let apiserver = FakeApiserver::default();
        let reviewer = apiserver.reviewer();
        apiserver.set_down(true);
        assert!(matches!(
            reviewer.authenticate_token("good").await,
            Err(Error::Review { .. })
        ));
        assert!(matches!(
            reviewer.authorize(&alice(), &PROXY).await,
            Err(Error::Review { .. })
        ));
        apiserver.set_down(false);
        assert_eq!(reviewer.authenticate_token("good").await.unwrap(), alice());
        reviewer.authorize(&alice(), &PROXY).await.unwrap();
        assert_eq!(apiserver.reviews(), (1, 1));
    }
}
