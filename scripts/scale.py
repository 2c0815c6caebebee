#!/usr/bin/env python3
"""Scale benchmark: N pods on one virtual node, against the real apiserver of tests/peers.

Run through scripts/scale.sh (which builds the release binary and brings up the peers). For each
N and each mode (sim targets without limits; `bucket`: behind the published Fargate launch
bucket, 100 burst 20/s; `aci`: behind ACI's create buckets, for N of a few hundred: 300 per hour;
the sim cloud itself enforcing the same buckets, answering 429 past them) it starts
`burstgate run`, creates N bare pods bound to the node in
parallel, waits for all Running, holds a steady minute, deletes them and waits until they are
gone; in the `backlog` mode the pods are created while the gateway is stopped, and the gateway
started on them, which measures how fast it places a burst whatever the load generator's speed;
the `owed` mode is `backlog` with examples/owed_writes.rs in the gateway's place, making only the
four writes a placement owes each pod (annotations, TokenRequest, Event, status): the rate the
apiserver allows on this machine, whatever the gateway does (a shorter record: its placement,
requests per pod and CPU, no steady window or delete).
It prints per run:

  - seconds from the last pod's create to the last pod Running, beyond the simulated start time
  - placements per second, and provider creates per second against the bucket's ceiling
  - apiserver requests per pod by verb and resource (apiserver_request_total deltas; bare pods
    bound by nodeName, so the scheduler and controllers add nothing to pods, pods/status or
    events: what is counted there is the gateway's)
  - gateway RSS peak and steady, CPU seconds for the burst, per steady minute and for the delete
  - after the steady window, one LIST of the node's pods in pages of 500, as a starting replica's
    pod cache makes (once in the life of the process, leading or not; a new term of leadership
    reuses the cache): seconds, MiB and the apiserver's CPU (a replica's start at this size)
  - the apiserver requests of the steady window, by verb and resource
  - a new term on N pods: someone else takes the gateway's Lease, then lets go; seconds until it
    leads again, the LISTs of pods meanwhile (none: the pod cache is kept) and its CPU for the
    new term's first 15 s
  - with SCALE_STANDBY=1, a second replica (deploy/ runs two) started once the first leads and
    stopped before the new term: its RSS and CPU while it stands by on the steady N pods, the
    price of a standby's pod cache (docs/deployment.md)
  - per phase (burst, delete): how often the gateway lost its leader Lease, and how long the
    apiserver's fair queuing (API Priority and Fairness) held the requests of the gateway's
    flow schemas (deploy/flowcontrol puts its Leases in `leader-election`; the rest of its
    requests fall to `global-default`), with the requests it rejected (429)

Standard library only. Numbers, not assertions: docs/performance.md keeps them.
"""

import concurrent.futures
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
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
# examples/owed_writes.rs, for the `owed` mode (scale.sh builds it).
OWED_BINARY = os.environ.get("SCALE_OWED_BINARY", "")
COLD_START_MS = 300
# Knobs for investigating (defaults are the documented run): which modes, how long the steady
# window is, and a command to wrap the gateway in (e.g. SCALE_WRAP="heaptrack -o /tmp/gw").
MODES = os.environ.get("SCALE_MODES", "free bucket backlog").split()
STEADY_S = int(os.environ.get("SCALE_STEADY_S", "60"))
# Seconds of the apiserver's CPU profile to take from the start of the placement (backlog mode;
# peers brought up with BURSTGATE_APISERVER_PROFILING=true); read it with `go tool pprof -top`.
PPROF_S = int(os.environ.get("SCALE_PPROF_S", "0"))
# A standby replica beside the leader (not in the backlog mode, where the leader is restarted).
STANDBY = os.environ.get("SCALE_STANDBY", "0") == "1"


HOST = urllib.parse.urlsplit(API)
LOCAL = threading.local()


def connection(fresh=False):
    """This thread's keep-alive connection to the apiserver (a TLS handshake per request made
    the creates, not the gateway, the bottleneck)."""
    if fresh or getattr(LOCAL, "conn", None) is None:
        LOCAL.conn = http.client.HTTPSConnection(HOST.hostname, HOST.port, context=CTX, timeout=60)
    return LOCAL.conn


def api(method, path, body=None, accept="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": "Bearer " + ADMIN_TOKEN, "Accept": accept.removesuffix(";raw")}
    if data is not None:
        headers["Content-Type"] = "application/json"
    for attempt in range(20):
        try:
            conn = connection(fresh=attempt > 0)
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            raw = r.read()
        except (http.client.HTTPException, ConnectionError, TimeoutError, OSError):
            time.sleep(0.2 * (attempt + 1))
            continue
        if r.status == 404 or (r.status == 409 and method == "POST"):
            return None
        if r.status == 429 or r.status >= 500:
            time.sleep(0.2 * (attempt + 1))
            continue
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {raw[:300]!r}")
        if accept == "application/json;raw":
            return raw
        return json.loads(raw) if accept == "application/json" and raw else raw.decode()
    raise RuntimeError(f"{method} {path} kept failing")


class Tracker:
    """Watches the namespace's pods: when each was first Running, and how many are gone. A
    watch, not LISTs: listing 10,000 whole pods every second would load the apiserver more than
    the gateway does."""

    def __init__(self, ns):
        self.ns, self.lock = ns, threading.Lock()
        self.running, self.present = {}, set()
        self.stop = False
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self):
        rv = ""
        while not self.stop:
            try:
                conn = http.client.HTTPSConnection(HOST.hostname, HOST.port, context=CTX, timeout=120)
                path = f"/api/v1/namespaces/{self.ns}/pods?watch=1&timeoutSeconds=3600"
                if rv:
                    path += f"&resourceVersion={rv}"
                conn.request("GET", path, headers={"Authorization": "Bearer " + ADMIN_TOKEN})
                r = conn.getresponse()
                while not self.stop:
                    line = r.readline()
                    if not line:
                        break
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        rv = ""
                        break
                    rv = obj["metadata"].get("resourceVersion", rv)
                    name = obj["metadata"]["name"]
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.present.discard(name)
                        else:
                            self.present.add(name)
                            if obj.get("status", {}).get("phase") == "Running":
                                self.running.setdefault(name, time.time())
            except (http.client.HTTPException, ConnectionError, TimeoutError, OSError, ValueError):
                time.sleep(0.5)

    def count_running(self):
        with self.lock:
            return len(self.running)

    def count_present(self):
        with self.lock:
            return len(self.present)

    def times(self):
        with self.lock:
            return sorted(self.running.values())


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


# The flow schemas the gateway's requests are classified into (deploy/flowcontrol, and the
# built-in one every other request of its identity falls to).
FLOW_SCHEMAS = ("burstgate-leases", "global-default")


def flow_control():
    """Per flow schema: seconds queued (sum), requests dispatched, requests rejected."""
    text = api("GET", "/metrics", accept="text/plain")
    out = {fs: [0.0, 0.0, 0.0] for fs in FLOW_SCHEMAS}
    for line in text.splitlines():
        for i, name in enumerate(("apiserver_flowcontrol_request_wait_duration_seconds_sum{",
                                  "apiserver_flowcontrol_request_wait_duration_seconds_count{",
                                  "apiserver_flowcontrol_rejected_requests_total{")):
            if line.startswith(name):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                fs = labels.get("flow_schema", labels.get("flowSchema"))
                if fs in out:
                    out[fs][i] += float(line.rsplit(" ", 1)[1])
    return out


def flow_control_delta(before, after):
    """Mean queued milliseconds and rejections per flow schema between two `flow_control()`."""
    out = {}
    for fs in FLOW_SCHEMAS:
        wait, n, rejected = (a - b for a, b in zip(after[fs], before[fs]))
        out[fs] = {"requests": int(n), "mean_wait_ms": round(1000 * wait / n, 1) if n else None,
                   "rejected": int(rejected)}
    return out


def leadership_lost(work):
    """How often the gateway lost its leader Lease so far (its log's WARN lines)."""
    with open(f"{work}/gateway.log", errors="replace") as log:
        return sum("lost the leadership" in line for line in log)


def save_profile(path):
    """The apiserver's CPU profile over the next PPROF_S seconds, written to `path`."""
    conn = http.client.HTTPSConnection(HOST.hostname, HOST.port, context=CTX, timeout=PPROF_S + 60)
    conn.request("GET", f"/debug/pprof/profile?seconds={PPROF_S}", headers={"Authorization": "Bearer " + ADMIN_TOKEN})
    r = conn.getresponse()
    open(path, "wb").write(r.read())
    print(f"apiserver profile ({r.status}): {path}", file=sys.stderr)


def proc_stats(pid):
    """(cpu seconds, rss MiB, peak rss MiB) of a process."""
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    status = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    return cpu, rss, hwm


def rss_parts(pid):
    """(anonymous, file-backed) resident MiB: the heap and stacks, and the binary's own pages."""
    status = open(f"/proc/{pid}/status").read()
    kib = lambda key: int(re.search(key + r":\s+(\d+)", status).group(1)) / 1024
    return kib("RssAnon"), kib("RssFile")


def peer_cpu():
    """CPU seconds so far of the apiserver, etcd, the scheduler and the controller-manager (from
    the peers' PID files), to show where a burst's time goes. The pods bound by `nodeName` never
    pass through the scheduler, but it watches and caches every pod all the same."""
    out = {}
    for peer in ("kube-apiserver", "etcd", "kube-scheduler", "kube-controller-manager"):
        try:
            pid = int(open(f"{PEERS['PEERS_DIR']}/{peer}.pid").read().split()[0])
            out[peer] = proc_stats(pid)[0]
        except (OSError, ValueError):
            out[peer] = float("nan")
    return out


def delete_all(path):
    """DELETE of a collection, in the background: the apiserver answers a deletecollection only
    once every object is deleted (minutes at 100,000 pods, past any client timeout), and the
    tracker's watch says when they are gone."""
    def go():
        conn = http.client.HTTPSConnection(HOST.hostname, HOST.port, context=CTX, timeout=7200)
        try:
            conn.request("DELETE", path, headers={"Authorization": "Bearer " + ADMIN_TOKEN})
            conn.getresponse().read()
        except (http.client.HTTPException, OSError) as e:
            print(f"DELETE {path}: {e}", file=sys.stderr, flush=True)
    threading.Thread(target=go, daemon=True).start()


def delete_each(path, names):
    """One DELETE per pod, 16 at a time, in the background, as `kubectl delete pods -l` makes
    them: the 1.20 apiserver's deletecollection of 100,000 pods stalled after 2,838 (its one
    worker made no write for minutes). The tracker's watch says when they are gone."""
    def go():
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda name: api("DELETE", f"{path}/{name}"), names))
    threading.Thread(target=go, daemon=True).start()


def takeover_list(node):
    """One LIST of the node's pods in pages of 500, as a starting replica's pod cache makes once:
    seconds, pages, MiB, and the apiserver's and etcd's CPU."""
    peers0, t0 = peer_cpu(), time.time()
    pages, size, cont = 0, 0, ""
    while True:
        path = f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node}&limit=500"
        if cont:
            path += "&continue=" + urllib.parse.quote(cont)
        page = api("GET", path, accept="application/json;raw")
        pages, size = pages + 1, size + len(page)
        cont = json.loads(page)["metadata"].get("continue", "")
        if not cont:
            break
    peers1 = peer_cpu()
    return {"s": round(time.time() - t0, 1), "pages": pages, "mib": round(size / 2**20, 1),
            "peers_cpu_s": {k: round(peers1[k] - peers0[k], 2) for k in peers0}}


def lead_again(ns, metrics_port, pid):
    """Someone else takes the gateway's leader Lease until the gateway stops leading, then lets
    go of it: seconds until the gateway leads again, the apiserver's LISTs of pods in between and
    in the 15 s after (a new term reuses the pod cache: none), its writes to pods then, the pod
    cache's LISTs so far, and the gateway's CPU seconds for the new term's first 15 s
    (reconciling every pod once)."""
    path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/burstgate-leader"
    leading = lambda: metric_sum(gateway_metrics(metrics_port), "burstgate_leader ") == 1

    def hold(holder):
        for _ in range(50):  # 409s: the gateway renews in between
            lease = api("GET", path)
            lease["spec"].update({"holderIdentity": holder, "leaseDurationSeconds": 3600,
                                  "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())})
            try:
                api("PUT", path, lease)
                return
            except RuntimeError as e:
                if ": 409 " not in str(e):
                    raise
            time.sleep(0.1)
        raise RuntimeError("could not write the leader Lease")

    before = request_counts()
    hold("scale-intruder")
    wait_until("the gateway to stop leading", lambda: not leading(), 60)
    hold(None)
    t0 = time.time()
    t_led = wait_until("the gateway to lead again", leading, 120)
    cpu0 = proc_stats(pid)[0]
    time.sleep(15)
    cpu1 = proc_stats(pid)[0]
    after = request_counts()
    lists = int(after.get(("LIST", "pods"), 0) - before.get(("LIST", "pods"), 0))
    # Writes to pods meanwhile: a new term on pods that are Running has nothing to write.
    writes = {f"{verb} {res}": int(after.get((verb, res), 0) - before.get((verb, res), 0))
              for verb, res in (("PATCH", "pods"), ("PATCH", "pods/status"))}
    text = gateway_metrics(metrics_port)
    return {"s_to_lead": round(t_led - t0, 1), "LIST pods": lists, "pod_writes": writes,
            "pod_cache_lists_total": int(metric_sum(text, "burstgate_pod_cache_lists_total")),
            "gateway_cpu_s_first_15_s": round(cpu1 - cpu0, 2)}


def gateway_metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric_sum(text, name, must_contain=()):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(s in line for s in must_contain):
            total += float(line.rsplit(" ", 1)[1])
    return total


# The create buckets of the throttled modes, (burst, per second): the published Fargate launch
# rate, and ACI's (ARM writes; ACI creates per 5 minutes and per hour). The gateway's policy and
# the sim cloud's own API (`--sim-rate-limit`, answering 429 past them) get the same buckets, so
# the 429s counted are what a cloud enforcing its published limits would have answered.
BUCKETS = {"bucket": [(100, 20.0)], "aci": [(200, 10.0), (100, 100 / 300), (300, 300 / 3600)]}


def ceiling(buckets, seconds):
    """Creates per second the buckets allow on average over `seconds` from full."""
    return min(burst + rate * seconds for burst, rate in buckets) / seconds


def policy(buckets):
    limits = "\n      rateLimits:" + "".join(
        f"\n        - {{operation: create, burst: {b}, perSecond: {r:.6f}}}" for b, r in buckets) if buckets else ""
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


def wait_until(what, probe, limit):
    deadline = time.time() + limit
    while time.time() < deadline:
        if probe():
            return time.time()
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def deployment(i, replicas, node):
    return {"metadata": {"name": f"d{i}", "labels": {"app": "scale"}}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": "scale", "d": str(i)}},
        "template": {"metadata": {"labels": {"app": "scale", "d": str(i)}}, "spec": {
            "nodeSelector": {"type": "virtual-kubelet", "kubernetes.io/hostname": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [{"name": "app", "image": "nginx:1.27",
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}}}


def scale_pod(i, node):
    """Bare pod `p<i>` bound to `node` by nodeName."""
    return {"metadata": {"name": f"p{i}", "labels": {"app": "scale"}}, "spec": {
        "nodeName": node, "containers": [{"name": "app", "image": "nginx:1.27",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
        "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}]}}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gateway(node, ns, tag, work, metrics_port, kubelet_port, buckets, identity="scale"):
    log = open(f"{work}/{'gateway' if identity == 'scale' else identity}.log", "a")
    wrap = os.environ.get("SCALE_WRAP", "").split()
    cloud = [a for b, r in buckets for a in ("--sim-rate-limit", f"create={b}:{r:.6f}")]
    return subprocess.Popen(wrap + [
        BINARY, "run", "--node-name", node, "--namespace", ns, "--identity", identity, "--cluster-id", tag,
        "--policy-dir", f"{work}/policy", "--kubeconfig", PEERS["KUBECONFIG_GATEWAY"],
        "--sim-cold-start-ms", str(COLD_START_MS), "--sim-capacity", "1000000", "--node-ip", "127.0.0.1",
        "--metrics-addr", f"127.0.0.1:{metrics_port}", "--kubelet-port", str(kubelet_port),
    ] + cloud, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "RUST_LOG": "burstgate=warn"})


def prepare(n, mode, buckets):
    """A run's namespace (and node name), with deploy/'s leader-election role for the gateway
    identity in it, and a work directory holding the gateway's policy."""
    tag = f"scale-{n}-{mode}-{os.getpid()}"
    api("POST", "/api/v1/namespaces", {"metadata": {"name": tag}})
    api("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{tag}/rolebindings", {
        "metadata": {"name": "burstgate-leader-election"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "burstgate-leader-election"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": PEERS["KUBE_GATEWAY_USER"]}]})
    wait_until("the default ServiceAccount", lambda: api("GET", f"/api/v1/namespaces/{tag}/serviceaccounts/default") is not None, 60)
    work = tempfile.mkdtemp(prefix=tag)
    os.mkdir(f"{work}/policy")
    open(f"{work}/policy/policy.yaml", "w").write(policy(buckets))
    return tag, work


def start_owed_writes(node, work):
    """examples/owed_writes.rs on the node's pods: the writes owed per pod, without the gateway."""
    return subprocess.Popen([OWED_BINARY, "--kubeconfig", PEERS["KUBECONFIG_GATEWAY"], "--node", node],
                            stdout=open(f"{work}/owed.json", "w"), stderr=open(f"{work}/owed.log", "w"))


def run(n, mode):
    if mode == "owed":
        return run_owed(n)
    buckets, backlog, deployments = BUCKETS.get(mode, []), mode == "backlog", mode == "deployments"
    tag, work = prepare(n, mode, buckets)
    ns, node = tag, tag
    metrics_port, kubelet_port = free_port(), free_port()
    gw = start_gateway(node, ns, tag, work, metrics_port, kubelet_port, buckets)
    standby, standby_record = None, None
    tracker = Tracker(ns)
    try:
        wait_until("the node Ready", lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (api("GET", f"/api/v1/nodes/{node}") or {}).get("status", {}).get("conditions", [])), 60)
        if backlog:
            # Stopped gracefully: the Lease is released, so the next start leads at once.
            gw.terminate()
            gw.wait(timeout=60)
        elif STANDBY:
            wait_until("the first replica leading",
                       lambda: metric_sum(gateway_metrics(metrics_port), "burstgate_leader ") == 1, 60)
            standby_ports = free_port(), free_port()
            standby = start_gateway(node, ns, tag, work, *standby_ports, buckets, identity="scale-standby")
        before = request_counts()
        apf0 = flow_control()
        cpu0 = 0.0 if backlog else proc_stats(gw.pid)[0]
        pod = lambda i: scale_pod(i, node)
        peers0 = peer_cpu()
        t0 = t_creating = time.time()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            if deployments:
                # Deployments of up to 100 replicas: the controller-manager makes the pods and
                # the scheduler binds them by nodeSelector and toleration, as in a cluster.
                sizes = [min(100, n - i) for i in range(0, n, 100)]
                list(pool.map(lambda d: api("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                                            deployment(d[0], d[1], node)), enumerate(sizes)))
            else:
                list(pool.map(lambda i: api("POST", f"/api/v1/namespaces/{ns}/pods", pod(i)), range(n)))
        t_created = time.time()
        if backlog:
            gw = start_gateway(node, ns, tag, work, metrics_port, kubelet_port, buckets)
            t0 = time.time()
            if PPROF_S:
                threading.Thread(target=save_profile, args=(f"/var/tmp/{tag}.apiserver.pprof",), daemon=True).start()
        t_running = wait_until(f"{n} pods Running", lambda: tracker.count_running() >= n, 3600)
        cpu1, _, hwm_burst = proc_stats(gw.pid)
        standby_cpu1 = proc_stats(standby.pid)[0] if standby else 0.0
        peers1 = peer_cpu()
        burst_metrics = gateway_metrics(metrics_port)
        apf1, lost1 = flow_control(), leadership_lost(work)
        at_steady = request_counts()
        time.sleep(STEADY_S)
        cpu2, rss_steady, _ = proc_stats(gw.pid)
        anon_steady, file_steady = rss_parts(gw.pid)
        after_burst = request_counts()
        if standby:
            standby_cpu2, standby_rss, standby_hwm = proc_stats(standby.pid)
            standby_anon, standby_file = rss_parts(standby.pid)
            standby_record = {
                "leading": metric_sum(gateway_metrics(standby_ports[0]), "burstgate_leader ") == 1,
                "rss_steady_mib": round(standby_rss, 1), "rss_peak_mib": round(standby_hwm, 1),
                "rss_steady_anon_file_mib": [round(standby_anon, 1), round(standby_file, 1)],
                "cpu_core_steady": round((standby_cpu2 - standby_cpu1) / STEADY_S, 3),
                "cpu_s_burst": round(standby_cpu1, 2),
            }
            # Before the new term: with a standby waiting, the Lease let go would go to either.
            standby.terminate()
            standby.wait(timeout=60)
            standby = None
        listed = takeover_list(node)
        lost_steady = leadership_lost(work)
        relead = lead_again(ns, metrics_port, gw.pid)
        after_list = request_counts()
        apf2, lost2 = flow_control(), leadership_lost(work)
        t_del = time.time()
        if deployments:
            api("DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments?labelSelector=app%3Dscale")
            api("DELETE", f"/apis/apps/v1/namespaces/{ns}/replicasets?labelSelector=app%3Dscale")
            delete_all(f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dscale")
        else:
            delete_each(f"/api/v1/namespaces/{ns}/pods", [f"p{i}" for i in range(n)])
        t_gone = wait_until("every pod gone", lambda: tracker.count_present() == 0, 3600)
        cpu3, _, hwm = proc_stats(gw.pid)
        after_delete = request_counts()
        apf3, lost3 = flow_control(), leadership_lost(work)
    finally:
        tracker.stop = True
        if standby:
            standby.terminate()
            standby.wait(timeout=60)
        gw.terminate()
        gw.wait(timeout=60)
        api("DELETE", f"/api/v1/nodes/{node}")
        api("DELETE", f"/api/v1/namespaces/{ns}")
    running_at = tracker.times()
    creates = metric_sum(burst_metrics, "burstgate_provider_requests_total", ('operation="Create"', 'result="ok"')) or n
    throttles = metric_sum(burst_metrics, "burstgate_provider_throttled_total")
    burst_seconds = t_running - t0
    top = ceiling(buckets, burst_seconds) if buckets else None
    per_pod = {}
    for key, v in after_burst.items():
        d = v - before.get(key, 0)
        if d and key[1] in ("pods", "pods/status", "events", "serviceaccounts/token", "services", "configmaps", "secrets"):
            per_pod[f"{key[0]} {key[1]}"] = round(d / n, 2)
    deletes = {}
    for key, v in after_delete.items():
        d = v - after_list.get(key, 0)
        if key == ("DELETE", "pods") and not deployments:
            d -= n  # the script's own: one per bare pod
        if d and key[1] in ("pods", "pods/status", "events"):
            deletes[f"{key[0]} {key[1]}"] = round(d / n, 2)
    record = {
        "pods": n,
        "mode": {"bucket": "bucket 100 + 20/s (Fargate launches), the sim cloud enforcing it",
                 "aci": "ACI's create buckets (ARM 200 + 10/s, 100 per 5 min, 300 per hour), the sim cloud enforcing them",
                 "free": "unthrottled",
                 "backlog": "unthrottled, pods created before the gateway starts",
                 "deployments": "unthrottled, pods of Deployments (controller-manager, scheduler)"}[mode],
        "creates_took_s": round(t_created - t_creating, 1),
        "last_create_to_all_running_s": None if backlog else round(max(0.0, t_running - t_created - COLD_START_MS / 1000), 1),
        "placements_per_s": round(n / burst_seconds, 1),
        "provider_creates_per_s": round(creates / burst_seconds, 1),
        "share_of_bucket_ceiling": round(creates / burst_seconds / top, 3) if top else None,
        "provider_throttles": throttles,
        "gateway_cpu_s_burst": round(cpu1 - cpu0, 2),
        # Where the burst's time went: the machine has 2 cores for everything.
        "peers_cpu_s_burst": {k: round(peers1[k] - peers0[k], 2) for k in peers0},
        "burst_wall_s": round(t_running - t_creating, 1),
        "gateway_cpu_core_steady": round((cpu2 - cpu1) / STEADY_S, 3),
        "gateway_rss_peak_mib": round(max(hwm_burst, hwm), 1),
        "gateway_rss_steady_mib": round(rss_steady, 1),
        "gateway_rss_steady_anon_file_mib": [round(anon_steady, 1), round(file_steady, 1)],
        "kib_per_pod_steady": round(rss_steady * 1024 / n, 1),
        "apiserver_requests_per_pod_burst": per_pod,
        # What a starting replica's pod cache LISTs, after the steady window: the cost of starting
        # a replica at this size on the apiserver's side (a new term reuses the cache).
        "takeover_list": listed,
        # Every request of the steady window (the gateway's, but for a WATCH of the script's own
        # that may end in it), by verb and resource: what holding N pods costs the apiserver.
        "apiserver_requests_steady_window": {
            f"{k[0]} {k[1]}": int(v - at_steady.get(k, 0)) for k, v in after_burst.items()
            if v - at_steady.get(k, 0) >= 1 and k[1] in ("pods", "pods/status", "events", "leases")},
        # The gateway loses its Lease to someone else and wins it back: a new term on N pods.
        "lead_again": relead,
        # SCALE_STANDBY=1: the second replica standing by on the same N pods (its pod cache).
        "standby": standby_record,
        "delete_s": round(t_gone - t_del, 1),
        "gateway_cpu_s_delete": round(cpu3 - cpu2, 2),
        "apiserver_requests_per_pod_delete": deletes,
        # Leadership lost (each loss stops the controllers; the next term starts from the cache)
        # and the apiserver's queuing of the gateway's flow schemas, per phase.
        "leadership_lost": {"burst": lost1, "steady": lost_steady - lost1, "delete": lost3 - lost2},
        "flow_control_burst": flow_control_delta(apf0, apf1),
        "flow_control_delete": flow_control_delta(apf2, apf3),
    }
    if backlog:
        # From the gateway's start: the first pod Running, then the rate between the first and
        # the last (start-up, leader election and the ledger's LIST are before the first).
        record["gateway_start_to_first_running_s"] = round(running_at[0] - t0, 1)
        record["placements_per_s_first_to_last"] = round((n - 1) / max(1e-3, running_at[-1] - running_at[0]), 1)
    return record


def run_owed(n):
    """The `backlog` mode with examples/owed_writes.rs in the gateway's place: N pods bound to a
    node (registered by the gateway, then stopped), then only the four writes a placement owes
    each of them, 64 pods at a time. What the apiserver allows placement on this machine."""
    tag, work = prepare(n, "owed", [])
    ns, node = tag, tag
    gw = start_gateway(node, ns, tag, work, free_port(), free_port(), [])
    tracker = Tracker(ns)
    try:
        wait_until("the node Ready", lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (api("GET", f"/api/v1/nodes/{node}") or {}).get("status", {}).get("conditions", [])), 60)
        gw.terminate()
        gw.wait(timeout=60)
        t_creating = time.time()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: api("POST", f"/api/v1/namespaces/{ns}/pods", scale_pod(i, node)), range(n)))
        t_created = time.time()
        before, apf0, peers0 = request_counts(), flow_control(), peer_cpu()
        t0 = time.time()
        owed = start_owed_writes(node, work)
        t_running = wait_until(f"{n} pods Running", lambda: tracker.count_running() >= n, 3600)
        peers1, after, apf1 = peer_cpu(), request_counts(), flow_control()
        # It exits once done, maybe before the last Running reaches the watch: its CPU from wait4.
        _, _, usage = os.wait4(owed.pid, 0)
        owed.returncode = 0
        cpu1 = usage.ru_utime + usage.ru_stime
        printed = json.load(open(f"{work}/owed.json"))
    finally:
        # No kubelet confirms a graceful delete here: the pods go at once, before the next run.
        api("DELETE", f"/api/v1/namespaces/{ns}/pods?gracePeriodSeconds=0")
        wait_until("every pod gone", lambda: tracker.count_present() == 0, 600)
        tracker.stop = True
        api("DELETE", f"/api/v1/nodes/{node}")
        api("DELETE", f"/api/v1/namespaces/{ns}")
    running_at = tracker.times()
    per_pod = {}
    for key, v in after.items():
        d = v - before.get(key, 0)
        if d and key[1] in ("pods", "pods/status", "events", "serviceaccounts/token", "services", "configmaps", "secrets"):
            per_pod[f"{key[0]} {key[1]}"] = round(d / n, 2)
    return {
        "pods": n,
        "mode": "owed writes only (examples/owed_writes.rs), pods created before it starts",
        "creates_took_s": round(t_created - t_creating, 1),
        "placements_per_s": round(n / (t_running - t0), 1),
        "placements_per_s_first_to_last": round((n - 1) / max(1e-3, running_at[-1] - running_at[0]), 1),
        "start_to_first_running_s": round(running_at[0] - t0, 1),
        "owed_writes_cpu_s_burst": round(cpu1, 2),
        "peers_cpu_s_burst": {k: round(peers1[k] - peers0[k], 2) for k in peers0},
        "apiserver_requests_per_pod_burst": per_pod,
        "flow_control_burst": flow_control_delta(apf0, apf1),
        "owed_writes_printed": printed,
    }


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [1000]
    for n in sizes:
        for mode in MODES:
            print(json.dumps(run(n, mode), indent=1), flush=True)


if __name__ == "__main__":
    main()
