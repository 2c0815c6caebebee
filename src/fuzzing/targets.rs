//! The bodies of the fuzz targets, one function per target taking the raw input as libFuzzer
//! hands it: the cargo-fuzz targets in `fuzz/fuzz_targets/` call them, and so does the short
//! run in the test suite (`short_run.rs`) on the seeds and their mutations. Each asserts its
//! target's invariant (a panic is a finding).

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use k8s_openapi::api::core::v1::Pod;

use crate::fuzzing::harness::{through_layers, workload};
use crate::fuzzing::pod::ArbPod;
use crate::fuzzing::{self, ecs, reply};
use crate::policy::expression::Expression;
use crate::policy::model::ProviderKind;
use crate::policy::{Ledger, Outcome, PodView, Policy, explain, load_files, sizing};
use crate::provider::{ProviderError, aci, fargate};

/// A target's body: the raw input in, a panic where its invariant breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name cargo-fuzz knows it by.
pub const ALL: [(&str, Target); 7] = [
    ("policy_load", policy_load),
    ("cel_expression", cel_expression),
    ("pod_view", pod_view),
    ("translate", translate),
    ("aci_reply", aci_reply),
    ("ecs_reply", ecs_reply),
    ("kube_reply", kube_reply),
];

/// `T` made of all of `data`, as libFuzzer's typed targets do; `None` when the bytes do not make one.
fn typed<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// Policy files: any text -> a checked policy, or problems that each name the file, a line
/// within it and a message; never a panic. Files in one input are separated by NUL bytes.
pub fn policy_load(data: &[u8]) {
    // The loader reads files as UTF-8; other bytes never reach it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files: Vec<(String, String)> = text
        .split('\0')
        .take(4)
        .enumerate()
        .map(|(i, t)| (format!("{i}.yaml"), t.to_string()))
        .collect();
    let Err(err) = load_files(&files) else {
        return;
    };
    assert!(!err.problems().is_empty(), "an error without problems");
    for p in err.problems() {
        let Some((_, text)) = files.iter().find(|(name, _)| *name == p.file) else {
            panic!("a problem names no given file: {p}");
        };
        if let Some(line) = p.line {
            // YAML breaks lines at CR LF, LF and a lone CR alike.
            let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
            assert!((1..=lines).contains(&line), "line {line} of {lines}: {p}");
        }
        assert!(!p.message.is_empty(), "a problem without a message: {p}");
    }
}

/// CEL match expressions: any source either compiles or says why, and a compiled one evaluates
/// against any pod view to a boolean or a reason, the same natively as in the interpreter; never
/// a panic. The input is the expression, a NUL byte, then the bytes the pod view is made of.
pub fn cel_expression(data: &[u8]) {
    let (source, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let expression = match Expression::compile(source) {
        Ok(e) => e,
        Err(why) => {
            assert!(!why.is_empty());
            return;
        }
    };
    let mut u = Unstructured::new(rest);
    let Ok(pod) = view(&mut u) else {
        return;
    };
    let result = expression.eval(&pod);
    if let Err(why) = &result {
        assert!(!why.is_empty());
    }
    // A native predicate answers as the interpreter does (errors alike, not their words: the
    // interpreter prints maps in no fixed order).
    assert_eq!(
        result.clone().ok(),
        expression.eval_cel(&pod).ok(),
        "{source}"
    );
    assert_eq!(expression.matches(&pod), result == Ok(true), "{source}");
}

fn view(u: &mut Unstructured) -> arbitrary::Result<PodView> {
    let mut pod = PodView {
        namespace: String::arbitrary(u)?,
        name: String::arbitrary(u)?,
        uid: String::arbitrary(u)?,
        labels: Arbitrary::arbitrary(u)?,
        annotations: Arbitrary::arbitrary(u)?,
        ..Default::default()
    };
    pod.resources.milli_cpu = u64::arbitrary(u)?;
    pod.resources.memory_mib = u64::arbitrary(u)?;
    pod.resources.gpus = u32::arbitrary(u)?;
    Ok(pod)
}

/// The example policies, as operators copy them.
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let files = [
            (
                "00-targets.yaml",
                include_str!("../../policies/00-targets.yaml"),
            ),
            (
                "10-gpu-to-aci.yaml",
                include_str!("../../policies/10-gpu-to-aci.yaml"),
            ),
            (
                "20-latency-first.yaml",
                include_str!("../../policies/20-latency-first.yaml"),
            ),
            (
                "30-team-budgets.yaml",
                include_str!("../../policies/30-team-budgets.yaml"),
            ),
            (
                "90-cost-first.yaml",
                include_str!("../../policies/90-cost-first.yaml"),
            ),
        ]
        .map(|(name, text)| (name.to_string(), text.to_string()));
        load_files(&files).expect("the example policies load")
    })
}

/// Pod -> engine view: any valid pod becomes a `PodView` or a `PodError`, is sized for every
/// provider, and the engine decides and explains it with the example policies (through the
/// ledger, as the controller does); never a panic, and a placement holds a reservation.
pub fn pod_view(data: &[u8]) {
    let Some(arb) = typed::<ArbPod>(data) else {
        return;
    };
    let pod = arb.pod();
    let Ok(view) = PodView::from_pod(&pod) else {
        return;
    };
    for kind in [
        ProviderKind::Aci,
        ProviderKind::Fargate,
        ProviderKind::Cluster,
        ProviderKind::Sim,
    ] {
        if let Ok(size) = sizing::fit(kind, &view.resources) {
            assert!(
                size.milli_cpu >= view.resources.milli_cpu,
                "{kind:?} sized down"
            );
        }
    }
    let policy = policy();
    let mut ledger = Ledger::new(policy);
    let decision = ledger.place(policy, &view, &[]);
    let _ = explain::summary(policy, &decision);
    let _ = explain::table(policy, &decision);
    let _ = explain::to_json(policy, &decision);
    if let Outcome::Placed(_) = decision.outcome {
        assert!(
            ledger.release(&view.uid).is_some(),
            "placed without a reservation"
        );
    }
}

/// A pod and the target settings it is translated for.
#[derive(Debug, Arbitrary)]
struct Input {
    pod: ArbPod,
    spot: bool,
    private: bool,
    dns_label: bool,
    execution_role: bool,
    logs: bool,
}

/// Each adapter's translation of arbitrary valid pods (sized as the engine sizes them for that
/// provider, with the values the controller would resolve): a request body, or a refusal that
/// names the field; never a panic. The ownership tags always carry the pod's UID.
pub fn translate(data: &[u8]) {
    let Some(input) = typed::<Input>(data) else {
        return;
    };
    let uid = input.pod.uid();
    if let Some(spec) = workload(&input.pod, ProviderKind::Aci) {
        check(
            "aci",
            fuzzing::aci_translate(&spec, &aci_settings(&input)),
            &uid,
        );
    }
    if let Some(spec) = workload(&input.pod, ProviderKind::Fargate) {
        check(
            "fargate",
            fuzzing::fargate_translate(&spec, &fargate_settings(&input)),
            &uid,
        );
    }
    if let Some(spec) = workload(&input.pod, ProviderKind::Cluster) {
        check("cluster", fuzzing::cluster_translate(&spec, "burst"), &uid);
    }
}

/// Whether to say what each input became (`FUZZ_SHOW=1`, to see how deep a corpus reaches:
/// `FUZZ_SHOW=1 <target binary> <corpus> -runs=0 2>&1 | sort | uniq -c`).
fn show() -> bool {
    static SHOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHOW.get_or_init(|| std::env::var_os("FUZZ_SHOW").is_some())
}

/// A body carries the pod UID; a refusal becomes a provider error with a message.
fn check(
    adapter: &str,
    result: Result<serde_json::Value, crate::provider::kit::TranslateError>,
    uid: &str,
) {
    if show() {
        match &result {
            Ok(_) => eprintln!("{adapter}: translated"),
            Err(e) => eprintln!("{adapter}: refused: {}", ProviderError::from(e.clone())),
        }
    }
    match result {
        Ok(body) => assert!(body.to_string().contains(uid), "no owner UID in {body}"),
        Err(e) => {
            let e: ProviderError = e.into();
            assert!(!e.to_string().is_empty());
        }
    }
}

fn aci_settings(input: &Input) -> aci::Settings {
    aci::Settings {
        target: "aci-eastus".into(),
        region: "eastus".into(),
        subscription_id: "00000000-0000-0000-0000-000000000000".into(),
        resource_group: "burst".into(),
        spot: input.spot,
        subnet_ids: if input.private {
            vec!["/subscriptions/0/resourceGroups/n/providers/Microsoft.Network/virtualNetworks/v/subnets/s".into()]
        } else {
            vec![]
        },
        dns_name_label: input.dns_label,
        arm_endpoint: aci::DEFAULT_ARM_ENDPOINT.into(),
        monitor_endpoint: String::new(),
        usage_refresh: crate::provider::kit::usage::DEFAULT_REFRESH,
        // Private groups get the cluster DNS and kube-proxy, as with the gateway's flags.
        cluster_dns: input.private.then(|| aci::ClusterDns {
            servers: vec!["10.0.0.10".into()],
            domain: "cluster.local".into(),
        }),
        kube_proxy: input.private.then(|| aci::KubeProxy {
            cluster_cidr: "10.244.0.0/16".into(),
            kube_version: "v1.30.4".into(),
            kubeconfig: "apiVersion: v1\nkind: Config\n".into(),
        }),
    }
}

fn fargate_settings(input: &Input) -> fargate::Settings {
    fargate::Settings {
        target: "fargate-us-east-1".into(),
        region: "us-east-1".into(),
        cluster: "burst".into(),
        subnets: vec!["subnet-1".into()],
        security_groups: vec!["sg-1".into()],
        assign_public_ip: !input.private,
        spot: input.spot,
        execution_role_arn: input
            .execution_role
            .then(|| "arn:aws:iam::123456789012:role/ecsTaskExecutionRole".into()),
        task_role_arn: None,
        log_group: input.logs.then(|| "/burstgate/pods".into()),
        secrets_prefix: "burstgate/".into(),
    }
}

/// ARM answers to the ACI adapter (a container group GET, or any error with an ARM `CloudError`
/// body, its `Retry-After` and rate-limit headers): a status and an ownership verdict, or a
/// classified error, which the target's layers then wait on; never a panic. A throttled answer
/// is always retryable.
pub fn aci_reply(data: &[u8]) {
    let r = reply::parse(data);
    let answer = fuzzing::aci_reply("bg-fuzz", r.status, &r.headers, r.body);
    match answer.error {
        Some(e) => {
            if r.status == 429 {
                assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");
            }
            through_layers(&e);
        }
        None => assert!(answer.status.is_some(), "neither a status nor an error"),
    }
}

/// ECS answers to the Fargate adapter, parsed by the real SDK client: DescribeTasks (or RunTask,
/// when the first line says so) tasks become statuses, `failures` and error answers become
/// classified errors, which the target's layers then wait on; never a panic. A throttled answer
/// is always retryable.
pub fn ecs_reply(data: &[u8]) {
    let r = reply::parse(data);
    ecs::answer_with(&r);
    let (runtime, client) = ecs::client();
    let answer = runtime.block_on(async {
        if r.operation == "RunTask" {
            let out = client
                .run_task()
                .cluster("burst")
                .task_definition("bg-x")
                .send()
                .await;
            out.map(|o| (o.tasks().to_vec(), o.failures().to_vec()))
                .map_err(|e| fuzzing::fargate_error("RunTask", &e))
        } else {
            let out = client
                .describe_tasks()
                .cluster("burst")
                .tasks("arn")
                .send()
                .await;
            out.map(|o| (o.tasks().to_vec(), o.failures().to_vec()))
                .map_err(|e| fuzzing::fargate_error("DescribeTasks", &e))
        }
    });
    match answer {
        Ok((tasks, failures)) => {
            for task in &tasks {
                let _ = fuzzing::fargate_task_status(task);
            }
            for f in &failures {
                through_layers(&fuzzing::fargate_failure(f.reason(), f.detail(), f.arn()));
            }
        }
        Err(e) => {
            if r.status == 429 {
                assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");
            }
            through_layers(&e);
        }
    }
}

/// API server answers to the cluster adapter: a shadow Pod (200) becomes a status; an error
/// `Status` (any other code, or a body that is not one, as kube-rs reads it) becomes a classified
/// error, and an exec's final Status an exit code or the pod's error; never a panic.
pub fn kube_reply(data: &[u8]) {
    let r = reply::parse(data);
    if r.status == 200 {
        if let Ok(pod) = serde_json::from_slice::<Pod>(r.body) {
            let _ = fuzzing::cluster_status(&pod);
        }
        if let Ok(status) = serde_json::from_slice(r.body)
            && let Err(e) = fuzzing::cluster_exec_exit(&status)
        {
            through_layers(&e);
        }
        return;
    }
    // kube-rs: an error answer's body is a Status, else the text becomes one with the code.
    let status = serde_json::from_slice::<kube::core::Status>(r.body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(r.body);
        kube::core::Status::failure(&text, "Failed").with_code(r.status)
    });
    let code = status.code;
    let e = fuzzing::cluster_error(status);
    if code == 429 {
        assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");
    }
    through_layers(&e);
}
