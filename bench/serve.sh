#!/usr/bin/env bash
# strata serve under load on loopback: Debian's docker-registry (storage on /dev/shm) holding
# the benchmark image, strata serve in front (cache on /dev/shm).
#   - 16 concurrent downloads of the squashed image (cold: one computation, 15 waiting for it),
#     all bodies compared by sha256, the server's peak RSS from /proc; beside 16 sequential
#     local `strata squash` runs of the same image (the floor the service must beat);
#   - warm `files` requests per second with wrk.
#
#   bench/serve.sh        (needs: docker-registry, skopeo, wrk; bench/run.sh's images)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${STRATA:-$here/../target/release/strata}
W=${W:-/dev/shm/strata-bench}
N=${N:-16}
[ -d "$W/oci" ] || python3 "$here/make-image.py" "$W" >/dev/null
reg=127.0.0.1:${PORT:-5098}
srv=127.0.0.1:${SPORT:-8098}
data=$W/serve-reg
cache=$W/serve-cache
rm -rf "$data" "$cache" "$W"/serve-out; mkdir -p "$data" "$W/serve-out"
cat > "$W/serve-reg.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $data}}
http: {addr: $reg}
EOF
docker-registry serve "$W/serve-reg.yml" > "$W/serve-reg.log" 2>&1 &
rpid=$!
trap 'kill $rpid $spid 2>/dev/null; rm -rf "$data" "$cache" "$W"/serve-out' EXIT
spid=
for _ in $(seq 100); do curl -fs "http://$reg/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy -q --insecure-policy --dest-tls-verify=false "oci:$W/oci" "docker://$reg/bench:1"
"$S" serve --listen "$srv" --registry "http://$reg" --cache-dir "$cache" --workers 4 2>"$W/serve.log" &
spid=$!
for _ in $(seq 100); do curl -fs "http://$srv/healthz" >/dev/null && break; sleep 0.1; done

echo "| what | time | notes |"
echo "|---|---|---|"
t0=$(date +%s.%N)
for i in $(seq "$N"); do
  "$S" squash -q --tls-verify=false --cache-dir "$W/serve-out/c" "docker://$reg/bench:1" -o - | sha256sum > "$W/serve-out/seq.$i" &
  wait $!
done
t1=$(date +%s.%N)
printf '| floor: %d sequential `strata squash docker://… -o -` (blobs fetched once, then from the store) | %.1f s | |\n' "$N" "$(echo "$t1 - $t0" | bc)"
t0=$(date +%s.%N)
for i in $(seq "$N"); do
  curl -fs "http://$srv/v2/bench/squash/1" | sha256sum > "$W/serve-out/par.$i" &
done
wait $(jobs -p | grep -v "^$spid$" | grep -v "^$rpid$") 2>/dev/null || true
t1=$(date +%s.%N)
distinct=$(cat "$W"/serve-out/par.* "$W"/serve-out/seq.* | sort -u | wc -l)
errors=$(grep -c ' 5[0-9][0-9] \| 4[0-9][0-9] ' "$W/serve.log" || true)
rss=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$spid/status)
size=$(curl -fsI "http://$srv/v2/bench/squash/1" | awk 'tolower($1)=="content-length:" {print int($2/1048576)}')
printf '| **%d concurrent `curl …/squash/1`** (cold: one computation) | **%.1f s** | %s MiB each; %d distinct body digest(s) (CLI included); server peak RSS %s MB |\n' "$N" "$(echo "$t1 - $t0" | bc)" "$size" "$distinct" "$rss"
curl -fs "http://$srv/v2/bench/files/1" > /dev/null
echo
echo "warm files, wrk -t2 -c16 -d10s:"
wrk -t2 -c16 -d10s "http://$srv/v2/bench/files/1" | sed -n '/Requests\/sec/p;/Latency/p;/Non-2xx/p'
curl -fs "http://$srv/metrics" | grep -E '^strata_(cache|coalesced|upstream_bytes|in_flight)'
