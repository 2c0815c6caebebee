//! In-cluster identity of burst pods, proven against the real apiserver (ServiceAccount admission
//! and bound token volumes on, as in every 1.22+ cluster): the token the gateway put into the
//! container group at the ACI emulator authenticates through TokenReview as the pod's service
//! account, bound to that pod; a second projected token keeps its own audience;
//! `automountServiceAccountToken: false` gets no token; the token dies with the pod; the
//! Service variables (`KUBERNETES_SERVICE_HOST`, the namespace's Services) are as a kubelet sets them.
//! A token due for renewal (its due time set to the past on the pod, standing for the 8 minutes a
//! 600 s token lives before it is due) is renewed by one PUT of the existing group (after a
//! refused PUT, one `TokenRenewalFailed` Warning and a back-off), a
//! `TokenRenewed` Event saying so, the new token authenticating bound to the same pod.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use burstgate::controller::pod::renewal::RENEW_AT;

use crate::common::gateway::{AciOnly, aci_faults, aci_groups, aci_only};
use crate::common::{events_of, peers};

/// The files of the secret volume `volume_prefix*` of the container group of pod `uid`, decoded.
fn group_files(
    groups: &[serde_json::Value],
    uid: &str,
    volume_prefix: &str,
) -> Vec<(String, Vec<u8>)> {
    let group = groups
        .iter()
        .find(|g| g["tags"]["burstgate.io-pod-uid"] == uid)
        .unwrap_or_else(|| panic!("no container group for pod {uid}: {groups:#?}"));
    let volumes = group["spec"]["properties"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    volumes
        .iter()
        .filter(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(volume_prefix))
        })
        .flat_map(|v| v["secret"].as_object().cloned().unwrap_or_default())
        .map(|(path, b64)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_str().expect("base64 text"))
                .expect("base64");
            (path, bytes)
        })
        .collect()
}

fn file<'a>(files: &'a [(String, Vec<u8>)], path: &str) -> &'a [u8] {
    files
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, c)| c.as_slice())
        .unwrap_or_else(|| {
            panic!(
                "no file {path} in {:?}",
                files.iter().map(|f| &f.0).collect::<Vec<_>>()
            )
        })
}

/// TokenReview of `token` (for `audiences`, none: the apiserver's): the reviewed status.
async fn review(
    client: &kube::Client,
    token: &[u8],
    audiences: Option<Vec<&str>>,
) -> serde_json::Value {
    let review: TokenReview = serde_json::from_value(json!({
        "spec": {"token": String::from_utf8_lossy(token), "audiences": audiences}
    }))
    .unwrap();
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("TokenReview answers");
    serde_json::to_value(answer.status).unwrap()
}

fn virtual_pod(name: &str, node: &str, spec: serde_json::Value) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "app", "image": "mcr.microsoft.com/azuredocs/aci-helloworld",
                            "ports": [{"containerPort": 80}],
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}],
            "nodeSelector": {"type": "virtual-kubelet", "burstgate.io/test-node": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
        }
    });
    for (k, v) in spec.as_object().unwrap() {
        pod["spec"][k] = v.clone();
    }
    serde_json::from_value(pod).unwrap()
}

#[tokio::test]
async fn a_burst_pod_on_aci_gets_a_token_bound_to_it_that_authenticates_as_its_service_account() {
    let AciOnly {
        client,
        ns,
        node,
        subscription,
        gw,
        guards: _guards,
    } = aci_only("identity", "burstgate-identity").await;
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "shop-api"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();

    // A Service in the namespace before the pods, as a kubelet would list it for their env.
    let backend: Service = serde_json::from_value(json!({
        "metadata": {"name": "backend"},
        "spec": {"selector": {"app": "backend"}, "ports": [{"name": "http", "port": 8080}]}
    }))
    .unwrap();
    let backend = Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &backend)
        .await
        .unwrap();
    let backend_ip = backend.spec.unwrap().cluster_ip.unwrap();

    // One pod as admission makes it (kube-api-access-*) plus a token for another audience; one
    // that opts out of the automatic token.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let whoami = virtual_pod(
        "whoami",
        &node,
        json!({
            "serviceAccountName": "shop-api",
            "volumes": [{"name": "vault-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "vault"}}]}}],
        }),
    );
    let mut whoami = whoami;
    whoami.spec.as_mut().unwrap().containers[0].volume_mounts = Some(vec![
        serde_json::from_value(
            json!({"name": "vault-token", "mountPath": "/var/run/secrets/vault"}),
        )
        .unwrap(),
    ]);
    pods.create(&PostParams::default(), &whoami).await.unwrap();
    let quiet = virtual_pod(
        "quiet",
        &node,
        json!({"automountServiceAccountToken": false, "enableServiceLinks": false}),
    );
    pods.create(&PostParams::default(), &quiet).await.unwrap();
    let running = |name: &'static str| {
        let pods = pods.clone();
        async move {
            pods.get(name)
                .await
                .ok()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        }
    };
    let whoami = gw
        .eventually(
            "pod whoami Running on ACI",
            Duration::from_secs(120),
            || running("whoami"),
        )
        .await;
    let quiet = gw
        .eventually("pod quiet Running on ACI", Duration::from_secs(120), || {
            running("quiet")
        })
        .await;
    let uid = whoami.uid().unwrap();
    let groups = aci_groups(&subscription).await;

    // The kubelet's three files, at the projected volume admission added.
    let files = group_files(&groups, &uid, "kube-api-access-");
    assert_eq!(file(&files, "namespace"), ns.as_bytes());
    assert_eq!(
        file(&files, "ca.crt"),
        std::fs::read(peers().path("KUBE_CA")).unwrap().as_slice(),
        "ca.crt is the cluster's CA (kube-root-ca.crt)"
    );
    let token = file(&files, "token").to_vec();
    let status = review(&client, &token, None).await;
    assert_eq!(status["authenticated"], json!(true), "{status}");
    assert_eq!(
        status["user"]["username"],
        json!(format!("system:serviceaccount:{ns}:shop-api")),
        "{status}"
    );
    let extra = &status["user"]["extra"];
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        json!(["whoami"]),
        "{status}"
    );
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        json!([uid]),
        "{status}"
    );

    // The env a kubelet gives: the master Service (what in-cluster clients read with the token),
    // the namespace's Services unless enableServiceLinks is off.
    let env_of = |uid: &str| -> BTreeMap<String, String> {
        let group = groups
            .iter()
            .find(|g| g["tags"]["burstgate.io-pod-uid"] == uid)
            .unwrap();
        group["spec"]["properties"]["containers"][0]["properties"]["environmentVariables"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| {
                Some((
                    v["name"].as_str()?.to_string(),
                    v["value"].as_str()?.to_string(),
                ))
            })
            .collect()
    };
    let env = env_of(&uid);
    assert_eq!(
        env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
        Some("10.96.0.1"),
        "{env:?}"
    );
    assert_eq!(
        env.get("KUBERNETES_SERVICE_PORT").map(String::as_str),
        Some("443"),
        "{env:?}"
    );
    assert_eq!(
        env.get("BACKEND_SERVICE_HOST"),
        Some(&backend_ip),
        "{env:?}"
    );
    assert_eq!(
        env.get("BACKEND_SERVICE_PORT_HTTP").map(String::as_str),
        Some("8080"),
        "{env:?}"
    );
    let quiet_env = env_of(&quiet.uid().unwrap());
    assert_eq!(
        quiet_env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
        Some("10.96.0.1")
    );
    assert!(
        !quiet_env.contains_key("BACKEND_SERVICE_HOST"),
        "{quiet_env:?}"
    );

    // The second token is for its own audience only.
    let vault = file(&group_files(&groups, &uid, "vault-token"), "vault").to_vec();
    let for_vault = review(&client, &vault, Some(vec!["vault"])).await;
    assert_eq!(for_vault["authenticated"], json!(true), "{for_vault}");
    let for_apiserver = review(&client, &vault, None).await;
    assert_ne!(
        for_apiserver["authenticated"],
        json!(true),
        "{for_apiserver}"
    );

    // automountServiceAccountToken: false -> no token anywhere in its group.
    let quiet_group = groups
        .iter()
        .find(|g| g["tags"]["burstgate.io-pod-uid"] == quiet.uid().unwrap().as_str())
        .unwrap();
    assert!(
        !quiet_group["spec"].to_string().contains("kube-api-access"),
        "{quiet_group:#}"
    );

    // Neither token reaches a log line, Event, annotation, metric or plain field of the group.
    let tokens = [
        String::from_utf8(token.clone()).unwrap(),
        String::from_utf8(vault.clone()).unwrap(),
    ];
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    gw.assert_no_leak(&client, &ns, &tokens, &groups, &[]).await;

    // The token is bound to the pod: once the pod is gone it no longer authenticates.
    pods.delete("whoami", &DeleteParams::default())
        .await
        .unwrap();
    gw.eventually("pod whoami gone", Duration::from_secs(60), || async {
        pods.get_opt("whoami")
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await;
    // The apiserver caches a successful token review for 10 s (--authentication-token-cache).
    gw.eventually(
        "the deleted pod's token refused by TokenReview",
        Duration::from_secs(30),
        || async {
            let after = review(&client, &token, None).await;
            (after["authenticated"] != json!(true)).then_some(())
        },
    )
    .await;
    println!(
        "identity: the pod's token authenticated as system:serviceaccount:{ns}:shop-api bound to pod whoami, and stopped once the pod was deleted"
    );
}

/// The history records of the container group of pod `uid` at the emulator: its later PUTs'
/// outcomes (`reprovisioned`: a changed spec, the containers restarted).
async fn later_puts(subscription: &str, uid: &str) -> Vec<String> {
    let url = format!(
        "{}/_emulator/history?subscriptionId={subscription}",
        peers().get("ACI_EMULATOR_URL").trim_end_matches('/')
    );
    let history: serde_json::Value = reqwest::get(&url)
        .await
        .expect("emulator history")
        .json()
        .await
        .expect("history JSON");
    history["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|g| g["podUid"] == uid)
        .flat_map(|g| g["puts"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["outcome"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_token_due_for_renewal_on_aci_is_renewed_by_updating_the_group_and_says_so() {
    let AciOnly {
        client,
        ns,
        node,
        subscription,
        gw,
        guards: _guards,
    } = aci_only("renewal", "burstgate-renewal").await;
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "vault-user"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut pod = virtual_pod(
        "renewed",
        &node,
        json!({
            "serviceAccountName": "vault-user",
            "volumes": [{"name": "vault-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "vault"}}]}}],
        }),
    );
    pod.spec.as_mut().unwrap().containers[0].volume_mounts = Some(vec![
        serde_json::from_value(
            json!({"name": "vault-token", "mountPath": "/var/run/secrets/vault"}),
        )
        .unwrap(),
    ]);
    pods.create(&PostParams::default(), &pod).await.unwrap();

    // Running, with when its 600 s token is due recorded on the pod: before it expires.
    let renew_at = |p: &Pod| {
        p.annotations()
            .get(RENEW_AT)
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
    };
    let running = gw
        .eventually(
            "pod renewed Running on ACI with its renewal time",
            Duration::from_secs(120),
            || async {
                let p = pods.get("renewed").await.ok()?;
                let phase = p.status.as_ref()?.phase.as_deref()?;
                (phase == "Running" && renew_at(&p).is_some()).then_some(p)
            },
        )
        .await;
    let created = running.creation_timestamp().unwrap().0;
    let first_due = renew_at(&running).unwrap();
    assert!(
        first_due.timestamp() < created.as_second() + 600,
        "due {first_due}, created {created}: renewal must come before the token expires"
    );
    let uid = running.uid().unwrap();
    let first = file(
        &group_files(&aci_groups(&subscription).await, &uid, "vault-token"),
        "vault",
    )
    .to_vec();

    // Due now (what the passing of 8 minutes would do), and ACI refuses the first update: one
    // TokenRenewalFailed Warning, then after its back-off the group is updated with a new token.
    aci_faults(
        &subscription,
        json!({"errors": {"count": 1, "status": 400, "method": "PUT", "code": "BadRequest",
            "message": "The container group update was refused."}}),
    )
    .await;
    let patch = json!({"metadata": {"annotations": {RENEW_AT: "2000-01-01T00:00:00Z"}}});
    pods.patch(
        "renewed",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await
    .unwrap();
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
    let event = |reason: &'static str| {
        let (events, uid) = (&events, &uid);
        move || async move {
            let e = events_of(events, uid, reason).await.into_iter().next()?;
            Some((e.type_, e.message.unwrap_or_default()))
        }
    };
    let failed = gw
        .eventually(
            "a TokenRenewalFailed Event",
            Duration::from_secs(90),
            event("TokenRenewalFailed"),
        )
        .await;
    assert_eq!(failed.0.as_deref(), Some("Warning"));
    assert!(failed.1.contains("tried again in 30 s"), "{}", failed.1);
    let note = gw
        .eventually(
            "a TokenRenewed Event after the back-off",
            Duration::from_secs(120),
            event("TokenRenewed"),
        )
        .await;
    assert_eq!(note.0.as_deref(), Some("Normal"));
    assert!(note.1.contains("containers restarted"), "{}", note.1);
    let warnings = events_of(&events, &uid, "TokenRenewalFailed").await;
    assert_eq!(warnings.len(), 1, "one Warning for the streak");
    assert!(
        warnings[0].count.unwrap_or(1) == 1 && warnings[0].series.is_none(),
        "not repeated: {:?}",
        warnings[0]
    );
    let second = gw
        .eventually(
            "a new vault token in the group",
            Duration::from_secs(30),
            || async {
                let groups = aci_groups(&subscription).await;
                let now = file(&group_files(&groups, &uid, "vault-token"), "vault").to_vec();
                (now != first).then_some(now)
            },
        )
        .await;
    let status = review(&client, &second, Some(vec!["vault"])).await;
    assert_eq!(status["authenticated"], json!(true), "{status}");
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([uid]),
        "{status}"
    );
    // One update of the same group (no second workload), and the next renewal is recorded.
    assert_eq!(
        later_puts(&subscription, &uid).await,
        ["reprovisioned"],
        "the renewal is one PUT on the existing group"
    );
    let after = gw
        .eventually(
            "the next renewal time on the pod",
            Duration::from_secs(30),
            || async {
                let p = pods.get("renewed").await.ok()?;
                renew_at(&p)
                    .filter(|at| at.timestamp() > 946_684_800)
                    .map(|_| p)
            },
        )
        .await;
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Running"),
        "the pod is kept"
    );
    println!(
        "identity: the vault token of pod renewed was renewed by one PUT of its container group (containers restarted, a TokenRenewed Event); first due {first_due}, {} s after the pod was created",
        first_due.timestamp() - created.as_second()
    );
}
