//! Prism as the ACI peer: with Microsoft's Microsoft.ContainerInstance spec it turns away
//! requests that break the spec (422) or carry no bearer token (401) before they reach the
//! upstream, passes a valid containerGroups PUT to the upstream (served here, at
//! `ACI_UPSTREAM`) and its spec-valid answer back, and turns an answer that breaks the spec
//! into a 500.
//! Only this test may serve `ACI_UPSTREAM`: one port, one listener.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common;

const API_VERSION: &str = "2026-05-01";
const GROUP_PATH: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/burstgate-test/providers/Microsoft.ContainerInstance/containerGroups";

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path_and_query: String,
    authorization: Option<String>,
    body: Value,
}

/// Serves the upstream on `addr` until the test ends: records each request and answers a PUT
/// with 201 and the container group as ARM returns it.
async fn serve_upstream(addr: &str) -> Arc<Mutex<Vec<Seen>>> {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|err| {
        panic!("binding the ACI upstream {addr} (is another upstream running?): {err}")
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move { Ok::<_, Infallible>(answer(req, &log).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    seen
}

async fn answer(req: Request<Incoming>, log: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = parts.uri.path().to_owned();
    log.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        authorization: parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
    });
    if parts.method != Method::PUT {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({ "error": { "code": "NotFound", "message": path } }),
        );
    }
    let name = path.rsplit('/').next().unwrap_or_default();
    if name.ends_with("-broken") {
        // An answer that breaks the spec: a container group without containers.
        return json_response(
            StatusCode::CREATED,
            json!({ "name": name, "properties": { "osType": "Linux" } }),
        );
    }
    let mut group = body;
    group["id"] = json!(path);
    group["name"] = json!(name);
    group["type"] = json!("Microsoft.ContainerInstance/containerGroups");
    group["properties"]["provisioningState"] = json!("Creating");
    json_response(StatusCode::CREATED, group)
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a response")
}

/// Sends a PUT through Prism; returns status, content type and body.
async fn put(
    prism: &str,
    name: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, String, Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::put(format!(
        "{prism}{GROUP_PATH}/{name}?api-version={API_VERSION}"
    ))
    .header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a request");
    let res = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("Prism answers within 30 s")
        .expect("a response from Prism");
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = res
        .into_body()
        .collect()
        .await
        .expect("the response body")
        .to_bytes();
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

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
    let peers = common::peers();
    let prism = peers.get("ACI_PRISM_URL");
    let upstream = peers.get("ACI_UPSTREAM");
    let seen = serve_upstream(upstream.trim_start_matches("http://").trim_end_matches('/')).await;
    let name = common::unique_name("cg");

    // Breaks the spec: cpu must be a number. Prism answers 422 and the upstream never hears of it.
    let (status, content_type, problem) = put(
        prism,
        &name,
        Some("test-token"),
        &container_group(json!("lots")),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(
        content_type.starts_with("application/problem+json"),
        "{content_type}"
    );
    assert!(
        problem.to_string().contains("cpu"),
        "the problem names the field: {problem}"
    );

    // No bearer token: 401 from Prism itself.
    let (status, _, body) = put(prism, &name, None, &container_group(json!(1))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "Prism forwarded a rejected request: {:?}",
        seen.lock().unwrap()
    );

    // Valid: forwarded as is, and the upstream's spec-valid 201 comes back.
    let (status, _, group) =
        put(prism, &name, Some("test-token"), &container_group(json!(1))).await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    assert_eq!(group["name"], json!(name));
    assert_eq!(group["properties"]["provisioningState"], json!("Creating"));
    {
        let seen = seen.lock().unwrap();
        let [request] = seen.as_slice() else {
            panic!("the upstream saw {} requests, not 1: {seen:?}", seen.len())
        };
        assert_eq!(request.method, Method::PUT);
        assert_eq!(
            request.path_and_query,
            format!("{GROUP_PATH}/{name}?api-version={API_VERSION}")
        );
        assert_eq!(request.authorization.as_deref(), Some("Bearer test-token"));
        assert_eq!(
            request.body["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"],
            json!(1)
        );
    }

    // An upstream answer that breaks the spec does not reach the client as is: Prism makes it a 500.
    let broken = format!("{name}-broken");
    let (status, _, problem) = put(
        prism,
        &broken,
        Some("test-token"),
        &container_group(json!(1)),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{problem}");
    assert!(problem.to_string().contains("VIOLATIONS"), "{problem}");
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the valid request for {broken} reached the upstream"
    );
}
