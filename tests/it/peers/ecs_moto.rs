//! ECS Fargate as moto serves it to aws-sdk-ecs: a task definition registered, a Fargate task
//! run in the default VPC's subnet (awsvpc), described while RUNNING, and stopped.

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition, LaunchType,
    NetworkConfiguration, NetworkMode, Tag,
};

use crate::common;

#[tokio::test]
async fn a_fargate_task_is_registered_run_described_and_stopped_on_moto() {
    let peers = common::peers();
    let ecs = common::ecs_client();
    let cluster = common::unique_name("burstgate-test");
    let family = common::unique_name("burstgate-pod");

    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("CreateCluster");
    let definition = ecs
        .register_task_definition()
        .family(&family)
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu("256")
        .memory("512")
        // moto answers 500 to a container without container-level memory (real Fargate does not).
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image("nginx:1.27")
                .memory(512)
                .essential(true)
                .build(),
        )
        .send()
        .await
        .expect("RegisterTaskDefinition")
        .task_definition
        .expect("a task definition");
    let definition_arn = definition
        .task_definition_arn()
        .expect("a task definition ARN")
        .to_owned();
    assert_eq!(
        definition.requires_compatibilities(),
        [Compatibility::Fargate]
    );

    let network = NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .subnets(peers.get("ECS_TEST_SUBNET"))
                .security_groups(peers.get("ECS_TEST_SG"))
                .assign_public_ip(AssignPublicIp::Disabled)
                .build()
                .expect("an awsvpc configuration"),
        )
        .build();
    let run = ecs
        .run_task()
        .cluster(&cluster)
        .task_definition(&definition_arn)
        .launch_type(LaunchType::Fargate)
        .count(1)
        .network_configuration(network)
        .started_by("burstgate-test")
        .tags(
            Tag::builder()
                .key("burstgate.io/pod-uid")
                .value("0000-test")
                .build(),
        )
        .send()
        .await
        .expect("RunTask");
    assert!(
        run.failures().is_empty(),
        "RunTask failures: {:?}",
        run.failures()
    );
    let [task] = run.tasks() else {
        panic!("RunTask started {} tasks, not 1", run.tasks().len())
    };
    let task_arn = task.task_arn().expect("a task ARN").to_owned();
    assert_eq!(task.launch_type(), Some(&LaunchType::Fargate));

    // up.sh pins tasks at RUNNING: without it, every DescribeTasks would move the task one state on.
    for _ in 0..3 {
        let described = ecs
            .describe_tasks()
            .cluster(&cluster)
            .tasks(&task_arn)
            .include(aws_sdk_ecs::types::TaskField::Tags)
            .send()
            .await
            .expect("DescribeTasks");
        let [task] = described.tasks() else {
            panic!("DescribeTasks found {:?}", described.failures())
        };
        assert_eq!(task.last_status(), Some("RUNNING"));
        assert_eq!(task.started_by(), Some("burstgate-test"));
        assert!(
            task.tags()
                .iter()
                .any(|t| t.key() == Some("burstgate.io/pod-uid") && t.value() == Some("0000-test")),
            "the task keeps its tags: {:?}",
            task.tags()
        );
    }

    let stopped = ecs
        .stop_task()
        .cluster(&cluster)
        .task(&task_arn)
        .reason("pod deleted")
        .send()
        .await
        .expect("StopTask")
        .task
        .expect("the stopped task");
    assert_eq!(stopped.desired_status(), Some("STOPPED"));
    let described = ecs
        .describe_tasks()
        .cluster(&cluster)
        .tasks(&task_arn)
        .send()
        .await
        .expect("DescribeTasks");
    let [task] = described.tasks() else {
        panic!("DescribeTasks found {:?}", described.failures())
    };
    assert_eq!(task.desired_status(), Some("STOPPED"));
    assert_eq!(task.last_status(), Some("STOPPED"));
    assert_eq!(task.stopped_reason(), Some("pod deleted"));

    ecs.deregister_task_definition()
        .task_definition(&definition_arn)
        .send()
        .await
        .expect("DeregisterTaskDefinition");
    ecs.delete_cluster()
        .cluster(&cluster)
        .send()
        .await
        .expect("DeleteCluster");
}
