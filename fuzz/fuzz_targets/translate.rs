//! Each adapter's translation of arbitrary valid pods (sized as the engine sizes them for that
//! provider, with the values the controller would resolve): a request body, or a refusal that
//! names the field; never a panic. The ownership tags always carry the pod's UID.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burstgate::fuzzing::targets::translate(data));
