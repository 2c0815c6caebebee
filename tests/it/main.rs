//! Integration tests, one binary: the CLI as operators call it, and the real peers.
mod aci;
mod alerts;
mod cli;
mod cluster_provider;
mod common;
mod crash_safety;
mod deploy;
mod docs;
mod fail_points;
mod fargate;
mod faults;
mod gateway_e2e;
mod gateway_node;
mod gateway_pods;
mod identity;
mod kubelet;
mod peers;
