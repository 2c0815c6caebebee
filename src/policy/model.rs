//! The policy file format operators write (`policies/*.yaml`), as serde types; `load.rs` checks them.
//!
//! These types mirror the YAML one to one: `deny_unknown_fields` everywhere, camelCase keys, a doc
//! comment on every field (it becomes the description in `policies/schema.json`). Nothing here is
//! validated beyond its shape; [`crate::policy::load`] turns a set of documents into a checked
//! [`crate::policy::Policy`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "burstgate.io/v1alpha1";
/// The only `kind` of policy document.
pub const KIND: &str = "BurstPolicy";

/// One policy file: `apiVersion: burstgate.io/v1alpha1`, `kind: BurstPolicy`, `spec`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDocument {
    /// Must be `burstgate.io/v1alpha1`.
    pub api_version: String,
    /// Must be `BurstPolicy`.
    pub kind: String,
    /// Optional name and labels of this document, for humans.
    #[serde(default)]
    pub metadata: Metadata,
    /// Targets, budgets, rules and defaults. Files are merged in name order.
    #[serde(default)]
    pub spec: PolicySpec,
}

/// Descriptive metadata; not used for decisions.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// A name for this document.
    #[serde(default)]
    pub name: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The body of a policy document.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// Where pods can run: a provider in a region, with prices, quota, latency and limits.
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    /// Caps on what a group of pods (by namespace and/or labels) may use across all targets.
    #[serde(default)]
    pub budgets: Vec<BudgetSpec>,
    /// Ordered rules; the first whose `match` fits the pod decides (files in name order).
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Objective and no-target behaviour for rules that do not set them (at most one file).
    #[serde(default)]
    pub defaults: Option<DefaultsSpec>,
}

/// Which kind of backend runs a target's pods.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Azure Container Instances, over Azure Resource Manager.
    Aci,
    /// AWS ECS on Fargate.
    Fargate,
    /// Back on the cluster's own nodes (a shadow pod).
    Cluster,
    /// The in-process simulated provider (demos, the simulator).
    Sim,
}

impl ProviderKind {
    /// The name used in policy files, annotations and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Aci => "aci",
            ProviderKind::Fargate => "fargate",
            ProviderKind::Cluster => "cluster",
            ProviderKind::Sim => "sim",
        }
    }

    /// Parses the policy-file spelling (`aci`, `fargate`, `cluster`, `sim`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "aci" => Some(ProviderKind::Aci),
            "fargate" => Some(ProviderKind::Fargate),
            "cluster" => Some(ProviderKind::Cluster),
            "sim" => Some(ProviderKind::Sim),
            _ => None,
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A place pods can burst to.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetSpec {
    /// Unique name across all policy files (lowercase letters, digits, `-`).
    pub name: String,
    /// `aci`, `fargate`, `cluster` or `sim`.
    pub provider: ProviderKind,
    /// Cloud region (e.g. `eastus`, `us-east-1`); for `cluster`, any label such as `local`.
    pub region: String,
    /// What one hour of this target costs, in USD.
    #[serde(default)]
    pub pricing: PricingSpec,
    /// Spot / preemptible capacity: only rules with `allow.spot: true` may use it.
    #[serde(default)]
    pub spot: bool,
    /// What may run here at once; an absent field means unlimited.
    #[serde(default)]
    pub quota: QuotaSpec,
    /// Expected round-trip latency from the cluster's users, in milliseconds.
    #[serde(default)]
    pub latency_ms: u32,
    /// Per-pod limits: biggest pod, GPU SKUs offered.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Overrides of the adapter's default request buckets for this target.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitSpec>,
    /// Where an `aci` target's container groups go (required by `burstgate run` for `aci`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aci: Option<AciSpec>,
    /// Where a `fargate` target's tasks go (required by `burstgate run` for `fargate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fargate: Option<FargateSpec>,
    /// Where a `cluster` target's shadow pods go (optional: namespace `burstgate-shadow` of this cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSpec>,
}

/// An ACI target's subscription, resource group and networking. Credentials come from the
/// standard Azure chain (workload identity, client secret in env, managed identity), never from
/// policy files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AciSpec {
    /// Azure subscription id.
    pub subscription_id: String,
    /// Resource group the container groups are created in (it must exist).
    pub resource_group: String,
    /// Delegated subnets (full resource ids): container groups get private IPs there. Empty:
    /// a public IP.
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// With a public IP: a DNS label (the workload id) so the group gets an FQDN.
    #[serde(default)]
    pub dns_name_label: bool,
}

/// A Fargate target's ECS cluster and networking. Credentials come from the standard AWS chain
/// (IRSA web identity, env, instance profile), never from policy files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FargateSpec {
    /// ECS cluster name or ARN (it must exist).
    pub cluster: String,
    /// awsvpc subnets the tasks' ENIs go in.
    pub subnets: Vec<String>,
    /// Security groups of the tasks' ENIs.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Give tasks a public IP (needed in public subnets without NAT to pull images).
    #[serde(default)]
    pub assign_public_ip: bool,
    /// Task execution role (pulls images, reads Secrets Manager secrets, writes logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// Role the task's containers run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    /// CloudWatch Logs group for the `awslogs` driver (logs are then readable with `kubectl logs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
}

/// Where a `cluster` target's shadow pods run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Namespace of the shadow pods (it must exist).
    #[serde(default = "default_shadow_namespace")]
    pub namespace: String,
    /// Kubeconfig of another cluster; absent: the gateway's own cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
}

fn default_shadow_namespace() -> String {
    "burstgate-shadow".into()
}

/// Prices in USD.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PricingSpec {
    /// USD per vCPU-hour.
    #[serde(default)]
    pub vcpu_hour: f64,
    /// USD per GiB-hour of memory.
    #[serde(default)]
    pub gib_hour: f64,
    /// Minimum billed duration of one pod, in seconds (Fargate: 60).
    #[serde(default)]
    pub minimum_seconds: u32,
}

/// Capacity a target offers to burstgate; absent means unlimited.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QuotaSpec {
    /// vCPU in use at once (ACI: 100 cores per region by default).
    #[serde(default)]
    pub vcpu: Option<f64>,
    /// Memory in use at once, GiB.
    #[serde(default, rename = "memoryGiB")]
    pub memory_gib: Option<f64>,
    /// Pods at once (ACI: 100 container groups per region by default).
    #[serde(default)]
    pub pods: Option<u32>,
    /// USD per hour of everything running here at once.
    #[serde(default)]
    pub hourly_cost: Option<f64>,
}

/// What one pod may ask of a target.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Largest pod, in vCPU (after provider rounding).
    #[serde(default)]
    pub max_pod_vcpu: Option<f64>,
    /// Largest pod, in GiB (after provider rounding).
    #[serde(default, rename = "maxPodMemoryGiB")]
    pub max_pod_memory_gib: Option<f64>,
    /// GPU SKUs offered (e.g. `V100`, `T4`); a pod asking for `nvidia.com/gpu` needs one.
    #[serde(default)]
    pub gpus: Vec<String>,
}

/// A class of provider requests that shares one token bucket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum OperationClass {
    /// Creating a workload (ACI container group PUT, ECS RunTask).
    Create,
    /// Deleting or stopping a workload.
    Delete,
    /// Reading status (ARM GET/list, ECS DescribeTasks).
    Read,
    /// Fargate task launches (counted per task, not per call).
    Launch,
    /// ECS RegisterTaskDefinition.
    Register,
}

/// One token bucket: `burst` requests at once, refilled at `perSecond`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Which requests this bucket limits; several buckets may limit the same class.
    pub operation: OperationClass,
    /// Bucket size.
    pub burst: u32,
    /// Refill rate, requests per second (e.g. 100 per 5 minutes = 0.3333).
    pub per_second: f64,
}

/// A cap over a group of pods, across all targets.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Unique budget name.
    pub name: String,
    /// Pods in any of these namespaces count (empty with empty `labels`: every pod counts).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Pods carrying all of these labels count.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// vCPU in use at once by the group.
    #[serde(default)]
    pub max_vcpu: Option<f64>,
    /// GiB in use at once by the group.
    #[serde(default, rename = "maxMemoryGiB")]
    pub max_memory_gib: Option<f64>,
    /// USD per hour spent at once by the group.
    #[serde(default)]
    pub max_hourly_cost: Option<f64>,
}

/// An ordered placement rule.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    /// Unique rule name; shown in every explanation.
    pub name: String,
    /// Which pods this rule decides; `{}` (or absent) matches every pod.
    #[serde(default, rename = "match")]
    pub matches: MatchSpec,
    /// Which targets the rule may choose from; absent lists allow all.
    #[serde(default)]
    pub allow: AllowSpec,
    /// Reject targets slower than this, in milliseconds.
    #[serde(default)]
    pub max_latency_ms: Option<u32>,
    /// Reject targets where this pod would cost more than this, USD per hour.
    #[serde(default)]
    pub max_hourly_cost: Option<f64>,
    /// How eligible targets are ranked; default from `defaults.objective`, else `cost`.
    #[serde(default)]
    pub objective: Option<ObjectiveSpec>,
    /// Targets tried, in order, when none of the allowed targets is eligible.
    #[serde(default)]
    pub fallback: Vec<String>,
    /// What happens when nothing fits: `pending` (wait, retried on change) or `fail`.
    #[serde(default)]
    pub on_no_target: Option<OnNoTarget>,
}

/// Which pods a rule applies to; every present field must match.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchSpec {
    /// The pod's namespace is one of these.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The pod carries all these labels with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The pod carries all these annotations with these values.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// A CEL boolean over `pod` (`pod.namespace`, `pod.name`, `pod.labels`, `pod.annotations`,
    /// `pod.cpu` in vCPU, `pod.memoryGiB`, `pod.gpus`).
    #[serde(default)]
    pub expression: Option<String>,
}

/// The targets a rule may choose from.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AllowSpec {
    /// Allowed providers; absent allows all.
    #[serde(default)]
    pub providers: Option<Vec<ProviderKind>>,
    /// Allowed regions; absent allows all.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    /// Allowed target names; absent allows all.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// May this rule use spot targets? Default false.
    #[serde(default)]
    pub spot: bool,
}

/// How eligible targets are ranked.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ObjectiveSpec {
    /// `cost` (cheapest first) or `latency` (fastest first).
    Named(NamedObjective),
    /// `{weights: {cost, latency}}`: a weighted sum of normalised cost and latency.
    Weighted {
        /// Relative weights; at least one must be positive.
        weights: WeightsSpec,
    },
}

/// A single-criterion objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NamedObjective {
    /// Cheapest hourly cost first.
    Cost,
    /// Lowest latency first.
    Latency,
}

/// Weights of a weighted objective.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WeightsSpec {
    /// Weight of normalised hourly cost.
    #[serde(default)]
    pub cost: f64,
    /// Weight of normalised latency.
    #[serde(default)]
    pub latency: f64,
}

/// What happens to a pod no target can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnNoTarget {
    /// Stay Pending with a reason; re-decided when policy, quota or health changes.
    Pending,
    /// Fail the pod with the reason.
    Fail,
}

/// Defaults for rules that leave a field out.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DefaultsSpec {
    /// Default objective (`cost` unless set).
    #[serde(default)]
    pub objective: Option<ObjectiveSpec>,
    /// Default no-target behaviour (`pending` unless set).
    #[serde(default)]
    pub on_no_target: Option<OnNoTarget>,
}

/// The JSON Schema of one policy file, as published at `policies/schema.json`.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(PolicyDocument);
    serde_json::to_value(schema).expect("a JSON schema always serialises")
}
