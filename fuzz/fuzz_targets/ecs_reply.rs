//! ECS answers to the Fargate adapter, parsed by the real SDK client: DescribeTasks (or RunTask,
//! when the first line says so) tasks become statuses, `failures` and error answers become
//! classified errors, which the target's layers then wait on; never a panic. A throttled answer
//! is always retryable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burstgate::fuzzing::targets::ecs_reply(data));
