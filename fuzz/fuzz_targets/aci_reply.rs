//! ARM answers to the ACI adapter (a container group GET, or any error with an ARM `CloudError`
//! body, its `Retry-After` and rate-limit headers): a status and an ownership verdict, or a
//! classified error, which the target's layers then wait on; never a panic. A throttled answer
//! is always retryable.
#![no_main]

use burstgate::fuzzing::aci_reply;
use burstgate::provider::ProviderError;
use burstgate_fuzz::{reply, through_layers};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let r = reply::parse(data);
    let answer = aci_reply("bg-fuzz", r.status, &r.headers, r.body);
    match answer.error {
        Some(e) => {
            if r.status == 429 {
                assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");
            }
            through_layers(&e);
        }
        None => assert!(answer.status.is_some(), "neither a status nor an error"),
    }
});
