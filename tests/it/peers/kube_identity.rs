//! The real apiserver's authentication and RBAC as burstgate's gateway meets them: its kubeconfig
//! names a token user with no groups, and RBAC (not AlwaysAllow) decides what it may do.

use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use kube::api::{Api, PostParams};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::common;

#[tokio::test]
async fn the_gateway_kubeconfig_authenticates_a_user_without_groups() {
    let peers = common::peers();
    let kubeconfig = kube::config::Kubeconfig::read_from(peers.path("KUBECONFIG_GATEWAY"))
        .expect("read the gateway kubeconfig");
    let token = kubeconfig.auth_infos[0]
        .auth_info
        .as_ref()
        .and_then(|a| a.token.as_ref())
        .expect("the gateway kubeconfig carries a token");
    let review: TokenReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": { "token": token.expose_secret() },
    }))
    .expect("a valid TokenReview");

    let reviews: Api<TokenReview> = Api::all(common::kube_admin().await);
    let status = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("TokenReview")
        .status
        .expect("a status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.expect("the token's user");
    assert_eq!(
        user.username.as_deref(),
        Some(peers.get("KUBE_GATEWAY_USER"))
    );
    assert_eq!(
        user.groups.unwrap_or_default(),
        ["system:authenticated"],
        "no groups beyond the implicit one"
    );
}

#[tokio::test]
async fn rbac_does_not_make_the_gateway_a_cluster_admin() {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(common::kube_gateway().await);
    let everything: SelfSubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": { "resourceAttributes": { "verb": "*", "group": "*", "resource": "*" } },
    }))
    .expect("a valid SelfSubjectAccessReview");
    let status = reviews
        .create(&PostParams::default(), &everything)
        .await
        .expect("SelfSubjectAccessReview")
        .status
        .expect("a status");
    assert!(
        !status.allowed,
        "the gateway identity may not do everything: {status:?}"
    );

    // The same question as cluster admin is allowed: the answer above comes from RBAC, not a stub.
    let admin_reviews: Api<SelfSubjectAccessReview> = Api::all(common::kube_admin().await);
    let status = admin_reviews
        .create(&PostParams::default(), &everything)
        .await
        .expect("SelfSubjectAccessReview")
        .status
        .expect("a status");
    assert!(
        status.allowed,
        "system:masters may do everything: {status:?}"
    );
}
