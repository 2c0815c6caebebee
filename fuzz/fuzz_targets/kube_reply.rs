//! API server answers to the cluster adapter: a shadow Pod (200) becomes a status; an error
//! `Status` (any other code, or a body that is not one, as kube-rs reads it) becomes a classified
//! error, and an exec's final Status an exit code or the pod's error; never a panic.
#![no_main]

use burstgate::fuzzing;
use burstgate::provider::ProviderError;
use burstgate_fuzz::{reply, through_layers};
use k8s_openapi::api::core::v1::Pod;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let r = reply::parse(data);
    if r.status == 200 {
        if let Ok(pod) = serde_json::from_slice::<Pod>(r.body) {
            let _ = fuzzing::cluster_status(&pod);
        }
        if let Ok(status) = serde_json::from_slice(r.body)
            && let Err(e) = fuzzing::cluster_exec_exit(&status)
        {
            through_layers(&e);
        }
        return;
    }
    // kube-rs: an error answer's body is a Status, else the text becomes one with the code.
    let status = serde_json::from_slice::<kube::core::Status>(r.body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(r.body);
        kube::core::Status::failure(&text, "Failed").with_code(r.status)
    });
    let code = status.code;
    let e = fuzzing::cluster_error(status);
    if code == 429 {
        assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");
    }
    through_layers(&e);
});
