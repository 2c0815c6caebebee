//! A real ECS SDK client whose every HTTP call gets the one reply the fuzz input holds, so the
//! SDK's own JSON parsing of ECS answers and errors runs before the adapter reads them.

use std::sync::{Mutex, OnceLock};

use aws_sdk_ecs::config::retry::RetryConfig;
use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region, StalledStreamProtectionConfig};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;

use crate::fuzzing::reply::Reply;

/// The next answer: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

static ANSWER: Mutex<Option<Answer>> = Mutex::new(None);

/// Answers every request with [`ANSWER`].
#[derive(Debug)]
struct Replay;

impl HttpConnector for Replay {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        let (status, headers, body) = ANSWER
            .lock()
            .expect("answer lock")
            .clone()
            .unwrap_or_default();
        let status = StatusCode::try_from(status)
            .unwrap_or_else(|_| StatusCode::try_from(200).expect("200"));
        let mut response = HttpResponse::new(status, SdkBody::from(body));
        for (name, value) in headers {
            let _ = response.headers_mut().try_insert(name, value);
        }
        HttpConnectorFuture::ready(Ok(response))
    }
}

/// The runtime and the client, made once per process.
pub fn client() -> &'static (tokio::runtime::Runtime, aws_sdk_ecs::Client) {
    static CLIENT: OnceLock<(tokio::runtime::Runtime, aws_sdk_ecs::Client)> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = aws_sdk_ecs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDFUZZ", "secret", None, None, "fuzz"))
            .http_client(http_client_fn(|_, _| SharedHttpConnector::new(Replay)))
            .retry_config(RetryConfig::disabled())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .build();
        (runtime, aws_sdk_ecs::Client::from_conf(config))
    })
}

/// Makes `reply` the answer to the next calls.
pub fn answer_with(reply: &Reply) {
    let answer = (reply.status, reply.headers.clone(), reply.body.to_vec());
    *ANSWER.lock().expect("answer lock") = Some(answer);
}
