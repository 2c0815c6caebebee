//! What one Fargate target is: the account and region come from the SDK config, the rest from
//! the policy's target (built in `provider/factories.rs`).

/// One Fargate target's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Target name in the policy.
    pub target: String,
    /// AWS region (`us-east-1`).
    pub region: String,
    /// ECS cluster name or ARN.
    pub cluster: String,
    /// awsvpc subnets tasks run in.
    pub subnets: Vec<String>,
    /// Security groups of the tasks' ENIs.
    pub security_groups: Vec<String>,
    /// Give tasks a public IP (needed to pull public images from a subnet without NAT).
    pub assign_public_ip: bool,
    /// Run on Fargate Spot (capacity provider `FARGATE_SPOT`; the cluster must have it).
    pub spot: bool,
    /// Task execution role: needed for secrets, registry credentials and awslogs.
    pub execution_role_arn: Option<String>,
    /// Task role: the AWS identity of the pod's code.
    pub task_role_arn: Option<String>,
    /// CloudWatch Logs group for the awslogs driver; without it there are no logs.
    pub log_group: Option<String>,
    /// Prefix of every Secrets Manager secret burstgate writes (`burstgate/`).
    pub secrets_prefix: String,
}
