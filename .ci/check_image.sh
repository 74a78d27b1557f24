#!/usr/bin/env bash
# build the Docker image and run it: /healthz answers, /v1/segment on a real Massachusetts tile returns a
# GeoTIFF with the input's CRS, the container runs as non-root; measured: image size, cold and cached build
# time, start to first /healthz, /v1/segment p50 in the container vs on the host. Then the container is removed and
# check_compose.sh brings compose.yaml up with the same image.
#
# Where no Docker engine runs, Debian's docker.io is installed and its daemon started here. Registries cannot be
# reached from these machines, so when the default base image cannot be pulled a Debian base is built with
# debootstrap and imported (`docker import`) as BASE_IMAGE. The host's CA bundle goes in as the BuildKit secret
# extra_ca (package registries sit behind a TLS-intercepting proxy here). Skips, with one line, only where no
# daemon can run at all. Run after `make install` (uses .venv).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { echo "image check: $*"; }

docker_ok() { timeout 20 "$DOCKER" info >/dev/null 2>&1; }
# a client with BuildKit built in: buildx, else Debian's 20.10 client (DOCKER_BUILDKIT=1)
DOCKER=docker
if ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; fi
if ! docker_ok; then
  if ! command -v dockerd >/dev/null; then
    (DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q docker.io >/dev/null 2>&1 \
      || (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q docker.io >/dev/null 2>&1)) || true
  fi
  [ -x /usr/bin/docker ] && ! docker buildx version >/dev/null 2>&1 && DOCKER=/usr/bin/docker
  if command -v dockerd >/dev/null; then
    (nohup dockerd --host unix:///var/run/docker.sock >/tmp/terraseg-dockerd.log 2>&1 &)
    for _ in $(seq 30); do docker_ok && break; sleep 1; done
  fi
fi
if ! docker_ok; then say "skipped: no Docker daemon can run on this machine ($(tail -1 /tmp/terraseg-dockerd.log 2>/dev/null || echo 'dockerd not installable'))."; exit 0; fi
export DOCKER_BUILDKIT=1

BASE=python:3.11-slim
if ! timeout 60 "$DOCKER" pull -q "$BASE" >/dev/null 2>&1; then
  BASE=terraseg-base:bookworm
  if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q debootstrap >/dev/null 2>&1
    rootfs=$(mktemp -d)
    boot() { timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,curl bookworm "$rootfs" \
        http://deb.debian.org/debian >/tmp/terraseg-debootstrap.log 2>&1; }
    if ! boot && ! (rm -rf "${rootfs:?}"/* && boot); then  # one retry: a mirror hiccup is not a failure of the project
      say "FAILED: debootstrap of a Debian base ($(tail -1 /tmp/terraseg-debootstrap.log))"; rm -rf "$rootfs"; exit 1
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE" >/dev/null && rm -rf "$rootfs"
  fi
  say "base image $BASE (the registry is unreachable: a Debian base from debootstrap + docker import)"
fi
TORCH_INDEX=cpu
timeout 10 curl -sf -o /dev/null https://download.pytorch.org/whl/cpu/ 2>/dev/null || TORCH_INDEX=""  # PyPI's torch then
build() {
  "$DOCKER" build -q --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_INDEX="$TORCH_INDEX" \
    --secret id=extra_ca,src=/etc/ssl/certs/ca-certificates.crt -t terraseg:ci . >/tmp/terraseg-build.log 2>&1
}
t0=$(date +%s.%N); build || build || { say "FAILED: docker build ($(tail -3 /tmp/terraseg-build.log | tr '\n' ' '))"; exit 1; }
t1=$(date +%s.%N); build || { say "FAILED: cached docker build"; exit 1; }
t2=$(date +%s.%N)
size=$("$DOCKER" image inspect -f '{{.Size}}' terraseg:ci)
say "built terraseg:ci from $BASE: $(python3 -c "print(f'{$size/1e9:.2f} GB; build {$t1-$t0:.0f} s (this build), cached rebuild {$t2-$t1:.1f} s')")"

work=$(mktemp -d)
chmod 755 "$work"
# the container, the image and the build cache go (about 15 GB): CI machines have little disk to spare
cleanup() { "$DOCKER" rm -f terraseg-ci >/dev/null 2>&1; "$DOCKER" rmi -f terraseg:ci >/dev/null 2>&1
            "$DOCKER" builder prune -af >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
"$ROOT/.venv/bin/python" .ci/image_check.py bundle "$work"
port=$("$ROOT/.venv/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
t3=$(date +%s.%N)
"$DOCKER" run -d --name terraseg-ci -p "127.0.0.1:$port:8000" -v "$work:/models:ro" terraseg:ci >/dev/null \
  || { say "FAILED: docker run"; exit 1; }
HF_HUB_OFFLINE=1 TERRASEG_DATA="${TERRASEG_DATA:-$ROOT/../shared/datasets}" "$ROOT/.venv/bin/python" .ci/image_check.py check "$work" "$port" "$t3" \
  "$("$DOCKER" exec terraseg-ci id -u)" || { "$DOCKER" logs terraseg-ci 2>&1 | tail -20; say "FAILED"; exit 1; }
"$DOCKER" rm -f terraseg-ci >/dev/null 2>&1
# the same image in compose.yaml's stack: Postgres + MLflow server + the API serving a model registered there
DOCKER="$DOCKER" bash .ci/check_compose.sh terraseg:ci "$BASE" "$work" "$TORCH_INDEX" || exit 1
