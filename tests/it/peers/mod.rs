//! Smoke tests of the real peers that tests/peers/up.sh starts: each shows that one peer behaves
//! as burstgate's later tests rely on.
mod aci_emulator;
mod aci_prism;
mod ecs_moto;
mod kube_identity;
mod kube_node;
mod kube_scheduling;
mod kube_watch;
mod prometheus_tools;
