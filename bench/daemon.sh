#!/usr/bin/env bash
# squash from the Docker engine back into it: strata (cold: empty blob store, so the docker
# save stream is read and spooled; warm: the layers are kept from the cold run) beside
# docker-squash (PyPI), on the benchmark image loaded into the engine. Peak RSS from GNU time
# (strata's own process; the engine's work is not in it, for either tool).
#
#   bench/daemon.sh        (needs: a Docker engine at $DOCKER_HOST, pip install docker-squash)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${STRATA:-$here/../target/release/strata}
W=${W:-/dev/shm/strata-bench}
[ -f "$W/docker-archive.tar" ] || python3 "$here/make-image.py" "$W" >/dev/null
# bench:latest must be the 5-layer original (an earlier run may have left another image there).
n=$(docker image inspect bench:latest --format '{{len .RootFS.Layers}}' 2>/dev/null || echo 0)
[ "$n" = 5 ] || docker load -q -i "$W/docker-archive.tar" >/dev/null
t() { /usr/bin/time -f "%e s, %M KiB" -o "$W/.t" "$@" >/dev/null 2>"$W/.err" || { echo "failed: $(tail -1 "$W/.err")"; return; }; tail -1 "$W/.t"; }
fresh() { docker rmi -f bench:sq bench:floor bench:dsq >/dev/null 2>&1 || true; }
echo "| what | time, peak RSS |"
echo "|---|---|"
echo "| floor: docker save bench:latest > /dev/null | $(t sh -c 'docker save bench:latest > /dev/null') |"
fresh; rm -rf "$W/out.daemon-cache"
echo "| strata squash docker-daemon → docker-daemon (cold: empty blob store) | $(t "$S" --cache-dir "$W/out.daemon-cache" squash -q docker-daemon:bench:latest -o docker-daemon:bench:sq) |"
fresh
echo "| strata squash docker-daemon → docker-daemon (warm: layers kept) | $(t "$S" --cache-dir "$W/out.daemon-cache" squash -q docker-daemon:bench:latest -o docker-daemon:bench:sq) |"
echo "| strata flatten docker-daemon (warm) > /dev/null | $(t "$S" --cache-dir "$W/out.daemon-cache" flatten -q docker-daemon:bench:latest -o -) |"
fresh
echo "| floor: strata squash of the file, piped into docker load (a new layer) | $(t sh -c "$S squash -q $W/docker-archive.tar --tag bench:floor -o - | docker load -q") |"
fresh; rm -rf "$W/out.dsq"
echo "| docker-squash -t bench:dsq (PyPI $(pip show docker-squash 2>/dev/null | sed -n 's/^Version: //p'); loads into the engine) | $(t docker-squash --tmp-dir "$W/out.dsq" -t bench:dsq bench:latest) |"
fresh; rm -rf "$W/out.daemon-cache" "$W/out.dsq"
