#!/usr/bin/env bash
# docker:// on loopback: Debian's docker-registry (storage on /dev/shm) holding the benchmark
# image, pushed by skopeo from its OCI layout. Rows side by side with their floor or peer,
# measured in the same run, best of $RUNS:
#   flatten from the registry (cold blob store) vs flatten of the same OCI layout on disk;
#   strata copy registry → OCI layout vs skopeo copy of the same;
#   squash pushed to the registry (a new repository each run, so every byte goes up) vs
#   squash to a local OCI layout.
#
#   bench/registry.sh        (needs: docker-registry, skopeo; bench/run.sh's images)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${STRATA:-$here/../target/release/strata}
W=${W:-/dev/shm/strata-bench}
RUNS=${RUNS:-3}
. "$here/lib.sh"
[ -d "$W/oci" ] || python3 "$here/make-image.py" "$W" >/dev/null
port=${PORT:-5099}
reg=127.0.0.1:$port
data=$W/reg-data
rm -rf "$data"; mkdir -p "$data"
cat > "$W/reg.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $data}, delete: {enabled: true}}
http: {addr: $reg}
EOF
docker-registry serve "$W/reg.yml" > "$W/reg.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -fs "http://$reg/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy -q --insecure-policy --dest-tls-verify=false "oci:$W/oci" "docker://$reg/bench:oci"
cat "$W"/oci/blobs/sha256/* > /dev/null

echo "| command | best time | peak RSS |"
echo "|---|---|---|"
measure "floor: flatten oci:DIR > /dev/null" "$S" flatten -q "oci:$W/oci" -o /dev/null
measure "flatten docker:// > /dev/null (cold blob store)" "$S" flatten -q --tls-verify=false --cache-dir "$W/out.cache" "docker://$reg/bench:oci" -o /dev/null
measure "flatten docker:// -j 1 (cold)" "$S" flatten -q -j 1 --tls-verify=false --cache-dir "$W/out.cache" "docker://$reg/bench:oci" -o /dev/null
measure "peer: skopeo copy docker:// → oci:DIR" skopeo copy -q --insecure-policy --src-tls-verify=false "docker://$reg/bench:oci" "oci:$W/out.skopeo"
measure "strata copy docker:// → oci:DIR (cold)" "$S" copy -q --tls-verify=false --cache-dir "$W/out.cache" "docker://$reg/bench:oci" "oci:$W/out.copy"
measure "floor: squash oci:DIR --format oci -o oci:DIR" "$S" squash -q "oci:$W/oci" --format oci -o "$W/out.sq"
# A new repository per run: nothing is there to skip or mount.
measure "squash oci:DIR -o docker:// (a new repository)" bash -c "exec \"$S\" squash -q --tls-verify=false oci:$W/oci -o docker://$reg/push\$RANDOM\$RANDOM/bench:sq"
