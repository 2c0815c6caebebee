//! The ACI `Provider`: ARM REST calls (api-version 2026-05-01) for one target (subscription,
//! resource group, region), each through the target's `Layers`, and the status cache that keeps
//! reads per pod low.
//!
//! HTTP goes through azure_core's `Pipeline` (request ids, user agent, header sanitizing in
//! logs, reqwest transport) with its retry policy switched off: the `Layers` retry. The bearer
//! token comes from a small policy of our own rather than azure_core's
//! `BearerTokenAuthorizationPolicy`, which refuses every non-TLS endpoint: ours requires TLS too,
//! except on loopback addresses, where the test emulator (behind Prism) serves plain HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::Transport;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{
    ClientOptions, Context, Method, Pipeline, PipelineSendOptions, Request, RetryOptions, Url,
};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;

use crate::policy::model::OperationClass;
use crate::provider::PodRejection;
use crate::provider::aci::retry::{AciError, ArmBudget, arm_error, retry_after};
use crate::provider::aci::status::{Cadence, GroupView, Known, needs_get, workload_status};
use crate::provider::aci::translate::{
    TAG_CLUSTER_ID, TAG_CREATED, TAG_NAMESPACE, TAG_NODE, TAG_POD, TAG_POD_UID, translate,
};
use crate::provider::contract::{
    Capabilities, ExecOutput, LogOptions, OutputStream, OwnedWorkload, Owner, Provider,
    ProviderError, WorkloadPhase, WorkloadSpec, WorkloadStatus,
};
use crate::provider::layers::Layers;

/// The ARM api-version every call uses.
pub const API_VERSION: &str = "2026-05-01";
/// ARM in Azure's public cloud.
pub const DEFAULT_ARM_ENDPOINT: &str = "https://management.azure.com";
/// How long a group the adapter created is looked up by GET when the list does not show it yet.
const CREATED_GRACE: Duration = Duration::from_secs(60);
/// GETs in flight at once during a status batch.
const GET_CONCURRENCY: usize = 8;
/// An exec session ends after this long, whatever the command does.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// One ACI target, as the lead builds it from the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Target name in the policy.
    pub target: String,
    /// Azure region (`eastus`).
    pub region: String,
    /// Subscription id.
    pub subscription_id: String,
    /// Resource group holding the container groups.
    pub resource_group: String,
    /// Run container groups with priority `Spot`.
    pub spot: bool,
    /// Subnets to join (private IP); empty: a public IP.
    pub subnet_ids: Vec<String>,
    /// Give public groups their name as DNS label.
    pub dns_name_label: bool,
    /// ARM endpoint ([`DEFAULT_ARM_ENDPOINT`]).
    pub arm_endpoint: String,
}

/// Where [`default_credential`] takes its identity from, in the order it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `AZURE_FEDERATED_TOKEN_FILE` (AKS workload identity), with `AZURE_TENANT_ID` and
    /// `AZURE_CLIENT_ID`.
    WorkloadIdentity,
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    ClientSecret,
    /// The managed identity of the VM or pod; user-assigned when `AZURE_CLIENT_ID` is set.
    ManagedIdentity {
        /// Client id of a user-assigned identity.
        client_id: Option<String>,
    },
}

/// Picks the credential from environment variables (`env` looks one up; empty counts as unset).
pub fn credential_source(env: impl Fn(&str) -> Option<String>) -> CredentialSource {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if get("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        CredentialSource::WorkloadIdentity
    } else if get("AZURE_TENANT_ID").is_some()
        && get("AZURE_CLIENT_ID").is_some()
        && get("AZURE_CLIENT_SECRET").is_some()
    {
        CredentialSource::ClientSecret
    } else {
        CredentialSource::ManagedIdentity {
            client_id: get("AZURE_CLIENT_ID"),
        }
    }
}

/// The HTTP transport of every Azure call (token endpoint and ARM): the platform's roots, plus
/// the PEM certificates of `extra_ca` when given (Azure Stack Hub, a TLS-inspecting egress proxy,
/// or a test emulator).
pub fn azure_transport(extra_ca: Option<&std::path::Path>) -> Result<Option<Transport>, AciError> {
    let Some(path) = extra_ca else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| {
        AciError::Credential(format!("reading the Azure CA file {}: {e}", path.display()))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        AciError::Credential(format!(
            "the Azure CA file {} is not PEM: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(AciError::Credential(format!(
            "the Azure CA file {} holds no certificate",
            path.display()
        )));
    }
    let client = reqwest::Client::builder()
        .tls_certs_merge(certs)
        .build()
        .map_err(|e| {
            AciError::Credential(format!("an HTTPS client trusting {}: {e}", path.display()))
        })?;
    Ok(Some(Transport::new(Arc::new(client))))
}

/// The standard credential chain: workload identity, then a client secret from the environment,
/// then managed identity. azure_identity honours `AZURE_AUTHORITY_HOST` (it must be https);
/// `transport` (from [`azure_transport`]) replaces the default HTTP client when given.
pub fn default_credential(
    transport: Option<Transport>,
) -> Result<Arc<dyn TokenCredential>, AciError> {
    let env = |k: &str| std::env::var(k).ok();
    let fail = |what: &str, e: azure_core::Error| AciError::Credential(format!("{what}: {e}"));
    let client_options = ClientOptions {
        transport,
        ..Default::default()
    };
    Ok(match credential_source(env) {
        CredentialSource::WorkloadIdentity => {
            let options = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                ..Default::default()
            };
            WorkloadIdentityCredential::new(Some(options))
                .map_err(|e| fail("workload identity (AZURE_FEDERATED_TOKEN_FILE)", e))?
        }
        CredentialSource::ClientSecret => {
            let var = |k: &str| std::env::var(k).unwrap_or_default();
            ClientSecretCredential::new(
                &var("AZURE_TENANT_ID"),
                var("AZURE_CLIENT_ID"),
                Secret::new(var("AZURE_CLIENT_SECRET")),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(|e| {
                fail(
                    "client secret (AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET)",
                    e,
                )
            })?
        }
        CredentialSource::ManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.map(UserAssignedId::ClientId),
                client_options,
            };
            ManagedIdentityCredential::new(Some(options))
                .map_err(|e| fail("managed identity", e))?
        }
    })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Adds `Authorization: Bearer` for ARM; TLS only, loopback excepted.
#[derive(Debug)]
struct ArmAuthPolicy {
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

#[async_trait::async_trait]
impl Policy for ArmAuthPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if request.url().scheme() != "https" && !is_loopback(request.url()) {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "ARM tokens are only sent over TLS (or to a loopback address)",
            ));
        }
        let token = self
            .credential
            .get_token(&[self.scope.as_str()], None)
            .await?;
        request.insert_header("authorization", format!("Bearer {}", token.token.secret()));
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// An ARM answer, any status.
struct ArmResponse {
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

    fn json<T: for<'de> Deserialize<'de>>(&self, what: &'static str) -> Result<T, AciError> {
        serde_json::from_slice(&self.body).map_err(|e| AciError::Decode {
            what,
            message: e.to_string(),
        })
    }
}

/// The wire: one pipeline, one resource group.
struct Arm {
    pipeline: Pipeline,
    base: Url,
    subscription_id: String,
    resource_group: String,
    target: String,
    budget: Mutex<ArmBudget>,
}

impl Arm {
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
            what: "ContainerGroups_ListByResourceGroup",
            message: format!("nextLink {link:?}: {e}"),
        })?;
        let mut url = self.base.clone();
        url.set_path(next.path());
        url.set_query(next.query());
        Ok(url)
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<azure_core::Bytes>,
    ) -> Result<ArmResponse, AciError> {
        let mut request = Request::new(url, method);
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

/// What the status cache remembers of one group.
struct Entry {
    status: WorkloadStatus,
    fingerprint: String,
    fetched: Instant,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Entry>,
    last_list: Option<(Instant, HashMap<String, GroupView>)>,
    created: HashMap<String, Instant>,
}

/// The `aci` provider for one target.
pub struct AciProvider {
    settings: Settings,
    layers: Layers,
    arm: Arm,
    cadence: Cadence,
    cache: Mutex<Cache>,
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl AciProvider {
    /// A provider for the target `settings` describes, authenticating with `credential`, calling
    /// through `layers`.
    pub fn new(
        settings: Settings,
        credential: Arc<dyn TokenCredential>,
        layers: Layers,
    ) -> AciProvider {
        AciProvider::with_transport(settings, credential, layers, None)
    }

    /// [`AciProvider::new`], sending ARM requests through `transport` (from
    /// [`azure_transport`]) when given.
    pub fn with_transport(
        settings: Settings,
        credential: Arc<dyn TokenCredential>,
        layers: Layers,
        transport: Option<Transport>,
    ) -> AciProvider {
        let endpoint = if settings.arm_endpoint.trim().is_empty() {
            DEFAULT_ARM_ENDPOINT
        } else {
            settings.arm_endpoint.trim()
        };
        let base = Url::parse(endpoint)
            .unwrap_or_else(|_| Url::parse(DEFAULT_ARM_ENDPOINT).expect("a valid default"));
        // Tokens are for ARM of the cloud the endpoint belongs to; a plain-HTTP (loopback,
        // emulator) endpoint asks for public ARM's audience.
        let scope = if base.scheme() == "https" {
            format!("{}/.default", base.as_str().trim_end_matches('/'))
        } else {
            format!("{DEFAULT_ARM_ENDPOINT}/.default")
        };
        let auth: Arc<dyn Policy> = Arc::new(ArmAuthPolicy { credential, scope });
        let options = ClientOptions {
            retry: RetryOptions::none(),
            transport,
            ..Default::default()
        };
        let pipeline = Pipeline::new(
            Some("burstgate"),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            vec![auth],
            None,
        );
        let arm = Arm {
            pipeline,
            base,
            subscription_id: settings.subscription_id.clone(),
            resource_group: settings.resource_group.clone(),
            target: settings.target.clone(),
            budget: Mutex::new(ArmBudget::default()),
        };
        AciProvider {
            settings,
            layers,
            arm,
            cadence: Cadence::default(),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The same provider re-reading groups at `cadence` (tests use [`Cadence::eager`]).
    pub fn with_cadence(mut self, cadence: Cadence) -> AciProvider {
        self.cadence = cadence;
        self
    }

    /// The target's settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What ARM last said is left of the subscription's request budget (see
    /// [`ArmBudget::low`] for how the layers could use it).
    pub fn arm_budget(&self) -> ArmBudget {
        *self.arm.budget.lock().expect("budget lock")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().expect("aci status cache lock")
    }

    async fn get_group(&self, id: &str) -> Result<Option<GroupView>, ProviderError> {
        let url = self.arm.url(&[id]);
        let response = self
            .layers
            .call(OperationClass::Read, "ContainerGroups_Get", || {
                let url = url.clone();
                async move {
                    Ok(self
                        .arm
                        .send(Method::Get, url, None)
                        .await?
                        .expect(&[200, 404])?)
                }
            })
            .await?;
        if response.status == 404 {
            return Ok(None);
        }
        Ok(Some(response.json("ContainerGroups_Get")?))
    }

    /// Every group of the resource group, following `nextLink`; one Read per page.
    async fn list_groups(&self) -> Result<Vec<GroupView>, ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            value: Vec<GroupView>,
            #[serde(default)]
            next_link: Option<String>,
        }
        let mut groups = Vec::new();
        let mut url = Some(self.arm.url(&[]));
        while let Some(current) = url.take() {
            let response = self
                .layers
                .call(
                    OperationClass::Read,
                    "ContainerGroups_ListByResourceGroup",
                    || {
                        let current = current.clone();
                        async move {
                            Ok(self
                                .arm
                                .send(Method::Get, current, None)
                                .await?
                                .expect(&[200])?)
                        }
                    },
                )
                .await?;
            let page: Page = response.json("ContainerGroups_ListByResourceGroup")?;
            groups.extend(page.value);
            if let Some(link) = page.next_link.filter(|l| !l.is_empty()) {
                url = Some(self.arm.next_link(&link)?);
            }
        }
        Ok(groups)
    }

    fn remember(&self, id: &str, status: &WorkloadStatus, fingerprint: String) {
        self.lock().entries.insert(
            id.to_string(),
            Entry {
                status: status.clone(),
                fingerprint,
                fetched: Instant::now(),
            },
        );
    }

    /// The listed groups to use for this batch: the last list when it is fresh and every id is
    /// in it and settled, else a new list.
    async fn listed(&self, ids: &[String]) -> Result<HashMap<String, GroupView>, ProviderError> {
        {
            let cache = self.lock();
            if let Some((at, groups)) = &cache.last_list
                && at.elapsed() < self.cadence.list_reuse
                && ids.iter().all(|id| {
                    groups.contains_key(id)
                        && cache
                            .entries
                            .get(id)
                            .is_some_and(|e| e.status.phase != WorkloadPhase::Pending)
                })
            {
                return Ok(groups.clone());
            }
        }
        let groups: HashMap<String, GroupView> = self
            .list_groups()
            .await?
            .into_iter()
            .filter_map(|g| g.name.clone().map(|n| (n, g)))
            .collect();
        self.lock().last_list = Some((Instant::now(), groups.clone()));
        Ok(groups)
    }
}

#[async_trait::async_trait]
impl Provider for AciProvider {
    fn name(&self) -> &'static str {
        "aci"
    }

    fn capabilities(&self) -> Capabilities {
        use crate::provider::kit::Feature::{ExecProbe, HttpGetProbe};
        Capabilities::NONE
            .running(&[ExecProbe, HttpGetProbe])
            .serving(true, true, true)
    }

    async fn create(&self, spec: &WorkloadSpec) -> Result<WorkloadStatus, ProviderError> {
        let body = translate(spec, &self.settings, &now_rfc3339())?;
        // A retried create finds the group it already made and does not PUT again: a PUT on a
        // running group would update it, and may restart it.
        if let Some(existing) = self.get_group(&spec.id).await? {
            let same_owner = existing.tag(TAG_POD_UID) == Some(spec.owner.pod_uid.as_str())
                && existing.tag(TAG_CLUSTER_ID) == Some(spec.owner.cluster_id.as_str());
            if !same_owner {
                return Err(ProviderError::cloud_pod(
                    "NameConflict",
                    format!(
                        "container group {} exists in resource group {} and does not belong to pod UID {} of cluster {}",
                        spec.id,
                        self.settings.resource_group,
                        spec.owner.pod_uid,
                        spec.owner.cluster_id
                    ),
                ));
            }
            let status = workload_status(&spec.id, &existing);
            if existing.has_instance_view() {
                self.remember(&spec.id, &status, existing.fingerprint());
            }
            return Ok(status);
        }
        let bytes = azure_core::Bytes::from(serde_json::to_vec(&body).map_err(|e| {
            ProviderError::Pod(PodRejection::Invalid {
                field: "spec".into(),
                reason: e.to_string(),
            })
        })?);
        let url = self.arm.url(&[&spec.id]);
        let response = self
            .layers
            .call(
                OperationClass::Create,
                "ContainerGroups_CreateOrUpdate",
                || {
                    let (url, bytes) = (url.clone(), bytes.clone());
                    async move {
                        Ok(self
                            .arm
                            .send(Method::Put, url, Some(bytes))
                            .await?
                            .expect(&[200, 201])?)
                    }
                },
            )
            .await?;
        // The PUT is a long-running operation (201 + Azure-AsyncOperation/Location): no polling
        // here, the status sync follows the group.
        if let Some(op) = response
            .header("azure-asyncoperation")
            .or(response.header("location"))
        {
            tracing::debug!(target_name = %self.settings.target, id = %spec.id, operation = %op, "container group create accepted");
        }
        let group: GroupView = response.json("ContainerGroups_CreateOrUpdate")?;
        let mut status = workload_status(&spec.id, &group);
        if status.phase != WorkloadPhase::Failed {
            status.phase = WorkloadPhase::Pending;
        }
        self.lock().created.insert(spec.id.clone(), Instant::now());
        Ok(status)
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        let url = self.arm.url(&[id]);
        self.layers
            .call(OperationClass::Delete, "ContainerGroups_Delete", || {
                let url = url.clone();
                async move {
                    Ok(self
                        .arm
                        .send(Method::Delete, url, None)
                        .await?
                        .expect(&[200, 202, 204, 404])?)
                }
            })
            .await?;
        let mut cache = self.lock();
        cache.entries.remove(id);
        cache.created.remove(id);
        if let Some((_, groups)) = cache.last_list.as_mut() {
            groups.remove(id);
        }
        Ok(())
    }

    async fn status(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, WorkloadStatus>, ProviderError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let listed = self.listed(ids).await?;
        let mut out = BTreeMap::new();
        let mut to_get: Vec<(String, String)> = Vec::new();
        {
            let mut cache = self.lock();
            cache.created.retain(|_, at| at.elapsed() < CREATED_GRACE);
            for id in ids {
                match listed.get(id) {
                    None if cache.created.contains_key(id) => {
                        to_get.push((id.clone(), String::new()))
                    }
                    None => {
                        cache.entries.remove(id);
                    }
                    Some(group) => {
                        let known = cache.entries.get(id).map(|e| Known {
                            phase: e.status.phase.clone(),
                            fingerprint: e.fingerprint.clone(),
                            age: e.fetched.elapsed(),
                        });
                        if group.has_instance_view() {
                            out.insert(id.clone(), workload_status(id, group));
                        } else if needs_get(known.as_ref(), group, &self.cadence) {
                            to_get.push((id.clone(), group.fingerprint()));
                        } else if let Some(e) = cache.entries.get(id) {
                            out.insert(id.clone(), e.status.clone());
                        }
                    }
                }
            }
        }
        let fetched: Vec<(String, String, Result<Option<GroupView>, ProviderError>)> =
            futures::stream::iter(to_get)
                .map(|(id, fingerprint)| async move {
                    let got = self.get_group(&id).await;
                    (id, fingerprint, got)
                })
                .buffer_unordered(GET_CONCURRENCY)
                .collect()
                .await;
        for (id, fingerprint, got) in fetched {
            match got? {
                Some(group) => {
                    let status = workload_status(&id, &group);
                    let fingerprint = if fingerprint.is_empty() {
                        group.fingerprint()
                    } else {
                        fingerprint
                    };
                    self.remember(&id, &status, fingerprint);
                    out.insert(id, status);
                }
                None => {
                    self.lock().entries.remove(&id);
                }
            }
        }
        Ok(out)
    }

    async fn list_owned(
        &self,
        cluster_id: &str,
        node: &str,
    ) -> Result<Vec<OwnedWorkload>, ProviderError> {
        let now = Utc::now();
        Ok(self
            .list_groups()
            .await?
            .into_iter()
            .filter(|g| g.tag(TAG_CLUSTER_ID) == Some(cluster_id) && g.tag(TAG_NODE) == Some(node))
            .filter_map(|g| {
                let id = g.name.clone()?;
                let created = g.tag(TAG_CREATED).and_then(parse_time).or_else(|| {
                    g.system_data
                        .as_ref()?
                        .created_at
                        .as_deref()
                        .and_then(parse_time)
                });
                let age = created
                    .and_then(|c| (now - c).to_std().ok())
                    .unwrap_or(Duration::ZERO);
                let tag = |k: &str| g.tag(k).unwrap_or_default().to_string();
                Some(OwnedWorkload {
                    owner: Owner {
                        cluster_id: tag(TAG_CLUSTER_ID),
                        node: tag(TAG_NODE),
                        namespace: tag(TAG_NAMESPACE),
                        pod: tag(TAG_POD),
                        pod_uid: tag(TAG_POD_UID),
                    },
                    id,
                    age,
                    leftover: false,
                })
            })
            .collect())
    }

    async fn logs(
        &self,
        id: &str,
        container: &str,
        opts: &LogOptions,
    ) -> Result<String, ProviderError> {
        #[derive(Deserialize)]
        struct Logs {
            #[serde(default)]
            content: Option<String>,
        }
        let mut url = self.arm.url(&[id, "containers", container, "logs"]);
        if let Some(n) = opts.tail_lines {
            url.query_pairs_mut()
                .append_pair("tail", &n.min(i32::MAX as u64).to_string());
        }
        let stamped = opts.timestamps || opts.since_seconds.is_some();
        if stamped {
            url.query_pairs_mut().append_pair("timestamps", "true");
        }
        let response = self
            .layers
            .call(OperationClass::Read, "Containers_ListLogs", || {
                let url = url.clone();
                async move {
                    Ok(self
                        .arm
                        .send(Method::Get, url, None)
                        .await?
                        .expect(&[200])?)
                }
            })
            .await?;
        let content = response
            .json::<Logs>("Containers_ListLogs")?
            .content
            .unwrap_or_default();
        let since = opts
            .since_seconds
            .map(|s| Utc::now() - chrono::Duration::seconds(s.min(i64::MAX as u64) as i64));
        Ok(filter_log(&content, since, opts.timestamps && stamped))
    }

    async fn exec(
        &self,
        id: &str,
        container: &str,
        command: &[String],
    ) -> Result<ExecOutput, ProviderError> {
        let line = exec_command_line(command)?;
        let url = self.arm.url(&[id, "containers", container, "exec"]);
        let body = azure_core::Bytes::from(
            serde_json::json!({"command": line, "terminalSize": {"rows": 24, "cols": 80}})
                .to_string(),
        );
        // ARM counts this POST as a write; it is classed Read because the Create class also
        // draws from ACI's container-group create quota, which an exec does not use.
        let response = self
            .layers
            .call(OperationClass::Read, "Containers_ExecuteCommand", || {
                let (url, body) = (url.clone(), body.clone());
                async move {
                    Ok(self
                        .arm
                        .send(Method::Post, url, Some(body))
                        .await?
                        .expect(&[200])?)
                }
            })
            .await?;
        let session: SessionResponse = response.json("Containers_ExecuteCommand")?;
        let (Some(uri), Some(password)) = (session.web_socket_uri, session.password) else {
            return Err(AciError::Decode {
                what: "Containers_ExecuteCommand",
                message: "no webSocketUri or password".into(),
            }
            .into());
        };
        let stdout = tokio::time::timeout(EXEC_TIMEOUT, exec_session(&uri, password))
            .await
            .map_err(|_| AciError::Exec(format!("no end of output within {EXEC_TIMEOUT:?}")))??;
        Ok(ExecOutput {
            stdout,
            stderr: String::new(),
            exit_code: None,
        })
    }

    async fn attach(&self, id: &str, container: &str) -> Result<OutputStream, ProviderError> {
        let url = self.arm.url(&[id, "containers", container, "attach"]);
        // Classed Read for the same reason as exec: it creates nothing.
        let response = self
            .layers
            .call(OperationClass::Read, "Containers_Attach", || {
                let url = url.clone();
                async move {
                    Ok(self
                        .arm
                        .send(Method::Post, url, None)
                        .await?
                        .expect(&[200])?)
                }
            })
            .await?;
        let session: SessionResponse = response.json("Containers_Attach")?;
        let (Some(uri), Some(password)) = (session.web_socket_uri, session.password) else {
            return Err(AciError::Decode {
                what: "Containers_Attach",
                message: "no webSocketUri or password".into(),
            }
            .into());
        };
        Ok(attach_session(&uri, &password).await?)
    }
}

/// The `{webSocketUri, password}` of Containers_ExecuteCommand and Containers_Attach.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionResponse {
    web_socket_uri: Option<String>,
    password: Option<String>,
}

/// Refuses to send a session password in clear text anywhere but a loopback address.
fn check_session_uri(uri: &str, what: fn(String) -> AciError) -> Result<(), AciError> {
    let parsed = Url::parse(uri).map_err(|e| what(format!("webSocketUri: {e}")))?;
    if parsed.scheme() != "wss" && !is_loopback(&parsed) {
        return Err(what(
            "the session password is only sent over TLS (or to a loopback address)".into(),
        ));
    }
    Ok(())
}

/// Connects to the attach websocket with the password as its `Authorization` header (as the
/// spec's `ContainerAttachResponse` says), and streams the messages as they come; the stream ends
/// when the server closes (the container stopped) and the socket closes when it is dropped.
async fn attach_session(uri: &str, password: &str) -> Result<OutputStream, AciError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};
    check_session_uri(uri, AciError::Attach)?;
    let mut request = uri
        .into_client_request()
        .map_err(|e| AciError::Attach(format!("webSocketUri: {e}")))?;
    request.headers_mut().insert(
        "Authorization",
        password
            .parse()
            .map_err(|_| AciError::Attach("the password is not a header value".into()))?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| AciError::Attach(format!("connecting: {e}")))?;
    let output = ws
        .take_while(|m| {
            std::future::ready(!matches!(
                m,
                Ok(Message::Close(_)) | Err(WsError::ConnectionClosed | WsError::Protocol(_))
            ))
        })
        .filter_map(|m| {
            std::future::ready(match m {
                Ok(Message::Text(t)) => Some(Ok(t.as_bytes().to_vec())),
                Ok(Message::Binary(b)) => Some(Ok(b.to_vec())),
                Ok(_) => None,
                Err(e) => Some(Err(ProviderError::from(AciError::Attach(format!(
                    "reading: {e}"
                ))))),
            })
        });
    Ok(output.boxed())
}

/// ACI's exec takes one string and splits it on spaces itself, with no quoting: an argument with
/// whitespace cannot be passed.
fn exec_command_line(command: &[String]) -> Result<String, ProviderError> {
    if command.is_empty() {
        return Err(ProviderError::Pod(PodRejection::Invalid {
            field: "command".into(),
            reason: "exec needs a command".into(),
        }));
    }
    if let Some((i, arg)) = command
        .iter()
        .enumerate()
        .find(|(_, a)| a.is_empty() || a.chars().any(char::is_whitespace))
    {
        return Err(ProviderError::Pod(PodRejection::Unsupported {
            field: format!("command[{i}]"),
            reason: format!(
                "exec argument {i} ({arg:?}) is empty or contains whitespace: ACI splits the command line on spaces and has no quoting"
            ),
        }));
    }
    Ok(command.join(" "))
}

/// Connects to the exec websocket, authenticates with the password (the first message, as ACI
/// wants), and collects the output until the server closes.
async fn exec_session(uri: &str, password: String) -> Result<String, AciError> {
    check_session_uri(uri, AciError::Exec)?;
    let (mut ws, _) = tokio_tungstenite::connect_async(uri)
        .await
        .map_err(|e| AciError::Exec(format!("connecting: {e}")))?;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        password.into(),
    ))
    .await
    .map_err(|e| AciError::Exec(format!("authenticating: {e}")))?;
    let mut out = Vec::new();
    while let Some(message) = ws.next().await {
        use tokio_tungstenite::tungstenite::Message;
        match message {
            Ok(Message::Text(t)) => out.extend_from_slice(t.as_bytes()),
            Ok(Message::Binary(b)) => out.extend_from_slice(&b),
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(
                tokio_tungstenite::tungstenite::Error::ConnectionClosed
                | tokio_tungstenite::tungstenite::Error::Protocol(_),
            ) => break,
            Err(e) => return Err(AciError::Exec(format!("reading: {e}"))),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Keeps the lines at or after `since` (lines carry ACI's leading RFC 3339 timestamp then) and
/// strips the timestamps unless `keep_timestamps`.
fn filter_log(content: &str, since: Option<DateTime<Utc>>, keep_timestamps: bool) -> String {
    let stamped = since.is_some() || keep_timestamps;
    let mut out = String::new();
    for line in content.lines() {
        let (ts, rest) = match line.split_once(' ') {
            Some((ts, rest)) if stamped && parse_time(ts).is_some() => (parse_time(ts), rest),
            _ => (None, line),
        };
        if let (Some(since), Some(ts)) = (since, ts)
            && ts < since
        {
            continue;
        }
        out.push_str(if keep_timestamps { line } else { rest });
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::ProviderKind;

    #[test]
    fn the_credential_chain_prefers_workload_identity_then_a_client_secret_then_managed_identity() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            credential_source(env(&[
                ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/t"),
                ("AZURE_CLIENT_SECRET", "s")
            ])),
            CredentialSource::WorkloadIdentity
        );
        assert_eq!(
            credential_source(env(&[
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "s")
            ])),
            CredentialSource::ClientSecret
        );
        assert_eq!(
            credential_source(env(&[
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "")
            ])),
            CredentialSource::ManagedIdentity {
                client_id: Some("c".into())
            }
        );
        assert_eq!(
            credential_source(env(&[])),
            CredentialSource::ManagedIdentity { client_id: None }
        );
    }

    #[test]
    fn an_exec_argument_with_whitespace_is_refused_because_aci_splits_on_spaces() {
        assert_eq!(
            exec_command_line(&["ls".into(), "-l".into()]).unwrap(),
            "ls -l"
        );
        let e = exec_command_line(&["sh".into(), "-c".into(), "echo hi".into()]).unwrap_err();
        assert!(
            matches!(&e, ProviderError::Pod(PodRejection::Unsupported { field, .. }) if field == "command[2]"),
            "{e:?}"
        );
    }

    #[test]
    fn a_session_password_is_only_sent_over_tls_or_to_a_loopback_address() {
        let check = |uri| check_session_uri(uri, AciError::Attach);
        assert!(check("wss://aci.example/attach/1").is_ok());
        assert!(check("ws://127.0.0.1:4012/_attach/1").is_ok());
        let err = check("ws://aci.example/attach/1").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("attach websocket: the session password is only sent over TLS"),
            "{err}"
        );
        assert!(check("not a uri").is_err());
    }

    #[test]
    fn logs_since_a_time_keep_newer_lines_and_drop_their_timestamps() {
        let content = "2026-11-27T07:00:00Z old line\n2026-11-27T07:05:00Z new line\n";
        let since = parse_time("2026-11-27T07:01:00Z");
        assert_eq!(filter_log(content, since, false), "new line\n");
        assert_eq!(
            filter_log(content, since, true),
            "2026-11-27T07:05:00Z new line\n"
        );
        assert_eq!(filter_log("plain\n", None, false), "plain\n");
    }

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
        let p = AciProvider::new(
            settings,
            Arc::new(NoCredential),
            Layers::unlimited(ProviderKind::Aci, "t", "eastus"),
        );
        assert_eq!(
            p.arm.url(&["bg-1"]).as_str(),
            "http://127.0.0.1:4011/subscriptions/sub/resourceGroups/my%20rg/providers/Microsoft.ContainerInstance/containerGroups/bg-1?api-version=2026-05-01"
        );
        let next = p
            .arm
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
