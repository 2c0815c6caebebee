#!/usr/bin/env python3
"""Scale benchmark: N pods on one virtual node, against the real apiserver of tests/peers.

Run through scripts/scale.sh (which builds the release binary and brings up the peers). For each
N and each mode (sim targets without limits; sim targets behind the published Fargate launch
bucket, 100 burst 20/s) it starts `burstgate run`, creates N bare pods bound to the node in
parallel, waits for all Running, holds a steady minute, deletes them and waits until they are
gone, and prints per run:

  - seconds from the last pod's create to the last pod Running, beyond the simulated start time
  - placements per second, and provider creates per second against the bucket's ceiling
  - apiserver requests per pod by verb and resource (apiserver_request_total deltas; bare pods
    bound by nodeName, so the scheduler and controllers add nothing to pods, pods/status or
    events: what is counted there is the gateway's)
  - gateway RSS peak and steady, CPU seconds for the burst, per steady minute and for the delete

Standard library only. Numbers, not assertions: docs/performance.md keeps them.
"""

import concurrent.futures
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

PEERS = {}
for line in open(os.environ["BURSTGATE_PEERS_ENV"]):
    if "=" in line and not line.startswith("#"):
        k, v = line.rstrip("\n").split("=", 1)
        PEERS[k] = v.strip("'\"")

API = PEERS["KUBE_APISERVER_URL"]
CTX = ssl.create_default_context(cafile=PEERS["KUBE_CA"])
ADMIN_TOKEN = re.search(r"token: \"?([^\"\n]+)", open(PEERS["KUBECONFIG_ADMIN"]).read()).group(1)
BINARY = os.environ["BURSTGATE_BINARY"]
COLD_START_MS = 300
# Knobs for investigating (defaults are the documented run): which modes, how long the steady
# window is, and a command to wrap the gateway in (e.g. SCALE_WRAP="heaptrack -o /tmp/gw").
MODES = [m == "bucket" for m in os.environ.get("SCALE_MODES", "free bucket").split()]
STEADY_S = int(os.environ.get("SCALE_STEADY_S", "60"))


def api(method, path, body=None, accept="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + ADMIN_TOKEN)
    req.add_header("Accept", accept)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for attempt in range(20):
        try:
            with urllib.request.urlopen(req, context=CTX, timeout=60) as r:
                raw = r.read()
                return json.loads(raw) if accept == "application/json" and raw else raw.decode()
        except urllib.error.HTTPError as e:
            if e.code == 404 or (e.code == 409 and method == "POST"):
                return None
            if e.code == 429 or e.code >= 500:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"{method} {path} kept failing")


def request_counts():
    """apiserver_request_total summed by (verb, resource/subresource)."""
    text = api("GET", "/metrics", accept="text/plain")
    counts = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        key = (labels.get("verb", ""), labels.get("resource", "") + ("/" + labels["subresource"] if labels.get("subresource") else ""))
        counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def proc_stats(pid):
    """(cpu seconds, rss MiB, peak rss MiB) of a process."""
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    status = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    return cpu, rss, hwm


def gateway_metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric_sum(text, name, must_contain=()):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(s in line for s in must_contain):
            total += float(line.rsplit(" ", 1)[1])
    return total


def policy(throttled):
    limits = "\n      rateLimits:\n        - {operation: create, burst: 100, perSecond: 20}" if throttled else ""
    return f"""apiVersion: burstgate.io/v1alpha1
kind: BurstPolicy
spec:
  targets:
    - name: sim-scale
      provider: sim
      region: local
      pricing: {{vcpuHour: 0.04, gibHour: 0.004}}
      quota: {{vcpu: 100000, memoryGiB: 400000, pods: 100000}}{limits}
  rules:
    - name: everything
      match: {{}}
"""


def count_phase(ns, phase):
    selector = f"&fieldSelector=status.phase%3D{phase}" if phase else ""
    items = api("GET", f"/api/v1/namespaces/{ns}/pods?limit=100000{selector}")["items"]
    return len(items)


def wait_until(what, probe, limit):
    deadline = time.time() + limit
    while time.time() < deadline:
        if probe():
            return time.time()
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def run(n, throttled):
    tag = f"scale-{n}-{'bucket' if throttled else 'free'}-{os.getpid()}"
    ns, node = tag, tag
    api("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    # deploy/'s leader-election role for the gateway identity in this namespace.
    api("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
        "metadata": {"name": "burstgate-leader-election"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "burstgate-leader-election"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": PEERS["KUBE_GATEWAY_USER"]}]})
    wait_until("the default ServiceAccount", lambda: api("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default") is not None, 60)
    work = tempfile.mkdtemp(prefix=tag)
    os.mkdir(f"{work}/policy")
    open(f"{work}/policy/policy.yaml", "w").write(policy(throttled))
    metrics_port = 20000 + (os.getpid() + n + throttled) % 20000
    log = open(f"{work}/gateway.log", "w")
    wrap = os.environ.get("SCALE_WRAP", "").split()
    gw = subprocess.Popen(wrap + [
        BINARY, "run", "--node-name", node, "--namespace", ns, "--identity", "scale", "--cluster-id", tag,
        "--policy-dir", f"{work}/policy", "--kubeconfig", PEERS["KUBECONFIG_GATEWAY"],
        "--sim-cold-start-ms", str(COLD_START_MS), "--node-ip", "127.0.0.1",
        "--metrics-addr", f"127.0.0.1:{metrics_port}", "--kubelet-port", str(metrics_port + 1),
    ], stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "RUST_LOG": "burstgate=warn"})
    try:
        wait_until("the node Ready", lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (api("GET", f"/api/v1/nodes/{node}") or {}).get("status", {}).get("conditions", [])), 60)
        before = request_counts()
        cpu0, _, _ = proc_stats(gw.pid)
        pod = lambda i: {"metadata": {"name": f"p{i}", "labels": {"app": "scale"}}, "spec": {
            "nodeName": node, "containers": [{"name": "app", "image": "nginx:1.27",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}]}}
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: api("POST", f"/api/v1/namespaces/{ns}/pods", pod(i)), range(n)))
        t_created = time.time()
        t_running = wait_until(f"{n} pods Running", lambda: count_phase(ns, "Running") >= n, 3600)
        cpu1, _, hwm_burst = proc_stats(gw.pid)
        burst_metrics = gateway_metrics(metrics_port)
        time.sleep(STEADY_S)
        cpu2, rss_steady, _ = proc_stats(gw.pid)
        after_burst = request_counts()
        t_del = time.time()
        api("DELETE", f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dscale")
        t_gone = wait_until("every pod gone", lambda: count_phase(ns, "") == 0, 3600)
        cpu3, _, hwm = proc_stats(gw.pid)
        after_delete = request_counts()
    finally:
        gw.terminate()
        gw.wait(timeout=30)
        api("DELETE", f"/api/v1/nodes/{node}")
        api("DELETE", f"/api/v1/namespaces/{ns}")
    creates = metric_sum(burst_metrics, "burstgate_provider_requests_total", ('operation="Create"', 'result="ok"')) or n
    throttles = metric_sum(burst_metrics, "burstgate_provider_throttled_total")
    burst_seconds = t_running - t0
    ceiling = (100 + 20 * burst_seconds) / burst_seconds if throttled else None
    per_pod = {}
    for key, v in after_burst.items():
        d = v - before.get(key, 0)
        if d and key[1] in ("pods", "pods/status", "events", "serviceaccounts/token", "services", "configmaps", "secrets"):
            per_pod[f"{key[0]} {key[1]}"] = round(d / n, 2)
    deletes = {}
    for key, v in after_delete.items():
        d = v - after_burst.get(key, 0)
        if d and key[1] in ("pods", "pods/status", "events"):
            deletes[f"{key[0]} {key[1]}"] = round(d / n, 2)
    return {
        "pods": n,
        "mode": "bucket 100 + 20/s" if throttled else "unthrottled",
        "creates_took_s": round(t_created - t0, 1),
        "last_create_to_all_running_s": round(max(0.0, t_running - t_created - COLD_START_MS / 1000), 1),
        "placements_per_s": round(n / burst_seconds, 1),
        "provider_creates_per_s": round(creates / burst_seconds, 1),
        "share_of_bucket_ceiling": round(creates / burst_seconds / ceiling, 3) if ceiling else None,
        "provider_throttles": throttles,
        "gateway_cpu_s_burst": round(cpu1 - cpu0, 2),
        "gateway_cpu_core_steady": round((cpu2 - cpu1) / STEADY_S, 3),
        "gateway_rss_peak_mib": round(max(hwm_burst, hwm), 1),
        "gateway_rss_steady_mib": round(rss_steady, 1),
        "kib_per_pod_steady": round(rss_steady * 1024 / n, 1),
        "apiserver_requests_per_pod_burst": per_pod,
        "delete_s": round(t_gone - t_del, 1),
        "gateway_cpu_s_delete": round(cpu3 - cpu2, 2),
        "apiserver_requests_per_pod_delete": deletes,
    }


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [1000]
    for n in sizes:
        for throttled in MODES:
            print(json.dumps(run(n, throttled), indent=1), flush=True)


if __name__ == "__main__":
    main()
