//! Each adapter's translation of arbitrary valid pods (sized as the engine sizes them for that
//! provider, with the values the controller would resolve): a request body, or a refusal that
//! names the field; never a panic. The ownership tags always carry the pod's UID.
#![no_main]

use arbitrary::Arbitrary;
use burstgate::fuzzing;
use burstgate::policy::model::ProviderKind;
use burstgate::provider::{ProviderError, aci, fargate};
use burstgate_fuzz::pod::ArbPod;
use burstgate_fuzz::workload;

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

libfuzzer_sys::fuzz_target!(|input: Input| {
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
});

/// Whether to say what each input became (`FUZZ_SHOW=1`, to see how deep a corpus reaches:
/// `FUZZ_SHOW=1 <target binary> <corpus> -runs=0 2>&1 | sort | uniq -c`).
fn show() -> bool {
    static SHOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHOW.get_or_init(|| std::env::var_os("FUZZ_SHOW").is_some())
}

/// A body carries the pod UID; a refusal becomes a provider error with a message.
fn check(
    adapter: &str,
    result: Result<serde_json::Value, burstgate::provider::kit::TranslateError>,
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
