//! CEL match expressions: any source either compiles or says why, and a compiled one evaluates
//! against any pod view to a boolean or a reason; never a panic. The input is the expression, a
//! NUL byte, then the bytes the pod view is made of.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use burstgate::policy::PodView;
use burstgate::policy::expression::Expression;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (source, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let expression = match Expression::compile(source) {
        Ok(e) => e,
        Err(why) => {
            assert!(!why.is_empty());
            return;
        }
    };
    let mut u = Unstructured::new(rest);
    let Ok(pod) = view(&mut u) else {
        return;
    };
    if let Err(why) = expression.eval(&pod) {
        assert!(!why.is_empty());
    }
});

fn view(u: &mut Unstructured) -> arbitrary::Result<PodView> {
    let mut pod = PodView {
        namespace: String::arbitrary(u)?,
        name: String::arbitrary(u)?,
        uid: String::arbitrary(u)?,
        labels: Arbitrary::arbitrary(u)?,
        annotations: Arbitrary::arbitrary(u)?,
        ..Default::default()
    };
    pod.resources.milli_cpu = u64::arbitrary(u)?;
    pod.resources.memory_mib = u64::arbitrary(u)?;
    pod.resources.gpus = u32::arbitrary(u)?;
    Ok(pod)
}
