#!/usr/bin/env bash
# `make dev`: a local origin with a demo sale, and the worker on http://localhost:8787.
# Ctrl-C stops everything this script started (by PID). Run through `make dev`, which sets
# PATH to the project's tools and builds the worker and the CLI first.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PORT=${FLASHGATE_DEV_PORT:-8787}
FG="$ROOT/target/debug/flashgate"
step() { printf '\033[1m[dev]\033[0m %s\n' "$*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  step "stopped"
}
trap cleanup EXIT INT TERM

[ -f .dev.vars ] || { cp .dev.vars.example .dev.vars; step "wrote .dev.vars from .dev.vars.example"; }
SECRET=$(sed -n 's/^IDENTITY_SECRET=//p' .dev.vars)
OPERATOR=$(sed -n 's/^OPERATOR_TOKEN=//p' .dev.vars)

# The origin: Dragonfly when a binary is on PATH, else redis-server. Nothing on disk unless
# FLASHGATE_DEV_PERSIST=1 (then an append-only file under .wrangler/dev-origin).
OPORT=$(free_port)
DATA="$ROOT/.wrangler/dev-origin"; mkdir -p "$DATA"
if command -v dragonfly >/dev/null 2>&1; then
  step "origin: dragonfly on 127.0.0.1:$OPORT (RESP and /api)"
  dragonfly --port "$OPORT" --bind 127.0.0.1 --expose_http_api --dir "$DATA" --dbfilename "" \
    --lock_on_hashtags --cluster_mode=emulated >"$DATA/origin.log" 2>&1 &
else
  persist=(--save "" --appendonly no)
  [ "${FLASHGATE_DEV_PERSIST:-0}" = 1 ] && persist=(--save "" --appendonly yes)
  step "origin: redis-server on 127.0.0.1:$OPORT (no dragonfly binary on PATH)"
  redis-server --port "$OPORT" --bind 127.0.0.1 --dir "$DATA" "${persist[@]}" >"$DATA/origin.log" 2>&1 &
fi
PIDS+=($!)
ORIGIN="redis://127.0.0.1:$OPORT"
for _ in $(seq 1 100); do redis-cli -p "$OPORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

step "demo sale: event 'demo', starts in 2 minutes, 3 items"
"$FG" --origin "$ORIGIN" event create --replace --id demo --name "flashgate demo sale" \
  --starts-in 120 --duration 86400 --utc-offset +08:00 --cap-item 1 --cap-total 2 --cap-qty 1 \
  --item "KB-75:Mechanical keyboard:8999:USD:100" \
  --item "MS-01:Wireless mouse:2999:USD:37" \
  --item "HP-X:Studio headphones:14999:USD:5"

cat <<TXT

  flashgate is starting on  http://localhost:$PORT/?event=demo
  health                    http://localhost:$PORT/api/health
  sign in on the page with any user id (DEV_SIGNIN=true in .dev.vars)

  operate the sale from another terminal:
    $FG --origin $ORIGIN event start demo
    $FG --origin $ORIGIN event status demo
    $FG --origin $ORIGIN token --user alice --secret '$SECRET'
    curl -H 'Authorization: Bearer $OPERATOR' http://localhost:$PORT/api/stats

  Ctrl-C stops the worker and the origin.

TXT
wrangler dev --ip 127.0.0.1 --port "$PORT" --var "ORIGIN_URL:$ORIGIN" --show-interactive-dev-session=false &
PIDS+=($!)
wait "${PIDS[-1]}"
