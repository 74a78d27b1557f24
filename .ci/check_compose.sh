#!/usr/bin/env bash
# compose.yaml comes up with the documented command alone, `docker compose up --build` (Postgres + MLflow tracking
# server + the one-shot `register` + API), and the API serves the model registered in it by alias, answering
# /v1/segment with a GeoTIFF in the bundle's CRS. Called by check_image.sh with the freshly built image (the
# compose build then hits its BuildKit cache): check_compose.sh IMAGE BASE_IMAGE WORKDIR [TORCH_INDEX].
#
# Uses `docker compose` (v2 plugin) or `docker-compose` (Debian's, installed here when neither exists). The
# official postgres image cannot be pulled where registries are unreachable: a stand-in (.ci/postgres, Debian's
# PostgreSQL honouring the same POSTGRES_* variables) is built from BASE_IMAGE instead. A run folder like the one
# `make demo` leaves (bundle + its own sqlite store) is registered by the compose file's `register` service
# (TERRASEG_RUN points at it, as the docs say for one's own run folder).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IMAGE=$1 BASE=$2 WORK=$3 TORCH_INDEX=${4-cpu}
DOCKER=${DOCKER:-docker}
export DOCKER_BUILDKIT=1
say() { echo "compose check: $*"; }

if "$DOCKER" compose version >/dev/null 2>&1; then COMPOSE=("$DOCKER" compose)
else
  command -v docker-compose >/dev/null || DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q docker-compose >/dev/null 2>&1
  command -v docker-compose >/dev/null || { say "FAILED: neither 'docker compose' nor docker-compose (apt) is available"; exit 1; }
  COMPOSE=(docker-compose)
  export COMPOSE_DOCKER_CLI_BUILD=1  # docker-compose v1 builds through the docker CLI (BuildKit, the same cache)
  if [ "$DOCKER" != docker ]; then   # ... and calls `docker` from the PATH: the client check_image.sh chose
    shim=$(mktemp -d); ln -s "$(command -v "$DOCKER")" "$shim/docker"; export PATH="$shim:$PATH"
  fi
fi
PG=postgres:16
if ! timeout 60 "$DOCKER" pull -q "$PG" >/dev/null 2>&1; then
  PG=terraseg-ci/postgres:standin
  "$DOCKER" build -q --build-arg BASE_IMAGE="$BASE" -t "$PG" .ci/postgres >/tmp/terraseg-pg-build.log 2>&1 \
    || { say "FAILED: building the Postgres stand-in ($(tail -2 /tmp/terraseg-pg-build.log | tr '\n' ' '))"; exit 1; }
  say "postgres:16 cannot be pulled: Debian's PostgreSQL stand-in ($PG)"
fi
"$ROOT/.venv/bin/python" .ci/image_check.py run "$WORK/runs/massachusetts-buildings" || { say "FAILED: run folder"; exit 1; }
free_port() { "$ROOT/.venv/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
export TERRASEG_IMAGE=$IMAGE BASE_IMAGE=$BASE TORCH_INDEX POSTGRES_IMAGE=$PG TERRASEG_RUN=$WORK/runs/massachusetts-buildings \
  API_PORT=$(free_port) MLFLOW_PORT=$(free_port) COMPOSE_PROJECT_NAME=terraseg-ci
unset TERRASEG_MODEL
up_pid=
down() { [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null
         "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1
         [ "$PG" = postgres:16 ] || "$DOCKER" rmi -f "$PG" >/dev/null 2>&1; }
trap down EXIT
logs() { tail -40 /tmp/terraseg-compose.log; }
t0=$(date +%s.%N)
# the documented command, as a user types it (attached; here in the background while the check polls the API)
"${COMPOSE[@]}" up --build >/tmp/terraseg-compose.log 2>&1 &
up_pid=$!
HF_HUB_OFFLINE=1 TERRASEG_DATA="${TERRASEG_DATA:-$ROOT/../shared/datasets}" \
  "$ROOT/.venv/bin/python" .ci/image_check.py compose "$API_PORT" "$MLFLOW_PORT" "$t0" || { logs; say "FAILED"; exit 1; }
