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

# A/B of two binaries, $A and $B, interleaved (A, B, A, B, …) so that machine noise hits both
# alike; best of $RUNS each. Used by ab.sh and limits.sh.
best() { sort -n | head -1; }
# One timed run of a shell command line: "seconds peak-KiB" (a failure ends the script).
t() {
  if ! /usr/bin/time -f "%e %M" -o "$W/.t" sh -c "$1" >/dev/null 2>"$W/.err"; then
    echo "failed: $1 — $(tail -1 "$W/.err")" >&2; exit 1
  fi
  tail -1 "$W/.t"; rm -rf "$W"/out.*
}
# ab_row NAME FRAGMENT: the shell fragment with `S ` standing for each binary in turn.
ab_row() {
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
# ab_floor NAME COMMAND-LINE: a floor measured in the same run, best of $RUNS.
ab_floor() {
  local name=$1 cmd=$2 ts=()
  for _ in $(seq "$RUNS"); do r=$(t "$cmd"); read -r x _ <<< "$r"; ts+=("$x"); done
  printf '| %s | %s s | | |\n' "$name" "$(printf '%s\n' "${ts[@]}" | best)"
}
