#!/usr/bin/env bash
# A/B two strata binaries on the rows the transport seam could slow down, interleaved
# (A, B, A, B, …) so that machine noise hits both alike, with the floors measured in the
# same run. Best of $RUNS each. Uses the images bench/run.sh makes on /dev/shm.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
A=$1; B=$2
W=${W:-/dev/shm/strata-bench}
RUNS=${RUNS:-5}
[ -f "$W/docker-archive.tar" ] || python3 "$here/make-image.py" "$W" >/dev/null
cat "$W"/layers/* "$W/docker-archive.tar" > /dev/null

. "$here/lib.sh"
echo "| what | A: $(basename "$A") | B: $(basename "$B") | peak RSS A / B |"
echo "|---|---|---|---|"
ab_floor "floor: openssl dgst -sha256 of the layer tars" "for f in $W/layers/?.tar; do openssl dgst -sha256 \$f; done"
ab_row "flatten docker-archive > /dev/null" "S flatten -q $W/docker-archive.tar -o - > /dev/null"
ab_row "flatten docker-archive -o file" "S flatten -q $W/docker-archive.tar -o $W/out.flat.tar"
ab_row "squash docker-archive -o file" "S squash -q $W/docker-archive.tar -o $W/out.sq.tar"
ab_row "squash docker-archive -o - > /dev/null" "S squash -q $W/docker-archive.tar -o - > /dev/null"
ab_row "extract docker-archive" "S extract -q $W/docker-archive.tar $W/out.ex"
ab_row "diff --json (cold: out.cache is removed after each run)" "S diff --json --cache-dir $W/out.cache $W/docker-archive.tar"
RUNS=$(( RUNS < 3 ? RUNS : 3 ))
ab_floor "floor: zcat of the gzip blobs (1 core)" "for f in $W/layers/?.tar.gz; do zcat \$f; done"
ab_row "flatten oci (gzip) > /dev/null" "S flatten -q oci:$W/oci:bench -o - > /dev/null"
