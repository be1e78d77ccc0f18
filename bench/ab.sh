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

best() { sort -n | head -1; }
# One timed run: "seconds peak-KiB" (a failing command is reported and ends the script).
t() {
  if ! /usr/bin/time -f "%e %M" -o "$W/.t" "$@" >/dev/null 2>"$W/.err"; then
    echo "failed: $* — $(tail -1 "$W/.err")" >&2; exit 1
  fi
  tail -1 "$W/.t"; rm -rf "$W"/out.*
}
row() {
  local name=$1; shift
  local ta=() tb=() ra=() rb=()
  for _ in $(seq "$RUNS"); do
    # Command substitution, not < <(…): the run (and its clean-up) must end before the next.
    r=$(t "$A" "$@"); read -r x m <<< "$r"; ta+=("$x"); ra+=("$m")
    r=$(t "$B" "$@"); read -r y n <<< "$r"; tb+=("$y"); rb+=("$n")
  done
  printf '| %s | %s s | %s s | %s / %s MB |\n' "$name" \
    "$(printf '%s\n' "${ta[@]}" | best)" "$(printf '%s\n' "${tb[@]}" | best)" \
    "$(( $(printf '%s\n' "${ra[@]}" | sort -n | tail -1) / 1024 ))" \
    "$(( $(printf '%s\n' "${rb[@]}" | sort -n | tail -1) / 1024 ))"
}
floor() {
  local name=$1; shift
  local ts=()
  for _ in $(seq "$RUNS"); do r=$(t sh -c "$*"); read -r x _ <<< "$r"; ts+=("$x"); done
  printf '| %s | %s s | | |\n' "$name" "$(printf '%s\n' "${ts[@]}" | best)"
}
echo "| what | A: $(basename "$A") | B: $(basename "$B") | peak RSS A / B |"
echo "|---|---|---|---|"
floor "floor: openssl dgst -sha256 of the layer tars" "for f in $W/layers/?.tar; do openssl dgst -sha256 \$f; done"
row "flatten docker-archive > /dev/null" flatten -q "$W/docker-archive.tar" -o -
row "flatten docker-archive -o file" flatten -q "$W/docker-archive.tar" -o "$W/out.flat.tar"
row "squash docker-archive -o file" squash -q "$W/docker-archive.tar" -o "$W/out.sq.tar"
row "squash docker-archive -o - (two passes)" squash -q "$W/docker-archive.tar" -o -
row "extract docker-archive" extract -q "$W/docker-archive.tar" "$W/out.ex"
row "diff --json (cold: out.cache is removed after each run)" diff --json --cache-dir "$W/out.cache" "$W/docker-archive.tar"
RUNS=$(( RUNS < 3 ? RUNS : 3 ))
floor "floor: zcat of the gzip blobs (1 core)" "for f in $W/layers/?.tar.gz; do zcat \$f; done"
row "flatten oci (gzip) > /dev/null" flatten -q "oci:$W/oci:bench" -o -
