#!/usr/bin/env bash
# Issue #17's rows: squash against flatten, to a file and to a real pipe (`| cat`), and
# flatten of gzip and zstd layouts against `zcat` and `zstd -dc`; two strata binaries
# interleaved (A, B, A, B, …) so that machine noise hits both alike. Best of $RUNS.
# Uses the images bench/run.sh makes on /dev/shm (and makes the zstd layout from the gzip one).
#
#   bench/limits.sh OLD_BINARY NEW_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
A=$1; B=$2
W=${W:-/dev/shm/strata-bench}
RUNS=${RUNS:-5}
[ -f "$W/docker-archive.tar" ] || python3 "$here/make-image.py" "$W" >/dev/null
cat "$W"/layers/* "$W/docker-archive.tar" > /dev/null

. "$here/lib.sh"
echo "| what | A: $A | B: $B | peak RSS A / B |"
echo "|---|---|---|---|"
ab_floor "floor: openssl dgst -sha256 of the layer tars" "for f in $W/layers/?.tar; do openssl dgst -sha256 \$f; done"
ab_row "flatten docker-archive -o file" "S flatten -q $W/docker-archive.tar -o $W/out.flat.tar"
ab_row "squash docker-archive -o file" "S squash -q $W/docker-archive.tar -o $W/out.sq.tar"
ab_row "flatten docker-archive -o - \| cat" "S flatten -q $W/docker-archive.tar -o - | cat"
ab_row "squash docker-archive -o - \| cat" "S squash -q $W/docker-archive.tar -o - | cat"
ab_row "squash docker-archive --from 3 -o - \| cat" "S squash -q $W/docker-archive.tar --from 3 -o - | cat"
[ -d "$W/ocizst" ] || "$B" copy -q "oci:$W/oci:bench" "oci:$W/ocizst:bench" --compress zstd
zst=$(ls -S "$W"/ocizst/blobs/sha256/* | head -5 | tr '\n' ' ')
RUNS=$(( RUNS < 3 ? RUNS : 3 ))
ab_floor "floor: zcat of the gzip blobs (1 core)" "for f in $W/layers/?.tar.gz; do zcat \$f; done"
ab_row "flatten oci (gzip) -o - \| cat" "S flatten -q oci:$W/oci:bench -o - | cat"
ab_floor "floor: zstd -dc of the zstd blobs (1 core)" "for f in $zst; do zstd -dcq \$f; done | cat"
ab_row "flatten oci (zstd) -o - \| cat" "S flatten -q oci:$W/ocizst:bench -o - | cat"
