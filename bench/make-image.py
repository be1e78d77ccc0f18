#!/usr/bin/env python3
"""Build the benchmark image from real directories of this machine.

Layers (bottom first):
  0  /usr/share                       (GNU tar format, ~51k paths)
  1  /usr/lib/x86_64-linux-gnu        (POSIX/PAX format)
  2  the Rust toolchain's lib/        (GNU format)
  3  changes: whiteouts of /usr/share/doc and /usr/share/man/man1, an opaque
     /usr/share/locale with new content, ~300 overwritten .so files, cross-layer
     hardlinks to layer-1 files, a hardlink group whose target is overwritten later
  4  changes: /usr/share/doc recreated small; the overwritten hardlink target
Writes OUT/docker-archive.tar (uncompressed, as `docker save`), OUT/oci (gzip -6 blobs),
OUT/layers/N.tar and OUT/layers/N.tar.gz (for the floor measurements).
"""
import hashlib, io, json, os, subprocess, sys, tarfile, glob

out = sys.argv[1] if len(sys.argv) > 1 else "/dev/shm/strata-bench"
os.makedirs(f"{out}/layers", exist_ok=True)
rust_lib = glob.glob(os.path.expanduser("~/.rustup/toolchains/*-x86_64-unknown-linux-gnu/lib"))[0]

def tar_dir(n, path, fmt):
    dst = f"{out}/layers/{n}.tar"
    if not os.path.exists(dst):
        subprocess.run(["tar", "-C", "/", f"--format={fmt}", "-cf", dst, path.lstrip("/")], check=True)
    return dst

def add(t, name, data=b"", kind=tarfile.REGTYPE, link="", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.linkname = kind, mode, 1700000000, link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

layers = [tar_dir(0, "/usr/share", "gnu"), tar_dir(1, "/usr/lib/x86_64-linux-gnu", "posix"), tar_dir(2, rust_lib, "gnu")]

so_files = sorted(p for p in glob.glob("/usr/lib/x86_64-linux-gnu/*.so*") if os.path.isfile(p) and not os.path.islink(p))[:300]
l3 = f"{out}/layers/3.tar"
with tarfile.open(l3, "w", format=tarfile.PAX_FORMAT) as t:
    add(t, "usr/share/.wh.doc")
    add(t, "usr/share/man/.wh.man1")
    add(t, "usr/share/locale/", kind=tarfile.DIRTYPE, mode=0o755)
    add(t, "usr/share/locale/.wh..wh..opq")
    for i in range(200):
        add(t, f"usr/share/locale/new-{i}.mo", os.urandom(2000))
    for p in so_files:
        add(t, p.lstrip("/"), b"overwritten " + p.encode() * 50)
    for p in so_files[:50]:
        add(t, p.lstrip("/") + ".link", kind=tarfile.LNKTYPE, link=p.lstrip("/"))  # links to this layer's new file
    libs = sorted(p for p in glob.glob("/usr/lib/x86_64-linux-gnu/*.a") if os.path.isfile(p))[:50]
    for p in libs:
        add(t, p.lstrip("/") + ".xlink", kind=tarfile.LNKTYPE, link=p.lstrip("/"))  # cross-layer links
    add(t, "opt/group/target", b"original content\n" * 100)
    add(t, "opt/group/alias1", kind=tarfile.LNKTYPE, link="opt/group/target")
    add(t, "opt/group/alias2", kind=tarfile.LNKTYPE, link="opt/group/target")
layers.append(l3)
l4 = f"{out}/layers/4.tar"
with tarfile.open(l4, "w", format=tarfile.PAX_FORMAT) as t:
    add(t, "usr/share/doc/", kind=tarfile.DIRTYPE, mode=0o755)
    add(t, "usr/share/doc/README", b"recreated\n")
    add(t, "opt/group/target", b"new content\n")
layers.append(l4)

def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

diff_ids = [sha(p) for p in layers]
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
    "history": [{"created_by": f"bench layer {i}"} for i in range(len(layers))],
}).encode()
cfg_hex = hashlib.sha256(config).hexdigest()

# docker-archive, uncompressed layers
if not os.path.exists(f"{out}/docker-archive.tar"):
    with tarfile.open(f"{out}/docker-archive.tar.tmp", "w") as t:
        names = []
        for p, d in zip(layers, diff_ids):
            t.add(p, arcname=f"{d}/layer.tar")
            names.append(f"{d}/layer.tar")
        add(t, f"{cfg_hex}.json", config)
        add(t, "manifest.json", json.dumps([{"Config": f"{cfg_hex}.json", "RepoTags": ["bench:latest"], "Layers": names}]).encode())
    os.rename(f"{out}/docker-archive.tar.tmp", f"{out}/docker-archive.tar")

# OCI layout, gzip -6 blobs
oci = f"{out}/oci"
os.makedirs(f"{oci}/blobs/sha256", exist_ok=True)
descs = []
for i, p in enumerate(layers):
    gz = p + ".gz"
    if not os.path.exists(gz):
        with open(gz + ".tmp", "wb") as f:
            subprocess.run(["gzip", "-6", "-n", "-c", p], stdout=f, check=True)
        os.rename(gz + ".tmp", gz)
    h = sha(gz)
    dst = f"{oci}/blobs/sha256/{h}"
    if not os.path.exists(dst):
        os.link(gz, dst)
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{h}", "size": os.path.getsize(gz)})
open(f"{oci}/blobs/sha256/{cfg_hex}", "wb").write(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{cfg_hex}", "size": len(config)},
    "layers": descs}).encode()
m_hex = hashlib.sha256(manifest).hexdigest()
open(f"{oci}/blobs/sha256/{m_hex}", "wb").write(manifest)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": f"sha256:{m_hex}", "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "bench"}}]},
    open(f"{oci}/index.json", "w"))
open(f"{oci}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
print(out)
