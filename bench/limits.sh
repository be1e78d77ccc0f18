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

best() { sort -n | head -1; }
# One timed run of a shell command line: "seconds peak-KiB" (the peak of the whole pipeline's
# largest process, as GNU time reports for sh's children).
t() {
  if ! /usr/bin/time -f "%e %M" -o "$W/.t" sh -c "$1" >/dev/null 2>"$W/.err"; then
    echo "failed: $1 — $(tail -1 "$W/.err")" >&2; exit 1
  fi
  tail -1 "$W/.t"; rm -rf "$W"/out.*
}
# row NAME ARGS... : strata ARGS (a shell fragment; `S` stands for the binary)
row() {
  local name=$1 cmd=$2
  local ta=() tb=() ra=() rb=()
  for _ in $(seq "$RUNS"); do
    r=$(t "${cmd//S /$A }"); read -r x m <<< "$r"; ta+=("$x"); ra+=("$m")
    r=$(t "${cmd//S /$B }"); read -r y n <<< "$r"; tb+=("$y"); rb+=("$n")
  done
  printf '| %s | %s s | %s s | %s / %s MB |\n' "$name" \
    "$(printf '%s\n' "${ta[@]}" | best)" "$(printf '%s\n' "${tb[@]}" | best)" \
    "$(( $(printf '%s\n' "${ra[@]}" | sort -n | tail -1) / 1024 ))" \
    "$(( $(printf '%s\n' "${rb[@]}" | sort -n | tail -1) / 1024 ))"
}
floor() {
  local name=$1 cmd=$2 ts=()
  for _ in $(seq "$RUNS"); do r=$(t "$cmd"); read -r x _ <<< "$r"; ts+=("$x"); done
  printf '| %s | %s s | | |\n' "$name" "$(printf '%s\n' "${ts[@]}" | best)"
}
echo "| what | A: $A | B: $B | peak RSS A / B |"
echo "|---|---|---|---|"
floor "floor: openssl dgst -sha256 of the layer tars" "for f in $W/layers/?.tar; do openssl dgst -sha256 \$f; done"
row "flatten docker-archive -o file" "S flatten -q $W/docker-archive.tar -o $W/out.flat.tar"
row "squash docker-archive -o file" "S squash -q $W/docker-archive.tar -o $W/out.sq.tar"
row "flatten docker-archive -o - \| cat" "S flatten -q $W/docker-archive.tar -o - | cat"
row "squash docker-archive -o - \| cat" "S squash -q $W/docker-archive.tar -o - | cat"
row "squash docker-archive --from 3 -o - \| cat" "S squash -q $W/docker-archive.tar --from 3 -o - | cat"
[ -d "$W/ocizst" ] || "$B" copy -q "oci:$W/oci:bench" "oci:$W/ocizst:bench" --compress zstd
zst=$(ls -S "$W"/ocizst/blobs/sha256/* | head -5 | tr '\n' ' ')
RUNS=$(( RUNS < 3 ? RUNS : 3 ))
floor "floor: zcat of the gzip blobs (1 core)" "for f in $W/layers/?.tar.gz; do zcat \$f; done"
row "flatten oci (gzip) -o - \| cat" "S flatten -q oci:$W/oci:bench -o - | cat"
floor "floor: zstd -dc of the zstd blobs (1 core)" "for f in $zst; do zstd -dcq \$f; done | cat"
row "flatten oci (zstd) -o - \| cat" "S flatten -q oci:$W/ocizst:bench -o - | cat"
