//! What kubectl can and cannot do with a pod on each provider kind, in one sentence each, for
//! `policy explain` (the table of docs/operations.md says the same at length).

use crate::policy::model::ProviderKind;

/// The kubectl commands a pod on `kind` cannot use, and why; `None` when every one works.
pub fn limits(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::Fargate => Some(
            "kubectl exec, attach and port-forward answer 501 (ECS Exec needs tasks run with \
             enableExecuteCommand and the SSM agent's Session Manager channel, which burstgate \
             does not drive); kubectl top shows no usage (ECS reports none without CloudWatch \
             Container Insights); kubectl logs needs the target's logGroup",
        ),
        ProviderKind::Aci => Some(
            "kubectl exec reports no exit code (always 0) and one output stream; attach is output \
             only (-i/-t refused); port-forward answers 501",
        ),
        ProviderKind::Sim => Some(
            "kubectl exec -i/-t, attach and port-forward are refused; kubectl top shows no usage",
        ),
        ProviderKind::Cluster => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fargate_says_exec_needs_enable_execute_command_and_the_ssm_agent() {
        let text = limits(ProviderKind::Fargate).unwrap();
        assert!(
            text.contains("enableExecuteCommand") && text.contains("SSM agent"),
            "{text}"
        );
        assert!(limits(ProviderKind::Cluster).is_none());
    }
}
