#!/usr/bin/env bash
# compose.yaml comes up (Postgres + MLflow tracking server + API) and the API serves a model registered in
# it by alias. Called by check_image.sh with the freshly built image: check_compose.sh IMAGE BASE_IMAGE WORKDIR.
#
# Uses `docker compose` (v2 plugin) or `docker-compose` (Debian's, installed here when neither exists). The
# official postgres image cannot be pulled where registries are unreachable: a stand-in (.ci/postgres, Debian's
# PostgreSQL honouring the same POSTGRES_* variables) is built from BASE_IMAGE instead. A run folder like the one
# `make demo` leaves (bundle + its own sqlite store) is registered by the compose file's `register` service.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IMAGE=$1 BASE=$2 WORK=$3
DOCKER=${DOCKER:-docker}
export DOCKER_BUILDKIT=1
say() { echo "compose check: $*"; }

if "$DOCKER" compose version >/dev/null 2>&1; then COMPOSE=("$DOCKER" compose)
else
  command -v docker-compose >/dev/null || DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q docker-compose >/dev/null 2>&1
  command -v docker-compose >/dev/null || { say "FAILED: neither 'docker compose' nor docker-compose (apt) is available"; exit 1; }
  COMPOSE=(docker-compose)
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
export TERRASEG_IMAGE=$IMAGE POSTGRES_IMAGE=$PG RUNS_DIR=$WORK/runs API_PORT=$(free_port) MLFLOW_PORT=$(free_port) \
  COMPOSE_PROJECT_NAME=terraseg-ci
down() { "${COMPOSE[@]}" --profile setup down -v --remove-orphans >/dev/null 2>&1
         [ "$PG" = postgres:16 ] || "$DOCKER" rmi -f "$PG" >/dev/null 2>&1; }
trap down EXIT
logs() { "${COMPOSE[@]}" logs --tail 15 2>&1 | tail -40; }
t0=$(date +%s.%N)
"${COMPOSE[@]}" up -d --no-build postgres mlflow >/tmp/terraseg-compose.log 2>&1 \
  || { cat /tmp/terraseg-compose.log; logs; say "FAILED: up postgres mlflow"; exit 1; }
"${COMPOSE[@]}" run --rm register >>/tmp/terraseg-compose.log 2>&1 \
  || { tail -5 /tmp/terraseg-compose.log; logs; say "FAILED: the register service"; exit 1; }
"${COMPOSE[@]}" up -d --no-build api >>/tmp/terraseg-compose.log 2>&1 || { logs; say "FAILED: up api"; exit 1; }
HF_HUB_OFFLINE=1 TERRASEG_DATA="${TERRASEG_DATA:-$ROOT/../shared/datasets}" \
  "$ROOT/.venv/bin/python" .ci/image_check.py compose "$API_PORT" "$MLFLOW_PORT" "$t0" || { logs; say "FAILED"; exit 1; }
