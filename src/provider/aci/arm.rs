//! The ARM wire of one target: the container-group URLs, the seven ACI operations, and
//! [`Arm::call`], the one place a request goes through the target's `Layers` and its failure
//! becomes a [`ProviderError`].

use std::sync::{Arc, Mutex};

use azure_core::credentials::TokenCredential;
use azure_core::http::{Context, Method, Pipeline, PipelineSendOptions, Request, Transport, Url};
use serde::Deserialize;

use crate::policy::model::OperationClass;
use crate::provider::PodRejection;
use crate::provider::aci::credentials::arm_pipeline;
use crate::provider::aci::retry::{AciError, ArmBudget, arm_error, retry_after};
use crate::provider::aci::settings::{DEFAULT_ARM_ENDPOINT, Settings};
use crate::provider::aci::status::GroupView;
use crate::provider::aci::usage::{self, MetricsResponse};
use crate::provider::aci::wire::ContainerGroupBody;
use crate::provider::contract::{ProviderError, TerminalSize};
use crate::provider::layers::Layers;

/// The ARM api-version every call uses.
pub(crate) const API_VERSION: &str = "2026-05-01";

/// One ACI operation of the spec: its name (the `Layers`' api label and the error's `what`), its
/// method, the rate-limit class it draws from, and the statuses that mean success.
#[derive(Debug)]
struct Operation {
    api: &'static str,
    method: Method,
    class: OperationClass,
    ok: &'static [u16],
}

const GET_GROUP: Operation = Operation {
    api: "ContainerGroups_Get",
    method: Method::Get,
    class: OperationClass::Read,
    ok: &[200, 404],
};
const LIST_GROUPS: Operation = Operation {
    api: "ContainerGroups_ListByResourceGroup",
    method: Method::Get,
    class: OperationClass::Read,
    ok: &[200],
};
const PUT_GROUP: Operation = Operation {
    api: "ContainerGroups_CreateOrUpdate",
    method: Method::Put,
    class: OperationClass::Create,
    ok: &[200, 201],
};
const DELETE_GROUP: Operation = Operation {
    api: "ContainerGroups_Delete",
    method: Method::Delete,
    class: OperationClass::Delete,
    ok: &[200, 202, 204, 404],
};
// A write that ends a workload's compute, made only on the way to its delete: classed Delete.
const STOP_GROUP: Operation = Operation {
    api: "ContainerGroups_Stop",
    method: Method::Post,
    class: OperationClass::Delete,
    ok: &[204, 404],
};
const LIST_LOGS: Operation = Operation {
    api: "Containers_ListLogs",
    method: Method::Get,
    class: OperationClass::Read,
    ok: &[200],
};
// ARM counts this POST as a write; it is classed Read because the Create class also draws from
// ACI's container-group create quota, which an exec does not use.
const EXEC: Operation = Operation {
    api: "Containers_ExecuteCommand",
    method: Method::Post,
    class: OperationClass::Read,
    ok: &[200],
};
// Classed Read for the same reason as exec: it creates nothing.
const ATTACH: Operation = Operation {
    api: "Containers_Attach",
    method: Method::Post,
    class: OperationClass::Read,
    ok: &[200],
};

// Azure Monitor's Metrics_List on a group (not in ACI's spec; same ARM host in Azure).
const METRICS: Operation = Operation {
    api: "Metrics_List",
    method: Method::Get,
    class: OperationClass::Read,
    ok: &[200],
};

/// Azure Monitor's metrics api-version.
pub(crate) const MONITOR_API_VERSION: &str = "2018-01-01";

/// An ARM answer, any status, to the operation named `api`.
struct ArmResponse {
    api: &'static str,
    status: u16,
    headers: Vec<(String, String)>,
    body: azure_core::Bytes,
}

impl ArmResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Ok(self)` when the status is one of `ok`, else the classified ARM error.
    fn expect(self, ok: &[u16]) -> Result<ArmResponse, AciError> {
        if ok.contains(&self.status) {
            return Ok(self);
        }
        let after = retry_after(|n| self.header(n));
        Err(arm_error(self.status, &self.body, after))
    }

    fn json<T: for<'de> Deserialize<'de>>(&self) -> Result<T, AciError> {
        serde_json::from_slice(&self.body).map_err(|e| AciError::Decode {
            what: self.api,
            message: e.to_string(),
        })
    }
}

/// The `{webSocketUri, password}` of Containers_ExecuteCommand and Containers_Attach, both there.
#[derive(Debug)]
pub(crate) struct Session {
    /// Where the websocket is.
    pub(crate) uri: String,
    /// What authenticates it.
    pub(crate) password: String,
}

/// The wire: one pipeline, one resource group, the target's layers.
pub(crate) struct Arm {
    pipeline: Pipeline,
    base: Url,
    monitor: Url,
    subscription_id: String,
    resource_group: String,
    target: String,
    budget: Mutex<ArmBudget>,
    layers: Layers,
}

impl Arm {
    /// The wire of the target `settings` describes, authenticating with `credential`, calling
    /// through `layers` and `transport` (from
    /// [`azure_transport`](crate::provider::aci::azure_transport)) when given.
    pub(crate) fn new(
        settings: &Settings,
        credential: Arc<dyn TokenCredential>,
        layers: Layers,
        transport: Option<Transport>,
    ) -> Arm {
        let endpoint = if settings.arm_endpoint.trim().is_empty() {
            DEFAULT_ARM_ENDPOINT
        } else {
            settings.arm_endpoint.trim()
        };
        let base = Url::parse(endpoint)
            .unwrap_or_else(|_| Url::parse(DEFAULT_ARM_ENDPOINT).expect("a valid default"));
        let monitor = Some(settings.monitor_endpoint.trim())
            .filter(|m| !m.is_empty())
            .and_then(|m| Url::parse(m).ok())
            .unwrap_or_else(|| base.clone());
        Arm {
            pipeline: arm_pipeline(&base, credential, transport),
            base,
            monitor,
            subscription_id: settings.subscription_id.clone(),
            resource_group: settings.resource_group.clone(),
            target: settings.target.clone(),
            budget: Mutex::new(ArmBudget::default()),
            layers,
        }
    }

    /// What ARM last said is left of the subscription's request budget.
    pub(crate) fn budget(&self) -> ArmBudget {
        *self.budget.lock().expect("budget lock")
    }

    /// The group `id`, or `None` when ARM has none of that name.
    pub(crate) async fn get_group(&self, id: &str) -> Result<Option<GroupView>, ProviderError> {
        let response = self.call(&GET_GROUP, self.url(&[id]), None).await?;
        if response.status == 404 {
            return Ok(None);
        }
        Ok(Some(response.json()?))
    }

    /// Every group of the resource group, following `nextLink`, and the pages read (one Read
    /// each).
    pub(crate) async fn list_groups(&self) -> Result<(Vec<GroupView>, usize), ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            value: Vec<GroupView>,
            #[serde(default)]
            next_link: Option<String>,
        }
        let (mut groups, mut pages) = (Vec::new(), 0);
        let mut url = Some(self.url(&[]));
        while let Some(current) = url.take() {
            let page: Page = self.call(&LIST_GROUPS, current, None).await?.json()?;
            pages += 1;
            groups.extend(page.value);
            if let Some(link) = page.next_link.filter(|l| !l.is_empty()) {
                url = Some(self.next_link(&link)?);
            }
        }
        Ok((groups, pages))
    }

    /// PUTs the group `id`; ARM's answer (a long-running operation, not polled: the status sync
    /// follows the group).
    pub(crate) async fn put_group(
        &self,
        id: &str,
        body: &ContainerGroupBody,
    ) -> Result<GroupView, ProviderError> {
        let bytes = azure_core::Bytes::from(serde_json::to_vec(body).map_err(|e| {
            ProviderError::Pod(PodRejection::Invalid {
                field: "spec".into(),
                reason: e.to_string(),
            })
        })?);
        let response = self.call(&PUT_GROUP, self.url(&[id]), Some(bytes)).await?;
        if let Some(op) = response
            .header("azure-asyncoperation")
            .or(response.header("location"))
        {
            tracing::debug!(target_name = %self.target, id = %id, operation = %op, "container group create accepted");
        }
        Ok(response.json()?)
    }

    /// Deletes the group `id`; one that is already gone counts as deleted.
    pub(crate) async fn delete_group(&self, id: &str) -> Result<(), ProviderError> {
        self.call(&DELETE_GROUP, self.url(&[id]), None).await?;
        Ok(())
    }

    /// Stops every container of the group (ACI answers 204 once they are stopped, and bills no
    /// more); a group that is gone counts as stopped.
    pub(crate) async fn stop_group(&self, id: &str) -> Result<(), ProviderError> {
        self.call(&STOP_GROUP, self.url(&[id, "stop"]), None)
            .await?;
        Ok(())
    }

    /// A container's log text: its last `tail` lines when given, each line behind its RFC 3339
    /// time when `timestamps`.
    pub(crate) async fn container_logs(
        &self,
        id: &str,
        container: &str,
        tail: Option<u64>,
        timestamps: bool,
    ) -> Result<String, ProviderError> {
        #[derive(Deserialize)]
        struct Logs {
            #[serde(default)]
            content: Option<String>,
        }
        let mut url = self.url(&[id, "containers", container, "logs"]);
        if let Some(n) = tail {
            url.query_pairs_mut()
                .append_pair("tail", &n.min(i32::MAX as u64).to_string());
        }
        if timestamps {
            url.query_pairs_mut().append_pair("timestamps", "true");
        }
        let logs: Logs = self.call(&LIST_LOGS, url, None).await?.json()?;
        Ok(logs.content.unwrap_or_default())
    }

    /// Starts `line` in a container with a terminal of `size`: the session of its exec
    /// websocket.
    pub(crate) async fn open_exec(
        &self,
        id: &str,
        container: &str,
        line: &str,
        size: TerminalSize,
    ) -> Result<Session, ProviderError> {
        let url = self.url(&[id, "containers", container, "exec"]);
        let terminal = serde_json::json!({"rows": size.height, "cols": size.width});
        let body = azure_core::Bytes::from(
            serde_json::json!({"command": line, "terminalSize": terminal}).to_string(),
        );
        self.open_session(&EXEC, url, Some(body)).await
    }

    /// The session of a container's attach websocket.
    pub(crate) async fn open_attach(
        &self,
        id: &str,
        container: &str,
    ) -> Result<Session, ProviderError> {
        let url = self.url(&[id, "containers", container, "attach"]);
        self.open_session(&ATTACH, url, None).await
    }

    /// Azure Monitor's CPU and memory metrics of the group `id`, per container and minute, over
    /// the [`LOOKBACK`](crate::provider::aci::usage::LOOKBACK) before `now`.
    pub(crate) async fn group_metrics(
        &self,
        id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<MetricsResponse, ProviderError> {
        let from = now - chrono::Duration::from_std(usage::LOOKBACK).expect("minutes");
        let stamp =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut url = self.monitor.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("the Azure Monitor endpoint is a base URL");
            path.pop_if_empty();
            path.extend([
                "subscriptions",
                &self.subscription_id,
                "resourceGroups",
                &self.resource_group,
                "providers",
                "Microsoft.ContainerInstance",
                "containerGroups",
                id,
                "providers",
                "Microsoft.Insights",
                "metrics",
            ]);
        }
        url.query_pairs_mut()
            .append_pair("api-version", MONITOR_API_VERSION)
            .append_pair("metricnames", usage::METRIC_NAMES)
            .append_pair("aggregation", "Average")
            .append_pair("interval", "PT1M")
            .append_pair("timespan", &format!("{}/{}", stamp(from), stamp(now)))
            .append_pair("$filter", "containerName eq '*'");
        Ok(self.call(&METRICS, url, None).await?.json()?)
    }

    async fn open_session(
        &self,
        op: &Operation,
        url: Url,
        body: Option<azure_core::Bytes>,
    ) -> Result<Session, ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct SessionResponse {
            web_socket_uri: Option<String>,
            password: Option<String>,
        }
        let session: SessionResponse = self.call(op, url, body).await?.json()?;
        let (Some(uri), Some(password)) = (session.web_socket_uri, session.password) else {
            return Err(AciError::Decode {
                what: op.api,
                message: "no webSocketUri or password".into(),
            }
            .into());
        };
        Ok(Session { uri, password })
    }

    /// The one way to ARM: `op` on `url` through the target's `Layers` (rate limit, timeout,
    /// retry, circuit), an answer outside `op`'s success statuses classified by
    /// [`retry`](crate::provider::aci::retry).
    async fn call(
        &self,
        op: &Operation,
        url: Url,
        body: Option<azure_core::Bytes>,
    ) -> Result<ArmResponse, ProviderError> {
        self.layers
            .call(op.class, op.api, || {
                let (url, body) = (url.clone(), body.clone());
                async move { Ok(self.send(op, url, body).await?.expect(op.ok)?) }
            })
            .await
    }

    /// `.../containerGroups[/<name>[/<more>...]]?api-version=...`
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("the ARM endpoint is a base URL");
            path.pop_if_empty();
            path.extend([
                "subscriptions",
                &self.subscription_id,
                "resourceGroups",
                &self.resource_group,
                "providers",
                "Microsoft.ContainerInstance",
                "containerGroups",
            ]);
            path.extend(segments);
        }
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        url
    }

    /// A `nextLink` rebased on our endpoint: its path and query only, so the bearer token never
    /// goes to a host we were not configured with.
    fn next_link(&self, link: &str) -> Result<Url, AciError> {
        let next = Url::parse(link).map_err(|e| AciError::Decode {
            what: LIST_GROUPS.api,
            message: format!("nextLink {link:?}: {e}"),
        })?;
        let mut url = self.base.clone();
        url.set_path(next.path());
        url.set_query(next.query());
        Ok(url)
    }

    async fn send(
        &self,
        op: &Operation,
        url: Url,
        body: Option<azure_core::Bytes>,
    ) -> Result<ArmResponse, AciError> {
        let mut request = Request::new(url, op.method);
        request.insert_header("accept", "application/json");
        if let Some(body) = body {
            request.insert_header("content-type", "application/json");
            request.set_body(body);
        }
        let ctx = Context::new();
        let options = PipelineSendOptions {
            skip_checks: true,
            ..Default::default()
        };
        let response = self
            .pipeline
            .send(&ctx, &mut request, Some(options))
            .await
            .map_err(|e| match e.kind() {
                azure_core::error::ErrorKind::Credential => AciError::Credential(e.to_string()),
                _ => AciError::Transport(e.to_string()),
            })?;
        let (status, headers, body) = response.deconstruct();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.as_str().to_string()))
            .collect();
        let response = ArmResponse {
            api: op.api,
            status: u16::from(status),
            headers,
            body: azure_core::Bytes::copy_from_slice(body.as_ref()),
        };
        self.note_budget(&response);
        Ok(response)
    }

    fn note_budget(&self, response: &ArmResponse) {
        let seen = ArmBudget::from_headers(|n| response.header(n));
        let mut budget = self.budget.lock().expect("budget lock");
        budget.reads = seen.reads.or(budget.reads);
        budget.writes = seen.writes.or(budget.writes);
        budget.deletes = seen.deletes.or(budget.deletes);
        if let Some(hint) = seen.low() {
            tracing::warn!(target_name = %self.target, reads = ?seen.reads, writes = ?seen.writes, deletes = ?seen.deletes, "{hint}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::ProviderKind;

    #[test]
    fn next_links_are_rebased_on_the_configured_endpoint() {
        let settings = Settings {
            target: "t".into(),
            region: "eastus".into(),
            subscription_id: "sub".into(),
            resource_group: "my rg".into(),
            spot: false,
            subnet_ids: vec![],
            dns_name_label: false,
            arm_endpoint: "http://127.0.0.1:4011".into(),
            monitor_endpoint: String::new(),
            usage_refresh: crate::provider::kit::usage::DEFAULT_REFRESH,
            cluster_dns: None,
            kube_proxy: None,
        };
        #[derive(Debug)]
        struct NoCredential;
        #[async_trait::async_trait]
        impl TokenCredential for NoCredential {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
            ) -> azure_core::Result<azure_core::credentials::AccessToken> {
                Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "none",
                ))
            }
        }
        let arm = Arm::new(
            &settings,
            Arc::new(NoCredential),
            Layers::unlimited(ProviderKind::Aci, "t", "eastus"),
            None,
        );
        assert_eq!(
            arm.url(&["bg-1"]).as_str(),
            "http://127.0.0.1:4011/subscriptions/sub/resourceGroups/my%20rg/providers/Microsoft.ContainerInstance/containerGroups/bg-1?api-version=2026-05-01"
        );
        let next = arm
            .next_link(
                "https://evil.example/subscriptions/sub/x?api-version=2026-05-01&$skiptoken=abc",
            )
            .unwrap();
        assert_eq!(
            next.as_str(),
            "http://127.0.0.1:4011/subscriptions/sub/x?api-version=2026-05-01&$skiptoken=abc"
        );
    }
}
