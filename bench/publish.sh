#!/usr/bin/env bash
# `strata serve --publish`: what one cold squash of the benchmark image costs the server,
# from the request to the squash being pushed back to the registry — wall time and the
# server's CPU (user + system, from /proc) — for two binaries, each with a fresh cache and a
# fresh registry. Debian's docker-registry on 127.0.0.1, storage and caches on /dev/shm.
#
#   bench/publish.sh OLD_BINARY NEW_BINARY      (needs: docker-registry, skopeo, curl)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
W=${W:-/dev/shm/strata-bench}
RUNS=${RUNS:-2}
[ -d "$W/oci" ] || python3 "$here/make-image.py" "$W" >/dev/null
reg=127.0.0.1:${PORT:-5097}
srv=127.0.0.1:${SPORT:-8097}
tick=$(getconf CLK_TCK)
rpid= spid=
trap 'kill $rpid $spid 2>/dev/null || true; rm -rf "$W/pub-reg" "$W/pub-cache"' EXIT

cpu_of() { # user + system seconds of a live process
  awk -v t="$tick" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"
}
metric() {
  curl -fs "http://$srv/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

one() { # BINARY → "wall_to_body wall_to_published cpu"
  local S=$1
  rm -rf "$W/pub-reg" "$W/pub-cache"; mkdir -p "$W/pub-reg"
  cat > "$W/pub-reg.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/pub-reg}}
http: {addr: $reg}
EOF
  docker-registry serve "$W/pub-reg.yml" > "$W/pub-reg.log" 2>&1 &
  rpid=$!
  for _ in $(seq 100); do curl -fs "http://$reg/v2/" >/dev/null && break; sleep 0.1; done
  skopeo copy -q --insecure-policy --dest-tls-verify=false "oci:$W/oci" "docker://$reg/bench:1"
  "$S" serve --listen "$srv" --registry "http://$reg" --cache-dir "$W/pub-cache" --publish \
    2>"$W/pub-serve.log" &
  spid=$!
  for _ in $(seq 100); do curl -fs "http://$srv/healthz" >/dev/null && break; sleep 0.1; done
  local t0 t1 t2
  t0=$(date +%s.%N)
  curl -fs "http://$srv/v2/bench/squash/1?last=3" -o /dev/null
  t1=$(date +%s.%N)
  until [ "$(metric strata_published_total)" = 1 ]; do sleep 0.05; done
  t2=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t0" | bc) $(cpu_of $spid)"
  kill $spid $rpid; wait $spid $rpid 2>/dev/null || true
  spid= rpid=
}

echo "| binary | body (wall) | pushed (wall) | server CPU to pushed |"
echo "|---|---|---|---|"
for _ in $(seq "$RUNS"); do
  for S in "$1" "$2"; do
    read -r body pushed cpu <<< "$(one "$S")"
    printf '| %s | %.1f s | %.1f s | %.1f s |\n' "$S" "$body" "$pushed" "$cpu"
  done
done
