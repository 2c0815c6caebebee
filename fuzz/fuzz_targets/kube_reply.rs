//! API server answers to the cluster adapter: a shadow Pod (200) becomes a status; an error
//! `Status` (any other code, or a body that is not one, as kube-rs reads it) becomes a classified
//! error, and an exec's final Status an exit code or the pod's error; never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burstgate::fuzzing::targets::kube_reply(data));
