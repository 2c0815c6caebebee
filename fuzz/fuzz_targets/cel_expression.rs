//! CEL match expressions: any source either compiles or says why, and a compiled one evaluates
//! against any pod view to a boolean or a reason; never a panic. The input is the expression, a
//! NUL byte, then the bytes the pod view is made of.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| burstgate::fuzzing::targets::cel_expression(data));
