#!/usr/bin/env python3
"""Compare two root filesystems, each a tar file or a directory: path, type, mode, owner,
content hash, symlink target and hardlink groups. Docker's runtime files are ignored.
Prints the differences (at most 20) and exits 1 when there are any."""
import hashlib, os, stat, sys, tarfile

RUNTIME = {".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab", "dev", "proc", "sys"}

def skip(p):
    return not p or any(p == r or p.startswith(r + "/") for r in RUNTIME)

def clean(p):
    parts = [c for c in p.split("/") if c not in ("", ".")]
    return "/".join(parts)

def from_tar(path):
    nodes, inode, groups = {}, {}, {}
    with tarfile.open(path) as t:
        for m in t:
            p = clean(m.name)
            if skip(p):
                continue
            if m.islnk():
                tgt = clean(m.linkname)
                nodes[p] = nodes[tgt]
                inode[p] = inode[tgt]
                continue
            if m.isdir():
                what = "dir"
            elif m.issym():
                what = "symlink " + m.linkname
            elif m.isfile():
                what = "file " + hashlib.sha256(t.extractfile(m).read()).hexdigest()
            else:
                what = "type " + m.type.decode()
            nodes[p] = f"{what} {m.mode & 0o7777:o} {m.uid}:{m.gid}"
            inode[p] = p
    for p, i in inode.items():
        groups.setdefault(i, []).append(p)
    return nodes, {tuple(sorted(g)) for g in groups.values() if len(g) > 1 and nodes[g[0]].startswith("file")}

def from_dir(root):
    nodes, groups = {}, {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            full = os.path.join(d, n)
            p = os.path.relpath(full, root)
            if skip(p):
                continue
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                what = "dir"
            elif stat.S_ISLNK(st.st_mode):
                what = "symlink " + os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as f:
                    what = "file " + hashlib.sha256(f.read()).hexdigest()
                if st.st_nlink > 1:
                    groups.setdefault((st.st_dev, st.st_ino), []).append(p)
            else:
                what = "type " + {stat.S_IFIFO: "6", stat.S_IFCHR: "3", stat.S_IFBLK: "4"}.get(stat.S_IFMT(st.st_mode), "?")
            nodes[p] = f"{what} {st.st_mode & 0o7777:o} {st.st_uid}:{st.st_gid}"
    return nodes, {tuple(sorted(g)) for g in groups.values() if len(g) > 1}

def load(x):
    return from_dir(x) if os.path.isdir(x) else from_tar(x)

a, b = load(sys.argv[1]), load(sys.argv[2])
diffs = []
for p in sorted(set(a[0]) | set(b[0])):
    if a[0].get(p) != b[0].get(p):
        diffs.append(f"{p}: {a[0].get(p)} | {b[0].get(p)}")
if a[1] != b[1]:
    diffs.append(f"hardlink groups differ: {len(a[1] - b[1])} only left, {len(b[1] - a[1])} only right")
print(f"{len(a[0])} vs {len(b[0])} paths, {len(diffs)} differences")
for d in diffs[:20]:
    print("  " + d)
sys.exit(1 if diffs else 0)
