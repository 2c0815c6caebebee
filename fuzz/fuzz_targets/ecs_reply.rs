//! ECS answers to the Fargate adapter, parsed by the real SDK client: DescribeTasks (or RunTask,
//! when the first line says so) tasks become statuses, `failures` and error answers become
//! classified errors, which the target's layers then wait on; never a panic. A throttled answer
//! is always retryable.
#![no_main]

use burstgate::fuzzing;
use burstgate::provider::ProviderError;
use burstgate_fuzz::{ecs, reply, through_layers};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
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
});
