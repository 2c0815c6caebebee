//! Policy files: any text -> a checked policy, or problems that each name the file, a line
//! within it and a message; never a panic. Files in one input are separated by NUL bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burstgate::fuzzing::targets::policy_load(data));
