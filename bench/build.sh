#!/usr/bin/env bash
# Benchmark strata build: two real trees (default /usr/share and /usr/lib, several GB, ~120k
# entries) as two layers, to a file on /dev/shm and to a pipe, beside the floor: GNU tar -c
# of the same trees piped to openssl's SHA-256 (coreutils sha256sum lacks SHA-NI).
#
#   bench/build.sh [TREE1 TREE2]      (needs: cargo build --release)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${STRATA:-$here/../target/release/strata}
W=${W:-/dev/shm/strata-bench-build}
RUNS=${RUNS:-3}
T1=${1:-/usr/share}
T2=${2:-/usr/lib}
mkdir -p "$W"
. "$here/lib.sh"
tar -cf - "$T1" "$T2" 2>/dev/null > /dev/null   # warm the page cache

bytes=$(du -scb "$T1" "$T2" | tail -1 | cut -f1)
entries=$(find "$T1" "$T2" | wc -l)
echo "Trees: $T1 + $T2, $((bytes / 1000000)) MB in $entries entries"
echo "Machine: $(nproc) cores, $(uname -r); strata $("$S" --version | cut -d' ' -f2)"
echo
echo "| what | time | peak RSS |"
echo "|---|---|---|"
measure "floor: tar -c | openssl dgst -sha256" sh -c "tar -cf - $T1 $T2 2>/dev/null | openssl dgst -sha256"
measure "floor: tar -c (sorted, mtime, owner flags) | openssl dgst -sha256" sh -c "tar --sort=name --mtime=@1 --owner=0 --group=0 --numeric-owner -cf - $T1 $T2 2>/dev/null | openssl dgst -sha256"
measure "floor: tar -c > /dev/shm file" sh -c "tar -cf $W/out.tar.tar $T1 $T2 2>/dev/null"
measure "strata build (2 layers) -o /dev/shm file (one pass)" "$S" -q build --layer "$T1" --layer "$T2" -o "$W/out.build.tar"
measure "strata build (2 layers) -o - | cat > /dev/null (two passes)" sh -c "$S -q build --layer $T1 --layer $T2 -o - | cat"
measure "strata build --format oci --compress none -o /dev/shm dir" "$S" -q build --layer "$T1" --layer "$T2" --format oci --compress none -o "$W/out.oci"
measure "strata build --format oci-archive --compress zstd -o /dev/shm file" "$S" -q build --layer "$T1" --layer "$T2" --format oci-archive --compress zstd -o "$W/out.zst.tar"
rm -rf "$W"/out.*
