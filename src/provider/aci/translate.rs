//! Pod spec + resolved values -> the ACI container group PUT body (pure), refusing with a clear
//! reason, before any call, whatever ACI cannot run.
//!
//! Choices worth knowing:
//! - **Command and args.** ACI has one `command` that replaces the image's ENTRYPOINT *and* CMD.
//!   `command` + `args` map to `command`; `command` alone too. `args` without `command` needs the
//!   image's ENTRYPOINT, which the gateway cannot know without pulling the image: the pod names it
//!   with the annotation `aci.burstgate.io/entrypoint.<container>` (a JSON array, e.g.
//!   `["/docker-entrypoint.sh"]`), else it is refused as `Unsupported` saying so. Kubernetes'
//!   `$(VAR)` references are expanded from the container's plain env, as the kubelet would; a
//!   reference to a Secret-derived variable is refused (it would put the secret on a plain
//!   command line).
//! - **Env.** Taken only from `spec.resolved.env` (never from the pod's `valueFrom`): plain values
//!   as `value`, Secret-derived ones only as `secureValue`.
//! - **Sizes.** The group requests exactly the size the engine reserved (`spec.size`, already on
//!   ACI's 0.01 vCPU / 0.1 GB grid), split between the app containers in proportion to their own
//!   requests (at least one grid step each). Limits are clamped between the container's request
//!   and the group total, which ACI requires (`ResourceLimitsLessThanRequests`,
//!   `ContainerLimitGreaterThanContainerGroupTotalRequest`, virtual-kubelet/azure-aci#17, #149).
//!   ACI's `memoryInGB` is GiB, as the virtual-kubelet ACI provider sends it.
//! - **GPUs.** An `nvidia.com/gpu` limit (or request) becomes the container's `gpu` request with
//!   the SKU from the pod annotation `burstgate.io/gpu-sku` (the one the policy engine matches
//!   targets on), which must be one of ACI's `K80`, `P100`, `V100`.
//! - **Volumes.** emptyDir; secret, configMap and projected as ACI `secret` volumes (base64 files
//!   from `spec.resolved.volumes`, flat: ACI has no sub-directories there); azureFile with the
//!   account name and key from `spec.resolved.volumes[<volume>]` (the Secret's
//!   `azurestorageaccountname` / `azurestorageaccountkey`); gitRepo. ACI volume names need 5-63
//!   characters: shorter pod volume names get a `vol-` prefix.
//! - **Network.** With `subnet_ids` the group joins them with a private IP; otherwise it gets a
//!   public IP (and, with `dns_name_label`, the group name as DNS label). A pod without any
//!   container port gets no IP address block (ACI requires ports on one).
//! - **Refused** before anything else, by the kit's `refusal` from the features ACI does not
//!   declare (`kit::declared`; `why_not` words each): hostNetwork/PID/IPC, hostPort,
//!   privileged, added capabilities, workingDir, lifecycle hooks, startup probes, tcpSocket and
//!   gRPC probes, httpGet probes of another host, probes and ports on init containers, sidecars
//!   in a pod with restartPolicy Never or OnFailure, an init container after a sidecar,
//!   subPath, volume devices, SCTP ports, sysctls, hostAliases, and every other volume type
//!   (hostPath, persistentVolumeClaim, csi, ...): `Elsewhere` when another provider runs the
//!   feature, else `Unsupported`. An emptyDir with `medium: Memory` is on disk (declared as
//!   ignored). What depends on values (sizes, GPU SKUs, resolved files, name lengths) is
//!   refused here.
//! - **Sidecars** (init containers with `restartPolicy: Always`, in a pod with restartPolicy
//!   Always) are containers of the group, started with the pod's containers once every init
//!   container has completed, restarted by the group's policy, sized from the reserved size with
//!   the app containers, and named in the tag [`TAG_SIDECARS`] so the status reports them as
//!   init containers (started, ready), as a kubelet does. ACI cannot start a container between
//!   two init containers, so a regular init container declared after a sidecar (which would
//!   expect it running) is refused; in a pod with restartPolicy Never or OnFailure a sidecar is
//!   refused (the group would end only when the sidecar did: `why_not`).
//! - **DNS** as the kubelet writes resolv.conf (`dns.rs`): ClusterFirst points at `--cluster-dns`
//!   in a delegated subnet; the pod's own `dnsConfig` and `dnsPolicy: None` are honoured.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{
    AzureFileVolumeSource, Container, HTTPGetAction, PodSpec, Probe, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use secrecy::ExposeSecret;

use super::dns::dns_config;
use super::kube_proxy::extensions;
use crate::policy::model::ProviderKind;
use crate::policy::pod::{GPU_RESOURCE, GPU_SKU_ANNOTATION, parse_quantity};
use crate::provider::aci::settings::Settings;
use crate::provider::aci::wire::{
    AzureFileBody, ContainerBody, ContainerGroupBody, ContainerProperties, EnvBody, GitRepoBody,
    GpuBody, GroupProperties, HttpGetBody, HttpHeaderBody, InitContainerBody,
    InitContainerProperties, IpAddressBody, LimitsBody, PortBody, ProbeBody, ProbeExecBody,
    RegistryCredentialBody, RequestsBody, ResourcesBody, Sensitive, SubnetIdBody, VolumeBody,
    VolumeMountBody,
};
use crate::provider::contract::{EnvValue, EnvVar, Resolved, WorkloadSpec};
use crate::provider::kit::expansion::command_and_args;
use crate::provider::kit::ownership::{OwnerKeys, Values};
use crate::provider::kit::{Feature, TranslateError, invalid, refusal, unsupported};

/// The ownership tags of a container group (ARM tag names may not contain `/`, so
/// `burstgate.io-...`).
pub(crate) const OWNER_TAGS: OwnerKeys = OwnerKeys::ARM_TAGS;
/// Tag: RFC 3339 time of the create call (orphan GC ages workloads by it).
pub(crate) const TAG_CREATED: &str = "burstgate.io-created";
/// Tag: the pod's sidecars (init containers with `restartPolicy: Always`) that run as
/// containers of the group, comma-separated; absent when it has none.
pub(crate) const TAG_SIDECARS: &str = "burstgate.io-sidecars";
/// Annotation prefix naming a container's image ENTRYPOINT (JSON array), for `args` without
/// `command`: `aci.burstgate.io/entrypoint.<container>`.
pub(crate) use crate::provider::kit::features::ENTRYPOINT_ANNOTATION_PREFIX;
/// GPU SKUs ACI offers (the spec's `GpuSku`).
pub(crate) const GPU_SKUS: [&str; 3] = ["K80", "P100", "V100"];

/// The ownership tags of `spec`, with the create time.
pub(crate) fn tags(spec: &WorkloadSpec, created_at: &str) -> BTreeMap<String, String> {
    OWNER_TAGS
        .pairs(&spec.owner, Values::AsIs)
        .into_iter()
        .chain([(TAG_CREATED.to_string(), created_at.to_string())])
        .collect()
}

/// The volume types ACI mounts, as a refusal of any other says.
const VOLUME_TYPES: &str = "not an Azure Container Instances volume type (emptyDir, secret, configMap, projected, downwardAPI, azureFile, gitRepo are)";

/// Why ACI cannot run `feature`, in its terms (the kit's [`refusal`] asks).
fn why_not(feature: Feature) -> Option<String> {
    Some(
        match feature {
            Feature::HostNetwork | Feature::HostPid | Feature::HostIpc => {
                "container groups share no namespace with a host"
            }
            Feature::HostPort => "container groups expose container ports only",
            Feature::Privileged => "ACI runs no privileged containers",
            Feature::HostPathVolume | Feature::PersistentVolumeClaim | Feature::OtherVolume => {
                VOLUME_TYPES
            }
            Feature::AddedCapability | Feature::SysPtrace => "ACI cannot add Linux capabilities",
            Feature::WorkingDir => "ACI always starts in the image's working directory",
            Feature::LifecycleHook => "ACI runs no postStart/preStop hooks",
            Feature::SubPath => "ACI mounts whole volumes only",
            Feature::VolumeDevice => "ACI attaches no block devices",
            Feature::SctpPort => "ACI ports are TCP or UDP",
            Feature::Sysctls => "ACI cannot set sysctls",
            Feature::HostAliases => "ACI cannot add /etc/hosts entries",
            Feature::HttpGetProbeHost => "ACI probes the container itself",
            Feature::InitContainerPort => "ACI init containers expose no ports",
            Feature::ArgsWithoutEntrypoint => {
                "ACI takes only a whole command line and cannot know the image's ENTRYPOINT: set command, or annotate the pod with aci.burstgate.io/entrypoint.<container>: '[\"<entrypoint>\", ...]'"
            }
            Feature::InitContainerAfterSidecar => {
                "ACI starts sidecars with the pod's containers, after every init container, so an init container declared after one would run without it"
            }
            Feature::StartupProbe => "ACI has liveness and readiness probes only",
            Feature::TcpSocketProbe | Feature::GrpcProbe => {
                "ACI probes run a command or an HTTP GET only"
            }
            Feature::InitContainerProbe => "ACI does not probe init containers",
            Feature::SidecarInEndingPod => {
                "an ACI container group with restartPolicy Never or OnFailure ends only when every container has ended, and ACI cannot stop a sidecar when the pod's containers exit, so the sidecar would hold the pod (a Job) open"
            }
            Feature::ExecProbe
            | Feature::HttpGetProbe
            | Feature::Sidecar
            | Feature::AutomaticToken
            | Feature::ServiceAccountToken
            | Feature::SecretVolume
            | Feature::ConfigMapVolume
            | Feature::ProjectedVolume
            | Feature::DownwardApiVolume
            | Feature::AzureFileVolume
            | Feature::GitRepoVolume
            | Feature::MemoryEmptyDir => return None,
        }
        .into(),
    )
}

/// The container group for `spec` on the target `settings` describes, created at `created_at`
/// (RFC 3339, written into a tag).
pub(crate) fn translate(
    spec: &WorkloadSpec,
    settings: &Settings,
    created_at: &str,
) -> Result<ContainerGroupBody, TranslateError> {
    let pod_spec = runnable_pod(spec)?;
    let annotations = spec.pod.metadata.annotations.clone().unwrap_or_default();
    let resolved = spec.resolved.as_ref();
    let (volume_names, volumes) = volumes(pod_spec, resolved)?;
    let inputs = Inputs {
        annotations: &annotations,
        resolved,
        volume_names: &volume_names,
    };
    let containers = app_containers(spec, pod_spec, &inputs)?;
    let init_containers = init_containers(pod_spec, &inputs)?;
    let mut tags = tags(spec, created_at);
    let sidecars: Vec<&str> = sidecars(pod_spec).map(|(_, c)| c.name.as_str()).collect();
    if !sidecars.is_empty() {
        let joined = sidecars.join(",");
        if joined.len() > MAX_TAG_VALUE {
            return Err(unsupported(
                "spec.initContainers",
                format!(
                    "the sidecars' names take more than the {MAX_TAG_VALUE} characters of an ARM tag value"
                ),
            ));
        }
        tags.insert(TAG_SIDECARS.to_string(), joined);
    }
    let os_type = match pod_spec.os.as_ref().map(|o| o.name.as_str()) {
        Some("windows") => "Windows",
        _ => "Linux",
    };
    Ok(ContainerGroupBody {
        location: settings.region.clone(),
        tags,
        properties: GroupProperties {
            ip_address: ip_address(spec, settings, &containers),
            containers,
            init_containers,
            image_registry_credentials: registry_credentials(resolved),
            restart_policy: pod_spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            os_type: os_type.into(),
            volumes,
            subnet_ids: settings
                .subnet_ids
                .iter()
                .map(|id| SubnetIdBody { id: id.clone() })
                .collect(),
            priority: settings.spot.then(|| "Spot".into()),
            dns_config: dns_config(pod_spec, &spec.owner.namespace, settings)?,
            extensions: extensions(settings),
        },
    })
}

/// What every container of the pod is translated with.
struct Inputs<'a> {
    annotations: &'a BTreeMap<String, String>,
    resolved: &'a Resolved,
    volume_names: &'a BTreeMap<String, String>,
}

/// The pod's spec, when nothing at pod level keeps ACI from running it.
fn runnable_pod(spec: &WorkloadSpec) -> Result<&PodSpec, TranslateError> {
    let pod_spec = spec
        .pod
        .spec
        .as_ref()
        .ok_or_else(|| invalid("spec", "the pod has no spec"))?;
    if pod_spec.containers.is_empty() {
        return Err(invalid("spec.containers", "the pod has no containers"));
    }
    // Every field ACI cannot run, whatever its value, is a declared feature (`why_not`).
    refusal(&spec.pod, ProviderKind::Aci, why_not)?;
    Ok(pod_spec)
}

/// The pod's volumes with their ACI names (pod name -> ACI name), in pod order.
fn volumes(
    pod_spec: &PodSpec,
    resolved: &Resolved,
) -> Result<(BTreeMap<String, String>, Vec<VolumeBody>), TranslateError> {
    let pod_volumes = pod_spec.volumes.as_deref().unwrap_or_default();
    let names = aci_volume_names(pod_volumes)?;
    let bodies = pod_volumes
        .iter()
        .enumerate()
        .map(|(i, v)| volume(i, v, &names[&v.name], resolved))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((names, bodies))
}

/// ARM's longest tag value.
const MAX_TAG_VALUE: usize = 256;

/// Whether `c` is a sidecar: an init container with `restartPolicy: Always`.
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's sidecars with their index among the init containers, in pod order.
fn sidecars(pod_spec: &PodSpec) -> impl Iterator<Item = (usize, &Container)> {
    pod_spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| is_sidecar(c))
}

/// The group's containers: the pod's sidecars, then its app containers, sharing the reserved
/// size between them (the engine reserved it for both, as the scheduler counts sidecars).
fn app_containers(
    spec: &WorkloadSpec,
    pod_spec: &PodSpec,
    inputs: &Inputs<'_>,
) -> Result<Vec<ContainerBody>, TranslateError> {
    let running: Vec<(String, &Container)> = sidecars(pod_spec)
        .map(|(i, c)| (format!("spec.initContainers[{i}] ({})", c.name), c))
        .chain(
            pod_spec
                .containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}] ({})", c.name), c)),
        )
        .collect();
    let all: Vec<Container> = running.iter().map(|(_, c)| (*c).clone()).collect();
    let sizes = split_size(spec, &all)?;
    let gpu_sku = inputs
        .annotations
        .get(GPU_SKU_ANNOTATION)
        .map(String::as_str);
    running
        .iter()
        .enumerate()
        .map(|(i, (field, c))| app_container(field, c, inputs, &sizes, i, gpu_sku))
        .collect()
}

fn app_container(
    field: &str,
    c: &Container,
    inputs: &Inputs<'_>,
    sizes: &Sizes,
    i: usize,
    gpu_sku: Option<&str>,
) -> Result<ContainerBody, TranslateError> {
    // Capabilities, workingDir, hooks, block devices and the other fields ACI has no place
    // for are refused before, by the kit's `refusal` (see `why_not`).
    let env = resolved_env(field, c, inputs.resolved)?;
    let ports = ports(field, c)?;
    let (requests, limits) = container_resources(field, c, sizes, i, gpu_sku)?;
    Ok(ContainerBody {
        name: c.name.clone(),
        properties: ContainerProperties {
            image: image(field, c)?,
            command: command(field, c, env, inputs.annotations)?,
            ports,
            environment_variables: env_body(env),
            resources: ResourcesBody { requests, limits },
            volume_mounts: mounts(field, c, inputs.volume_names)?,
            liveness_probe: c
                .liveness_probe
                .as_ref()
                .map(|p| probe(&format!("{field}.livenessProbe"), p, c))
                .transpose()?,
            readiness_probe: c
                .readiness_probe
                .as_ref()
                .map(|p| probe(&format!("{field}.readinessProbe"), p, c))
                .transpose()?,
        },
    })
}

/// The init containers that run to completion, in pod order (ACI gives them the group's
/// resources); sidecars are among the group's containers. One declared after a sidecar is
/// refused before ([`Feature::InitContainerAfterSidecar`]).
fn init_containers(
    pod_spec: &PodSpec,
    inputs: &Inputs<'_>,
) -> Result<Vec<InitContainerBody>, TranslateError> {
    let mut out = Vec::new();
    for (i, c) in pod_spec.init_containers.iter().flatten().enumerate() {
        if is_sidecar(c) {
            continue;
        }
        let field = format!("spec.initContainers[{i}] ({})", c.name);
        out.push(init_container(&field, c, inputs)?);
    }
    Ok(out)
}

fn init_container(
    field: &str,
    c: &Container,
    inputs: &Inputs<'_>,
) -> Result<InitContainerBody, TranslateError> {
    let env = resolved_env(field, c, inputs.resolved)?;
    Ok(InitContainerBody {
        name: c.name.clone(),
        properties: InitContainerProperties {
            image: image(field, c)?,
            command: command(field, c, env, inputs.annotations)?,
            environment_variables: env_body(env),
            volume_mounts: mounts(field, c, inputs.volume_names)?,
        },
    })
}

/// Every container port on one IP: private in the target's subnets, else public (with the
/// group's name as DNS label when the target asks); none when no container has a port.
fn ip_address(
    spec: &WorkloadSpec,
    settings: &Settings,
    containers: &[ContainerBody],
) -> Option<IpAddressBody> {
    let all_ports: BTreeSet<PortBody> = containers
        .iter()
        .flat_map(|c| c.properties.ports.iter().cloned())
        .collect();
    let private = !settings.subnet_ids.is_empty();
    (!all_ports.is_empty()).then(|| IpAddressBody {
        ports: all_ports.into_iter().collect(),
        type_: if private { "Private" } else { "Public" }.into(),
        dns_name_label: (!private && settings.dns_name_label).then(|| spec.id.clone()),
    })
}

fn registry_credentials(resolved: &Resolved) -> Vec<RegistryCredentialBody> {
    resolved
        .registry_credentials
        .iter()
        .map(|r| RegistryCredentialBody {
            server: r.server.clone(),
            username: r.username.clone(),
            password: Sensitive::new(r.password.expose_secret()),
        })
        .collect()
}

fn image(field: &str, c: &Container) -> Result<String, TranslateError> {
    c.image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| invalid(format!("{field}.image"), "no image"))
}

fn resolved_env<'a>(
    field: &str,
    c: &Container,
    resolved: &'a Resolved,
) -> Result<&'a [EnvVar], TranslateError> {
    match resolved.env.get(&c.name) {
        Some(env) => Ok(env),
        None if c.env.as_ref().is_none_or(Vec::is_empty)
            && c.env_from.as_ref().is_none_or(Vec::is_empty) =>
        {
            Ok(&[])
        }
        None => Err(TranslateError::Unresolved {
            field: format!("{field}.env"),
            what: "the container's environment".into(),
        }),
    }
}

fn env_body(env: &[EnvVar]) -> Vec<EnvBody> {
    env.iter()
        .map(|v| match &v.value {
            EnvValue::Plain(value) => EnvBody {
                name: v.name.clone(),
                value: Some(value.clone()),
                secure_value: None,
            },
            EnvValue::Secret(secret) => EnvBody {
                name: v.name.clone(),
                value: None,
                secure_value: Some(Sensitive::new(secret.expose_secret())),
            },
        })
        .collect()
}

fn command(
    field: &str,
    c: &Container,
    env: &[EnvVar],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<String>, TranslateError> {
    let (command, args) = command_and_args(field, c, env, "ACI")?;
    let base = match command {
        cmd if !cmd.is_empty() => cmd,
        _ if args.is_empty() => return Ok(Vec::new()),
        _ => {
            let key = format!("{ENTRYPOINT_ANNOTATION_PREFIX}{}", c.name);
            // Without the annotation the pod is refused before (Feature::ArgsWithoutEntrypoint).
            let Some(raw) = annotations.get(&key) else {
                return Err(unsupported(
                    format!("{field}.args"),
                    why_not(Feature::ArgsWithoutEntrypoint).unwrap_or_default(),
                ));
            };
            serde_json::from_str::<Vec<String>>(raw).map_err(|e| {
                invalid(
                    format!("metadata.annotations[{key}]"),
                    format!("not a JSON array of strings: {e}"),
                )
            })?
        }
    };
    Ok(base.into_iter().chain(args).collect())
}

fn ports(field: &str, c: &Container) -> Result<Vec<PortBody>, TranslateError> {
    c.ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            // SCTP is refused before (Feature::SctpPort); nothing else is a Kubernetes protocol.
            if protocol != "TCP" && protocol != "UDP" {
                return Err(invalid(
                    format!("{field}.ports[{i}].protocol"),
                    format!("{protocol} is not a port protocol"),
                ));
            }
            Ok(PortBody {
                protocol,
                port: p.container_port,
            })
        })
        .collect()
}

/// tcpSocket and gRPC probes never get here: the kit's `refusal` sends such pods elsewhere.
fn probe(field: &str, p: &Probe, c: &Container) -> Result<ProbeBody, TranslateError> {
    let exec = p.exec.as_ref().map(|e| ProbeExecBody {
        command: e.command.clone().unwrap_or_default(),
    });
    let http_get = p
        .http_get
        .as_ref()
        .map(|h| http_get(field, h, c))
        .transpose()?;
    if exec.is_none() && http_get.is_none() {
        return Err(invalid(field, "a probe needs exec or httpGet"));
    }
    Ok(ProbeBody {
        exec,
        http_get,
        initial_delay_seconds: p.initial_delay_seconds,
        period_seconds: p.period_seconds,
        failure_threshold: p.failure_threshold,
        success_threshold: p.success_threshold,
        timeout_seconds: p.timeout_seconds,
    })
}

fn http_get(field: &str, h: &HTTPGetAction, c: &Container) -> Result<HttpGetBody, TranslateError> {
    let port = match &h.port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| cp.container_port)
            .ok_or_else(|| {
                invalid(
                    format!("{field}.httpGet.port"),
                    format!("no container port is named {name:?}"),
                )
            })?,
    };
    Ok(HttpGetBody {
        path: h.path.clone(),
        port,
        scheme: h.scheme.as_ref().map(|s| s.to_ascii_lowercase()),
        http_headers: h
            .http_headers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|hh| HttpHeaderBody {
                name: hh.name.clone(),
                value: hh.value.clone(),
            })
            .collect(),
    })
}

/// Pod volume name -> ACI volume name (5-63 characters).
fn aci_volume_names(volumes: &[Volume]) -> Result<BTreeMap<String, String>, TranslateError> {
    let mut names = BTreeMap::new();
    let mut taken = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let aci = if v.name.len() < 5 {
            format!("vol-{}", v.name)
        } else {
            v.name.clone()
        };
        if !taken.insert(aci.clone()) {
            return Err(unsupported(
                format!("spec.volumes[{i}] ({})", v.name),
                format!(
                    "its ACI name {aci:?} (5 characters at least) collides with another volume"
                ),
            ));
        }
        names.insert(v.name.clone(), aci);
    }
    Ok(names)
}

fn volume(
    i: usize,
    v: &Volume,
    aci_name: &str,
    resolved: &Resolved,
) -> Result<VolumeBody, TranslateError> {
    let field = format!("spec.volumes[{i}] ({})", v.name);
    let mut body = VolumeBody {
        name: aci_name.to_string(),
        empty_dir: None,
        secret: None,
        azure_file: None,
        git_repo: None,
    };
    if v.empty_dir.is_some() {
        body.empty_dir = Some(serde_json::Map::new());
    } else if let Some(s) = &v.secret {
        with_files(
            &mut body,
            volume_files(&field, v, resolved, s.optional == Some(true))?,
        );
    } else if let Some(cm) = &v.config_map {
        with_files(
            &mut body,
            volume_files(&field, v, resolved, cm.optional == Some(true))?,
        );
    } else if v.projected.is_some() || v.downward_api.is_some() {
        with_files(&mut body, volume_files(&field, v, resolved, false)?);
    } else if let Some(af) = &v.azure_file {
        body.azure_file = Some(azure_file(&field, v, af, resolved)?);
    } else if let Some(g) = &v.git_repo {
        body.git_repo = Some(GitRepoBody {
            repository: g.repository.clone(),
            revision: g.revision.clone(),
            directory: g.directory.clone(),
        });
    } else {
        // Every other kind is refused before (Feature::HostPathVolume, ::OtherVolume, ...).
        return Err(unsupported(field, VOLUME_TYPES));
    }
    Ok(body)
}

/// The files of a secret, configMap or projected volume, base64 (ACI `secret` volumes are
/// flat); `None` for an `optional` source that does not exist.
fn volume_files(
    field: &str,
    v: &Volume,
    resolved: &Resolved,
    optional: bool,
) -> Result<Option<BTreeMap<String, Sensitive>>, TranslateError> {
    let Some(files) = resolved.volumes.get(&v.name) else {
        return if optional {
            Ok(None)
        } else {
            Err(TranslateError::Unresolved {
                field: field.to_string(),
                what: "the volume's files".into(),
            })
        };
    };
    let mut out = BTreeMap::new();
    for f in files {
        if f.path.contains('/') {
            return Err(unsupported(
                format!("{field} item {}", f.path),
                "ACI secret volumes are flat: a file path may not contain '/'",
            ));
        }
        out.insert(
            f.path.clone(),
            Sensitive::new(
                base64::engine::general_purpose::STANDARD.encode(f.content.expose_secret()),
            ),
        );
    }
    Ok(Some(out))
}

/// Files make a `secret` volume; none (an optional source that does not exist, as in
/// Kubernetes) an empty directory.
fn with_files(body: &mut VolumeBody, data: Option<BTreeMap<String, Sensitive>>) {
    match data {
        Some(map) if !map.is_empty() => body.secret = Some(map),
        _ => body.empty_dir = Some(serde_json::Map::new()),
    }
}

/// The Azure Files share, with the account name and key from the resolved Secret.
fn azure_file(
    field: &str,
    v: &Volume,
    af: &AzureFileVolumeSource,
    resolved: &Resolved,
) -> Result<AzureFileBody, TranslateError> {
    let files = resolved
        .volumes
        .get(&v.name)
        .ok_or_else(|| TranslateError::Unresolved {
            field: format!("{field}.azureFile.secretName ({})", af.secret_name),
            what: "the storage account name and key".into(),
        })?;
    let get = |key: &str| {
        files
            .iter()
            .find(|f| f.path == key)
            .map(|f| {
                String::from_utf8_lossy(f.content.expose_secret())
                    .trim()
                    .to_string()
            })
            .ok_or_else(|| {
                invalid(
                    format!("{field}.azureFile.secretName"),
                    format!("Secret {} has no key {key}", af.secret_name),
                )
            })
    };
    Ok(AzureFileBody {
        share_name: af.share_name.clone(),
        read_only: af.read_only,
        storage_account_name: get("azurestorageaccountname")?,
        storage_account_key: Sensitive::new(get("azurestorageaccountkey")?),
    })
}

fn mounts(
    field: &str,
    c: &Container,
    names: &BTreeMap<String, String>,
) -> Result<Vec<VolumeMountBody>, TranslateError> {
    c.volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            // subPath is refused before (Feature::SubPath).
            let f = format!("{field}.volumeMounts[{i}]");
            if m.mount_path.contains(':') {
                return Err(invalid(
                    format!("{f}.mountPath"),
                    "ACI mount paths may not contain ':'",
                ));
            }
            let name = names.get(&m.name).ok_or_else(|| {
                invalid(
                    format!("{f}.name"),
                    format!("no volume is named {:?}", m.name),
                )
            })?;
            Ok(VolumeMountBody {
                name: name.clone(),
                mount_path: m.mount_path.clone(),
                read_only: m.read_only,
            })
        })
        .collect()
}

/// Per app container: (hundredths of a vCPU, tenths of a GiB) requested.
struct Sizes {
    cpu: Vec<u64>,
    mem: Vec<u64>,
    total_cpu: u64,
    total_mem: u64,
}

fn quantity(
    field: &str,
    c: &Container,
    kind: &str,
    resource: &str,
) -> Result<Option<f64>, TranslateError> {
    let res = c.resources.as_ref();
    let q = match kind {
        "requests" => res
            .and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(resource)),
        _ => res
            .and_then(|r| r.limits.as_ref())
            .and_then(|m| m.get(resource)),
    };
    q.map(|q| {
        parse_quantity(&q.0).ok_or_else(|| {
            invalid(
                format!("{field}.resources.{kind}.{resource}"),
                format!("{:?} is not a quantity", q.0),
            )
        })
    })
    .transpose()
}

/// Hundredths of a vCPU for `cores`, rounded up.
fn cpu_units(cores: f64) -> u64 {
    (cores * 100.0 - 1e-9).ceil().max(0.0) as u64
}

/// Tenths of a GiB for `bytes`, rounded up.
fn mem_units(bytes: f64) -> u64 {
    (bytes * 10.0 / (1024.0 * 1024.0 * 1024.0) - 1e-9)
        .ceil()
        .max(0.0) as u64
}

/// Tenths of a GiB the engine's MiB size stands for (it rounded up to 0.1 GiB, then to a MiB).
fn size_mem_units(memory_mib: u64) -> u64 {
    let tenths = memory_mib * 10 / 1024;
    if (tenths * 1024).div_ceil(10) < memory_mib {
        tenths + 1
    } else {
        tenths
    }
}

/// Splits `total` units between containers weighted by `weights`: every container gets at least
/// one unit, the rest in proportion (remainder to the heaviest).
fn split(total: u64, weights: &[u64]) -> Option<Vec<u64>> {
    let n = weights.len() as u64;
    if total < n {
        return None;
    }
    let rest = total - n;
    let sum: u64 = weights.iter().sum();
    let mut shares: Vec<u64> = if sum == 0 {
        vec![rest / n; weights.len()]
    } else {
        weights.iter().map(|w| rest * w / sum).collect()
    };
    let given: u64 = shares.iter().sum();
    let heaviest = weights
        .iter()
        .enumerate()
        .max_by_key(|(i, w)| (**w, std::cmp::Reverse(*i)))
        .map_or(0, |(i, _)| i);
    shares[heaviest] += rest - given;
    Some(shares.into_iter().map(|s| s + 1).collect())
}

fn split_size(spec: &WorkloadSpec, containers: &[Container]) -> Result<Sizes, TranslateError> {
    let total_cpu = spec.size.milli_cpu.div_ceil(10);
    let total_mem = size_mem_units(spec.size.memory_mib);
    let mut cpu_w = Vec::new();
    let mut mem_w = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let field = format!("spec.containers[{i}] ({})", c.name);
        let pick = |r: &str| -> Result<f64, TranslateError> {
            Ok(quantity(&field, c, "requests", r)?
                .or(quantity(&field, c, "limits", r)?)
                .unwrap_or(0.0))
        };
        cpu_w.push((pick("cpu")? * 1000.0).ceil() as u64);
        mem_w.push((pick("memory")? / (1024.0 * 1024.0)).ceil() as u64);
    }
    let too_small = || {
        invalid(
            "spec.containers",
            format!(
                "the reserved size {} mCPU / {} MiB cannot give each of {} containers ACI's minimum 0.01 vCPU and 0.1 GB",
                spec.size.milli_cpu,
                spec.size.memory_mib,
                containers.len()
            ),
        )
    };
    Ok(Sizes {
        cpu: split(total_cpu, &cpu_w).ok_or_else(too_small)?,
        mem: split(total_mem, &mem_w).ok_or_else(too_small)?,
        total_cpu,
        total_mem,
    })
}

fn container_resources(
    field: &str,
    c: &Container,
    sizes: &Sizes,
    i: usize,
    gpu_sku: Option<&str>,
) -> Result<(RequestsBody, Option<LimitsBody>), TranslateError> {
    let (cpu, mem) = (sizes.cpu[i], sizes.mem[i]);
    let gpus = quantity(field, c, "limits", GPU_RESOURCE)?
        .or(quantity(field, c, "requests", GPU_RESOURCE)?)
        .unwrap_or(0.0)
        .ceil() as u32;
    let gpu = if gpus == 0 {
        None
    } else {
        let sku = gpu_sku.ok_or_else(|| {
            unsupported(
                format!("{field}.resources.limits[{GPU_RESOURCE}]"),
                format!("ACI needs a GPU SKU: annotate the pod with {GPU_SKU_ANNOTATION} set to one of {}", GPU_SKUS.join(", ")),
            )
        })?;
        if !GPU_SKUS.contains(&sku) {
            return Err(unsupported(
                format!("metadata.annotations[{GPU_SKU_ANNOTATION}]"),
                format!(
                    "ACI has no GPU SKU {sku:?} (it has {})",
                    GPU_SKUS.join(", ")
                ),
            ));
        }
        Some(GpuBody {
            count: gpus,
            sku: sku.to_string(),
        })
    };
    // A limit lies between the container's request and the group total (ACI refuses others).
    let limit_cpu =
        quantity(field, c, "limits", "cpu")?.map(|v| cpu_units(v).clamp(cpu, sizes.total_cpu));
    let limit_mem =
        quantity(field, c, "limits", "memory")?.map(|v| mem_units(v).clamp(mem, sizes.total_mem));
    let limits = (limit_cpu.is_some() || limit_mem.is_some()).then(|| LimitsBody {
        cpu: limit_cpu.map(|u| u as f64 / 100.0),
        memory_in_gb: limit_mem.map(|u| u as f64 / 10.0),
    });
    Ok((
        RequestsBody {
            memory_in_gb: mem as f64 / 10.0,
            cpu: cpu as f64 / 100.0,
            gpu,
        },
        limits,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::sizing::Size;
    use crate::provider::ProviderError;
    use crate::provider::contract::{
        Owner, RegistryCredential, SecretBox, SecretString, VolumeFile,
    };
    use k8s_openapi::api::core::v1::{
        AzureFileVolumeSource, ContainerPort, EmptyDirVolumeSource, ExecAction, HTTPGetAction,
        HostPathVolumeSource, Pod, PodSpec, ResourceRequirements, SecretVolumeSource,
        SecurityContext, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::sync::Arc;

    #[test]
    fn every_pod_of_the_corpus_translates_unless_it_uses_a_feature_aci_does_not_run() {
        let translated = crate::provider::kit::corpus::check(ProviderKind::Aci, |w| {
            translate(w, &settings(), "2026-12-06T00:00:00Z")
        });
        assert!(translated >= 4, "{translated}");
    }

    #[test]
    fn every_field_feature_aci_lacks_is_refused_naming_it_and_the_others_translate() {
        let translated = crate::provider::kit::corpus::check_features(ProviderKind::Aci, |w| {
            translate(w, &settings(), "2026-12-06T00:00:00Z")
        });
        assert_eq!(
            translated,
            [
                Feature::SecretVolume,
                Feature::ConfigMapVolume,
                Feature::ProjectedVolume,
                Feature::DownwardApiVolume,
                Feature::AzureFileVolume,
                Feature::GitRepoVolume,
                Feature::MemoryEmptyDir,
            ]
        );
    }

    fn settings() -> Settings {
        crate::provider::aci::settings::for_tests()
    }

    /// A pod of `containers` after the init containers `inits`, with `restart_policy`.
    fn with_inits(inits: Vec<Container>, app: Container, restart_policy: &str) -> WorkloadSpec {
        spec_with(
            PodSpec {
                init_containers: Some(inits),
                containers: vec![app],
                restart_policy: Some(restart_policy.into()),
                ..Default::default()
            },
            SIZE,
            Resolved::default(),
        )
    }

    fn sidecar(name: &str) -> Container {
        Container {
            restart_policy: Some("Always".into()),
            ..container(name)
        }
    }

    #[test]
    fn a_sidecar_runs_as_a_container_of_the_group_beside_the_pods_and_is_tagged_as_one() {
        // A native sidecar (the 1.20 apiserver of tests/peers drops `restartPolicy` on init
        // containers, so this is unit-tested only, with the status mapping in status.rs).
        let mut proxy = sidecar("proxy");
        proxy.ports = Some(vec![ContainerPort {
            container_port: 15001,
            ..Default::default()
        }]);
        proxy.readiness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(15021),
                ..Default::default()
            }),
            ..Default::default()
        });
        proxy.resources = res(&[("cpu", "250m"), ("memory", "256Mi")], &[]);
        let mut app = container("app");
        app.resources = res(&[("cpu", "750m"), ("memory", "768Mi")], &[]);
        let v = json(&with_inits(vec![container("setup"), proxy], app, "Always"));
        let p = &v["properties"];
        let names = |k: &str| -> Vec<String> {
            p[k].as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("initContainers"), ["setup"]);
        assert_eq!(names("containers"), ["proxy", "app"]);
        assert_eq!(p["restartPolicy"], "Always");
        let proxy = &p["containers"][0]["properties"];
        assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
        assert_eq!(p["ipAddress"]["ports"][0]["port"], 15001);
        // The reserved size is shared with the sidecar, in proportion to the requests.
        assert_eq!(proxy["resources"]["requests"]["cpu"], 0.25);
        assert_eq!(
            p["containers"][1]["properties"]["resources"]["requests"]["cpu"],
            0.75
        );
        assert_eq!(v["tags"][TAG_SIDECARS], "proxy");
        // Without a sidecar, no tag.
        let plain = json(&one(container("app")));
        assert!(plain["tags"].get(TAG_SIDECARS).is_none());
    }

    #[test]
    fn a_sidecar_in_a_pod_that_runs_to_completion_is_refused_naming_that_combination() {
        for policy in ["Never", "OnFailure"] {
            let e = err(&with_inits(
                vec![sidecar("proxy")],
                container("app"),
                policy,
            ));
            let TranslateError::Elsewhere { field, reason } = &e else {
                panic!("{policy}: {e:?}");
            };
            assert_eq!(field, "spec.initContainers[proxy].restartPolicy");
            assert!(
                reason.contains("restartPolicy Never or OnFailure")
                    && reason.contains("hold the pod (a Job) open"),
                "{reason}"
            );
        }
    }

    #[test]
    fn an_init_container_after_a_sidecar_is_refused_since_aci_starts_sidecars_last() {
        let e = err(&with_inits(
            vec![sidecar("proxy"), container("migrate")],
            container("app"),
            "Always",
        ));
        assert!(
            matches!(&e, TranslateError::Elsewhere { field, reason }
                if field == "spec.initContainers[migrate]"
                    && reason.contains("after every init container")
                    && reason.ends_with("fargate, cluster can")),
            "{e:?}"
        );
    }

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("nginx:1.27".into()),
            ..Default::default()
        }
    }

    fn res(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Option<ResourceRequirements> {
        let map = |v: &[(&str, &str)]| {
            (!v.is_empty()).then(|| {
                v.iter()
                    .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
                    .collect()
            })
        };
        Some(ResourceRequirements {
            requests: map(requests),
            limits: map(limits),
            ..Default::default()
        })
    }

    fn spec_with(pod_spec: PodSpec, size: Size, resolved: Resolved) -> WorkloadSpec {
        WorkloadSpec {
            id: "bg-1234".into(),
            owner: Owner {
                cluster_id: "c1".into(),
                node: "burstgate".into(),
                namespace: "team".into(),
                pod: "web-0".into(),
                pod_uid: "1234".into(),
            },
            target: "aci-eastus".into(),
            region: "eastus".into(),
            size,
            pod: Pod {
                spec: Some(pod_spec),
                ..Default::default()
            },
            resolved: Arc::new(resolved),
        }
    }

    /// What most tests reserve: 1 vCPU, 1.5 GiB.
    const SIZE: Size = Size {
        milli_cpu: 1000,
        memory_mib: 1536,
    };

    /// A pod of the one container `c`, reserved [`SIZE`], with `resolved` values.
    fn with_resolved(c: Container, resolved: Resolved) -> WorkloadSpec {
        spec_with(
            PodSpec {
                containers: vec![c],
                ..Default::default()
            },
            SIZE,
            resolved,
        )
    }

    fn one(c: Container) -> WorkloadSpec {
        with_resolved(c, Resolved::default())
    }

    fn json(spec: &WorkloadSpec) -> serde_json::Value {
        serde_json::to_value(
            translate(spec, &settings(), "2026-11-27T07:00:00Z").expect("translates"),
        )
        .unwrap()
    }

    fn err(spec: &WorkloadSpec) -> TranslateError {
        translate(spec, &settings(), "2026-11-27T07:00:00Z").expect_err("refused")
    }

    #[test]
    fn a_secret_env_var_becomes_a_secure_value_and_never_a_value() {
        let mut c = container("app");
        c.env = Some(vec![]);
        let mut resolved = Resolved::default();
        resolved.env.insert(
            "app".into(),
            vec![
                EnvVar {
                    name: "MODE".into(),
                    value: EnvValue::Plain("fast".into()),
                },
                EnvVar {
                    name: "TOKEN".into(),
                    value: EnvValue::Secret(SecretString::from("s3cr3t-value")),
                },
            ],
        );
        let spec = with_resolved(c, resolved);
        let body = json(&spec);
        let env = &body["properties"]["containers"][0]["properties"]["environmentVariables"];
        assert_eq!(env[0], serde_json::json!({"name": "MODE", "value": "fast"}));
        assert_eq!(
            env[1],
            serde_json::json!({"name": "TOKEN", "secureValue": "s3cr3t-value"})
        );
        let debug = format!("{:?}", translate(&spec, &settings(), "t").unwrap());
        assert!(
            !debug.contains("s3cr3t-value"),
            "Debug leaks the secret: {debug}"
        );
    }

    #[test]
    fn limits_above_requests_are_clamped_to_the_group_request() {
        let mut c = container("app");
        c.resources = res(
            &[("cpu", "500m"), ("memory", "1Gi")],
            &[("cpu", "2"), ("memory", "4Gi")],
        );
        let spec = spec_with(
            PodSpec {
                containers: vec![c],
                ..Default::default()
            },
            Size {
                milli_cpu: 500,
                memory_mib: 1024,
            },
            Resolved::default(),
        );
        let r = &json(&spec)["properties"]["containers"][0]["properties"]["resources"];
        assert_eq!(
            r["requests"],
            serde_json::json!({"cpu": 0.5, "memoryInGB": 1.0})
        );
        assert_eq!(
            r["limits"],
            serde_json::json!({"cpu": 0.5, "memoryInGB": 1.0})
        );
    }

    #[test]
    fn the_group_requests_exactly_the_reserved_size_split_by_container_requests() {
        let mut a = container("a");
        a.resources = res(&[("cpu", "333m"), ("memory", "100Mi")], &[]);
        let mut b = container("b");
        b.resources = res(&[("cpu", "667m"), ("memory", "300Mi")], &[("cpu", "800m")]);
        let spec = spec_with(
            PodSpec {
                containers: vec![a, b],
                ..Default::default()
            },
            Size {
                milli_cpu: 1000,
                memory_mib: 410,
            },
            Resolved::default(),
        );
        let body = json(&spec);
        let req = |i: usize, k: &str| {
            body["properties"]["containers"][i]["properties"]["resources"]["requests"][k]
                .as_f64()
                .unwrap()
        };
        assert!(
            (req(0, "cpu") + req(1, "cpu") - 1.0).abs() < 1e-9,
            "cpu {} + {}",
            req(0, "cpu"),
            req(1, "cpu")
        );
        assert!((req(0, "memoryInGB") + req(1, "memoryInGB") - 0.4).abs() < 1e-9);
        assert!(req(1, "cpu") > req(0, "cpu"));
        // b's limit 0.8 is above its request and below the group total: kept.
        assert_eq!(
            body["properties"]["containers"][1]["properties"]["resources"]["limits"],
            serde_json::json!({"cpu": 0.8})
        );
    }

    #[test]
    fn args_without_command_need_the_entrypoint_annotation_else_the_pod_goes_elsewhere() {
        let mut c = container("app");
        c.args = Some(vec!["--port".into(), "8080".into()]);
        let mut spec = one(c);
        let e = err(&spec);
        assert!(
            matches!(&e, TranslateError::Elsewhere { field, reason }
                if field == "spec.containers[app].args"
                    && reason.contains("aci.burstgate.io/entrypoint.<container>")
                    && reason.ends_with("fargate, cluster can")),
            "{e}"
        );
        spec.pod.metadata.annotations = Some(
            [(
                "aci.burstgate.io/entrypoint.app".to_string(),
                r#"["/entry.sh"]"#.to_string(),
            )]
            .into(),
        );
        assert_eq!(
            json(&spec)["properties"]["containers"][0]["properties"]["command"],
            serde_json::json!(["/entry.sh", "--port", "8080"])
        );
    }

    #[test]
    fn command_and_args_become_one_command_line_with_plain_env_expanded() {
        let mut c = container("app");
        c.command = Some(vec!["sh".into(), "-c".into()]);
        c.args = Some(vec!["echo $(MODE) $$(MODE) $(NOPE)".into()]);
        let mut resolved = Resolved::default();
        resolved.env.insert(
            "app".into(),
            vec![EnvVar {
                name: "MODE".into(),
                value: EnvValue::Plain("fast".into()),
            }],
        );
        let spec = with_resolved(c, resolved);
        assert_eq!(
            json(&spec)["properties"]["containers"][0]["properties"]["command"],
            serde_json::json!(["sh", "-c", "echo fast $(MODE) $(NOPE)"])
        );
    }

    #[test]
    fn a_secret_reference_on_the_command_line_is_refused() {
        let mut c = container("app");
        c.command = Some(vec!["run".into(), "--token=$(TOKEN)".into()]);
        let mut resolved = Resolved::default();
        resolved.env.insert(
            "app".into(),
            vec![EnvVar {
                name: "TOKEN".into(),
                value: EnvValue::Secret(SecretString::from("x")),
            }],
        );
        let spec = with_resolved(c, resolved);
        assert!(matches!(err(&spec), TranslateError::Unsupported { .. }));
    }

    #[test]
    fn an_unsupported_volume_is_rejected_with_its_name() {
        let mut c = container("app");
        c.volume_mounts = Some(vec![VolumeMount {
            name: "host-logs".into(),
            mount_path: "/logs".into(),
            ..Default::default()
        }]);
        let spec = spec_with(
            PodSpec {
                containers: vec![c],
                volumes: Some(vec![Volume {
                    name: "host-logs".into(),
                    host_path: Some(HostPathVolumeSource {
                        path: "/var/log".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            SIZE,
            Resolved::default(),
        );
        let e = err(&spec);
        assert_eq!(
            e.to_string(),
            "spec.volumes[host-logs].hostPath: not an Azure Container Instances volume type (emptyDir, secret, configMap, projected, downwardAPI, azureFile, gitRepo are); no provider of burstgate runs a hostPath volume"
        );
        let pe: ProviderError = e.into();
        assert!(matches!(
            pe,
            ProviderError::Pod(crate::provider::PodRejection::Unsupported { .. })
        ));
    }

    #[test]
    fn secret_and_empty_dir_volumes_mount_with_base64_files_and_short_names_padded() {
        let mut c = container("app");
        c.volume_mounts = Some(vec![
            VolumeMount {
                name: "certs".into(),
                mount_path: "/certs".into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]);
        let mut resolved = Resolved::default();
        resolved.volumes.insert(
            "certs".into(),
            vec![VolumeFile {
                path: "tls.key".into(),
                content: SecretBox::new(Box::new(b"KEY".to_vec())),
            }],
        );
        let spec = spec_with(
            PodSpec {
                containers: vec![c],
                volumes: Some(vec![
                    Volume {
                        name: "certs".into(),
                        secret: Some(SecretVolumeSource {
                            secret_name: Some("tls".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            SIZE,
            resolved,
        );
        let body = json(&spec);
        assert_eq!(
            body["properties"]["volumes"],
            serde_json::json!([{"name": "certs", "secret": {"tls.key": "S0VZ"}}, {"name": "vol-tmp", "emptyDir": {}}])
        );
        assert_eq!(
            body["properties"]["containers"][0]["properties"]["volumeMounts"][1],
            serde_json::json!({"name": "vol-tmp", "mountPath": "/tmp"})
        );
    }

    #[test]
    fn an_azure_file_volume_takes_its_account_key_from_the_resolved_secret() {
        let mut resolved = Resolved::default();
        resolved.volumes.insert(
            "share".into(),
            vec![
                VolumeFile {
                    path: "azurestorageaccountname".into(),
                    content: SecretBox::new(Box::new(b"acct".to_vec())),
                },
                VolumeFile {
                    path: "azurestorageaccountkey".into(),
                    content: SecretBox::new(Box::new(b"k3y\n".to_vec())),
                },
            ],
        );
        let spec = spec_with(
            PodSpec {
                containers: vec![container("app")],
                volumes: Some(vec![Volume {
                    name: "share".into(),
                    azure_file: Some(AzureFileVolumeSource {
                        secret_name: "az".into(),
                        share_name: "data".into(),
                        read_only: Some(true),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            SIZE,
            resolved,
        );
        assert_eq!(
            json(&spec)["properties"]["volumes"][0],
            serde_json::json!({"name": "share", "azureFile": {"shareName": "data", "readOnly": true, "storageAccountName": "acct", "storageAccountKey": "k3y"}})
        );
    }

    #[test]
    fn probes_ports_and_network_follow_the_target_settings() {
        let mut c = container("web");
        c.ports = Some(vec![ContainerPort {
            container_port: 8080,
            name: Some("http".into()),
            ..Default::default()
        }]);
        c.readiness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::String("http".into()),
                scheme: Some("HTTP".into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        });
        c.liveness_probe = Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Default::default()
        });
        let spec = one(c);
        let mut s = settings();
        s.dns_name_label = true;
        s.spot = true;
        let body = serde_json::to_value(translate(&spec, &s, "t").unwrap()).unwrap();
        let props = &body["properties"];
        assert_eq!(
            props["ipAddress"],
            serde_json::json!({"ports": [{"protocol": "TCP", "port": 8080}], "type": "Public", "dnsNameLabel": "bg-1234"})
        );
        assert_eq!(props["priority"], "Spot");
        assert_eq!(
            props["containers"][0]["properties"]["readinessProbe"],
            serde_json::json!({"httpGet": {"path": "/healthz", "port": 8080, "scheme": "http"}, "periodSeconds": 5})
        );
        assert_eq!(
            props["containers"][0]["properties"]["livenessProbe"],
            serde_json::json!({"exec": {"command": ["true"]}})
        );
        s.subnet_ids = vec!["/subscriptions/x/resourceGroups/n/providers/Microsoft.Network/virtualNetworks/v/subnets/aci".into()];
        let body = serde_json::to_value(translate(&spec, &s, "t").unwrap()).unwrap();
        assert_eq!(body["properties"]["ipAddress"]["type"], "Private");
        assert!(
            body["properties"]["ipAddress"]
                .get("dnsNameLabel")
                .is_none()
        );
        assert_eq!(body["properties"]["subnetIds"][0]["id"], s.subnet_ids[0]);
    }

    #[test]
    fn ownership_tags_use_arm_safe_names() {
        let body = json(&one(container("app")));
        let tags = body["tags"].as_object().unwrap();
        assert_eq!(tags[OWNER_TAGS.cluster_id], "c1");
        assert_eq!(tags[OWNER_TAGS.pod_uid], "1234");
        assert_eq!(tags[TAG_CREATED], "2026-11-27T07:00:00Z");
        for k in tags.keys() {
            assert!(
                !k.contains(['<', '>', '%', '&', '\\', '?', '/']),
                "ARM refuses tag name {k}"
            );
        }
    }

    #[test]
    fn a_gpu_needs_a_known_sku_annotation() {
        let mut c = container("train");
        c.resources = res(&[], &[(GPU_RESOURCE, "1")]);
        let mut spec = one(c);
        assert!(
            matches!(err(&spec), TranslateError::Unsupported { reason, .. } if reason.contains(GPU_SKU_ANNOTATION))
        );
        spec.pod.metadata.annotations =
            Some([(GPU_SKU_ANNOTATION.to_string(), "V100".to_string())].into());
        assert_eq!(
            json(&spec)["properties"]["containers"][0]["properties"]["resources"]["requests"]["gpu"],
            serde_json::json!({"count": 1, "sku": "V100"})
        );
        spec.pod.metadata.annotations =
            Some([(GPU_SKU_ANNOTATION.to_string(), "H100".to_string())].into());
        assert!(matches!(err(&spec), TranslateError::Unsupported { .. }));
    }

    #[test]
    fn privileged_containers_and_host_network_are_refused_before_any_call() {
        let mut c = container("app");
        c.security_context = Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        assert!(
            err(&one(c))
                .to_string()
                .contains("securityContext.privileged")
        );
        let spec = spec_with(
            PodSpec {
                containers: vec![container("a")],
                host_network: Some(true),
                ..Default::default()
            },
            Size::default(),
            Resolved::default(),
        );
        assert!(err(&spec).to_string().starts_with("spec.hostNetwork"));
    }

    #[test]
    fn registry_credentials_come_from_the_resolved_pull_secrets() {
        let resolved = Resolved {
            registry_credentials: vec![RegistryCredential {
                server: "r.azurecr.io".into(),
                username: "u".into(),
                password: SecretString::from("pw"),
            }],
            ..Default::default()
        };
        let spec = spec_with(
            PodSpec {
                containers: vec![container("a")],
                ..Default::default()
            },
            SIZE,
            resolved,
        );
        assert_eq!(
            json(&spec)["properties"]["imageRegistryCredentials"],
            serde_json::json!([{"server": "r.azurecr.io", "username": "u", "password": "pw"}])
        );
    }

    #[test]
    fn an_env_the_controller_did_not_resolve_is_an_error_not_an_empty_env() {
        let mut c = container("app");
        c.env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
            name: "X".into(),
            value: Some("1".into()),
            ..Default::default()
        }]);
        assert!(matches!(err(&one(c)), TranslateError::Unresolved { .. }));
    }

    #[test]
    fn the_engine_memory_size_maps_back_to_tenths_of_a_gib() {
        assert_eq!(size_mem_units(1536), 15);
        assert_eq!(size_mem_units(103), 1);
        assert_eq!(size_mem_units(1000), 10);
        assert_eq!(split(10, &[0, 0, 0]), Some(vec![4, 3, 3]));
        assert_eq!(split(2, &[1, 1, 1]), None);
    }
}
