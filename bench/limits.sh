#!/usr/bin/env bash
# Issue #17's rows: squash against flatten, to a file and to a real pipe (`| cat`), and
# flatten of gzip and zstd layouts against `zcat` and `zstd -dc`; two strata binaries
# interleaved (A, B, A, B, …) so that machine noise hits both alike. Best of $RUNS.
# Uses the images bench/run.sh makes on /dev/shm (and makes the zstd layout from the gzip one).
#
#   bench/limits.sh OLD_BINARY NEW_BINARY      (BOUNDS_ONLY=1: the bound table alone)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
A=$1; B=$2
W=${W:-/dev/shm/strata-bench}
RUNS=${RUNS:-5}
[ -f "$W/docker-archive.tar" ] || python3 "$here/make-image.py" "$W" >/dev/null
cat "$W"/layers/* "$W/docker-archive.tar" > /dev/null

. "$here/lib.sh"
[ -d "$W/ocizst" ] || "$B" copy -q "oci:$W/oci:bench" "oci:$W/ocizst:bench" --compress zstd
# The layer blobs, from the layout's manifest.
zst=$(python3 -c '
import json, sys
d = sys.argv[1]
blob = lambda dg: d + "/blobs/" + dg.replace(":", "/")
m = json.load(open(blob(json.load(open(f"{d}/index.json"))["manifests"][0]["digest"])))
print(" ".join(blob(l["digest"]) for l in m["layers"]))' "$W/ocizst")
if [ -z "${BOUNDS_ONLY:-}" ]; then
echo "| what | A: $A | B: $B | peak RSS A / B |"
echo "|---|---|---|---|"
ab_floor "floor: openssl dgst -sha256 of the layer tars" "for f in $W/layers/?.tar; do openssl dgst -sha256 \$f; done"
ab_row "flatten docker-archive -o file" "S flatten -q $W/docker-archive.tar -o $W/out.flat.tar"
ab_row "squash docker-archive -o file" "S squash -q $W/docker-archive.tar -o $W/out.sq.tar"
ab_row "flatten docker-archive -o - \| cat" "S flatten -q $W/docker-archive.tar -o - | cat"
ab_row "squash docker-archive -o - \| cat" "S squash -q $W/docker-archive.tar -o - | cat"
ab_row "squash docker-archive --from 3 -o - \| cat" "S squash -q $W/docker-archive.tar --from 3 -o - | cat"
RUNS=$(( RUNS < 3 ? RUNS : 3 ))
ab_floor "floor: zcat of the gzip blobs (1 core)" "for f in $W/layers/?.tar.gz; do zcat \$f; done"
ab_row "flatten oci (gzip) -o - \| cat" "S flatten -q oci:$W/oci:bench -o - | cat"
ab_floor "floor: zstd -dc of the zstd blobs (1 core)" "for f in $zst; do zstd -dcq \$f; done | cat"
ab_row "flatten oci (zstd) -o - \| cat" "S flatten -q oci:$W/ocizst:bench -o - | cat"
fi

# The bound behind the squash rows, from the same run: a squash does all a flatten does plus
# the SHA-256 of its output (the new diff_id). With both cores busy in a flatten, no schedule
# runs a squash in less than (flatten's CPU + that hash's CPU) / 2. Best of $RUNS each; the
# hash's CPU is the output's size over `openssl speed`'s SHA-256 rate (in memory, 1 MiB blocks).
cpu() { # one run's "wall cpu" (cpu = user + sys of the whole line, children included)
  /usr/bin/time -f "%e %U %S" -o "$W/.c" sh -c "$1" >/dev/null 2>&1
  awk '{printf "%s %.2f\n", $1, $2 + $3}' "$W/.c"
}
"$B" flatten -q "$W/docker-archive.tar" -o "$W/flat.tar" --force # only its size is used
bound_row() {
  local name=$1 flat=$2 sq=$3 fw=9 fc=0 sw=9 sc=0
  # The hash alone, in memory (no file read): the output's bytes over SHA-256's speed here.
  local rate hc
  rate=$(openssl speed -evp sha256 -bytes 1048576 -seconds 2 2>/dev/null | awk '/^sha256/ {sub("k", "", $2); print $2 * 1000}')
  hc=$(awk -v n="$(stat -c %s "$W/flat.tar")" -v r="$rate" 'BEGIN{printf "%.2f", n / r}')
  for _ in $(seq "$RUNS"); do
    read -r w c <<< "$(cpu "$flat")"; rm -rf "$W"/out.*
    if awk "BEGIN{exit !($w < $fw)}"; then fw=$w; fc=$c; fi
    read -r w c <<< "$(cpu "$sq")"; rm -rf "$W"/out.*
    if awk "BEGIN{exit !($w < $sw)}"; then sw=$w; sc=$c; fi
  done
  awk -v n="$name" -v fw="$fw" -v fc="$fc" -v sw="$sw" -v sc="$sc" -v hc="$hc" 'BEGIN {
    printf "| %s | flatten %.2f s wall, %.2f s CPU (%.2f cores) | squash %.2f s wall, %.2f s CPU | output SHA-256 %.2f s CPU | bound %.2fx, measured %.2fx |\n",
      n, fw, fc, fc / fw, sw, sc, hc, (fc + hc) / 2 / fw, sw / fw }'
}
echo
echo "| bound (B) | flatten | squash | SHA-256 of the output | squash / flatten |"
echo "|---|---|---|---|---|"
bound_row "to a file" "$B flatten -q $W/docker-archive.tar -o $W/out.f.tar" "$B squash -q $W/docker-archive.tar -o $W/out.s.tar"
bound_row "to a pipe" "$B flatten -q $W/docker-archive.tar -o - | cat" "$B squash -q $W/docker-archive.tar -o - | cat"

# And behind the zstd row: the decode alone (`zstd -dc` to /dev/null, its CPU) plus the two
# SHA-256s strata checks — the blobs' digests and the tars' diff_ids — at openssl's rate,
# spread over both cores; beside the single-core `zstd -dc | cat` floor.
rate=$(openssl speed -evp sha256 -bytes 1048576 -seconds 2 2>/dev/null | awk '/^sha256/ {sub("k", "", $2); print $2 * 1000}')
zin=$(cat $zst | wc -c); zout=$(for f in $zst; do zstd -dcq "$f"; done | wc -c)
dc=9; fl=9
for _ in $(seq "$RUNS"); do
  read -r _ c <<< "$(cpu "for f in $zst; do zstd -dcq \$f; done")"
  if awk "BEGIN{exit !($c < $dc)}"; then dc=$c; fi
  read -r w _ <<< "$(cpu "for f in $zst; do zstd -dcq \$f; done | cat")"
  if awk "BEGIN{exit !($w < $fl)}"; then fl=$w; fi
done
awk -v dc="$dc" -v fl="$fl" -v zin="$zin" -v zout="$zout" -v r="$rate" 'BEGIN {
  h = (zin + zout) / r
  printf "| zstd | zstd -dc | decode %.2f s CPU | SHA-256 of blobs and tars %.2f s CPU | bound %.2f s = %.2fx the %.2f s floor |\n",
    dc, h, (dc + h) / 2, (dc + h) / 2 / fl, fl }'
rm -f "$W/flat.tar"
