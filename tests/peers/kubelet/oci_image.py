#!/usr/bin/env python3
"""Writes a one-layer OCI image archive (an OCI image layout in a tar) that
`ctr -n k8s.io images import` takes, from files on this machine.

No image registry is reachable from the test machines, so tests/peers/up.sh makes the test
node's images itself: the pod sandbox (a static `pause`) and a busybox workload (Debian's
busybox-static, with a symlink per applet: sh, nc, cat, sleep, ...).

  oci_image.py OUT.tar NAME ENTRYPOINT [--file SRC:DEST[:MODE]]... [--applets DEST_DIR:BUSYBOX]

The layer is an uncompressed tar with fixed owners and mtimes, so the same inputs give the same
digests. Stdlib only (Debian's /usr/bin/python3).
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

EPOCH = 0  # fixed mtime for a reproducible layer


def add_dir(tar, path, seen):
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d and d not in seen:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            info.mtime = EPOCH
            tar.addfile(info)
            seen.add(d)


def add_file(tar, src, dest, mode, seen):
    dest = dest.strip("/")
    add_dir(tar, os.path.dirname(dest), seen)
    with open(src, "rb") as f:
        data = f.read()
    info = tarfile.TarInfo(dest)
    info.size = len(data)
    info.mode = mode
    info.mtime = EPOCH
    tar.addfile(info, io.BytesIO(data))


def add_symlink(tar, dest, target, seen):
    dest = dest.strip("/")
    add_dir(tar, os.path.dirname(dest), seen)
    info = tarfile.TarInfo(dest)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    info.mtime = EPOCH
    tar.addfile(info)


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    info.mode = 0o644
    info.mtime = EPOCH
    out.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("name", help="image reference, e.g. localhost/burstgate/busybox:1")
    p.add_argument("entrypoint", help="JSON list, e.g. '[\"/pause\"]'")
    p.add_argument("--file", action="append", default=[], help="SRC:DEST[:OCTAL_MODE]")
    p.add_argument("--applets", help="DEST_DIR:BUSYBOX: a symlink in DEST_DIR per applet of BUSYBOX")
    p.add_argument("--cmd", default="null", help="JSON list or null")
    a = p.parse_args()

    layer_buf = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        add_dir(layer, "tmp", seen)
        for spec in a.file:
            parts = spec.split(":")
            mode = int(parts[2], 8) if len(parts) > 2 else 0o755
            add_file(layer, parts[0], parts[1], mode, seen)
        if a.applets:
            dest_dir, busybox = a.applets.split(":")
            names = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
            for n in sorted(set(names)):
                if n != "busybox":
                    add_symlink(layer, f"{dest_dir}/{n}", "busybox", seen)
    layer_data = layer_buf.getvalue()

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": json.loads(a.entrypoint),
            "Cmd": json.loads(a.cmd),
            "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_data).hexdigest()]},
    }
    with tarfile.open(a.out + ".tmp", mode="w", format=tarfile.PAX_FORMAT) as out:
        layer_digest, layer_size = blob(out, layer_data)
        config_digest, config_size = blob(out, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = blob(out, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": a.name,
                    "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[-1],
                },
            }],
        }
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", json.dumps(index).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = EPOCH
            out.addfile(info, io.BytesIO(data))
    os.replace(a.out + ".tmp", a.out)
    print(manifest_digest)


if __name__ == "__main__":
    sys.exit(main())
