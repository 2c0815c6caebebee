//! ARM answers to the ACI adapter (a container group GET, or any error with an ARM `CloudError`
//! body, its `Retry-After` and rate-limit headers): a status and an ownership verdict, or a
//! classified error, which the target's layers then wait on; never a panic. A throttled answer
//! is always retryable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burstgate::fuzzing::targets::aci_reply(data));
