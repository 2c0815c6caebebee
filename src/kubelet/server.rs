//! The HTTPS server: TLS accept loop (each connection's client certificate identity attached to
//! its requests), the authentication and authorization guard in front of every route, and the
//! routes themselves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::RunConfig;
use crate::controller::workloads::Workloads;
use crate::kubelet::auth::{
    Identity, Reviewer, attributes, bearer_token, identity_from_certificate,
};
use crate::kubelet::error::{Error, Result};
use crate::kubelet::tls::{Serving, Tls};
use crate::kubelet::{attach, exec, logs, portforward, stats};

/// How often the certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How often `follow` asks the provider for new lines.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler shares.
pub struct Shared {
    /// What the gateway lets the kubelet API see: node name, API client, metrics, and where a
    /// pod's workload runs.
    pub workloads: Arc<dyn Workloads>,
    /// Asks the apiserver about tokens and access; `None` only with `--insecure-kubelet-api`.
    pub reviewer: Option<Reviewer>,
    /// The gateway's shutdown: ends followed logs.
    pub shutdown: CancellationToken,
    /// Poll interval of `follow`.
    pub follow_every: Duration,
    /// When this kubelet API started (the node's start time in the summary).
    pub started: DateTime<Utc>,
}

/// The identity of the connection's verified client certificate, if it presented one.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity(pub Option<Identity>);

/// Every route behind the guard.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(logs::container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(exec::exec).post(exec::exec),
        )
        .route("/run/{namespace}/{pod}/{container}", post(exec::run))
        .route("/stats/summary", get(stats::summary_handler))
        .route("/metrics/resource", get(stats::resource_metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(attach::attach).post(attach::attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(portforward::port_forward).post(portforward::port_forward),
        )
        .fallback(|request: Request| async move {
            Error::NotFound(format!(
                "{} is not served by burstgate's kubelet API",
                request.uri().path()
            ))
        })
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Authenticates (client certificate, else bearer token) and authorizes (SubjectAccessReview)
/// every request; nothing passes without both, unless the API runs insecure.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Some(reviewer) = &shared.reviewer else {
        return next.run(request).await;
    };
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let certificate = request
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.clone());
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string);
    match check(reviewer, &method, &path, certificate, token).await {
        Ok(who) => {
            tracing::debug!(user = %who.user, %method, %path, "kubelet API request");
            next.run(request).await
        }
        Err(e) => {
            tracing::info!(%method, %path, status = e.status().as_u16(), error = %e, "kubelet API refused a request");
            e.into_response()
        }
    }
}

async fn check(
    reviewer: &Reviewer,
    method: &Method,
    path: &str,
    certificate: Option<Identity>,
    token: Option<String>,
) -> Result<Identity> {
    let attrs = attributes(method, path)
        .ok_or_else(|| Error::BadRequest(format!("method {method} is not served")))?;
    let who = match (certificate, token) {
        (Some(who), _) => who,
        (None, Some(token)) => reviewer.authenticate_token(&token).await?,
        (None, None) => {
            return Err(Error::Unauthorized(
                "no client certificate and no bearer token".into(),
            ));
        }
    };
    reviewer.authorize(&who, &attrs).await?;
    Ok(who)
}

/// Serves the kubelet API for `workloads` with the kubelet settings of `config` (certificate,
/// client CA, port) until `shutdown`; every replica serves it.
pub async fn serve(
    config: RunConfig,
    workloads: Arc<dyn Workloads>,
    shutdown: CancellationToken,
) -> Result<()> {
    let serving = match (&config.kubelet_cert_file, &config.kubelet_key_file) {
        (Some(cert), Some(key)) => Serving::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => {
            tracing::warn!(
                "kubelet API: no --kubelet-cert-file/--kubelet-key-file; serving a self-signed certificate \
                 (an apiserver started with --kubelet-certificate-authority will refuse it)"
            );
            Serving::SelfSigned(vec![config.node_ip.clone(), config.node_name.clone()])
        }
    };
    let tls = Arc::new(Tls::load(serving, config.kubelet_client_ca_file.clone())?);
    let reviewer = if config.insecure_kubelet_api {
        tracing::warn!(
            "INSECURE: --insecure-kubelet-api is set: the kubelet API authenticates and authorizes NOBODY; \
             anyone who reaches port {} can read every pod's logs and exec into it. Local development only.",
            config.kubelet_port
        );
        None
    } else {
        if !tls.verifies_client_certificates() {
            tracing::warn!(
                "kubelet API: no --kubelet-client-ca-file: client certificates (the apiserver's) cannot be verified \
                 and only bearer tokens authenticate, so kubectl logs/exec through the apiserver will be refused"
            );
        }
        Some(
            Reviewer::new(workloads.client().clone(), workloads.node_name().into())
                .with_metrics(workloads.metrics().clone()),
        )
    };
    let addr = SocketAddr::from(([0, 0, 0, 0], config.kubelet_port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    tracing::info!(%addr, "serving the kubelet API (containerLogs, exec, attach, run, stats/summary, metrics/resource, healthz)");
    let shared = Arc::new(Shared {
        workloads,
        reviewer,
        shutdown: shutdown.clone(),
        follow_every: FOLLOW_EVERY,
        started: Utc::now(),
    });
    serve_on(listener, tls, router(shared), shutdown).await;
    Ok(())
}

/// Accepts TLS connections on `listener` and serves `app` on them until `shutdown`, then gives
/// open connections [`DRAIN_TIMEOUT`] to finish.
pub async fn serve_on(
    listener: TcpListener,
    tls: Arc<Tls>,
    app: Router,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(tls.clone().watch(RELOAD_EVERY, shutdown.clone()));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tasks.spawn(connection(tcp, peer, tls.current(), app.clone(), shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("kubelet API: connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "kubelet API: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "kubelet API: TLS handshake timed out");
            return;
        }
    };
    let identity = stream.get_ref().1.peer_certificates().and_then(|certs| certs.first()).and_then(|cert| {
        identity_from_certificate(cert).inspect_err(|e| tracing::info!(%peer, error = %e, "kubelet API: client certificate ignored")).ok()
    });
    let peer_identity = PeerIdentity(identity);
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(peer_identity.clone());
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "kubelet API: connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::kubelet::pods::tests::{FakeGateway, NODE, placed_on, pod};

    fn app(workloads: Arc<dyn Workloads>, reviewer: Option<Reviewer>) -> Router {
        router(Arc::new(Shared {
            workloads,
            reviewer,
            shutdown: CancellationToken::new(),
            follow_every: FOLLOW_EVERY,
            started: DateTime::UNIX_EPOCH,
        }))
    }

    async fn call(app: Router, method: Method, uri: &str) -> (u16, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn run_on_a_provider_without_exec_answers_501_naming_the_provider_and_the_pod() {
        let gateway = Arc::new(FakeGateway::new(vec![placed_on("web", "edge")], &["edge"]));
        let (status, body) =
            call(app(gateway, None), Method::POST, "/run/team/web/app?cmd=ls").await;
        assert_eq!(status, 501, "{body}");
        assert_eq!(
            body,
            "noexec does not support exec (pod team/web runs on target edge)\n"
        );
    }

    #[tokio::test]
    async fn exec_and_attach_on_a_provider_without_them_answer_501_before_any_upgrade() {
        let gateway = Arc::new(FakeGateway::new(vec![placed_on("web", "edge")], &["edge"]));
        let (status, body) = call(
            app(gateway.clone(), None),
            Method::POST,
            "/exec/team/web/app?command=ls&stdout=1",
        )
        .await;
        assert_eq!(status, 501, "{body}");
        assert_eq!(
            body,
            "noexec does not support exec (pod team/web runs on target edge)\n"
        );
        let (status, body) = call(
            app(gateway, None),
            Method::POST,
            "/attach/team/web/app?stdout=1",
        )
        .await;
        assert_eq!(status, 501, "{body}");
        assert!(body.contains("noexec does not support attach"), "{body}");
    }

    #[tokio::test]
    async fn port_forward_to_a_provider_that_forwards_no_ports_answers_501_naming_it() {
        let gateway = Arc::new(FakeGateway::new(vec![placed_on("web", "edge")], &["edge"]));
        let (status, body) = call(app(gateway, None), Method::POST, "/portForward/team/web").await;
        assert_eq!(status, 501, "{body}");
        assert_eq!(
            body,
            "noexec does not support port-forward: its workloads run at a cloud provider that forwards no ports (pod team/web runs on target edge)\n"
        );
    }

    #[tokio::test]
    async fn logs_of_a_pod_waiting_for_a_target_answer_503() {
        let gateway = Arc::new(FakeGateway::new(vec![pod("web", NODE, &[])], &["edge"]));
        let (status, body) = call(
            app(gateway, None),
            Method::GET,
            "/containerLogs/team/web/app",
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("pod team/web has no target yet"), "{body}");
    }

    #[tokio::test]
    async fn the_summary_lists_the_pods_the_apiserver_has_on_this_node_only() {
        let pods = vec![placed_on("web", "edge"), pod("db", "node-2", &[])];
        let gateway = Arc::new(FakeGateway::new(pods, &["edge"]));
        let (status, body) = call(app(gateway.clone(), None), Method::GET, "/stats/summary").await;
        assert_eq!(status, 200, "{body}");
        let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(summary["node"]["nodeName"], NODE);
        let names: Vec<&str> = summary["pods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["podRef"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["web"]);
        assert_eq!(
            *gateway.selectors.lock().unwrap(),
            vec![format!("spec.nodeName={NODE}")]
        );
    }

    #[tokio::test]
    async fn a_path_the_kubelet_api_does_not_serve_answers_404_naming_it() {
        let gateway = Arc::new(FakeGateway::new(vec![], &[]));
        let (status, body) = call(app(gateway, None), Method::GET, "/pods").await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("/pods is not served"), "{body}");
    }

    #[tokio::test]
    async fn a_request_without_certificate_or_token_is_refused_before_any_handler() {
        let gateway = Arc::new(FakeGateway::new(vec![placed_on("web", "edge")], &["edge"]));
        let reviewer = Reviewer::new(gateway.client().clone(), NODE.into());
        let (status, body) = call(
            app(gateway.clone(), Some(reviewer)),
            Method::GET,
            "/stats/summary",
        )
        .await;
        assert_eq!(status, 401, "{body}");
        assert!(
            gateway.selectors.lock().unwrap().is_empty(),
            "the handler ran"
        );
    }
}
