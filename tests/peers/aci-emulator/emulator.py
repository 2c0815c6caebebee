#!/usr/bin/env python3
"""burstgate's stateful emulator of Azure Resource Manager + Azure Container Instances, for tests.

No ACI emulator exists anywhere, so this is the project's own. Tests reach it THROUGH Prism
(`prism proxy --errors <Microsoft's containerInstance.prism.json> http://127.0.0.1:4012`), which
checks every request and every answer against Microsoft's published spec (api-version
2026-05-01): an answer of this file that breaks the spec becomes a Prism 500 #VIOLATIONS.

Standard library only (Python 3.11). Serves plain HTTP on ACI_EMULATOR_PORT (4012) and, when a
certificate is given, the same endpoints over HTTPS on ACI_EMULATOR_TLS_PORT (4013): Microsoft's
azure_identity crate refuses an authority host that is not https.

What it emulates (see README.md next to this file for the full list and the control API):
- the Entra ID client-credentials token endpoint `POST /{tenant}/oauth2/v2.0/token`;
- containerGroups: PUT (201 + Azure-AsyncOperation / 200), GET, PATCH (tags), DELETE (200/202/204),
  list by resource group and by subscription with nextLink paging, stop, restart, start;
- the async operation status URL (served by the emulator itself: it is not in the spec, so
  Prism would answer 404 for it);
- containers' logs, exec (websocket, ACI's protocol: the first client message is the password,
  then stdin; `cat` alone and `tar x...f -` read stdin until the client closes the websocket,
  `tar cf - PATH` archives what `tar x` wrote or a secret volume holds)
  and attach (websocket, the password in the Authorization header, as the spec says);
- location usages (quota);
- ARM's and ACI's errors with their codes and messages, throttling with Retry-After, 5xx;
- `/_emulator/*`: a control API for tests (state, request log, faults, reset), NOT in the spec.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import http.server
import io
import json
import math
import os
import re
import secrets
import select
import shlex
import socket
import ssl
import struct
import sys
import tarfile
import threading
import time
import traceback
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

# --- Settings (environment) -------------------------------------------------------------------


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


HOST = os.environ.get("ACI_EMULATOR_HOST", "127.0.0.1")
PORT = _env_int("ACI_EMULATOR_PORT", 4012)
TLS_PORT = _env_int("ACI_EMULATOR_TLS_PORT", 4013)
TLS_CERT = os.environ.get("ACI_EMULATOR_TLS_CERT", "")
TLS_KEY = os.environ.get("ACI_EMULATOR_TLS_KEY", "")
# Where the emulator itself is reached (async operation URLs and exec websockets point here).
SELF_URL = os.environ.get("ACI_EMULATOR_URL", f"http://{HOST}:{PORT}").rstrip("/")
# Where clients reach ARM (nextLink and Location headers point here): Prism in front of us.
ARM_URL = os.environ.get("ACI_EMULATOR_ARM_URL", "http://127.0.0.1:4011").rstrip("/")
DEFAULT_PROVISIONING_DELAY = _env_float("ACI_EMULATOR_PROVISIONING_DELAY_SECONDS", 2.0)
DEFAULT_QUOTA_CORES = _env_float("ACI_EMULATOR_QUOTA_CORES", 100)
DEFAULT_QUOTA_GROUPS = _env_int("ACI_EMULATOR_QUOTA_GROUPS", 100)
DEFAULT_PAGE_SIZE = _env_int("ACI_EMULATOR_PAGE_SIZE", 100)
MAX_GROUP_CPU = _env_float("ACI_EMULATOR_MAX_GROUP_CPU", 4)
MAX_GROUP_MEMORY_GB = _env_float("ACI_EMULATOR_MAX_GROUP_MEMORY_GB", 16)
TOKEN_LIFETIME = _env_int("ACI_EMULATOR_TOKEN_LIFETIME_SECONDS", 3599)
# When set, the token endpoint accepts only this client secret (else any non-empty one).
EXPECTED_CLIENT_SECRET = os.environ.get("ACI_EMULATOR_CLIENT_SECRET", "")
RESTART_GAP = _env_float("ACI_EMULATOR_RESTART_GAP_SECONDS", 1.0)

API_VERSION = "2026-05-01"
PROVIDER = "Microsoft.ContainerInstance"
GROUP_TYPE = f"{PROVIDER}/containerGroups"
# Registries ACI can pull from without credentials in the emulator's world.
PUBLIC_REGISTRIES = {
    "docker.io",
    "registry-1.docker.io",
    "index.docker.io",
    "mcr.microsoft.com",
    "ghcr.io",
    "quay.io",
    "registry.k8s.io",
    "gcr.io",
    "public.ecr.aws",
}
# ARM's default hourly request budgets per subscription (x-ms-ratelimit-remaining-subscription-*).
ARM_BUDGET = {"reads": 12000, "writes": 1200, "deletes": 15000}
GUID_WS = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def iso(t: float) -> str:
    """An RFC 3339 UTC timestamp as ARM writes them."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_nanos(t: float) -> str:
    """The timestamp prefix of a log line with timestamps=true (RFC 3339, nanoseconds)."""
    d = datetime.fromtimestamp(t, timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}000Z"


def fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# --- Errors -----------------------------------------------------------------------------------


class ArmError(Exception):
    """An ARM error answer: status, code, message (and optional headers)."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, details=None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details

    def body(self) -> dict:
        err = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        return {"error": err}


def not_found(rg: str, name: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{GROUP_TYPE}/{name}' under resource group '{rg}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


# --- Faults -----------------------------------------------------------------------------------


@dataclass
class Faults:
    """Faults of one scope (a subscription, or `None` for all)."""

    # {"count"?, "seconds"?, "retryAfterSeconds", "method"?, "pathContains"?, "operation"?}
    throttle: dict | None = None
    # {"count"?, "seconds"?, "status", "retryAfterSeconds"?, "method"?, "pathContains"?, "operation"?}
    errors: dict | None = None
    quota: dict = field(default_factory=dict)  # region -> {"cores", "groups"}
    provisioning_delay: float | None = None
    delete_delay: float | None = None
    page_size: int | None = None
    region_down: dict = field(default_factory=dict)  # region -> when it comes back (None: never)
    violate: dict | None = None  # {"count", "method"?, "pathContains"?}: answers that break the spec
    tokens_not_before: float | None = None  # tokens issued earlier are expired (expireTokens)

    def to_json(self) -> dict:
        return {
            "throttle": self.throttle,
            "errors": self.errors,
            "quota": self.quota,
            "provisioningDelaySeconds": self.provisioning_delay,
            "deleteDelaySeconds": self.delete_delay,
            "pageSize": self.page_size,
            "regionDown": sorted(r for r, until in self.region_down.items() if until is None or time.time() < until),
            "violateSpec": self.violate,
        }


# What a fault's `operation` covers: the routes (below) each operation of an adapter calls.
OPERATIONS = {
    "create": {"put"},
    "status": {"get", "list_rg", "list_sub"},  # a status read lists, then GETs groups
    "list": {"list_rg", "list_sub"},
    "delete": {"delete"},
}


def route_name(method: str, path: str) -> str | None:
    return next((name for m, rx, name in ROUTES if m == method and rx.match(path)), None)


def timed(spec: dict, now: float) -> dict:
    """A fault spec as stored: `seconds` becomes the moment it lifts (`liftsAt`), and without a
    `count` a timed fault hits every matching request until then."""
    spec = dict(spec)
    if spec.get("seconds") is not None:
        spec["until"] = now + float(spec["seconds"])
        spec["liftsAt"] = iso(spec["until"])
        spec.setdefault("count", None)
    return spec


def fault_active(f: dict, now: float) -> bool:
    if f.get("until") is not None and now >= f["until"]:
        return False
    return f.get("count", 0) is None or f.get("count", 0) > 0


def fault_matches(f: dict, method: str, path: str) -> bool:
    if f.get("method") and f["method"].upper() != method:
        return False
    if f.get("pathContains") and f["pathContains"].lower() not in path.lower():
        return False
    if f.get("operation") and route_name(method, path) not in OPERATIONS.get(f["operation"], ()):
        return False
    return True


# --- Container groups -------------------------------------------------------------------------


@dataclass
class Group:
    sub: str
    rg: str
    name: str
    body: dict  # the request body as received (secrets included; never returned by ARM)
    created: float  # when the current spec was accepted (provisioning starts)
    delay: float  # provisioning delay captured at acceptance
    ip: str | None
    op_id: str
    first_created: float
    stopped_at: float | None = None
    deleting_until: float | None = None
    tags: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.sub.lower(), self.rg.lower(), self.name.lower())

    @property
    def location(self) -> str:
        return self.body.get("location", "")

    @property
    def props(self) -> dict:
        return self.body.get("properties") or {}

    def resource_id(self) -> str:
        return f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/{GROUP_TYPE}/{self.name}"

    def ready_at(self) -> float:
        return self.created + self.delay

    def cpu(self) -> float:
        return sum(
            float(((c.get("properties") or {}).get("resources") or {}).get("requests", {}).get("cpu", 0) or 0)
            for c in self.props.get("containers") or []
        )

    def memory(self) -> float:
        return sum(
            float(((c.get("properties") or {}).get("resources") or {}).get("requests", {}).get("memoryInGB", 0) or 0)
            for c in self.props.get("containers") or []
        )


def plain_env(container: dict) -> dict:
    """The container's plain (non-secure) environment variables."""
    out = {}
    for e in (container.get("properties") or {}).get("environmentVariables") or []:
        if "value" in e and e.get("value") is not None and "secureValue" not in e:
            out[e["name"]] = e["value"]
    return out


@dataclass
class Run:
    """What one container is doing at a moment."""

    current: dict
    previous: dict | None
    restarts: int
    run_start: float | None  # start of the current run, when running or terminated
    run_end: float | None  # end of the current run (exit time), when terminated
    starts: list  # start times of every run so far
    exit_code: int | None


def container_run(group: Group, container: dict, now: float) -> Run:
    """Derives a container's state at `now` from its spec (pure, no background threads).

    Waiting until the group is provisioned, then Running. With the plain env var
    EMULATOR_EXIT_AFTER_SECONDS the process exits after that long with EMULATOR_EXIT_CODE
    (default 0); restartPolicy Always restarts it (and OnFailure on a non-zero code) after
    ACI_EMULATOR_RESTART_GAP_SECONDS, counting restartCount; Never leaves it Terminated.
    """
    env = plain_env(container)
    policy = group.props.get("restartPolicy") or "Always"
    start = group.ready_at()
    if now < start:
        return Run({"state": "Waiting", "detailStatus": "ContainerCreating"}, None, 0, None, None, [], None)
    exit_after = env.get("EMULATOR_EXIT_AFTER_SECONDS")
    try:
        exit_after = max(0.1, float(exit_after)) if exit_after not in (None, "") else None
    except ValueError:
        exit_after = None
    try:
        exit_code = int(env.get("EMULATOR_EXIT_CODE", "0") or 0)
    except ValueError:
        exit_code = 1
    stop = group.stopped_at
    horizon = now if stop is None else min(now, stop)
    run_start, restarts, previous, starts = start, 0, None, []
    while True:
        starts.append(run_start)
        end = run_start + exit_after if exit_after is not None else math.inf
        if horizon < end:
            if stop is not None and now >= stop:
                cur = {
                    "state": "Terminated",
                    "startTime": iso(run_start),
                    "exitCode": 137,
                    "finishTime": iso(stop),
                    "detailStatus": "Killed",
                }
                return Run(cur, previous, restarts, run_start, stop, starts, 137)
            return Run({"state": "Running", "startTime": iso(run_start), "detailStatus": ""}, previous, restarts, run_start, None, starts, None)
        terminated = {
            "state": "Terminated",
            "startTime": iso(run_start),
            "exitCode": exit_code,
            "finishTime": iso(end),
            "detailStatus": "Completed" if exit_code == 0 else "Error",
        }
        again = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
        if not again or (stop is not None and stop <= end + RESTART_GAP):
            return Run(terminated, previous, restarts, run_start, end, starts, exit_code)
        previous = terminated
        restarts += 1
        run_start = end + RESTART_GAP
        if horizon < run_start:
            return Run({"state": "Waiting", "detailStatus": "CrashLoopBackOff: Back-off restarting failed container"}, previous, restarts, None, None, starts, None)


def event(name: str, message: str, first: float, last: float | None = None, count: int = 1, kind: str = "Normal") -> dict:
    return {
        "count": count,
        "firstTimestamp": iso(first),
        "lastTimestamp": iso(last if last is not None else first),
        "name": name,
        "message": message,
        "type": kind,
    }


def container_view(group: Group, container: dict, now: float) -> dict:
    run = container_run(group, container, now)
    image = (container.get("properties") or {}).get("image", "")
    events = [event("Pulling", f'pulling image "{image}"', group.created)]
    if now >= group.ready_at():
        events.append(event("Pulled", f'Successfully pulled image "{image}"', group.ready_at()))
    if run.starts:
        events.append(event("Started", "Started container", run.starts[0], run.starts[-1], len(run.starts)))
    if group.stopped_at is not None and now >= group.stopped_at:
        events.append(event("Killing", "Killing container with id", group.stopped_at))
    view = {"restartCount": run.restarts, "currentState": run.current, "events": events}
    if run.previous is not None:
        view["previousState"] = run.previous
    return view


def group_state(group: Group, now: float) -> tuple[str, str]:
    """(provisioningState, instanceView.state) at `now`."""
    if group.deleting_until is not None:
        return "Deleting", "Stopped"
    ready = group.ready_at()
    if now < ready:
        first_half = now < group.created + group.delay / 2
        return ("Pending" if first_half else "Creating"), "Pending"
    if group.stopped_at is not None and now >= group.stopped_at:
        return "Succeeded", "Stopped"
    runs = [container_run(group, c, now) for c in group.props.get("containers") or []]
    if any(r.current["state"] != "Terminated" for r in runs):
        return "Succeeded", "Running"
    if all((r.exit_code or 0) == 0 for r in runs):
        return "Succeeded", "Succeeded"
    return "Succeeded", "Failed"


def sanitize_container(c: dict) -> dict:
    """A container as ARM returns it: secure values are never sent back."""
    c = copy.deepcopy(c)
    props = c.get("properties") or {}
    envs = []
    for e in props.get("environmentVariables") or []:
        e = dict(e)
        e.pop("secureValue", None)
        envs.append(e)
    if "environmentVariables" in props:
        props["environmentVariables"] = envs
    props.pop("instanceView", None)
    return c


def group_view(group: Group, now: float, with_instance_view: bool = True) -> dict:
    """The container group as ARM answers it (GET/PUT/PATCH/DELETE), or as a list item."""
    body = copy.deepcopy(group.body)
    props = body.get("properties") or {}
    provisioning, state = group_state(group, now)
    props["provisioningState"] = provisioning
    props.setdefault("osType", "Linux")
    props.setdefault("restartPolicy", "Always")
    props.setdefault("sku", "Standard")
    containers = []
    for c in props.get("containers") or []:
        sc = sanitize_container(c)
        if with_instance_view:
            sc["properties"]["instanceView"] = container_view(group, c, now)
        containers.append(sc)
    props["containers"] = containers
    if props.get("initContainers"):
        inits = []
        for c in props["initContainers"]:
            sc = sanitize_container(c)
            if with_instance_view and now >= group.ready_at():
                sc["properties"]["instanceView"] = {
                    "restartCount": 0,
                    "currentState": {
                        "state": "Terminated",
                        "startTime": iso(group.ready_at()),
                        "exitCode": 0,
                        "finishTime": iso(group.ready_at()),
                        "detailStatus": "Completed",
                    },
                    "events": [],
                }
            inits.append(sc)
        props["initContainers"] = inits
    if props.get("imageRegistryCredentials"):
        props["imageRegistryCredentials"] = [
            {k: v for k, v in cred.items() if k != "password"} for cred in props["imageRegistryCredentials"]
        ]
    if props.get("volumes"):
        vols = []
        for v in props["volumes"]:
            v = dict(v)
            if "secret" in v:
                v["secret"] = {}
            vols.append(v)
        props["volumes"] = vols
    ip = props.get("ipAddress")
    if ip is None and props.get("subnetIds") and group.ip:
        ip = {"type": "Private", "ports": []}
    if ip is not None:
        ip = dict(ip)
        ip.setdefault("ports", [])
        ip.setdefault("type", "Public")
        if group.ip and now >= group.ready_at() and state != "Stopped":
            ip["ip"] = group.ip
        if ip.get("dnsNameLabel") and ip.get("type") == "Public":
            ip["fqdn"] = f"{ip['dnsNameLabel']}.{group.location}.azurecontainer.io"
        props["ipAddress"] = ip
    if with_instance_view:
        group_events = []
        if now >= group.ready_at():
            group_events.append(event("Scheduled", "Successfully scheduled container group", group.ready_at()))
        props["instanceView"] = {"events": group_events, "state": state}
    else:
        props.pop("instanceView", None)
    body["properties"] = props
    identity = body.get("identity")
    if isinstance(identity, dict) and "SystemAssigned" in (identity.get("type") or ""):
        identity["principalId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, group.resource_id()))
        identity["tenantId"] = str(uuid.uuid5(uuid.NAMESPACE_DNS, "tenant.aci-emulator.burstgate.invalid"))
    body["id"] = group.resource_id()
    body["name"] = group.name
    body["type"] = GROUP_TYPE
    if group.tags:
        body["tags"] = dict(group.tags)
    else:
        body.pop("tags", None)
    return body


def spec_of(body: dict) -> dict:
    """What decides whether a PUT changes the group (tags aside)."""
    b = strip_read_only(body)
    b.pop("tags", None)
    props = b.setdefault("properties", {})
    props.setdefault("osType", "Linux")
    props.setdefault("restartPolicy", "Always")
    props.setdefault("sku", "Standard")
    if props.get("ipAddress") is None and props.get("subnetIds"):
        props["ipAddress"] = {"type": "Private", "ports": []}
    if isinstance(props.get("ipAddress"), dict):
        props["ipAddress"].setdefault("ports", [])
        props["ipAddress"].setdefault("type", "Public")
    b["location"] = (b.get("location") or "").replace(" ", "").lower()
    return b


def strip_read_only(body: dict) -> dict:
    """The PUT body without the fields ARM computes (a client may send back a GET answer)."""
    body = copy.deepcopy(body)
    for k in ("id", "name", "type", "systemData"):
        body.pop(k, None)
    props = body.get("properties") or {}
    for k in ("provisioningState", "instanceView", "isCreatedFromStandbyPool"):
        props.pop(k, None)
    for c in (props.get("containers") or []) + (props.get("initContainers") or []):
        (c.get("properties") or {}).pop("instanceView", None)
    ip = props.get("ipAddress")
    if isinstance(ip, dict):
        ip.pop("fqdn", None)
        ip.pop("ip", None)
    identity = body.get("identity")
    if isinstance(identity, dict):
        identity.pop("principalId", None)
        identity.pop("tenantId", None)
    return body


def registry_of(image: str) -> str:
    """The registry host of an image reference (docker.io when the first part is no host)."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "docker.io"


# --- Emulator state ---------------------------------------------------------------------------


class Emulator:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clear()

    def clear(self) -> None:
        self.groups: dict[tuple, Group] = {}
        self.ops: dict[str, dict] = {}
        self.tokens: dict[str, tuple[float, float]] = {}  # token -> (issued, expiry)
        self.requests: list[dict] = []
        self.faults: dict[str | None, Faults] = {None: Faults()}
        self.exec_sessions: dict[str, dict] = {}
        self.attach_sessions: dict[str, dict] = {}
        # Files written into containers through exec stdin (`tar x`), by (group key, container).
        self.files: dict[tuple[str, str], dict[str, bytes]] = {}
        self.next_private = 4
        self.next_public = 1
        self.budget_window = time.time()
        self.budget_used: dict[tuple, int] = {}
        # Usage set through the control API, by (group key, container lower): [(from, millicores, bytes)].
        self.usage: dict[tuple, list[tuple[float, float, float]]] = {}

    # faults
    def scope_faults(self, sub: str | None) -> list[Faults]:
        out = []
        if sub and sub.lower() in self.faults:
            out.append(self.faults[sub.lower()])
        out.append(self.faults[None])
        return out

    def setting(self, sub: str | None, attr: str, default):
        for f in self.scope_faults(sub):
            v = getattr(f, attr)
            if v is not None:
                return v
        return default

    def quota(self, sub: str, region: str) -> tuple[float, int]:
        cores, groups = DEFAULT_QUOTA_CORES, DEFAULT_QUOTA_GROUPS
        for f in reversed(self.scope_faults(sub)):  # global first, the subscription's wins
            q = f.quota.get(region.lower()) or f.quota.get(region)
            if q:
                cores = float(q.get("cores", cores))
                groups = int(q.get("groups", groups))
        return cores, groups

    def region_down(self, sub: str, region: str) -> bool:
        now = time.time()
        return any(
            region.lower() in f.region_down and (f.region_down[region.lower()] is None or now < f.region_down[region.lower()])
            for f in self.scope_faults(sub)
        )

    def take_fault(self, sub: str | None, kind: str, method: str, path: str) -> dict | None:
        now = time.time()
        for f in self.scope_faults(sub):
            spec = getattr(f, kind)
            if spec and fault_active(spec, now) and fault_matches(spec, method, path):
                if spec.get("count") is not None:
                    spec["count"] -= 1
                return dict(spec)
        return None

    def apply_faults(self, body: dict) -> dict:
        now = time.time()
        sub = body.get("subscriptionId")
        key = sub.lower() if sub else None
        f = self.faults.setdefault(key, Faults())
        if "throttle" in body:
            f.throttle = timed(body["throttle"], now) if body["throttle"] else None
        if "errors" in body:
            f.errors = timed(body["errors"], now) if body["errors"] else None
        if "quota" in body:
            for region, q in (body["quota"] or {}).items():
                if q is None:
                    f.quota.pop(region.lower(), None)
                else:
                    f.quota[region.lower()] = dict(q)
        if "provisioningDelaySeconds" in body:
            v = body["provisioningDelaySeconds"]
            f.provisioning_delay = None if v is None else float(v)
        if "deleteDelaySeconds" in body:
            v = body["deleteDelaySeconds"]
            f.delete_delay = None if v is None else float(v)
        if "pageSize" in body:
            v = body["pageSize"]
            f.page_size = None if v is None else max(1, int(v))
        if "regionDown" in body:
            # A list: down until cleared; an object {region: seconds or null}: each comes back
            # after its seconds (null: until cleared).
            down = body["regionDown"] or []
            if isinstance(down, dict):
                f.region_down = {r.lower(): (None if t is None else now + float(t)) for r, t in down.items()}
            else:
                f.region_down = {r.lower(): None for r in down}
        if "violateSpec" in body:
            f.violate = dict(body["violateSpec"]) if body["violateSpec"] else None
        if body.get("expireTokens"):
            f.tokens_not_before = time.time()
        return f.to_json()

    def reset(self, sub: str | None) -> None:
        if sub is None:
            self.clear()
            return
        s = sub.lower()
        for k in [k for k in self.groups if k[0] == s]:
            del self.groups[k]
        self.faults.pop(s, None)
        self.requests = [r for r in self.requests if (r.get("subscriptionId") or "").lower() != s]
        for k in [k for k in self.usage if k[0][0] == s]:
            del self.usage[k]

    # lifecycle
    def sweep(self, now: float) -> None:
        """Removes groups whose asynchronous delete has finished."""
        for k in [k for k, g in self.groups.items() if g.deleting_until is not None and now >= g.deleting_until]:
            del self.groups[k]

    def allocate_ip(self, props: dict) -> str | None:
        if props.get("subnetIds") or ((props.get("ipAddress") or {}).get("type") == "Private"):
            n = self.next_private
            self.next_private += 1
            return f"10.240.{n // 256 % 256}.{n % 256}"
        if props.get("ipAddress"):
            n = self.next_public
            self.next_public += 1
            return f"20.62.{n // 254 % 256}.{n % 254 + 1}"
        return None

    def new_op(self, sub: str, location: str, key: tuple, kind: str, now: float, done_at: float) -> str:
        op_id = str(uuid.uuid4())
        self.ops[op_id] = {"sub": sub, "location": location, "key": key, "kind": kind, "start": now, "done": done_at}
        return op_id


EMU = Emulator()


# --- Creation log (control API `/_emulator/history`) --------------------------------------------
#
# Every container group ever created, per subscription, with when it was created and when a
# DELETE removed it, and every PUT that hit an existing group: the tests build each workload's
# alive interval from it. Deleted groups stay in the log (the state forgets them). Called with
# EMU.lock held; `reset` forgets a subscription's log with the rest of its state.

POD_UID_TAG = "burstgate.io-pod-uid"  # the ARM tag the gateway puts the pod UID in


class History:
    def __init__(self) -> None:
        self.by_sub: dict[str, list[dict]] = {}

    def _live(self, grp: Group) -> dict | None:
        """The record of `grp`'s current incarnation (created, not yet deleted)."""
        for rec in reversed(self.by_sub.get(grp.sub.lower(), [])):
            if rec["_key"] == grp.key and rec["deleteRequestedAt"] is None:
                return rec
        return None

    def created(self, grp: Group, now: float) -> None:
        self.by_sub.setdefault(grp.sub.lower(), []).append({
            "_key": grp.key,
            "id": grp.resource_id(),
            "subscriptionId": grp.sub,
            "resourceGroup": grp.rg,
            "name": grp.name,
            "location": grp.location,
            "podUid": grp.tags.get(POD_UID_TAG),
            "createdAt": now,
            "deleteRequestedAt": None,
            "deletedAt": None,
            "puts": [],
        })

    def put_on_existing(self, grp: Group, now: float, spec_changed: bool | None) -> None:
        """A PUT on an existing group: an update (`spec_changed` says whether it re-provisions), or
        `None` when it was refused because the group is being deleted."""
        rec = self._live(grp) or next(
            (r for r in reversed(self.by_sub.get(grp.sub.lower(), [])) if r["_key"] == grp.key), None
        )
        if rec is not None:
            outcome = "refused" if spec_changed is None else ("reprovisioned" if spec_changed else "unchanged")
            rec["puts"].append({"at": now, "outcome": outcome})

    def deleted(self, grp: Group, now: float, gone_at: float) -> None:
        rec = self._live(grp)
        if rec is not None:
            rec["deleteRequestedAt"], rec["deletedAt"] = now, gone_at

    def view(self, sub: str | None) -> dict:
        def out(rec: dict) -> dict:
            r = {k: v for k, v in rec.items() if k != "_key"}
            for k in ("createdAt", "deleteRequestedAt", "deletedAt"):
                r[k + "Epoch"] = r[k]
                r[k] = None if r[k] is None else iso(r[k])
            r["puts"] = [{"at": iso(p["at"]), "atEpoch": p["at"], "outcome": p["outcome"]} for p in rec["puts"]]
            return r

        subs = [sub.lower()] if sub else sorted(self.by_sub)
        groups = [out(rec) for s in subs for rec in self.by_sub.get(s, [])]
        groups.sort(key=lambda r: r["createdAtEpoch"])
        return {"groups": groups, "now": iso(time.time()), "nowEpoch": time.time()}

    def reset(self, sub: str | None) -> None:
        if sub is None:
            self.by_sub.clear()
        else:
            self.by_sub.pop(sub.lower(), None)


HISTORY = History()

# --- ARM routing ------------------------------------------------------------------------------

SUB = r"/subscriptions/(?P<sub>[^/]+)"
RG = SUB + r"/resourceGroups/(?P<rg>[^/]+)"
CG = RG + rf"/providers/{PROVIDER}/containerGroups/(?P<name>[^/]+)"
ROUTES = [
    ("GET", re.compile(rf"^{RG}/providers/{PROVIDER}/containerGroups/?$", re.I), "list_rg"),
    ("GET", re.compile(rf"^{SUB}/providers/{PROVIDER}/containerGroups/?$", re.I), "list_sub"),
    ("GET", re.compile(rf"^{SUB}/providers/{PROVIDER}/locations/(?P<loc>[^/]+)/usages/?$", re.I), "usages"),
    ("GET", re.compile(rf"^{SUB}/providers/{PROVIDER}/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)/?$", re.I), "operation"),
    ("GET", re.compile(rf"^{CG}/containers/(?P<container>[^/]+)/logs/?$", re.I), "logs"),
    ("POST", re.compile(rf"^{CG}/containers/(?P<container>[^/]+)/exec/?$", re.I), "exec"),
    ("POST", re.compile(rf"^{CG}/containers/(?P<container>[^/]+)/attach/?$", re.I), "attach"),
    ("POST", re.compile(rf"^{CG}/(?P<action>stop|start|restart)/?$", re.I), "action"),
    # Azure Monitor (Microsoft.Insights), NOT in ACI's spec: reached beside Prism.
    ("GET", re.compile(rf"^{CG}/providers/Microsoft\.Insights/metrics/?$", re.I), "metrics"),
    ("GET", re.compile(rf"^{CG}/?$", re.I), "get"),
    ("PUT", re.compile(rf"^{CG}/?$", re.I), "put"),
    ("PATCH", re.compile(rf"^{CG}/?$", re.I), "patch"),
    ("DELETE", re.compile(rf"^{CG}/?$", re.I), "delete"),
]


class Answer:
    def __init__(self, status: int, body=None, headers: dict | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def async_op_url(sub: str, location: str, op_id: str) -> str:
    return f"{SELF_URL}/subscriptions/{sub}/providers/{PROVIDER}/locations/{location}/operations/{op_id}?api-version={API_VERSION}"


def operation_template(path: str) -> str:
    """ARM's operation name of a path: the resource types without their names, upper case."""
    segs, out, i = path.strip("/").split("/"), [], 0
    while i < len(segs):
        if segs[i].lower() == "providers" and i + 1 < len(segs):
            out += segs[i : i + 2]
        else:
            out.append(segs[i])
        i += 2
    return "/" + "/".join(out).upper()


def arm_dispatch(method: str, path: str, query: dict, raw_body: bytes, m: re.Match, handler_name: str) -> Answer:
    now = time.time()
    g = m.groupdict()
    sub = g.get("sub", "")
    with EMU.lock:
        EMU.sweep(now)
        return globals()[f"arm_{handler_name}"](now, method, path, query, raw_body, g, sub)


def parse_json_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArmError(400, "InvalidRequestContent", f"The request content was invalid and could not be deserialized: '{err}'.")
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized: 'the body is not a JSON object'.")
    return body


def find_group(g: dict) -> Group:
    grp = EMU.groups.get((g["sub"].lower(), g["rg"].lower(), g["name"].lower()))
    if grp is None:
        raise not_found(g["rg"], g["name"])
    return grp


def check_images(name: str, props: dict) -> None:
    creds = {(c.get("server") or "").lower() for c in props.get("imageRegistryCredentials") or []}
    for c in (props.get("initContainers") or []) + (props.get("containers") or []):
        image = (c.get("properties") or {}).get("image") or ""
        reg = registry_of(image)
        known = reg in PUBLIC_REGISTRIES or reg in creds
        if not image or not known:
            raise ArmError(
                400,
                "InaccessibleImage",
                f"The image '{image}' in container group '{name}' is not accessible. Please check the image and registry credential.",
            )


def capacity_error(location: str, cpu: float, mem: float, os_type: str) -> ArmError:
    return ArmError(
        409,
        "ServiceUnavailable",
        f"The requested resource is not available in the location '{location}' at this moment. "
        f"Please retry with a different resource request or in another location. "
        f"Resource requested: '{fmt_num(cpu)}' CPU '{fmt_num(mem)}' GB memory '{os_type}' OS",
    )


def arm_put(now, method, path, query, raw, g, sub) -> Answer:
    body = parse_json_body(raw)
    name, rg = g["name"], g["rg"]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ArmError(
            400,
            "InvalidContainerGroupName",
            f"The container group name '{name}' is invalid. The container group name must contain no more than 63 characters "
            "and only lowercase alphanumeric characters and '-'. It can not start or end with '-' and can not have two consecutive '-'.",
        )
    body = strip_read_only(body)
    location = (body.get("location") or "").replace(" ", "").lower()
    if not location:
        raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
    body["location"] = location
    props = body.get("properties") or {}
    containers = props.get("containers") or []
    if not containers:
        raise ArmError(400, "NoContainersInContainerGroup", f"The container group '{name}' does not have any containers.")
    os_type = props.get("osType") or "Linux"
    check_images(name, props)
    grp = EMU.groups.get((sub.lower(), rg.lower(), name.lower()))
    tmp = Group(sub, rg, name, body, now, 0, None, "", now)
    cpu, mem = tmp.cpu(), tmp.memory()
    if EMU.region_down(sub, location):
        raise capacity_error(location, cpu, mem, os_type)
    if cpu > MAX_GROUP_CPU or mem > MAX_GROUP_MEMORY_GB:
        raise capacity_error(location, cpu, mem, os_type)
    cores_limit, groups_limit = EMU.quota(sub, location)
    others = [
        x
        for x in EMU.groups.values()
        if x.sub.lower() == sub.lower() and x.location == location and x is not grp and x.deleting_until is None
    ]
    if grp is None and len(others) + 1 > groups_limit:
        raise ArmError(
            400,
            "ContainerGroupQuotaReached",
            f"Resource type '{GROUP_TYPE}' container group quota 'ContainerGroups' exceeded in region '{location}'. "
            f"Limit: '{groups_limit}', Usage: '{len(others)}' Requested: '1'.",
        )
    used = sum(x.cpu() for x in others if group_state(x, now)[1] in ("Pending", "Running"))
    if used + cpu > cores_limit + 1e-9:
        raise ArmError(
            400,
            "ContainerGroupQuotaReached",
            f"Resource type '{GROUP_TYPE}' container group quota 'StandardCores' exceeded in region '{location}'. "
            f"Limit: '{fmt_num(cores_limit)}', Usage: '{fmt_num(used)}' Requested: '{fmt_num(cpu)}'.",
        )
    delay = float(EMU.setting(sub, "provisioning_delay", DEFAULT_PROVISIONING_DELAY))
    tags = dict(body.get("tags") or {})
    if grp is not None:
        if grp.deleting_until is not None:
            HISTORY.put_on_existing(grp, now, None)
            raise ArmError(409, "Conflict", f"The container group '{name}' is being deleted. Please retry later.")
        if grp.location != location:
            raise ArmError(
                400,
                "InvalidResourceLocation",
                f"The resource '{name}' already exists in location '{grp.location}' in resource group '{rg}'. "
                "A resource with the same name cannot be created in location "
                f"'{location}'. Please select a new resource name.",
            )
        grp.tags = tags
        HISTORY.put_on_existing(grp, now, spec_of(grp.body) != spec_of(body))
        if spec_of(grp.body) == spec_of(body):
            grp.body = body
            return Answer(200, group_view(grp, now))
        grp.body = body
        grp.created, grp.delay, grp.stopped_at = now, delay, None
        grp.ip = grp.ip or EMU.allocate_ip(props)
        grp.op_id = EMU.new_op(sub, location, grp.key, "update", now, grp.ready_at())
        return Answer(200, group_view(grp, now), {"Azure-AsyncOperation": async_op_url(sub, location, grp.op_id)})
    grp = Group(sub, rg, name, body, now, delay, EMU.allocate_ip(props), "", now, tags=tags)
    grp.op_id = EMU.new_op(sub, location, grp.key, "create", now, grp.ready_at())
    EMU.groups[grp.key] = grp
    HISTORY.created(grp, now)
    return Answer(201, group_view(grp, now), {"Azure-AsyncOperation": async_op_url(sub, location, grp.op_id)})


def arm_get(now, method, path, query, raw, g, sub) -> Answer:
    return Answer(200, group_view(find_group(g), now))


def arm_patch(now, method, path, query, raw, g, sub) -> Answer:
    body = parse_json_body(raw)
    grp = find_group(g)
    if "tags" in body:
        grp.tags = dict(body.get("tags") or {})
    return Answer(200, group_view(grp, now))


def arm_delete(now, method, path, query, raw, g, sub) -> Answer:
    grp = EMU.groups.get((sub.lower(), g["rg"].lower(), g["name"].lower()))
    if grp is None:
        return Answer(204)
    delay = float(EMU.setting(sub, "delete_delay", 0.0))
    if grp.deleting_until is not None:
        op_id = EMU.new_op(sub, grp.location, grp.key, "delete", now, grp.deleting_until)
        return Answer(202, None, {"Azure-AsyncOperation": async_op_url(sub, grp.location, op_id), "Location": async_op_url(sub, grp.location, op_id), "Retry-After": "1"})
    if delay > 0:
        grp.deleting_until = now + delay
        HISTORY.deleted(grp, now, grp.deleting_until)
        op_id = EMU.new_op(sub, grp.location, grp.key, "delete", now, grp.deleting_until)
        url = async_op_url(sub, grp.location, op_id)
        return Answer(202, None, {"Azure-AsyncOperation": url, "Location": url, "Retry-After": "1"})
    view = group_view(grp, now)
    del EMU.groups[grp.key]
    HISTORY.deleted(grp, now, now)
    return Answer(200, view)


def page(items: list, query: dict, path: str, sub: str) -> dict:
    size = int(EMU.setting(sub, "page_size", DEFAULT_PAGE_SIZE))
    try:
        skip = int(query.get("$skiptoken", "0") or 0)
    except ValueError:
        raise ArmError(400, "InvalidSkipToken", "The skip token in the request is invalid.")
    chunk = items[skip : skip + size]
    out = {"value": chunk}
    if skip + size < len(items):
        out["nextLink"] = f"{ARM_URL}{path}?api-version={API_VERSION}&$skiptoken={skip + size}"
    return out


def arm_list_rg(now, method, path, query, raw, g, sub) -> Answer:
    items = sorted(
        (x for x in EMU.groups.values() if x.sub.lower() == sub.lower() and x.rg.lower() == g["rg"].lower()),
        key=lambda x: x.name,
    )
    return Answer(200, page([group_view(x, now, with_instance_view=False) for x in items], query, path, sub))


def arm_list_sub(now, method, path, query, raw, g, sub) -> Answer:
    items = sorted((x for x in EMU.groups.values() if x.sub.lower() == sub.lower()), key=lambda x: (x.rg.lower(), x.name))
    return Answer(200, page([group_view(x, now, with_instance_view=False) for x in items], query, path, sub))


def arm_usages(now, method, path, query, raw, g, sub) -> Answer:
    loc = g["loc"].lower()
    cores, groups = EMU.quota(sub, loc)
    mine = [x for x in EMU.groups.values() if x.sub.lower() == sub.lower() and x.location == loc]
    used = sum(x.cpu() for x in mine if group_state(x, now)[1] in ("Pending", "Running"))
    base = f"/subscriptions/{sub}/providers/{PROVIDER}/locations/{loc}/usages"
    return Answer(
        200,
        {
            "value": [
                {
                    "id": f"{base}/ContainerGroups",
                    "unit": "Count",
                    "currentValue": len(mine),
                    "limit": groups,
                    "name": {"value": "ContainerGroups", "localizedValue": "Container Groups"},
                },
                {
                    "id": f"{base}/StandardCores",
                    "unit": "Count",
                    "currentValue": int(math.ceil(used)),
                    "limit": int(cores),
                    "name": {"value": "StandardCores", "localizedValue": "Standard Cores"},
                },
            ]
        },
    )


def arm_operation(now, method, path, query, raw, g, sub) -> Answer:
    op = EMU.ops.get(g["op"])
    if op is None or op["sub"].lower() != sub.lower():
        raise ArmError(404, "OperationNotFound", f"The operation '{g['op']}' could not be found.")
    done = now >= op["done"]
    out = {
        "id": f"/subscriptions/{op['sub']}/providers/{PROVIDER}/locations/{op['location']}/operations/{g['op']}",
        "name": g["op"],
        "status": "Succeeded" if done else "InProgress",
        "startTime": iso(op["start"]),
    }
    if done:
        out["endTime"] = iso(op["done"])
    return Answer(200, out)


def find_container(grp: Group, cname: str) -> dict:
    for c in grp.props.get("containers") or []:
        if c.get("name") == cname:
            return c
    raise ArmError(404, "ContainerNotFound", f"The container '{cname}' in container group '{grp.name}' is not found.")


def log_lines(grp: Group, c: dict, now: float, timestamps: bool) -> list[str]:
    """The current run's output: one line per second of run time, naming the container, and a
    last line with the exit code once it has exited."""
    run = container_run(grp, c, now)
    if run.run_start is None:
        return []
    image = (c.get("properties") or {}).get("image", "")
    out, k = [], 0
    while True:
        t = run.run_start + k
        if (run.run_end is not None and t >= run.run_end) or t > now:
            break
        text = f"{c['name']}: started from image {image}" if k == 0 else f"{c['name']}: line {k}"
        out.append(f"{iso_nanos(t)} {text}" if timestamps else text)
        k += 1
    if run.run_end is not None:
        text = f"{c['name']}: exiting with code {run.exit_code}"
        out.append(f"{iso_nanos(run.run_end)} {text}" if timestamps else text)
    return out


def arm_logs(now, method, path, query, raw, g, sub) -> Answer:
    grp = find_group(g)
    c = find_container(grp, g["container"])
    timestamps = str(query.get("timestamps", "false")).lower() == "true"
    lines = log_lines(grp, c, now, timestamps)
    tail = query.get("tail")
    if tail not in (None, ""):
        try:
            n = int(tail)
        except ValueError:
            raise ArmError(400, "InvalidTail", f"The tail value '{tail}' is invalid.")
        lines = lines[-n:] if n > 0 else []
    return Answer(200, {"content": "".join(line + "\n" for line in lines)})


def arm_exec(now, method, path, query, raw, g, sub) -> Answer:
    body = parse_json_body(raw)
    grp = find_group(g)
    c = find_container(grp, g["container"])
    if container_run(grp, c, now).current["state"] != "Running":
        raise ArmError(
            409,
            "ContainerGroupNotRunning",
            f"The container '{c['name']}' in container group '{grp.name}' is not running. Exec requires a running container.",
        )
    token, password = secrets.token_hex(16), secrets.token_urlsafe(24)
    EMU.exec_sessions[token] = {
        "password": password,
        "key": grp.key,
        "container": c["name"],
        "command": body.get("command") or "/bin/sh",
        "expires": now + 300,
    }
    ws = SELF_URL.replace("http://", "ws://").replace("https://", "wss://")
    return Answer(200, {"webSocketUri": f"{ws}/_exec/{token}", "password": password})


def arm_attach(now, method, path, query, raw, g, sub) -> Answer:
    grp = find_group(g)
    c = find_container(grp, g["container"])
    if container_run(grp, c, now).current["state"] != "Running":
        raise ArmError(
            409,
            "ContainerGroupNotRunning",
            f"The container '{c['name']}' in container group '{grp.name}' is not running. Attach requires a running container.",
        )
    token, password = secrets.token_hex(16), secrets.token_urlsafe(24)
    EMU.attach_sessions[token] = {"password": password, "key": grp.key, "container": c["name"], "expires": now + 300}
    ws = SELF_URL.replace("http://", "ws://").replace("https://", "wss://")
    return Answer(200, {"webSocketUri": f"{ws}/_attach/{token}", "password": password})


# --- Azure Monitor metrics (Microsoft.Insights; not in ACI's spec) -------------------------------

MONITOR_API_VERSIONS = {"2018-01-01", "2019-07-01", "2021-05-01", "2023-10-01", "2024-02-01"}
METRICS = {
    "cpuusage": ("CpuUsage", "CPU Usage", "Count"),
    "memoryusage": ("MemoryUsage", "Memory Usage", "Bytes"),
}


def container_requests(c: dict) -> tuple[float, float]:
    req = ((c.get("properties") or {}).get("resources") or {}).get("requests") or {}
    return float(req.get("cpu", 0) or 0), float(req.get("memoryInGB", 0) or 0)


def usage_at(grp: Group, c: dict, t: float) -> tuple[float, float] | None:
    """(millicores, bytes) of a container at `t`: the last value the control API set by then,
    else derived from its requests, changing every minute; None while it does not run."""
    run = container_run(grp, c, t)
    if run.current.get("state") != "Running":
        return None
    key = (grp.key, (c.get("name") or "").lower())
    for since, cpu, mem in reversed(EMU.usage.get(key, [])):
        if since <= t:
            return cpu, mem
    cpu, gb = container_requests(c)
    minute = int(t // 60)
    return round(cpu * 1000 * (0.2 + 0.1 * (minute % 5)), 3), float(int(gb * (1 << 30) * (0.3 + 0.05 * (minute % 5))))


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()


def arm_metrics(now, method, path, query, raw, g, sub) -> Answer:
    grp = find_group(g)
    names = [n.strip() for n in (query.get("metricnames") or "CpuUsage").split(",") if n.strip()]
    for n in names:
        if n.lower() not in METRICS:
            raise ArmError(400, "BadRequest", f"Failed to find metric configuration for provider: Microsoft.ContainerInstance, resource Type: containerGroups, metric: {n}, Valid metrics: CpuUsage,MemoryUsage,NetworkBytesReceivedPerSecond,NetworkBytesTransmittedPerSecond")
    if (query.get("interval") or "PT1M").upper() != "PT1M":
        raise ArmError(400, "BadRequest", "The emulator serves the PT1M grain only.")
    try:
        start, end = (parse_iso(x) for x in (query.get("timespan") or f"{iso(now - 3600)}/{iso(now)}").split("/"))
    except ValueError:
        raise ArmError(400, "BadRequest", f"Invalid timespan '{query.get('timespan')}'.")
    split = "containername eq '*'" in (query.get("$filter") or "").lower()
    containers = grp.props.get("containers") or []
    minutes = [m * 60 for m in range(int(start // 60), int(min(end, now) // 60) + 1)]

    def points(cs: list[dict], index: int) -> list[dict]:
        out = []
        for m in minutes:
            at = min(m + 60, now)
            vals = [usage_at(grp, c, at) for c in cs]
            vals = [v[index] for v in vals if v is not None]
            point = {"timeStamp": iso(m).replace(".000000Z", "Z")}
            if vals:
                point["average"] = float(sum(vals))
            out.append(point)
        return out

    value = []
    for n in names:
        name, local, unit = METRICS[n.lower()]
        index = 0 if name == "CpuUsage" else 1
        if split:
            series = [
                {"metadatavalues": [{"name": {"value": "containername", "localizedValue": "containername"}, "value": c.get("name")}], "data": points([c], index)}
                for c in containers
            ]
        else:
            series = [{"metadatavalues": [], "data": points(containers, index)}]
        value.append({
            "id": f"{grp.resource_id()}/providers/Microsoft.Insights/metrics/{name}",
            "type": "Microsoft.Insights/metrics",
            "name": {"value": name, "localizedValue": local},
            "displayDescription": "CPU usage on all cores in millicores." if index == 0 else "Total memory usage in byte.",
            "unit": unit,
            "timeseries": series,
            "errorCode": "Success",
        })
    return Answer(200, {
        "cost": len(minutes) * len(names),
        "timespan": f"{iso(start)}/{iso(end)}",
        "interval": "PT1M",
        "value": value,
        "namespace": GROUP_TYPE,
        "resourceregion": grp.location,
    })


def arm_action(now, method, path, query, raw, g, sub) -> Answer:
    grp = find_group(g)
    action = g["action"].lower()
    if action == "stop":
        if grp.stopped_at is None:
            grp.stopped_at = now
        return Answer(204)
    # start and restart: a fresh run of every container
    grp.created, grp.stopped_at = now, None
    grp.delay = float(EMU.setting(sub, "provisioning_delay", DEFAULT_PROVISIONING_DELAY))
    op_id = EMU.new_op(sub, grp.location, grp.key, action, now, grp.ready_at())
    url = async_op_url(sub, grp.location, op_id)
    headers = {"Azure-AsyncOperation": url, "Location": url, "Retry-After": "1"}
    return Answer(202 if action == "start" else 204, None, headers)


# --- Tokens -----------------------------------------------------------------------------------


def aad_error(status: int, error: str, code: int, description: str) -> Answer:
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return Answer(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {corr} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
        },
    )


def token_endpoint(tenant: str, raw: bytes, content_type: str) -> Answer:
    if "application/x-www-form-urlencoded" not in (content_type or ""):
        return aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
    form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}
    for name in ("grant_type", "client_id", "scope"):
        if not form.get(name):
            return aad_error(400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'.")
    if form["grant_type"] != "client_credentials":
        return aad_error(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{form['grant_type']}'.")
    if not form.get("client_secret") and not form.get("client_assertion"):
        return aad_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    if EXPECTED_CLIENT_SECRET and form.get("client_secret") != EXPECTED_CLIENT_SECRET:
        return aad_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, "
            f"not the client secret ID, for a secret added to app '{form['client_id']}'.",
        )
    if not all(s.endswith("/.default") for s in form["scope"].split()):
        return aad_error(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {form['scope']} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
        )
    token = "emu." + secrets.token_urlsafe(32)
    with EMU.lock:
        EMU.tokens[token] = (time.time(), time.time() + TOKEN_LIFETIME)
    return Answer(
        200,
        {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME, "ext_expires_in": TOKEN_LIFETIME, "access_token": token},
    )


def check_bearer(authorization: str | None, sub: str | None) -> None:
    if not authorization:
        raise ArmError(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token", error_description="The authentication failed because of missing \'Authorization\' header."'},
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ArmError(
            401,
            "AuthenticationFailedInvalidHeader",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        )
    with EMU.lock:
        issued, expiry = EMU.tokens.get(token.strip(), (None, None))
        not_before = max((f.tokens_not_before or 0.0) for f in EMU.scope_faults(sub))
    www = {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token", error_description="The access token is invalid."'}
    if expiry is None:
        raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.", www)
    if time.time() >= expiry or issued < not_before:
        raise ArmError(401, "ExpiredAuthenticationToken", "The access token expiry UTC time is earlier than current UTC time.", www)


# --- Exec: ACI's websocket protocol -----------------------------------------------------------


def ws_read_frame(rfile) -> tuple[bool, int, bytes] | None:
    """One frame: (fin, opcode, unmasked payload), or None at EOF."""
    head = rfile.read(2)
    if len(head) < 2:
        return None
    fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
    masked, length = head[1] & 0x80, head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", rfile.read(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", rfile.read(8))[0]
    mask = rfile.read(4) if masked else b""
    payload = rfile.read(length)
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return fin, opcode, payload


def ws_message(rfile, wfile) -> tuple[int, bytes] | None:
    """The next data message (fragments joined); answers pings; None on close or EOF."""
    parts, first_op = [], None
    while True:
        frame = ws_read_frame(rfile)
        if frame is None:
            return None
        fin, op, payload = frame
        if op == 0x8:
            return None
        if op == 0x9:
            ws_send(wfile, 0xA, payload)
            continue
        if op == 0xA:
            continue
        if first_op is None:
            first_op = op
        parts.append(payload)
        if fin:
            return first_op, b"".join(parts)


def ws_send(wfile, opcode: int, payload: bytes) -> None:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    wfile.write(header + payload)
    wfile.flush()


def secret_files(grp: Group, c: dict) -> dict[str, bytes]:
    """Path -> content of the files of the group's secret volumes mounted into container `c`."""
    volumes = {v.get("name"): v for v in grp.props.get("volumes") or []}
    files = {}
    for mount in (c.get("properties") or {}).get("volumeMounts") or []:
        v = volumes.get(mount.get("name"))
        if not v or "secret" not in v:
            continue
        for key, b64 in (v.get("secret") or {}).items():
            try:
                files[mount["mountPath"].rstrip("/") + "/" + key] = base64.b64decode(b64)
            except (ValueError, TypeError):
                files[mount["mountPath"].rstrip("/") + "/" + key] = b""
    return files


def run_builtin(grp: Group, c: dict, argv: list[str]) -> tuple[bytes, int | None]:
    """Runs one built-in command; (output, exit code if the session must end)."""
    if not argv:
        return b"", None
    cmd, args = os.path.basename(argv[0]), argv[1:]
    if cmd == "echo":
        return (" ".join(args) + "\n").encode(), None
    if cmd == "hostname":
        return (grp.name + "\n").encode(), None
    if cmd in ("env", "printenv"):
        env = plain_env(c)
        if args:
            return "".join(env[a] + "\n" for a in args if a in env).encode(), None
        return "".join(f"{k}={v}\n" for k, v in env.items()).encode(), None
    if cmd == "cat":
        files, out = container_files(grp, c), b""
        for a in args:
            out += files[a] if a in files else f"cat: {a}: No such file or directory\n".encode()
        return out, None
    if cmd == "ls":
        files = secret_files(grp, c)
        d = (args[0] if args else "/").rstrip("/")
        names = sorted(p[len(d) + 1 :] for p in files if p.startswith(d + "/") and "/" not in p[len(d) + 1 :])
        return "".join(n + "\n" for n in names).encode(), None
    if cmd == "exit":
        try:
            return b"", int(args[0]) if args else 0
        except ValueError:
            return b"", 2
    return f"{argv[0]}: command not found\n".encode(), None


SHELLS = {"sh", "bash", "ash", "dash", "zsh"}

# How long a closing exec session waits for the client's close.
CLOSE_WAIT_SECONDS = 5


def ws_finish(handler) -> None:
    """Closes the websocket as RFC 6455 says: our close, then the client's frames read (and
    dropped) until its close or EOF, so that no unread input makes the kernel reset the
    connection under output the client has not read yet."""
    ws_send(handler.wfile, 0x8, struct.pack("!H", 1000))
    handler.connection.settimeout(CLOSE_WAIT_SECONDS)
    try:
        while (frame := ws_read_frame(handler.rfile)) is not None and frame[1] != 0x8:
            pass
    except OSError:
        pass


def container_files(grp: Group, c: dict) -> dict[str, bytes]:
    """Path -> content of the files a command in container `c` sees: its secret volumes' and
    those written through exec (`tar x`)."""
    with EMU.lock:
        written = dict(EMU.files.get((grp.key, c["name"]), {}))
    return {**secret_files(grp, c), **written}


def tar_directory(argv: list[str]) -> str:
    """The `-C DIR` of a tar command line, else /."""
    for i, a in enumerate(argv):
        if a == "-C" and i + 1 < len(argv):
            return argv[i + 1]
    return "/"


def run_with_stdin(grp: Group, c: dict, argv: list[str], stdin: bytes) -> bytes:
    """The commands that read stdin until it ends (the client closes the websocket): `cat` with
    no file echoes it, `tar x...f -` extracts the archive into the container's files."""
    if os.path.basename(argv[0]) == "cat":
        return stdin
    directory = tar_directory(argv)
    try:
        archive = tarfile.open(fileobj=io.BytesIO(stdin), mode="r:*")
        members = [(m, archive.extractfile(m)) for m in archive.getmembers() if m.isfile()]
    except (tarfile.TarError, EOFError) as e:
        return f"tar: {e}\n".encode()
    with EMU.lock:
        files = EMU.files.setdefault((grp.key, c["name"]), {})
        for m, f in members:
            files[os.path.normpath(os.path.join(directory, m.name))] = f.read() if f else b""
    return b""


def tar_create(grp: Group, c: dict, paths: list[str]) -> bytes:
    """`tar cf - PATH...`: an archive of the container's files under each path."""
    files, out = container_files(grp, c), io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for path in paths:
            root = os.path.normpath(path)
            for name in sorted(f for f in files if f == root or f.startswith(root.rstrip("/") + "/")):
                info = tarfile.TarInfo(name.lstrip("/"))
                info.size, info.mode, info.mtime = len(files[name]), 0o644, int(time.time())
                archive.addfile(info, io.BytesIO(files[name]))
    return out.getvalue()


def reads_stdin(argv: list[str]) -> bool:
    """`cat` alone, or `tar` extracting from stdin."""
    if not argv:
        return False
    cmd = os.path.basename(argv[0])
    if cmd == "cat":
        return len(argv) == 1
    flags = "".join(a.lstrip("-") for a in argv[1:] if a.startswith("-") or a[:1] in "xc")
    return cmd == "tar" and "x" in flags and "-" in argv


def creates_tar(argv: list[str]) -> bool:
    """`tar cf - PATH...`."""
    return bool(argv) and os.path.basename(argv[0]) == "tar" and len(argv) >= 4 and "c" in argv[1] and argv[2] == "-"


def serve_exec(handler, token: str) -> None:
    """ACI's exec protocol: upgrade, the client sends the password as its first message, then
    stdin as text; the server sends the command's output and closes when it ends."""
    key = handler.headers.get("Sec-WebSocket-Key")
    if not key or "websocket" not in (handler.headers.get("Upgrade") or "").lower():
        handler.send_error(400, "websocket upgrade expected")
        return
    with EMU.lock:
        session = EMU.exec_sessions.pop(token, None)
    if session is None or time.time() > session["expires"]:
        handler.send_error(404, "no such exec session")
        return
    accept = base64.b64encode(hashlib.sha1((key + GUID_WS).encode()).digest()).decode()
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept)
    handler.end_headers()
    handler.wfile.flush()
    handler.close_connection = True
    rfile, wfile = handler.rfile, handler.wfile
    first = ws_message(rfile, wfile)
    if first is None or first[1].decode("utf-8", "replace") != session["password"]:
        ws_send(wfile, 0x8, struct.pack("!H", 1008) + b"invalid password")
        return
    with EMU.lock:
        grp = EMU.groups.get(session["key"])
        c = find_container(grp, session["container"]) if grp else None
    if grp is None or c is None:
        ws_send(wfile, 0x8, struct.pack("!H", 1011) + b"container gone")
        return
    try:
        argv = shlex.split(session["command"])
    except ValueError:
        argv = session["command"].split()
    if argv and os.path.basename(argv[0]) in SHELLS and len(argv) == 1:
        buf = ""
        while True:
            msg = ws_message(rfile, wfile)
            if msg is None:
                return
            buf += msg[1].decode("utf-8", "replace").replace("\r", "\n")
            while "\n" in buf:
                line, buf = buf.split("\n", 1)
                try:
                    words = shlex.split(line)
                except ValueError:
                    words = line.split()
                out, code = run_builtin(grp, c, words)
                if out:
                    ws_send(wfile, 0x1, out)
                if code is not None:
                    ws_finish(handler)
                    return
    if argv and os.path.basename(argv[0]) in SHELLS and len(argv) >= 3 and argv[1] == "-c":
        argv = shlex.split(argv[2])
    if reads_stdin(argv):
        stdin = b""
        while (msg := ws_message(rfile, wfile)) is not None:
            stdin += msg[1]
        out = run_with_stdin(grp, c, argv, stdin)
        sys.stderr.write(f"[{iso(time.time())}] exec {argv!r}: read {len(stdin)} bytes of stdin\n")
        if out:
            ws_send(wfile, 0x2, out)
        ws_finish(handler)
        return
    if creates_tar(argv):
        ws_send(wfile, 0x2, tar_create(grp, c, argv[3:]))
        ws_finish(handler)
        return
    out, _ = run_builtin(grp, c, argv)
    if out:
        ws_send(wfile, 0x1, out)
    ws_finish(handler)


def ws_accept(handler) -> bool:
    """Answers a websocket upgrade (101); False (after a 400) when the request is not one."""
    key = handler.headers.get("Sec-WebSocket-Key")
    if not key or "websocket" not in (handler.headers.get("Upgrade") or "").lower():
        handler.send_error(400, "websocket upgrade expected")
        return False
    accept = base64.b64encode(hashlib.sha1((key + GUID_WS).encode()).digest()).decode()
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept)
    handler.end_headers()
    handler.wfile.flush()
    handler.close_connection = True
    return True


ATTACH_POLL_SECONDS = 0.25


def serve_attach(handler, token: str) -> None:
    """ACI's attach: the password in the `Authorization` header of the upgrade (as the spec's
    ContainerAttachResponse says); then the container's current run's output, the lines /logs
    gives so far and each new one as it is written, one text message per line, until the run ends
    (the exit line, then close 1000) or the client goes. Input is ignored."""
    with EMU.lock:
        session = EMU.attach_sessions.pop(token, None)
    if session is None or time.time() > session["expires"]:
        handler.send_error(404, "no such attach session")
        return
    if handler.headers.get("Authorization") != session["password"]:
        handler.send_error(401, "invalid password")
        return
    if not ws_accept(handler):
        return
    rfile, wfile = handler.rfile, handler.wfile
    sent, run_start = 0, None
    while True:
        with EMU.lock:
            now = time.time()
            grp = EMU.groups.get(session["key"])
            c = next((x for x in (grp.props.get("containers") or []) if x.get("name") == session["container"]), None) if grp else None
            if c is None:
                ws_send(wfile, 0x8, struct.pack("!H", 1000) + b"container gone")
                return
            run = container_run(grp, c, now)
            lines = log_lines(grp, c, now, False)
        if run.run_start != run_start:
            sent, run_start = 0, run.run_start
        for line in lines[sent:]:
            ws_send(wfile, 0x1, (line + "\n").encode())
        sent = max(sent, len(lines))
        if run.run_end is not None:
            ws_send(wfile, 0x8, struct.pack("!H", 1000))
            return
        readable, _, _ = select.select([handler.connection], [], [], ATTACH_POLL_SECONDS)
        if readable and ws_message(rfile, wfile) is None:
            ws_send(wfile, 0x8, struct.pack("!H", 1000))
            return


# --- HTTP -------------------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "burstgate-aci-emulator/1"

    def handle(self):
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            pass  # a keep-alive client went away between requests

    def log_message(self, fmt, *args):  # one line per request on stderr (the peer's log)
        sys.stderr.write(f"[{iso(time.time())}] {self.address_string()} {fmt % args}\n")

    def do_GET(self):
        self.route("GET")

    def do_PUT(self):
        self.route("PUT")

    def do_POST(self):
        self.route("POST")

    def do_PATCH(self):
        self.route("PATCH")

    def do_DELETE(self):
        self.route("DELETE")

    def read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def reply(self, ans: Answer, extra: dict | None = None) -> None:
        payload = b"" if ans.body is None or ans.status == 204 else json.dumps(ans.body).encode()
        self.send_response(ans.status)
        headers = {**(extra or {}), **ans.headers}
        for k, v in headers.items():
            self.send_header(k, str(v))
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        if self.close_connection:
            # The request said `Connection: close` (Prism forwards its client's hop-by-hop
            # headers): say so, or Prism's pooled socket is reused after we close it.
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def route(self, method: str) -> None:
        try:
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path)
            query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
            if path.startswith("/_exec/") and method == "GET":
                serve_exec(self, path[len("/_exec/") :])
                return
            if path.startswith("/_attach/") and method == "GET":
                serve_attach(self, path[len("/_attach/") :])
                return
            if path.startswith("/_emulator/"):
                self.reply(control(method, path, query, self.read_body()))
                return
            m = re.fullmatch(r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", path)
            if m and method == "POST":
                self.reply(token_endpoint(m["tenant"], self.read_body(), self.headers.get("Content-Type", "")))
                return
            m = re.fullmatch(r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", path)
            if m and method == "GET":
                base = SELF_URL if not isinstance(self.connection, ssl.SSLSocket) else f"https://{HOST}:{TLS_PORT}"
                t = m["tenant"]
                self.reply(Answer(200, {
                    "token_endpoint": f"{base}/{t}/oauth2/v2.0/token",
                    "issuer": f"{base}/{t}/v2.0",
                    "authorization_endpoint": f"{base}/{t}/oauth2/v2.0/authorize",
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "tenant_region_scope": "NA",
                }))
                return
            self.arm(method, path, url.query, query)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # an emulator bug: answer 500 with the traceback in the log
            traceback.print_exc()
            try:
                self.reply(Answer(500, {"error": {"code": "InternalServerError", "message": "The emulator failed; see its log."}}))
            except OSError:
                pass

    def arm(self, method: str, path: str, raw_query: str, query: dict) -> None:
        raw = self.read_body()
        req_id = str(uuid.uuid4())
        m_sub = re.match(r"^/subscriptions/([^/]+)", path, re.I)
        sub = m_sub.group(1) if m_sub else None
        entry = {
            "time": iso(time.time()),
            "method": method,
            "path": path,
            "query": raw_query,
            "body": raw.decode("utf-8", "replace"),
            "subscriptionId": sub,
            "requestId": req_id,
        }
        kind = "reads" if method == "GET" else ("deletes" if method == "DELETE" else "writes")
        headers = {
            "x-ms-request-id": req_id,
            "x-ms-correlation-request-id": self.headers.get("x-ms-correlation-request-id") or str(uuid.uuid4()),
            "x-ms-routing-request-id": f"EASTUS:{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}:{req_id}",
            "Cache-Control": "no-cache",
        }
        if self.headers.get("x-ms-client-request-id"):
            headers["x-ms-client-request-id"] = self.headers["x-ms-client-request-id"]
        with EMU.lock:
            EMU.requests.append(entry)
        try:
            check_bearer(self.headers.get("Authorization"), sub)
            with EMU.lock:
                now = time.time()
                if now - EMU.budget_window > 3600:
                    EMU.budget_window, EMU.budget_used = now, {}
                bkey = ((sub or "").lower(), kind)
                EMU.budget_used[bkey] = EMU.budget_used.get(bkey, 0) + 1
                remaining = max(0, ARM_BUDGET[kind] - EMU.budget_used[bkey])
                headers[f"x-ms-ratelimit-remaining-subscription-{kind}"] = str(remaining)
                throttle = EMU.take_fault(sub, "throttle", method, path)
                error = None if throttle else EMU.take_fault(sub, "errors", method, path)
            if throttle:
                wait = int(throttle.get("retryAfterSeconds", 1))
                op = method + operation_template(path)
                raise ArmError(
                    429,
                    "SubscriptionRequestsThrottled",
                    f"Number of requests for subscription '{sub}' and operation '{op}' exceeded the backend storage limit. "
                    f"Please try again after '{wait}' seconds.",
                    {"Retry-After": str(wait)},
                )
            if error:
                status = int(error.get("status", 500))
                code, message = {
                    500: ("InternalServerError", "Encountered internal server error. Diagnostic information: timestamp '%s', subscription id '%s', tracking id '%s', request correlation id '%s'."),
                    502: ("BadGateway", "The gateway did not receive a response from 'Microsoft.ContainerInstance' within the specified time period."),
                    503: ("ServiceUnavailable", "The service is currently unavailable. Please retry after some time."),
                    504: ("GatewayTimeout", "The gateway did not receive a response from 'Microsoft.ContainerInstance' within the specified time period."),
                }.get(status, ("InternalServerError", "The server encountered an internal error."))
                if "%s" in message:
                    message = message % (datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ"), sub, req_id, headers["x-ms-correlation-request-id"])
                extra = {"Retry-After": str(int(error["retryAfterSeconds"]))} if error.get("retryAfterSeconds") else {}
                raise ArmError(status, error.get("code", code), error.get("message", message), extra)
            api = query.get("api-version")
            if not api:
                raise ArmError(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
            for rmethod, rx, name in ROUTES:
                if rmethod != method:
                    continue
                mm = rx.match(path)
                if mm:
                    if name == "metrics":
                        if api not in MONITOR_API_VERSIONS:
                            raise ArmError(
                                400,
                                "InvalidApiVersionParameter",
                                f"The api-version '{api}' is invalid. The supported versions are '{', '.join(sorted(MONITOR_API_VERSIONS))}'.",
                            )
                    elif api != API_VERSION:
                        raise ArmError(
                            400,
                            "NoRegisteredProviderFound",
                            f"No registered resource provider found for location '{mm.groupdict().get('loc') or 'eastus'}' and API version "
                            f"'{api}' for type 'containerGroups'. The supported api-versions are '{API_VERSION}'. "
                            "The supported locations are 'eastus, westus, westeurope'.",
                        )
                    try:
                        uuid.UUID(mm["sub"])
                    except ValueError:
                        raise ArmError(400, "InvalidSubscriptionId", f"The provided subscription identifier '{mm['sub']}' is malformed or invalid.")
                    ans = arm_dispatch(method, path, query, raw, mm, name)
                    break
            else:
                raise ArmError(404, "InvalidResourceType", f"The resource type could not be found in the namespace '{PROVIDER}' for api version '{query.get('api-version')}'.")
        except ArmError as err:
            ans = Answer(err.status, err.body(), err.headers)
        if isinstance(ans.body, dict) and "properties" in ans.body:
            with EMU.lock:
                broken = EMU.take_fault(sub, "violate", method, path)
            if broken:  # a group without its required `containers`: Prism must make this a 500
                ans.body["properties"] = {"osType": "Linux"}
        entry["status"] = ans.status
        self.reply(ans, headers)


# --- Control API (not in the spec; tests call it directly, not through Prism) -------------------


def control(method: str, path: str, query: dict, raw: bytes) -> Answer:
    body = {}
    if raw:
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as err:
            return Answer(400, {"error": f"the body is not JSON: {err}"})
    sub = query.get("subscriptionId") or (body.get("subscriptionId") if isinstance(body, dict) else None)
    with EMU.lock:
        now = time.time()
        EMU.sweep(now)
        if path == "/_emulator/healthz" and method == "GET":
            return Answer(200, {"ok": True})
        if path == "/_emulator/state" and method == "GET":
            groups = []
            for grp in EMU.groups.values():
                if sub and grp.sub.lower() != sub.lower():
                    continue
                prov, state = group_state(grp, now)
                groups.append({
                    "id": grp.resource_id(),
                    "subscriptionId": grp.sub,
                    "resourceGroup": grp.rg,
                    "name": grp.name,
                    "location": grp.location,
                    "spec": grp.body,
                    "tags": grp.tags,
                    "provisioningState": prov,
                    "state": state,
                    "ip": grp.ip,
                    "containers": [
                        {"name": c.get("name"), **{k: v for k, v in container_view(grp, c, now).items() if k != "events"}}
                        for c in grp.props.get("containers") or []
                    ],
                })
            faults = {k or "*": f.to_json() for k, f in EMU.faults.items()}
            return Answer(200, {"groups": groups, "faults": faults, "tokensIssued": len(EMU.tokens)})
        if path == "/_emulator/requests" and method == "GET":
            reqs = [r for r in EMU.requests if not sub or (r.get("subscriptionId") or "").lower() == sub.lower()]
            return Answer(200, {"requests": reqs})
        if path == "/_emulator/faults" and method == "POST":
            if not isinstance(body, dict):
                return Answer(400, {"error": "faults must be a JSON object"})
            return Answer(200, {"faults": EMU.apply_faults(body)})
        if path == "/_emulator/usage" and method == "POST":
            if not isinstance(body, dict) or not sub or not body.get("group") or not body.get("container"):
                return Answer(400, {"error": "usage needs subscriptionId, group, container, cpuMillicores, memoryBytes"})
            grp = next((x for x in EMU.groups.values() if x.sub.lower() == sub.lower() and x.name.lower() == body["group"].lower()), None)
            if grp is None:
                return Answer(404, {"error": f"no group {body['group']} in subscription {sub}"})
            key = (grp.key, body["container"].lower())
            EMU.usage.setdefault(key, []).append((now, float(body.get("cpuMillicores", 0)), float(body.get("memoryBytes", 0))))
            return Answer(200, {"group": grp.name, "container": body["container"], "since": iso(now)})
        if path == "/_emulator/history" and method == "GET":
            return Answer(200, HISTORY.view(sub))
        if path == "/_emulator/reset" and method == "POST":
            HISTORY.reset(sub)
            EMU.reset(sub)
            return Answer(200, {"reset": sub or "*"})
    return Answer(404, {"error": f"no control endpoint {method} {path}"})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # Prism opens many connections at once; the default 5 drops them


def main() -> None:
    servers = [Server((HOST, PORT), Handler)]
    if TLS_PORT and TLS_CERT and TLS_KEY:
        tls = Server((HOST, TLS_PORT), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(TLS_CERT, TLS_KEY)
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        servers.append(tls)
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    sys.stderr.write(
        f"aci-emulator listening on http://{HOST}:{PORT}"
        + (f" and https://{HOST}:{TLS_PORT}" if len(servers) > 1 else "")
        + f"; ARM base for links {ARM_URL}; provisioning delay {DEFAULT_PROVISIONING_DELAY}s\n"
    )
    sys.stderr.flush()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
