//! Prism as the ACI peer: with Microsoft's Microsoft.ContainerInstance spec it turns away
//! requests that break the spec (422) or carry no bearer token (401) before they reach the
//! upstream (the project's ACI emulator at `ACI_UPSTREAM`, whose request log shows what
//! arrived), passes a valid containerGroups PUT to it and its spec-valid answer back, and turns
//! an answer that breaks the spec (the emulator's `violateSpec` fault) into a 500.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::aci_emulator::Arm;

fn container_group(cpu: Value) -> Value {
    json!({
        "location": "eastus",
        "tags": { "burstgate.io/pod-uid": "0000-test" },
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Never",
            "containers": [{
                "name": "app",
                "properties": {
                    "image": "nginx:1.27",
                    "resources": { "requests": { "cpu": cpu, "memoryInGB": 1.5 } },
                },
            }],
        },
    })
}

#[tokio::test]
async fn prism_rejects_an_invalid_container_group_and_passes_a_valid_one_to_its_upstream() {
    let arm = Arm::new().await;
    let name = "cg";
    let url = arm.group_url("burstgate-test", name);

    // Breaks the spec: cpu must be a number. Prism answers 422 and the upstream never hears of it.
    let problem = arm
        .call(Method::PUT, &url, Some(&container_group(json!("lots"))))
        .await;
    assert_eq!(
        problem.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        problem.body
    );
    let content_type = problem
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/problem+json"),
        "{content_type}"
    );
    assert!(
        problem.body.to_string().contains("cpu"),
        "the problem names the field: {}",
        problem.body
    );

    // No bearer token: 401 from Prism itself.
    let unauthorized = arm
        .call_as(None, Method::PUT, &url, Some(&container_group(json!(1))))
        .await;
    assert_eq!(
        unauthorized.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        unauthorized.body
    );
    let seen = arm.requests().await;
    assert!(
        seen.is_empty(),
        "Prism forwarded a rejected request: {seen:?}"
    );

    // Valid: forwarded as is, and the upstream's spec-valid 201 comes back.
    let created = arm
        .call(Method::PUT, &url, Some(&container_group(json!(1))))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["name"], json!(name));
    assert_eq!(
        created.body["properties"]["provisioningState"],
        json!("Pending")
    );
    let seen = arm.requests().await;
    let [request] = seen.as_slice() else {
        panic!("the upstream saw {} requests, not 1: {seen:?}", seen.len())
    };
    assert_eq!(request["method"], json!("PUT"));
    assert_eq!(
        request["path"],
        json!(format!(
            "/subscriptions/{}/resourceGroups/burstgate-test/providers/Microsoft.ContainerInstance/containerGroups/{name}",
            arm.subscription
        ))
    );
    assert_eq!(request["query"], json!("api-version=2026-05-01"));
    let body: Value =
        serde_json::from_str(request["body"].as_str().expect("a body")).expect("JSON");
    assert_eq!(
        body["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"],
        json!(1)
    );

    // An upstream answer that breaks the spec does not reach the client as is: Prism makes it a 500.
    arm.faults(json!({ "violateSpec": { "count": 1 } })).await;
    let broken = arm
        .call(
            Method::PUT,
            &arm.group_url("burstgate-test", "cg-broken"),
            Some(&container_group(json!(1))),
        )
        .await;
    assert_eq!(
        broken.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        broken.body
    );
    assert!(
        broken.body.to_string().contains("VIOLATIONS"),
        "{}",
        broken.body
    );
    assert_eq!(
        arm.requests().await.len(),
        2,
        "the valid request for cg-broken reached the upstream"
    );
    arm.reset().await;
}
