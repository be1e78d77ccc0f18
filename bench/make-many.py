#!/usr/bin/env python3
"""A docker-archive with many small files (for memory per path and small-file speed):
layer 0: 150k files of 100-2000 bytes in 1500 directories; layer 1: deletes 1 dir in 10,
overwrites 1 file in 20, adds 30k files. Written to OUT/many.tar."""
import hashlib, io, json, os, random, sys, tarfile

out = sys.argv[1] if len(sys.argv) > 1 else "/dev/shm/strata-bench"
os.makedirs(out, exist_ok=True)
random.seed(7)
blob = os.urandom(4096)

def add(t, name, data=b"", kind=tarfile.REGTYPE, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = kind, mode, 1700000000
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

def layer(build):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        build(t)
    return buf.getvalue()

def l0(t):
    for d in range(1500):
        add(t, f"srv/app/module-{d:04d}/", kind=tarfile.DIRTYPE, mode=0o755)
        for f in range(100):
            add(t, f"srv/app/module-{d:04d}/file-{f:03d}.py", blob[: random.randint(100, 2000)])

def l1(t):
    for d in range(0, 1500, 10):
        add(t, f"srv/app/.wh.module-{d:04d}")
    for d in range(1, 1500, 20):
        add(t, f"srv/app/module-{d:04d}/file-000.py", b"changed\n")
    for d in range(300):
        add(t, f"srv/new/pkg-{d:03d}/", kind=tarfile.DIRTYPE, mode=0o755)
        for f in range(100):
            add(t, f"srv/new/pkg-{d:03d}/mod-{f:03d}.txt", blob[: random.randint(100, 2000)])

layers = [layer(l0), layer(l1)]
diff_ids = [hashlib.sha256(l).hexdigest() for l in layers]
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]}}).encode()
cfg = hashlib.sha256(config).hexdigest()
with tarfile.open(f"{out}/many.tar", "w") as t:
    for l, d in zip(layers, diff_ids):
        add(t, f"{d}/layer.tar", l)
    add(t, f"{cfg}.json", config)
    add(t, "manifest.json", json.dumps([{"Config": f"{cfg}.json", "RepoTags": ["many:latest"],
        "Layers": [f"{d}/layer.tar" for d in diff_ids]}]).encode())
print(f"{out}/many.tar")
