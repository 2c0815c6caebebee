//! The project's ARM/ACI emulator (tests/peers/aci-emulator), driven THROUGH Prism with plain
//! HTTP, so every request and every answer here is also checked against Microsoft's spec: a
//! token from its Entra-like endpoint (over HTTPS with the peers' CA), a container group that
//! provisions, runs with an IP, is listed, logs and is deleted; containers that exit and restart;
//! exec and attach over ACI's websocket protocols; ARM's 401; ACI's InaccessibleImage and quota errors;
//! throttling with Retry-After and 5xx from the control API's faults; nextLink paging.
//! Each test works in its own random subscription, which scopes the emulator's faults and state.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common;

const API_VERSION: &str = "2026-05-01";

/// A random subscription id (a UUID, as ARM and Prism require): the test's own corner of the
/// emulator.
pub(crate) fn random_subscription() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let hex = format!("{:016x}{:016x}", random(), random());
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// An ARM client of one test: a token from the emulator, requests through Prism.
pub(crate) struct Arm {
    pub(crate) http: reqwest::Client,
    pub(crate) prism: String,
    pub(crate) emulator: String,
    pub(crate) subscription: String,
    pub(crate) token: String,
}

/// One answer: status, headers and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Fetches a token the way azure_identity's ClientSecretCredential does (form POST to
/// `{authority}/{tenant}/oauth2/v2.0/token`), over HTTPS trusting only the peers' CA.
pub(crate) async fn fetch_token() -> String {
    common::install_crypto_provider();
    let peers = common::peers();
    let ca = std::fs::read(peers.path("ACI_EMULATOR_CA")).expect("reading ACI_EMULATOR_CA");
    let tls = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("the peers' CA is PEM")])
        .build()
        .expect("an HTTPS client");
    let res = tls
        .post(format!(
            "{}/burstgate-test-tenant/oauth2/v2.0/token",
            peers.get("ACI_AUTHORITY_HOST")
        ))
        .form(&[
            ("client_id", "burstgate-test-client"),
            ("client_secret", "burstgate-test-client-secret"),
            ("grant_type", "client_credentials"),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .expect("the emulator's token endpoint answers over HTTPS");
    assert_eq!(res.status(), StatusCode::OK);
    let token: Value = res.json().await.expect("a JSON token answer");
    assert_eq!(token["token_type"], json!("Bearer"), "{token}");
    assert!(token["expires_in"].as_i64().unwrap_or(0) > 0, "{token}");
    assert!(token["ext_expires_in"].as_i64().is_some(), "{token}");
    token["access_token"]
        .as_str()
        .expect("an access_token")
        .to_owned()
}

impl Arm {
    /// A client in a fresh random subscription, with a token from the emulator.
    pub(crate) async fn new() -> Arm {
        let peers = common::peers();
        Arm {
            http: reqwest::Client::new(),
            prism: peers.get("ACI_PRISM_URL").trim_end_matches('/').to_owned(),
            emulator: peers
                .get("ACI_EMULATOR_URL")
                .trim_end_matches('/')
                .to_owned(),
            subscription: random_subscription(),
            token: fetch_token().await,
        }
    }

    pub(crate) fn groups_url(&self, rg: &str) -> String {
        format!(
            "{}/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups",
            self.prism, self.subscription
        )
    }

    pub(crate) fn group_url(&self, rg: &str, name: &str) -> String {
        format!("{}/{name}", self.groups_url(rg))
    }

    /// Sends an ARM request through Prism with the given bearer token (None: no header).
    pub(crate) async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Answer {
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = if url.contains("api-version=") {
            url.to_owned()
        } else {
            format!("{url}{sep}api-version={API_VERSION}")
        };
        let mut req = self.http.request(method, &url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = tokio::time::timeout(Duration::from_secs(30), req.send())
            .await
            .unwrap_or_else(|_| panic!("{url} answers within 30 s"))
            .unwrap_or_else(|err| panic!("{url}: {err}"));
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("an answer body");
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub(crate) async fn call(&self, method: Method, url: &str, body: Option<&Value>) -> Answer {
        self.call_as(Some(&self.token), method, url, body).await
    }

    /// Sets faults for this test's subscription through the control API (directly, not Prism).
    pub(crate) async fn faults(&self, faults: Value) {
        let mut faults = faults;
        faults["subscriptionId"] = json!(self.subscription);
        let res = self
            .http
            .post(format!("{}/_emulator/faults", self.emulator))
            .json(&faults)
            .send()
            .await
            .expect("the control API answers");
        assert_eq!(res.status(), StatusCode::OK, "setting faults {faults}");
    }

    /// The ARM requests the emulator received for this test's subscription.
    pub(crate) async fn requests(&self) -> Vec<Value> {
        let res: Value = self
            .http
            .get(format!(
                "{}/_emulator/requests?subscriptionId={}",
                self.emulator, self.subscription
            ))
            .send()
            .await
            .expect("the control API answers")
            .json()
            .await
            .expect("JSON");
        res["requests"].as_array().cloned().unwrap_or_default()
    }

    /// Forgets this test's subscription in the emulator.
    pub(crate) async fn reset(&self) {
        let _ = self
            .http
            .post(format!("{}/_emulator/reset", self.emulator))
            .json(&json!({ "subscriptionId": self.subscription }))
            .send()
            .await;
    }

    /// Polls GET of a group until `ready` holds for it.
    async fn wait_for_group(&self, url: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        common::eventually(what, Duration::from_secs(30), || async {
            let got = self.call(Method::GET, url, None).await;
            assert_eq!(got.status, StatusCode::OK, "{}", got.body);
            ready(&got.body).then_some(got.body)
        })
        .await
    }
}

/// A container group of one container `app` as burstgate would send it.
pub(crate) fn group(image: &str, cpu: f64, env: Value, restart_policy: &str) -> Value {
    json!({
        "location": "eastus",
        "tags": { "burstgate.io/pod-uid": "0000-test" },
        "properties": {
            "osType": "Linux",
            "restartPolicy": restart_policy,
            "containers": [{
                "name": "app",
                "properties": {
                    "image": image,
                    "resources": { "requests": { "cpu": cpu, "memoryInGB": 1.0 } },
                    "environmentVariables": env,
                },
            }],
        },
    })
}

fn container_state(group: &Value) -> &Value {
    &group["properties"]["containers"][0]["properties"]["instanceView"]
}

#[tokio::test]
async fn a_container_group_provisions_runs_with_an_ip_is_listed_logs_and_is_deleted() {
    let arm = Arm::new().await;
    arm.faults(json!({ "provisioningDelaySeconds": 1 })).await;
    let url = arm.group_url("burstgate-test", "web");
    let mut body = group(
        "nginx:1.27",
        1.0,
        json!([{ "name": "GREETING", "value": "hello" }]),
        "Always",
    );
    body["properties"]["ipAddress"] =
        json!({ "type": "Public", "ports": [{ "port": 80 }], "dnsNameLabel": "web-test" });
    body["properties"]["containers"][0]["properties"]["ports"] = json!([{ "port": 80 }]);

    let created = arm.call(Method::PUT, &url, Some(&body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.body["properties"]["provisioningState"],
        json!("Pending")
    );
    assert!(
        created
            .header("x-ms-ratelimit-remaining-subscription-writes")
            .is_some(),
        "{:?}",
        created.headers
    );
    let operation = created
        .header("azure-asyncoperation")
        .expect("a create answers with Azure-AsyncOperation")
        .to_owned();

    // The async operation (on the emulator itself: not in the spec) ends Succeeded.
    common::eventually(
        "the create operation to succeed",
        Duration::from_secs(30),
        || async {
            let op = arm.call(Method::GET, &operation, None).await;
            assert_eq!(op.status, StatusCode::OK, "{}", op.body);
            (op.body["status"] == json!("Succeeded")).then_some(())
        },
    )
    .await;

    let running = arm
        .wait_for_group(&url, "the group to run", |g| {
            g["properties"]["instanceView"]["state"] == json!("Running")
        })
        .await;
    assert_eq!(
        running["properties"]["provisioningState"],
        json!("Succeeded")
    );
    assert_eq!(
        container_state(&running)["currentState"]["state"],
        json!("Running")
    );
    let ip = running["properties"]["ipAddress"]["ip"]
        .as_str()
        .expect("a running public group has an IP");
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");
    assert_eq!(
        running["properties"]["ipAddress"]["fqdn"],
        json!("web-test.eastus.azurecontainer.io")
    );
    let events: Vec<&str> = container_state(&running)["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(events, ["Pulling", "Pulled", "Started"]);

    // The same spec again: 200 and nothing changes.
    let again = arm.call(Method::PUT, &url, Some(&body)).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["properties"]["ipAddress"]["ip"], json!(ip));

    // Listed in its resource group and its subscription (lists carry no instance view).
    let listed = arm
        .call(Method::GET, &arm.groups_url("burstgate-test"), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["value"][0]["name"], json!("web"));
    let everywhere = arm
        .call(
            Method::GET,
            &format!(
                "{}/subscriptions/{}/providers/Microsoft.ContainerInstance/containerGroups",
                arm.prism, arm.subscription
            ),
            None,
        )
        .await;
    assert_eq!(everywhere.body["value"].as_array().map(Vec::len), Some(1));

    // Logs grow while it runs; tail and timestamps work.
    let logs_url = format!("{url}/containers/app/logs");
    let content = common::eventually("two log lines", Duration::from_secs(30), || async {
        let logs = arm.call(Method::GET, &logs_url, None).await;
        assert_eq!(logs.status, StatusCode::OK, "{}", logs.body);
        let content = logs.body["content"].as_str().unwrap_or_default().to_owned();
        content.contains("app: line 1").then_some(content)
    })
    .await;
    assert!(
        content.starts_with("app: started from image nginx:1.27\n"),
        "{content}"
    );
    let tail = arm
        .call(
            Method::GET,
            &format!("{logs_url}?tail=1&timestamps=true"),
            None,
        )
        .await;
    let tail = tail.body["content"].as_str().expect("content");
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(
        tail.starts_with("20") && tail.contains("Z app: line"),
        "{tail}"
    );

    // Tags are patched.
    let patched = arm
        .call(
            Method::PATCH,
            &url,
            Some(&json!({ "tags": { "team": "burst" } })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["tags"], json!({ "team": "burst" }));

    // Deleted: 200, then 404 on GET and 204 on a second DELETE.
    let deleted = arm.call(Method::DELETE, &url, None).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    let gone = arm.call(Method::GET, &url, None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    assert_eq!(gone.body["error"]["code"], json!("ResourceNotFound"));
    assert!(
        gone.header("x-ms-ratelimit-remaining-subscription-reads")
            .is_some()
    );
    let again = arm.call(Method::DELETE, &url, None).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    arm.reset().await;
}

#[tokio::test]
async fn containers_exit_with_the_code_they_are_given_and_the_restart_policy_decides_what_follows()
{
    let arm = Arm::new().await;
    arm.faults(json!({ "provisioningDelaySeconds": 0.2 })).await;
    let exit = |code: &str| {
        json!([
            { "name": "EMULATOR_EXIT_AFTER_SECONDS", "value": "1" },
            { "name": "EMULATOR_EXIT_CODE", "value": code },
        ])
    };
    let never = arm.group_url("burstgate-test", "never");
    let always = arm.group_url("burstgate-test", "always");
    let on_failure = arm.group_url("burstgate-test", "onfailure");
    for (url, code, policy) in [
        (&never, "3", "Never"),
        (&always, "0", "Always"),
        (&on_failure, "0", "OnFailure"),
    ] {
        let put = arm
            .call(
                Method::PUT,
                url,
                Some(&group("nginx", 0.5, exit(code), policy)),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    }

    let failed = arm
        .wait_for_group(&never, "Never: the group to fail", |g| {
            g["properties"]["instanceView"]["state"] == json!("Failed")
        })
        .await;
    let state = &container_state(&failed)["currentState"];
    assert_eq!(state["state"], json!("Terminated"));
    assert_eq!(state["exitCode"], json!(3));
    assert!(state["finishTime"].is_string(), "{state}");
    assert_eq!(container_state(&failed)["restartCount"], json!(0));
    let logs = arm
        .call(Method::GET, &format!("{never}/containers/app/logs"), None)
        .await;
    assert!(
        logs.body["content"]
            .as_str()
            .unwrap_or_default()
            .ends_with("app: exiting with code 3\n"),
        "{}",
        logs.body
    );

    let restarted = arm
        .wait_for_group(&always, "Always: a restart", |g| {
            container_state(g)["restartCount"].as_i64().unwrap_or(0) >= 1
        })
        .await;
    assert_eq!(
        container_state(&restarted)["previousState"]["state"],
        json!("Terminated")
    );
    assert_eq!(
        restarted["properties"]["instanceView"]["state"],
        json!("Running")
    );

    let succeeded = arm
        .wait_for_group(&on_failure, "OnFailure with exit 0: success", |g| {
            g["properties"]["instanceView"]["state"] == json!("Succeeded")
        })
        .await;
    assert_eq!(container_state(&succeeded)["restartCount"], json!(0));
    arm.reset().await;
}

#[tokio::test]
async fn arm_calls_without_a_token_the_emulator_issued_are_refused_with_401() {
    let arm = Arm::new().await;
    let url = arm.group_url("burstgate-test", "nobody");

    let forged = arm
        .call_as(Some("not-a-token-of-ours"), Method::GET, &url, None)
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{}", forged.body);
    assert_eq!(
        forged.body["error"]["code"],
        json!("InvalidAuthenticationToken")
    );
    assert!(forged.header("www-authenticate").is_some());

    let missing = arm.call_as(None, Method::GET, &url, None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{}", missing.body);

    let mine = arm.call(Method::GET, &url, None).await;
    assert_eq!(mine.status, StatusCode::NOT_FOUND, "{}", mine.body);
    // Prism refused the call without a header itself; the emulator refused the forged token.
    let statuses: Vec<Value> = arm
        .requests()
        .await
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, [json!(401), json!(404)]);

    // Tokens issued before `expireTokens` are expired (for this subscription); a new one works.
    arm.faults(json!({ "expireTokens": true })).await;
    let expired = arm.call(Method::GET, &url, None).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED, "{}", expired.body);
    assert_eq!(
        expired.body["error"]["code"],
        json!("ExpiredAuthenticationToken")
    );
    let fresh = fetch_token().await;
    let renewed = arm.call_as(Some(&fresh), Method::GET, &url, None).await;
    assert_eq!(renewed.status, StatusCode::NOT_FOUND, "{}", renewed.body);
    arm.reset().await;
}

#[tokio::test]
async fn an_image_aci_cannot_pull_is_inaccessible_and_secrets_stay_in_secure_fields() {
    let arm = Arm::new().await;
    let url = arm.group_url("burstgate-test", "img");

    let unknown = arm
        .call(
            Method::PUT,
            &url,
            Some(&group("invalid.example/app:1", 1.0, json!([]), "Never")),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    assert_eq!(unknown.body["error"]["code"], json!("InaccessibleImage"));
    assert_eq!(
        unknown.body["error"]["message"],
        json!(
            "The image 'invalid.example/app:1' in container group 'img' is not accessible. Please check the image and registry credential."
        )
    );

    // A private registry needs credentials; with them the group is created, and the secrets
    // travel only in secureValue / password / secret volumes, never come back.
    let private = group(
        "burstgatetest.azurecr.io/app:1",
        1.0,
        json!([
            { "name": "PLAIN", "value": "visible" },
            { "name": "TOKEN", "secureValue": "s3cret-env-value" },
        ]),
        "Never",
    );
    let refused = arm.call(Method::PUT, &url, Some(&private)).await;
    assert_eq!(
        refused.body["error"]["code"],
        json!("InaccessibleImage"),
        "{}",
        refused.body
    );
    let mut with_creds = private.clone();
    with_creds["properties"]["imageRegistryCredentials"] = json!([{
        "server": "burstgatetest.azurecr.io", "username": "puller", "password": "s3cret-registry-password"
    }]);
    let created = arm.call(Method::PUT, &url, Some(&with_creds)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let got = arm.call(Method::GET, &url, None).await;
    let text = got.body.to_string();
    assert!(
        !text.contains("s3cret"),
        "ARM answers never carry secrets: {text}"
    );
    assert!(text.contains("visible"), "{text}");

    // The request log shows the secret values only inside their secure fields.
    let puts: Vec<Value> = arm
        .requests()
        .await
        .into_iter()
        .filter(|r| r["method"] == json!("PUT") && r["status"] == json!(201))
        .collect();
    let [put] = puts.as_slice() else {
        panic!("one created PUT, not {puts:?}")
    };
    let sent: Value = serde_json::from_str(put["body"].as_str().expect("a body")).expect("JSON");
    let env = &sent["properties"]["containers"][0]["properties"]["environmentVariables"];
    assert_eq!(env[1]["secureValue"], json!("s3cret-env-value"));
    assert!(env[1].get("value").is_none(), "{env}");
    arm.reset().await;
}

#[tokio::test]
async fn the_core_quota_of_a_region_is_enforced_with_acis_error() {
    let arm = Arm::new().await;
    arm.faults(json!({ "quota": { "eastus": { "cores": 2 } } }))
        .await;
    let first = arm
        .call(
            Method::PUT,
            &arm.group_url("burstgate-test", "big"),
            Some(&group("nginx", 1.5, json!([]), "Always")),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);

    let second = arm
        .call(
            Method::PUT,
            &arm.group_url("burstgate-test", "one-more"),
            Some(&group("nginx", 1.0, json!([]), "Always")),
        )
        .await;
    assert_eq!(second.status, StatusCode::BAD_REQUEST, "{}", second.body);
    assert_eq!(
        second.body["error"]["code"],
        json!("ContainerGroupQuotaReached")
    );
    assert_eq!(
        second.body["error"]["message"],
        json!(
            "Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota 'StandardCores' exceeded in region 'eastus'. Limit: '2', Usage: '1.5' Requested: '1'."
        )
    );

    let usages = arm
        .call(
            Method::GET,
            &format!(
                "{}/subscriptions/{}/providers/Microsoft.ContainerInstance/locations/eastus/usages",
                arm.prism, arm.subscription
            ),
            None,
        )
        .await;
    assert_eq!(usages.status, StatusCode::OK, "{}", usages.body);
    let cores = usages.body["value"]
        .as_array()
        .expect("usages")
        .iter()
        .find(|u| u["name"]["value"] == json!("StandardCores"))
        .expect("a StandardCores usage")
        .clone();
    assert_eq!(cores["limit"], json!(2));
    assert_eq!(cores["currentValue"], json!(2));

    // Another region is not affected; a region that is down answers ACI's capacity error.
    let mut west = group("nginx", 1.0, json!([]), "Always");
    west["location"] = json!("westus");
    arm.faults(json!({ "regionDown": ["westus"] })).await;
    let down = arm
        .call(
            Method::PUT,
            &arm.group_url("burstgate-test", "west"),
            Some(&west),
        )
        .await;
    assert_eq!(down.status, StatusCode::CONFLICT, "{}", down.body);
    assert_eq!(down.body["error"]["code"], json!("ServiceUnavailable"));
    assert!(
        down.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with(
                "The requested resource is not available in the location 'westus' at this moment."
            ),
        "{}",
        down.body
    );
    arm.faults(json!({ "regionDown": [] })).await;
    let up = arm
        .call(
            Method::PUT,
            &arm.group_url("burstgate-test", "west"),
            Some(&west),
        )
        .await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.body);
    arm.reset().await;
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_and_faults_give_5xx() {
    let arm = Arm::new().await;
    arm.faults(json!({
        "throttle": { "count": 1, "retryAfterSeconds": 2, "method": "PUT" },
        "errors": { "count": 1, "status": 503 },
    }))
    .await;
    let url = arm.group_url("burstgate-test", "busy");
    let body = group("nginx", 0.5, json!([]), "Always");

    let throttled = arm.call(Method::PUT, &url, Some(&body)).await;
    assert_eq!(
        throttled.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        throttled.body
    );
    assert_eq!(throttled.header("retry-after"), Some("2"));
    assert_eq!(
        throttled.body["error"]["code"],
        json!("SubscriptionRequestsThrottled")
    );

    let unavailable = arm.call(Method::PUT, &url, Some(&body)).await;
    assert_eq!(
        unavailable.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        unavailable.body
    );
    assert_eq!(
        unavailable.body["error"]["code"],
        json!("ServiceUnavailable")
    );

    let created = arm.call(Method::PUT, &url, Some(&body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    arm.reset().await;
}

#[tokio::test]
async fn long_lists_are_paged_with_a_next_link_through_prism() {
    let arm = Arm::new().await;
    arm.faults(json!({ "pageSize": 2 })).await;
    for name in ["a1", "a2", "a3"] {
        let put = arm
            .call(
                Method::PUT,
                &arm.group_url("burstgate-test", name),
                Some(&group("nginx", 0.5, json!([]), "Always")),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    }
    let mut names = Vec::new();
    let mut next = Some(arm.groups_url("burstgate-test"));
    while let Some(url) = next {
        assert!(
            url.starts_with(&arm.prism),
            "nextLink goes through Prism: {url}"
        );
        let page = arm.call(Method::GET, &url, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        names.extend(
            page.body["value"]
                .as_array()
                .expect("value")
                .iter()
                .map(|g| g["name"].as_str().unwrap_or_default().to_owned()),
        );
        next = page.body["nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(names, ["a1", "a2", "a3"]);
    arm.reset().await;
}

#[tokio::test]
async fn exec_runs_commands_over_acis_websocket_protocol() {
    let arm = Arm::new().await;
    arm.faults(json!({ "provisioningDelaySeconds": 0.2 })).await;
    let url = arm.group_url("burstgate-test", "shell");
    let mut body = group(
        "nginx",
        0.5,
        json!([
            { "name": "PLAIN", "value": "visible" },
            { "name": "TOKEN", "secureValue": "s3cret-env-value" },
        ]),
        "Always",
    );
    body["properties"]["volumes"] =
        json!([{ "name": "creds", "secret": { "token": "czNjcmV0LWZpbGU=" } }]);
    body["properties"]["containers"][0]["properties"]["volumeMounts"] =
        json!([{ "name": "creds", "mountPath": "/etc/creds", "readOnly": true }]);
    let put = arm.call(Method::PUT, &url, Some(&body)).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    arm.wait_for_group(&url, "the group to run", |g| {
        container_state(g)["currentState"]["state"] == json!("Running")
    })
    .await;

    let exec = |command: &'static str| {
        let arm = &arm;
        let url = url.clone();
        async move {
            let started = arm
                .call(
                    Method::POST,
                    &format!("{url}/containers/app/exec"),
                    Some(
                        &json!({ "command": command, "terminalSize": { "rows": 24, "cols": 80 } }),
                    ),
                )
                .await;
            assert_eq!(started.status, StatusCode::OK, "{}", started.body);
            let uri = started.body["webSocketUri"]
                .as_str()
                .expect("a webSocketUri");
            let password = started.body["password"].as_str().expect("a password");
            let (mut ws, _) = tokio_tungstenite::connect_async(uri)
                .await
                .expect("the exec websocket opens");
            ws.send(Message::text(password))
                .await
                .expect("sending the password");
            let mut out = String::new();
            while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("exec output within 10 s")
            {
                match msg.expect("a websocket message") {
                    Message::Text(t) => out.push_str(&t),
                    Message::Binary(b) => out.push_str(&String::from_utf8_lossy(&b)),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            out
        }
    };
    assert_eq!(exec("echo hello from aci").await, "hello from aci\n");
    assert_eq!(exec("cat /etc/creds/token").await, "s3cret-file");
    let env = exec("env").await;
    assert!(env.contains("PLAIN=visible\n"), "{env}");
    assert!(
        !env.contains("s3cret"),
        "env lists plain variables only: {env}"
    );
    assert_eq!(exec("hostname").await, "shell\n");
    arm.reset().await;
}

#[tokio::test]
async fn attach_streams_the_containers_lines_as_they_are_written_until_it_exits() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let arm = Arm::new().await;
    arm.faults(json!({ "provisioningDelaySeconds": 0.2 })).await;
    let url = arm.group_url("burstgate-test", "tail");
    let body = group(
        "nginx",
        0.5,
        json!([{ "name": "EMULATOR_EXIT_AFTER_SECONDS", "value": "3.5" }]),
        "Never",
    );
    let put = arm.call(Method::PUT, &url, Some(&body)).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    arm.wait_for_group(&url, "the group to run", |g| {
        container_state(g)["currentState"]["state"] == json!("Running")
    })
    .await;
    let attach_url = format!("{url}/containers/app/attach");
    let attach = || arm.call(Method::POST, &attach_url, None);

    // The password goes in the Authorization header (ContainerAttachResponse); without it the
    // upgrade is refused.
    let started = attach().await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let uri = started.body["webSocketUri"]
        .as_str()
        .expect("a webSocketUri");
    assert!(tokio_tungstenite::connect_async(uri).await.is_err());

    let started = attach().await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let uri = started.body["webSocketUri"]
        .as_str()
        .expect("a webSocketUri");
    let mut request = uri.into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        started.body["password"]
            .as_str()
            .expect("a password")
            .parse()
            .unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the attach websocket opens");
    let mut lines = Vec::new();
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("attach output within 10 s")
    {
        match msg.expect("a websocket message") {
            Message::Text(t) => lines.push(t.to_string()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(
        lines,
        vec![
            "app: started from image nginx\n",
            "app: line 1\n",
            "app: line 2\n",
            "app: line 3\n",
            "app: exiting with code 0\n",
        ],
        "the lines so far, the new ones as they come, then the end of the run"
    );

    // An exited container cannot be attached to.
    let exited = attach().await;
    assert_eq!(exited.status, StatusCode::CONFLICT, "{}", exited.body);
    arm.reset().await;
}

#[tokio::test]
async fn a_slow_delete_answers_202_and_the_group_is_deleting_until_it_is_gone() {
    let arm = Arm::new().await;
    arm.faults(json!({ "provisioningDelaySeconds": 0.2, "deleteDelaySeconds": 1 }))
        .await;
    let url = arm.group_url("burstgate-test", "slow");
    let mut body = group("nginx", 0.5, json!([]), "Always");
    body["properties"]["subnetIds"] = json!([{
        "id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet/subnets/aci"
    }]);
    let put = arm.call(Method::PUT, &url, Some(&body)).await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.body);
    let running = arm
        .wait_for_group(&url, "the group to run", |g| {
            g["properties"]["instanceView"]["state"] == json!("Running")
        })
        .await;
    let ip = &running["properties"]["ipAddress"];
    assert_eq!(
        ip["type"],
        json!("Private"),
        "a group in a subnet gets a private IP: {ip}"
    );
    assert!(
        ip["ip"].as_str().unwrap_or_default().starts_with("10."),
        "{ip}"
    );

    let deleting = arm.call(Method::DELETE, &url, None).await;
    assert_eq!(deleting.status, StatusCode::ACCEPTED, "{}", deleting.body);
    let operation = deleting
        .header("azure-asyncoperation")
        .expect("a 202 names its operation")
        .to_owned();
    assert!(
        deleting.header("location").is_some(),
        "{:?}",
        deleting.headers
    );
    let during = arm.call(Method::GET, &url, None).await;
    assert_eq!(
        during.body["properties"]["provisioningState"],
        json!("Deleting")
    );
    common::eventually("the delete to finish", Duration::from_secs(30), || async {
        let op = arm.call(Method::GET, &operation, None).await;
        (op.body["status"] == json!("Succeeded")).then_some(())
    })
    .await;
    let gone = arm.call(Method::GET, &url, None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    arm.reset().await;
}

#[tokio::test]
async fn concurrent_requests_through_prism_all_get_the_emulators_answer() {
    let arm = Arm::new().await;
    // Clients that close their connections (curl, urllib): Prism forwards `Connection: close`
    // and pools its socket to the emulator unless the answer says it is closed.
    let answers = futures::future::join_all((0..20).map(|i| {
        let arm = &arm;
        async move {
            let url = format!(
                "{}?api-version={API_VERSION}",
                arm.group_url("burstgate-test", &format!("c{i}"))
            );
            let res = arm
                .http
                .get(&url)
                .bearer_auth(&arm.token)
                .header("connection", "close")
                .send()
                .await
                .expect("Prism answers");
            (res.status(), res.text().await.unwrap_or_default())
        }
    }))
    .await;
    for (status, body) in answers {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body.contains("ResourceNotFound"), "{body}");
    }
    assert_eq!(arm.requests().await.len(), 20);
    arm.reset().await;
}
