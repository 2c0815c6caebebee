//! The `ContainerGroups_CreateOrUpdate` request body of ACI's 2026-05-01 spec, as serde
//! structs (what [`translate`](crate::provider::aci::translate) fills in), and [`Sensitive`] for
//! the fields that carry secrets.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

/// A value that must reach only its one request field: serialized as the plain string, printed
/// by `Debug` as `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Sensitive(String);

impl Sensitive {
    /// Wraps `value`.
    pub(crate) fn new(value: impl Into<String>) -> Sensitive {
        Sensitive(value.into())
    }
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for Sensitive {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The `ContainerGroups_CreateOrUpdate` body.
#[derive(Debug, Serialize)]
pub(crate) struct ContainerGroupBody {
    /// Region.
    pub(crate) location: String,
    /// Ownership tags.
    pub(crate) tags: BTreeMap<String, String>,
    /// Properties.
    pub(crate) properties: GroupProperties,
}

/// `ContainerGroupPropertiesProperties`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupProperties {
    /// App containers, in pod order.
    pub(crate) containers: Vec<ContainerBody>,
    /// Init containers, in pod order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) init_containers: Vec<InitContainerBody>,
    /// From `imagePullSecrets`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) image_registry_credentials: Vec<RegistryCredentialBody>,
    /// `Always`, `OnFailure`, `Never`.
    pub(crate) restart_policy: String,
    /// `Linux` or `Windows`.
    pub(crate) os_type: String,
    /// IP and ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ip_address: Option<IpAddressBody>,
    /// Volumes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) volumes: Vec<VolumeBody>,
    /// Subnets to join.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) subnet_ids: Vec<SubnetIdBody>,
    /// `Spot` when the target runs on spot capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) priority: Option<String>,
    /// The pod's DNS (`provider/aci/dns.rs`); absent: Azure's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dns_config: Option<super::dns::DnsConfigBody>,
    /// kube-proxy beside the pod (`provider/aci/kube_proxy.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) extensions: Vec<super::kube_proxy::ExtensionBody>,
}

/// One app container.
#[derive(Debug, Serialize)]
pub(crate) struct ContainerBody {
    /// Name (as in the pod).
    pub(crate) name: String,
    /// Properties.
    pub(crate) properties: ContainerProperties,
}

/// `ContainerProperties`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerProperties {
    /// Image.
    pub(crate) image: String,
    /// Full command line (exec form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) command: Vec<String>,
    /// Ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) ports: Vec<PortBody>,
    /// Env.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) environment_variables: Vec<EnvBody>,
    /// Requests and limits.
    pub(crate) resources: ResourcesBody,
    /// Mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) volume_mounts: Vec<VolumeMountBody>,
    /// Liveness probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) liveness_probe: Option<ProbeBody>,
    /// Readiness probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) readiness_probe: Option<ProbeBody>,
}

/// One init container (ACI gives them no resources of their own: they use the group's).
#[derive(Debug, Serialize)]
pub(crate) struct InitContainerBody {
    /// Name.
    pub(crate) name: String,
    /// Properties.
    pub(crate) properties: InitContainerProperties,
}

/// `InitContainerPropertiesDefinition`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InitContainerProperties {
    /// Image.
    pub(crate) image: String,
    /// Command line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) command: Vec<String>,
    /// Env.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) environment_variables: Vec<EnvBody>,
    /// Mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) volume_mounts: Vec<VolumeMountBody>,
}

/// One env var: exactly one of `value` / `secureValue`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EnvBody {
    /// Name.
    pub(crate) name: String,
    /// Plain value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<String>,
    /// Secret value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secure_value: Option<Sensitive>,
}

/// Requests and optional limits.
#[derive(Debug, Serialize)]
pub(crate) struct ResourcesBody {
    /// Requests.
    pub(crate) requests: RequestsBody,
    /// Limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) limits: Option<LimitsBody>,
}

/// `ResourceRequests`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct RequestsBody {
    /// GiB, in 0.1 steps.
    #[serde(rename = "memoryInGB")]
    pub(crate) memory_in_gb: f64,
    /// vCPU, in 0.01 steps.
    pub(crate) cpu: f64,
    /// GPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gpu: Option<GpuBody>,
}

/// `ResourceLimits`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct LimitsBody {
    /// GiB.
    #[serde(rename = "memoryInGB", skip_serializing_if = "Option::is_none")]
    pub(crate) memory_in_gb: Option<f64>,
    /// vCPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cpu: Option<f64>,
}

/// `GpuResource`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct GpuBody {
    /// GPUs.
    pub(crate) count: u32,
    /// `K80`, `P100`, `V100`.
    pub(crate) sku: String,
}

/// A port.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PortBody {
    /// `TCP` or `UDP`.
    pub(crate) protocol: String,
    /// Number.
    pub(crate) port: i32,
}

/// `IpAddress`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IpAddressBody {
    /// Every container port.
    pub(crate) ports: Vec<PortBody>,
    /// `Public` or `Private`.
    #[serde(rename = "type")]
    pub(crate) type_: String,
    /// DNS label (public only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dns_name_label: Option<String>,
}

/// `ContainerGroupSubnetId`.
#[derive(Debug, Serialize)]
pub(crate) struct SubnetIdBody {
    /// Subnet resource id.
    pub(crate) id: String,
}

/// `ImageRegistryCredential`.
#[derive(Debug, Serialize)]
pub(crate) struct RegistryCredentialBody {
    /// Registry host.
    pub(crate) server: String,
    /// User.
    pub(crate) username: String,
    /// Password (the spec's `x-ms-secret` field).
    pub(crate) password: Sensitive,
}

/// `Volume`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VolumeBody {
    /// ACI volume name.
    pub(crate) name: String,
    /// emptyDir (an empty object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) empty_dir: Option<serde_json::Map<String, serde_json::Value>>,
    /// File name -> base64 content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<BTreeMap<String, Sensitive>>,
    /// Azure Files share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) azure_file: Option<AzureFileBody>,
    /// Git repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) git_repo: Option<GitRepoBody>,
}

/// `AzureFileVolume`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AzureFileBody {
    /// Share.
    pub(crate) share_name: String,
    /// Read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) read_only: Option<bool>,
    /// Storage account.
    pub(crate) storage_account_name: String,
    /// Account key (the spec's `x-ms-secret` field).
    pub(crate) storage_account_key: Sensitive,
}

/// `GitRepoVolume`.
#[derive(Debug, Serialize)]
pub(crate) struct GitRepoBody {
    /// Repository URL.
    pub(crate) repository: String,
    /// Commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) revision: Option<String>,
    /// Directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) directory: Option<String>,
}

/// `VolumeMount`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VolumeMountBody {
    /// ACI volume name.
    pub(crate) name: String,
    /// Path.
    pub(crate) mount_path: String,
    /// Read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) read_only: Option<bool>,
}

/// `ContainerProbe`.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProbeBody {
    /// exec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) exec: Option<ProbeExecBody>,
    /// httpGet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) http_get: Option<HttpGetBody>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) initial_delay_seconds: Option<i32>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) period_seconds: Option<i32>,
    /// Count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failure_threshold: Option<i32>,
    /// Count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) success_threshold: Option<i32>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timeout_seconds: Option<i32>,
}

/// `ContainerExec`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct ProbeExecBody {
    /// Command.
    pub(crate) command: Vec<String>,
}

/// `ContainerHttpGet`.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HttpGetBody {
    /// Path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    /// Port.
    pub(crate) port: i32,
    /// `http` or `https`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scheme: Option<String>,
    /// Headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) http_headers: Vec<HttpHeaderBody>,
}

/// `HttpHeader`.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct HttpHeaderBody {
    /// Name.
    pub(crate) name: String,
    /// Value.
    pub(crate) value: String,
}
