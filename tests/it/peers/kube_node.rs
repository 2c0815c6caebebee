//! The test node: a real kubelet 1.20.2 on containerd (tests/peers/up.sh) is Ready, tainted so that
//! only pods tolerating `KUBE_TEST_NODE_TAINT` land there, and runs a pod of the local busybox
//! image (no registry is reachable) whose logs, exec and port-forward kubectl reaches through the
//! apiserver; a pod without the toleration stays Pending.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::common::{self, eventually, peers, unique_name};

const WAIT: Duration = Duration::from_secs(60);

/// kubectl as cluster admin in `ns`: exit code, stdout, stderr; `stdin` fed to it.
fn kubectl(ns: &str, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(peers().path("KUBECTL"))
        .arg("--kubeconfig")
        .arg(peers().path("KUBECONFIG_ADMIN"))
        .args(["-n", ns])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("kubectl ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A pod of the test node's busybox image that echoes TCP port 8080 back, tolerating the node's
/// taint when `tolerates`.
fn echo_pod(name: &str, tolerates: bool) -> Pod {
    let tolerations = if tolerates {
        json!([{"key": peers().get("KUBE_TEST_NODE_TAINT"), "operator": "Exists", "effect": "NoSchedule"}])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false, "terminationGracePeriodSeconds": 1,
            "tolerations": tolerations,
            "containers": [{"name": "app", "image": peers().get("KUBE_TEST_NODE_IMAGE"), "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "echo started on $(hostname); exec nc -ll -p 8080 -e cat"]}]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn the_test_node_runs_a_tolerating_pod_that_kubectl_reaches_and_keeps_other_pods_off() {
    let client = common::kube_admin().await;
    let node_name = peers().get("KUBE_TEST_NODE").to_string();
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .get(&node_name)
        .await
        .expect("up.sh registered the test node");
    let status = node.status.unwrap_or_default();
    assert!(
        status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "the test node is Ready"
    );
    assert_eq!(
        status.addresses.unwrap_or_default()[0].address,
        peers().get("KUBE_TEST_NODE_IP"),
        "its InternalIP is the bridge address the kubelet serves on"
    );

    let ns = unique_name("test-node");
    common::create_namespace(&client, &ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &echo_pod("echo", true))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &echo_pod("other", false))
        .await
        .unwrap();
    let running = eventually("pod echo Running on the test node", WAIT, || async {
        pods.get("echo")
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    assert_eq!(
        running.spec.unwrap().node_name.as_deref(),
        Some(node_name.as_str())
    );

    // logs, and exec with stdin and an exit code, through the apiserver to the real kubelet.
    let (code, out, err) = kubectl(&ns, &["logs", "echo"], b"");
    assert!(code == 0 && out.contains("started on echo"), "{out}{err}");
    let (code, out, err) = kubectl(
        &ns,
        &[
            "exec",
            "-i",
            "echo",
            "--",
            "sh",
            "-c",
            "read -r l; echo \"got $l\"; exit 3",
        ],
        b"line one\n",
    );
    assert_eq!((code, out.as_str()), (3, "got line one\n"), "{err}");

    // port-forward moves bytes both ways: what goes in comes back from the pod's echo server.
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut forward = Command::new(peers().path("KUBECTL"))
        .arg("--kubeconfig")
        .arg(peers().path("KUBECONFIG_ADMIN"))
        .args([
            "-n",
            &ns,
            "port-forward",
            "pod/echo",
            &format!("{local}:8080"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(forward.stdout.take().unwrap()).lines();
    assert!(
        lines
            .next()
            .and_then(Result::ok)
            .is_some_and(|l| l.contains("Forwarding from")),
        "kubectl port-forward listens"
    );
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"ping through the test node\n").unwrap();
    let mut back = [0u8; 27];
    let read = conn.read_exact(&mut back);
    let _ = forward.kill();
    let _ = forward.wait();
    read.expect("the echo comes back");
    assert_eq!(&back, b"ping through the test node\n");

    // Without the toleration the scheduler keeps a pod off the test node.
    let other = pods.get("other").await.unwrap();
    assert_eq!(other.spec.unwrap().node_name, None);
    assert_eq!(
        other.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );

    for name in ["echo", "other"] {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    eventually("the kubelet confirmed pod echo's end", WAIT, || async {
        pods.get_opt("echo").await.ok()?.is_none().then_some(())
    })
    .await;
}
