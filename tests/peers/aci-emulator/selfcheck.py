#!/usr/bin/env python3
"""Self-check of the ACI emulator through Prism (stdlib only): token, create, running with an IP,
logs, exec over the websocket, Azure Monitor metrics (beside Prism), errors, faults scoped to an operation that lift, delete. Exits non-zero naming the first failed check.
Usage: python3 selfcheck.py [PRISM_URL] [EMULATOR_URL]   (defaults :4011 and :4012)."""

import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

PRISM = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:4011").rstrip("/")
EMU = (sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:4012").rstrip("/")
SUB = str(uuid.uuid4())
API = "api-version=2026-05-01"


def call(method, url, body=None, token=None, form=None):
    data, headers = None, {}
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if "/subscriptions/" in url and "api-version" not in url:
        url += ("&" if "?" in url else "?") + API
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            raw = res.read()
            return res.status, res.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, err.headers, json.loads(raw) if raw else None


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def ws_exec(uri, password):
    """A minimal RFC 6455 client: sends the password, collects text until the server closes."""
    u = urllib.parse.urlsplit(uri)
    s = socket.create_connection((u.hostname, u.port or 80), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    f = s.makefile("rb")
    status = f.readline()
    while f.readline() not in (b"\r\n", b""):
        pass
    if b" 101 " not in status:
        raise RuntimeError(status)
    payload, mask = password.encode(), os.urandom(4)
    s.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    out = b""
    while True:
        head = f.read(2)
        if len(head) < 2:
            break
        op, n = head[0] & 0x0F, head[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", f.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", f.read(8))[0]
        data = f.read(n)
        if op == 0x8:
            break
        out += data
    s.close()
    return out.decode()


def main():
    call("POST", f"{EMU}/_emulator/faults", {"subscriptionId": SUB, "provisioningDelaySeconds": 0.5})
    st, _, tok = call("POST", f"{EMU}/selfcheck/oauth2/v2.0/token", form={
        "client_id": "c", "client_secret": "s", "grant_type": "client_credentials",
        "scope": "https://management.azure.com/.default"})
    check(st == 200 and tok["token_type"] == "Bearer", "token endpoint issues a bearer token")
    token = tok["access_token"]
    url = f"{PRISM}/subscriptions/{SUB}/resourceGroups/selfcheck/providers/Microsoft.ContainerInstance/containerGroups/demo"
    body = {"location": "eastus", "properties": {"osType": "Linux", "restartPolicy": "Never",
            "ipAddress": {"type": "Public", "ports": [{"port": 80}]},
            "containers": [{"name": "app", "properties": {"image": "nginx", "ports": [{"port": 80}],
                            "resources": {"requests": {"cpu": 1, "memoryInGB": 1}},
                            "environmentVariables": [{"name": "PLAIN", "value": "v"}]}}]}}
    st, h, g = call("PUT", url, body, token)
    check(st == 201 and h.get("Azure-AsyncOperation"), "PUT through Prism creates: 201 + Azure-AsyncOperation")
    st, _, _ = call("GET", url, token="forged")
    check(st == 401, "a forged token gets 401")
    for _ in range(50):
        st, _, g = call("GET", url, token=token)
        if g["properties"]["instanceView"]["state"] == "Running":
            break
        time.sleep(0.2)
    check(g["properties"]["instanceView"]["state"] == "Running" and g["properties"]["ipAddress"].get("ip"), "the group runs with an IP")
    time.sleep(1.1)
    st, _, logs = call("GET", url + "/containers/app/logs?tail=2", token=token)
    check(st == 200 and "app: line 1" in logs["content"], "logs grow one line per second")
    st, _, ex = call("POST", url + "/containers/app/exec", {"command": "echo hi"}, token)
    check(st == 200 and ws_exec(ex["webSocketUri"], ex["password"]) == "hi\n", "exec over the websocket")
    emu_url = url.replace(PRISM, EMU)
    metrics = "/providers/Microsoft.Insights/metrics?api-version=2018-01-01&metricnames=CpuUsage,MemoryUsage&interval=PT1M&%24filter=containerName%20eq%20%27*%27"
    st, _, m = call("GET", emu_url + metrics, token=token)
    last = lambda m, i: [p for p in m["value"][i]["timeseries"][0]["data"] if "average" in p][-1]["average"]
    check(st == 200 and last(m, 0) > 0 and last(m, 1) > 0, "Azure Monitor metrics (beside Prism): usage derived from the group's requests")
    call("POST", f"{EMU}/_emulator/usage", {"subscriptionId": SUB, "group": "demo", "container": "app", "cpuMillicores": 321, "memoryBytes": 12345678})
    st, _, m = call("GET", emu_url + metrics, token=token)
    check(st == 200 and (last(m, 0), last(m, 1)) == (321.0, 12345678.0), "... and the usage the control API set")
    st, _, _ = call("GET", url + metrics, token=token)
    check(st == 404, "... which Prism does not route (Microsoft.Insights is not in ACI's spec)")
    bad = json.loads(json.dumps(body))
    bad["properties"]["containers"][0]["properties"]["image"] = "invalid.example/x"
    st, _, err = call("PUT", url.replace("/demo", "/bad"), bad, token)
    check(st == 400 and err["error"]["code"] == "InaccessibleImage", "InaccessibleImage for an unknown registry")
    lst = url.rsplit("/", 1)[0]
    call("POST", f"{EMU}/_emulator/faults", {"subscriptionId": SUB, "errors": {"status": 500, "operation": "list", "seconds": 1.5}})
    st, _, err = call("GET", lst, token=token)
    check(st == 500 and err["error"]["code"] == "InternalServerError", "a fault on the list operation: 500 InternalServerError")
    st, _, _ = call("GET", url, token=token)
    check(st == 200, "... that leaves a GET of one group alone")
    time.sleep(1.6)
    st, _, _ = call("GET", lst, token=token)
    check(st == 200, "... and lifts after its seconds")
    call("POST", f"{EMU}/_emulator/faults", {"subscriptionId": SUB, "regionDown": {"eastus": 1}})
    st, _, err = call("PUT", url.replace("/demo", "/later"), body, token)
    check(st == 409 and err["error"]["code"] == "ServiceUnavailable", "a region down: 409 ServiceUnavailable on create")
    time.sleep(1.1)
    st, _, _ = call("PUT", url.replace("/demo", "/later"), body, token)
    check(st == 201, "... until it comes back")
    body["tags"] = {"burstgate.io-pod-uid": "selfcheck-uid"}
    st, _, _ = call("PUT", url, body, token)
    check(st == 200, "a second PUT of the same group is an update: 200")
    st, _, _ = call("DELETE", url, token=token)
    check(st == 200, "DELETE answers 200")
    st, _, _ = call("DELETE", url, token=token)
    check(st == 204, "a second DELETE answers 204")
    st, _, h = call("GET", f"{EMU}/_emulator/history?subscriptionId={SUB}")
    demo = [g for g in h["groups"] if g["name"] == "demo"]
    check(st == 200 and len(demo) == 1 and demo[0]["deletedAtEpoch"] >= demo[0]["createdAtEpoch"]
          and [p["outcome"] for p in demo[0]["puts"]] == ["unchanged"] and not any(g["name"] == "bad" for g in h["groups"]),
          "the creation log keeps the deleted group, its update and its deletion, and no refused create")
    call("POST", f"{EMU}/_emulator/reset", {"subscriptionId": SUB})
    print("selfcheck passed")


if __name__ == "__main__":
    main()
