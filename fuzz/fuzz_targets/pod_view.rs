//! Pod -> engine view: any valid pod becomes a `PodView` or a `PodError`, is sized for every
//! provider, and the engine decides and explains it with the example policies (through the
//! ledger, as the controller does); never a panic, and a placement holds a reservation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burstgate::fuzzing::targets::pod_view(data));
