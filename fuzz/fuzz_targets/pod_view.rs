//! Pod -> engine view: any valid pod becomes a `PodView` or a `PodError`, is sized for every
//! provider, and the engine decides and explains it with the example policies (through the
//! ledger, as the controller does); never a panic, and a placement holds a reservation.
#![no_main]

use std::sync::OnceLock;

use burstgate::policy::model::ProviderKind;
use burstgate::policy::{Ledger, Outcome, PodView, Policy, explain, load_files, sizing};
use burstgate_fuzz::pod::ArbPod;

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

libfuzzer_sys::fuzz_target!(|arb: ArbPod| {
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
});
