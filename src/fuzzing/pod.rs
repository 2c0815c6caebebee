//! Arbitrary valid pods from structured fuzz input: what the API server would accept on a pod
//! bound to the virtual node (DNS names, unique container names, mounts of declared volumes,
//! valid quantities), with free text wherever Kubernetes takes any string.

use arbitrary::{Arbitrary, Result, Unstructured};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};

use crate::fuzzing::words::{AbsPath, AnnotationKey, Label, LabelValue, Quantity, Text};

/// A pod, before it becomes JSON.
#[derive(Debug, Arbitrary)]
pub struct ArbPod {
    /// `metadata.name`.
    pub name: Label,
    /// `metadata.namespace`.
    pub namespace: Label,
    /// `metadata.uid` (as a number; written as a UUID).
    pub uid: u128,
    labels: Vec<(Label, LabelValue)>,
    annotations: Vec<(AnnotationKey, Text)>,
    /// App containers (at least one is made).
    pub containers: Vec<ArbContainer>,
    /// Init containers (`restartPolicy: Always` ones are sidecars).
    pub init_containers: Vec<ArbContainer>,
    /// Volumes.
    pub volumes: Vec<ArbVolume>,
    restart_policy: Option<RestartPolicy>,
    windows: bool,
    host: HostFlags,
    /// `imagePullSecrets` names.
    pub pull_secrets: Vec<Label>,
    grace_seconds: Option<u16>,
    dns_config: bool,
    sysctl: bool,
    host_alias: bool,
    run_as_user: Option<u32>,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// Pod-level host features, each rare (one chance in eight or sixteen) so that most pods are
/// runnable; off when the input runs out (where `ratio` says yes).
#[derive(Debug, Clone, Copy)]
struct HostFlags {
    network: bool,
    pid: bool,
    ipc: bool,
}

impl<'a> Arbitrary<'a> for HostFlags {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(HostFlags {
            network: !u.ratio(7, 8)?,
            pid: !u.ratio(15, 16)?,
            ipc: !u.ratio(15, 16)?,
        })
    }
}

/// One container.
#[derive(Debug, Arbitrary)]
pub struct ArbContainer {
    image: Image,
    command: Option<Vec<Text>>,
    args: Option<Vec<Text>>,
    /// The `aci.burstgate.io/entrypoint.<name>` annotation for this container.
    entrypoint: Option<Text>,
    working_dir: Option<AbsPath>,
    /// `env`, each with what the controller resolved it to.
    pub env: Vec<ArbEnv>,
    env_from: Vec<(bool, Label, Option<Label>)>,
    ports: Vec<(u16, Protocol, Option<Label>, Option<u16>)>,
    requests: Vec<(Resource, Quantity)>,
    limits: Vec<(Resource, Quantity)>,
    probes: Vec<(ProbeKind, ArbProbe)>,
    mounts: Vec<(u8, AbsPath, bool, Option<Label>)>,
    sidecar: bool,
    privileged: Option<bool>,
    read_only_root: Option<bool>,
    caps: Vec<Label>,
    stdin: bool,
    tty: bool,
}

#[derive(Debug, Arbitrary)]
enum Image {
    Known(u8),
    Named(Label, Option<Label>),
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Resource {
    Cpu,
    Memory,
    Gpu,
    Ephemeral,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

/// A probe: its handler and timing (each within what the API server accepts).
#[derive(Debug, Arbitrary)]
struct ArbProbe {
    handler: Handler,
    initial_delay: Option<u16>,
    period: Option<u16>,
    timeout: Option<u16>,
    failure_threshold: Option<u16>,
    success_threshold: Option<u8>,
}

#[derive(Debug, Arbitrary)]
enum Handler {
    Exec(Vec<Text>),
    HttpGet(AbsPath, u16, bool),
    TcpSocket(u16),
    Grpc(u16),
}

/// One env entry and, for references, the value the controller resolved.
#[derive(Debug, Arbitrary)]
pub struct ArbEnv {
    /// Name (a C identifier, or any printable name as Kubernetes now allows).
    pub name: EnvName,
    /// Where it comes from.
    pub source: EnvSource,
}

/// An env var name.
#[derive(Debug, Clone)]
pub struct EnvName(pub String);

impl<'a> Arbitrary<'a> for EnvName {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        const NAMES: &[&str] = &["HOME", "PATH", "A", "a_b", "X1", "MY.VAR", "my-var", "_"];
        Ok(EnvName((*u.choose(NAMES)?).to_string()))
    }
}

/// Where an env var's value comes from.
#[derive(Debug, Arbitrary)]
pub enum EnvSource {
    /// `value`.
    Value(Text),
    /// `valueFrom.secretKeyRef`, resolved to the text.
    Secret(Label, Label, Text),
    /// `valueFrom.configMapKeyRef`, resolved to the text.
    ConfigMap(Label, Label, Text),
    /// `valueFrom.fieldRef` (`metadata.name`, `status.podIP`...).
    Field(u8),
}

/// One volume.
#[derive(Debug, Arbitrary)]
pub struct ArbVolume {
    /// Name.
    pub name: Label,
    /// Kind, and for secret/configMap/projected the files the controller resolved.
    pub kind: VolumeKind,
}

/// A volume's kind.
#[derive(Debug, Arbitrary)]
pub enum VolumeKind {
    /// `emptyDir`, in memory or not, maybe with a size limit.
    EmptyDir(bool, Option<Quantity>),
    /// `secret`, with its files.
    Secret(Label, Vec<(Label, Vec<u8>)>, Option<u16>),
    /// `configMap`, with its files.
    ConfigMap(Label, Vec<(Label, Vec<u8>)>),
    /// `projected` (service account token and a secret), with its files.
    Projected(Vec<(Label, Vec<u8>)>),
    /// `hostPath`.
    HostPath(AbsPath),
    /// `persistentVolumeClaim`.
    Claim(Label),
}

const IMAGES: &[&str] = &[
    "nginx",
    "nginx:1.27",
    "busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "mcr.microsoft.com/azuredocs/aci-helloworld:latest",
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1",
    "localhost:5000/a/b/c:tag",
];

const FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels['app']",
    "metadata.annotations['x']",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.hostIP",
];

impl ArbPod {
    /// The Kubernetes Pod, as the API server would return it.
    pub fn pod(&self) -> Pod {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self.metadata(),
            "spec": self.spec(),
        });
        serde_json::from_value(pod).expect("an arbitrary pod is a Pod")
    }

    /// The UID, as the API server writes it.
    pub fn uid(&self) -> String {
        let h = format!("{:032x}", self.uid);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    /// Container names, unique as Kubernetes requires: `<label>-<index>` where labels repeat.
    pub fn container_names(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        self.all_containers()
            .enumerate()
            .map(|(i, (_, c))| {
                let base = match &c.image {
                    Image::Named(l, _) => l.0.clone(),
                    Image::Known(_) => format!("c{i}"),
                };
                let name = if seen.contains(&base) {
                    format!("c{i}")
                } else {
                    base
                };
                seen.insert(name.clone());
                name
            })
            .collect()
    }

    /// App containers (at least one), then init containers, with whether each is an init one.
    pub fn all_containers(&self) -> impl Iterator<Item = (bool, &ArbContainer)> {
        let apps = self.containers.iter().take(6).map(|c| (false, c));
        let fallback = self
            .containers
            .is_empty()
            .then_some((false, &DEFAULT_CONTAINER));
        let inits = self.init_containers.iter().take(4).map(|c| (true, c));
        apps.chain(fallback).chain(inits)
    }

    /// Volumes, deduplicated by name.
    pub fn volumes(&self) -> impl Iterator<Item = &ArbVolume> {
        let mut seen = std::collections::BTreeSet::new();
        self.volumes
            .iter()
            .take(6)
            .filter(move |v| seen.insert(v.name.0.clone()))
    }

    fn metadata(&self) -> Value {
        let mut annotations: Map<String, Value> = self
            .annotations
            .iter()
            .map(|(k, v)| (k.0.clone(), json!(v.0)))
            .collect();
        for ((_, c), name) in self.all_containers().zip(self.container_names()) {
            if let Some(Text(ep)) = &c.entrypoint {
                annotations.insert(format!("aci.burstgate.io/entrypoint.{name}"), json!(ep));
            }
        }
        let labels: Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.0.clone(), json!(v.0)))
            .collect();
        json!({
            "name": self.name.0,
            "namespace": self.namespace.0,
            "uid": self.uid(),
            "labels": labels,
            "annotations": annotations,
        })
    }

    fn spec(&self) -> Value {
        let names = self.container_names();
        let volumes: Vec<String> = self.volumes().map(|v| v.name.0.clone()).collect();
        let mut apps = vec![];
        let mut inits = vec![];
        for ((init, c), name) in self.all_containers().zip(&names) {
            let json = c.json(name, init, &volumes);
            if init {
                inits.push(json)
            } else {
                apps.push(json)
            }
        }
        let mut spec = json!({
            "nodeName": "burstgate",
            "nodeSelector": {"type": "virtual-kubelet"},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": apps,
            "initContainers": inits,
            "volumes": self.volumes().map(ArbVolume::json).collect::<Vec<_>>(),
            "imagePullSecrets": self.pull_secrets.iter().take(3)
                .map(|s| json!({"name": s.0})).collect::<Vec<_>>(),
            "serviceAccountName": "default",
            "hostNetwork": self.host.network,
            "hostPID": self.host.pid,
            "hostIPC": self.host.ipc,
        });
        self.pod_options(spec.as_object_mut().expect("an object"));
        spec
    }

    fn pod_options(&self, spec: &mut Map<String, Value>) {
        if let Some(p) = self.restart_policy {
            spec.insert("restartPolicy".into(), json!(format!("{p:?}")));
        }
        if self.windows {
            spec.insert("os".into(), json!({"name": "windows"}));
        }
        if let Some(g) = self.grace_seconds {
            spec.insert("terminationGracePeriodSeconds".into(), json!(g));
        }
        if self.dns_config {
            spec.insert("dnsConfig".into(), json!({"nameservers": ["1.1.1.1"]}));
        }
        if self.host_alias {
            let alias = json!([{"ip": "10.0.0.1", "hostnames": ["db"]}]);
            spec.insert("hostAliases".into(), alias);
        }
        let mut security = Map::new();
        if self.sysctl {
            security.insert(
                "sysctls".into(),
                json!([{"name": "net.core.somaxconn", "value": "1024"}]),
            );
        }
        if let Some(uid) = self.run_as_user {
            security.insert("runAsUser".into(), json!(uid));
        }
        spec.insert("securityContext".into(), Value::Object(security));
    }
}

static DEFAULT_CONTAINER: ArbContainer = ArbContainer {
    image: Image::Known(0),
    command: None,
    args: None,
    entrypoint: None,
    working_dir: None,
    env: vec![],
    env_from: vec![],
    ports: vec![],
    requests: vec![],
    limits: vec![],
    probes: vec![],
    mounts: vec![],
    sidecar: false,
    privileged: None,
    read_only_root: None,
    caps: vec![],
    stdin: false,
    tty: false,
};

impl ArbContainer {
    fn json(&self, name: &str, init: bool, volumes: &[String]) -> Value {
        let mut c = Map::new();
        c.insert("name".into(), json!(name));
        c.insert("image".into(), json!(self.image()));
        let texts = |v: &Vec<Text>| json!(v.iter().map(|t| &t.0).collect::<Vec<_>>());
        if let Some(cmd) = &self.command {
            c.insert("command".into(), texts(cmd));
        }
        if let Some(args) = &self.args {
            c.insert("args".into(), texts(args));
        }
        if let Some(dir) = &self.working_dir {
            c.insert("workingDir".into(), json!(dir.0));
        }
        c.insert(
            "env".into(),
            json!(self.env.iter().map(ArbEnv::json).collect::<Vec<_>>()),
        );
        c.insert("envFrom".into(), self.env_from());
        c.insert("ports".into(), self.ports());
        c.insert("resources".into(), self.resources());
        for (kind, probe) in self.probes.iter().take(3) {
            let key = match kind {
                ProbeKind::Liveness => "livenessProbe",
                ProbeKind::Readiness => "readinessProbe",
                ProbeKind::Startup => "startupProbe",
            };
            c.insert(key.into(), probe.json());
        }
        c.insert("volumeMounts".into(), self.mounts(volumes));
        if init && self.sidecar {
            c.insert("restartPolicy".into(), json!("Always"));
        }
        c.insert("securityContext".into(), self.security());
        c.insert("stdin".into(), json!(self.stdin));
        c.insert("tty".into(), json!(self.tty));
        Value::Object(c)
    }

    fn image(&self) -> String {
        match &self.image {
            Image::Known(i) => IMAGES[usize::from(*i) % IMAGES.len()].to_string(),
            Image::Named(repo, Some(tag)) => format!("{}:{}", repo.0, tag.0),
            Image::Named(repo, None) => repo.0.clone(),
        }
    }

    fn env_from(&self) -> Value {
        let sources = self.env_from.iter().take(3).map(|(secret, name, prefix)| {
            let key = if *secret { "secretRef" } else { "configMapRef" };
            let mut source = json!({ key: {"name": name.0} });
            if let Some(p) = prefix {
                source["prefix"] = json!(p.0);
            }
            source
        });
        json!(sources.collect::<Vec<_>>())
    }

    fn ports(&self) -> Value {
        let mut seen = std::collections::BTreeSet::new();
        let ports = self
            .ports
            .iter()
            .take(4)
            .filter(|(port, ..)| *port > 0 && seen.insert(*port))
            .map(|(port, protocol, name, host)| {
                let mut p = json!({"containerPort": port, "protocol": format!("{protocol:?}").to_uppercase()});
                if let Some(n) = name.as_ref().filter(|n| n.0.len() <= 15) {
                    p["name"] = json!(format!("p{}", n.0.trim_end_matches('-')));
                }
                if let Some(h) = host.filter(|h| *h > 0 && *port % 8 == 0) {
                    p["hostPort"] = json!(h);
                }
                p
            });
        json!(ports.collect::<Vec<_>>())
    }

    fn resources(&self) -> Value {
        let map = |list: &Vec<(Resource, Quantity)>| {
            let m: Map<String, Value> = list
                .iter()
                .map(|(r, q)| {
                    let name = match r {
                        Resource::Cpu => "cpu",
                        Resource::Memory => "memory",
                        Resource::Gpu => "nvidia.com/gpu",
                        Resource::Ephemeral => "ephemeral-storage",
                    };
                    (name.to_string(), json!(q.0))
                })
                .collect();
            Value::Object(m)
        };
        json!({"requests": map(&self.requests), "limits": map(&self.limits)})
    }

    fn mounts(&self, volumes: &[String]) -> Value {
        if volumes.is_empty() {
            return json!([]);
        }
        let mut paths = std::collections::BTreeSet::new();
        let mounts = self
            .mounts
            .iter()
            .take(4)
            .filter(|(_, path, ..)| paths.insert(path.0.clone()))
            .map(|(i, path, read_only, sub_path)| {
                let mut m = json!({
                    "name": volumes[usize::from(*i) % volumes.len()],
                    "mountPath": path.0,
                    "readOnly": read_only,
                });
                if let Some(s) = sub_path {
                    m["subPath"] = json!(s.0);
                }
                m
            });
        json!(mounts.collect::<Vec<_>>())
    }

    fn security(&self) -> Value {
        let mut s = json!({});
        if let Some(p) = self.privileged {
            s["privileged"] = json!(p);
        }
        if let Some(r) = self.read_only_root {
            s["readOnlyRootFilesystem"] = json!(r);
        }
        if !self.caps.is_empty() {
            let caps: Vec<String> = self
                .caps
                .iter()
                .take(3)
                .map(|c| c.0.to_uppercase())
                .collect();
            s["capabilities"] = json!({"add": caps, "drop": ["ALL"]});
        }
        s
    }
}

impl ArbProbe {
    fn json(&self) -> Value {
        let mut p = match &self.handler {
            Handler::Exec(cmd) => {
                json!({"exec": {"command": cmd.iter().map(|t| &t.0).collect::<Vec<_>>()}})
            }
            Handler::HttpGet(path, port, https) => json!({"httpGet": {
                "path": path.0, "port": port.max(&1),
                "scheme": if *https { "HTTPS" } else { "HTTP" }}}),
            Handler::TcpSocket(port) => json!({"tcpSocket": {"port": port.max(&1)}}),
            Handler::Grpc(port) => json!({"grpc": {"port": port.max(&1)}}),
        };
        let fields = [
            ("initialDelaySeconds", self.initial_delay, 0),
            ("periodSeconds", self.period, 1),
            ("timeoutSeconds", self.timeout, 1),
            ("failureThreshold", self.failure_threshold, 1),
        ];
        for (key, value, min) in fields {
            if let Some(v) = value {
                p[key] = json!(v.max(min));
            }
        }
        if let Some(s) = self.success_threshold {
            p["successThreshold"] = json!(s.max(1));
        }
        p
    }
}

impl ArbEnv {
    fn json(&self) -> Value {
        let name = &self.name.0;
        match &self.source {
            EnvSource::Value(t) => json!({"name": name, "value": t.0}),
            EnvSource::Secret(object, key, _) => json!({"name": name,
                "valueFrom": {"secretKeyRef": {"name": object.0, "key": key.0}}}),
            EnvSource::ConfigMap(object, key, _) => json!({"name": name,
                "valueFrom": {"configMapKeyRef": {"name": object.0, "key": key.0}}}),
            EnvSource::Field(i) => json!({"name": name,
                "valueFrom": {"fieldRef": {"fieldPath": FIELDS[usize::from(*i) % FIELDS.len()]}}}),
        }
    }
}

impl ArbVolume {
    fn json(&self) -> Value {
        let items = |files: &Vec<(Label, Vec<u8>)>| {
            json!(
                files
                    .iter()
                    .take(3)
                    .map(|(k, _)| json!({"key": k.0, "path": k.0}))
                    .collect::<Vec<_>>()
            )
        };
        let source = match &self.kind {
            VolumeKind::EmptyDir(memory, limit) => {
                let mut e = json!({});
                if *memory {
                    e["medium"] = json!("Memory");
                }
                if let Some(l) = limit {
                    e["sizeLimit"] = json!(l.0);
                }
                json!({"emptyDir": e})
            }
            VolumeKind::Secret(name, files, mode) => json!({"secret": {
                "secretName": name.0, "items": items(files),
                "defaultMode": mode.map(|m| m % 0o777)}}),
            VolumeKind::ConfigMap(name, files) => {
                json!({"configMap": {"name": name.0, "items": items(files)}})
            }
            VolumeKind::Projected(_) => json!({"projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
            ]}}),
            VolumeKind::HostPath(path) => json!({"hostPath": {"path": path.0}}),
            VolumeKind::Claim(claim) => json!({"persistentVolumeClaim": {"claimName": claim.0}}),
        };
        let mut v = source;
        v["name"] = json!(self.name.0);
        v
    }
}
