# Shared by the bench scripts: timing with peak RSS. Needs $W and $RUNS.

# measure NAME CMD... : best wall time of $RUNS runs and the peak RSS of that run
measure() {
  local name=$1; shift
  local best="" rss=""
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$W/.time" "$@" >/dev/null 2>"$W/.err" || { echo "| $name | failed: $(tail -1 "$W/.err") | |"; return; }
    read -r t m < "$W/.time"
    # Outputs are removed between runs, outside the timing (freeing 1 GB on tmpfs takes time).
    rm -rf "$W"/out.*
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; rss=$m; fi
  done
  printf '| %s | %.2f s | %d MB |\n' "$name" "$best" $((rss / 1024))
}
once() { RUNS=1 measure "$@"; }
