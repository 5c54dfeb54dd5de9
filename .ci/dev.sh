#!/usr/bin/env bash
# `make dev`: a local origin with a demo sale, and the worker on http://localhost:8787
# (FLASHGATE_DEV_PORT picks another port). Run it through `make dev`, which runs set-up, puts
# the project's tools on PATH and builds the worker and the CLI first.
#
# The origin and `wrangler dev` each lead a process group of their own (wrangler's workerd
# children included). Ctrl-C, SIGTERM, an error or wrangler exiting stops exactly those groups.
#
# `bash .ci/dev.sh --check-port` only checks that the port is free.
#
# Knobs: FLASHGATE_DEV_PORT (8787), FLASHGATE_DEV_ORIGIN_WAIT (seconds for the origin to answer
# PING, 10), FLASHGATE_DEV_PERSIST=1 (keep the origin's data in .wrangler/dev-origin).
set -euo pipefail
# shellcheck source=.ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # sets ROOT to the checkout and cds there
PORT=${FLASHGATE_DEV_PORT:-8787}
ORIGIN_WAIT=${FLASHGATE_DEV_ORIGIN_WAIT:-10}
CLI="$ROOT/target/debug/flashgate"
step() { printf '\033[1m[dev]\033[0m %s\n' "$*"; }
die() { printf '[dev] ERROR: %s\n' "$*" >&2; exit 1; }

{ [[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ]; } \
  || die "FLASHGATE_DEV_PORT=$PORT is not a port number (1-65535)."
port_taken "$PORT" \
  && die "port $PORT is already in use; pick another with FLASHGATE_DEV_PORT, e.g. FLASHGATE_DEV_PORT=$((PORT + 1)) make dev."
# `make dev` asks this first too, so a taken port fails before set-up and the build, not after.
[ "${1:-}" = --check-port ] && exit 0

GROUPS_STARTED=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ "${#GROUPS_STARTED[@]}" -gt 0 ]; then
    stop_groups "${GROUPS_STARTED[@]}"
    step "stopped"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

[ -f .dev.vars ] || { cp .dev.vars.example .dev.vars; step "wrote .dev.vars from .dev.vars.example"; }
SECRET=$(sed -n 's/^IDENTITY_SECRET=//p' .dev.vars)
OPERATOR=$(sed -n 's/^OPERATOR_TOKEN=//p' .dev.vars)

# The origin: Dragonfly when a binary is on PATH, else redis-server. Nothing on disk unless
# FLASHGATE_DEV_PERSIST=1 (then an append-only file under .wrangler/dev-origin).
read -r OPORT < <(free_ports 1)
DATA="$ROOT/.wrangler/dev-origin"
mkdir -p "$DATA"
if command -v dragonfly >/dev/null 2>&1; then
  step "origin: dragonfly on 127.0.0.1:$OPORT (RESP and /api)"
  spawn_group "$DATA" dragonfly --port "$OPORT" --bind 127.0.0.1 --expose_http_api --dir "$DATA" \
    --dbfilename "" --lock_on_hashtags --cluster_mode=emulated >"$DATA/origin.log" 2>&1
else
  persist=(--save "" --appendonly no)
  [ "${FLASHGATE_DEV_PERSIST:-0}" = 1 ] && persist=(--save "" --appendonly yes)
  step "origin: redis-server on 127.0.0.1:$OPORT (no dragonfly binary on PATH)"
  spawn_group "$DATA" redis-server --port "$OPORT" --bind 127.0.0.1 --dir "$DATA" "${persist[@]}" \
    >"$DATA/origin.log" 2>&1
fi
ORIGIN_PID=$SPAWNED_PID
GROUPS_STARTED+=("$ORIGIN_PID")
ORIGIN="redis://127.0.0.1:$OPORT"
wait_until "$ORIGIN_WAIT" "$ORIGIN_PID" pong "$OPORT" || {
  rc=$?
  tail -n 20 "$DATA/origin.log" >&2 || true
  [ "$rc" = 1 ] && die "the origin exited as it started; its log is $DATA/origin.log."
  die "the origin on 127.0.0.1:$OPORT did not answer PING within ${ORIGIN_WAIT}s (FLASHGATE_DEV_ORIGIN_WAIT); its log is $DATA/origin.log."
}

step "demo sale: event 'demo', starts in 2 minutes, 3 items"
"$CLI" --origin "$ORIGIN" event create --replace --id demo --name "flashgate demo sale" \
  --starts-in 120 --duration 86400 --utc-offset +08:00 --cap-item 1 --cap-total 2 --cap-qty 1 \
  --item "KB-75:Mechanical keyboard:8999:USD:100" \
  --item "MS-01:Wireless mouse:2999:USD:37" \
  --item "HP-X:Studio headphones:14999:USD:5"

cat <<TXT

  flashgate is starting on  http://localhost:$PORT/?event=demo
  health                    http://localhost:$PORT/api/health
  the operator's live view  http://localhost:$PORT/ops/?event=demo  (token: $OPERATOR)
  sign in on the page with any user id (DEV_SIGNIN=true in .dev.vars)

  operate the sale from another terminal:
    $CLI --origin $ORIGIN event start demo
    $CLI --origin $ORIGIN event status demo --watch
    $CLI --origin $ORIGIN orders sink --event demo --db sqlite://.wrangler/dev-orders.db
    $CLI --origin $ORIGIN token --user alice --secret '$SECRET'
    curl -H 'Authorization: Bearer $OPERATOR' http://localhost:$PORT/api/stats

  Ctrl-C stops the worker and the origin.

TXT
# The gate (wrangler.toml) answers /api/* and hands every other path to the pages worker
# (wrangler.pages.toml) over its PAGES binding; both run in this one wrangler dev.
spawn_group "$ROOT" wrangler dev -c wrangler.toml -c wrangler.pages.toml --ip 127.0.0.1 --port "$PORT" --var "ORIGIN_URL:$ORIGIN" \
  --show-interactive-dev-session=false
GROUPS_STARTED+=("$SPAWNED_PID")
wait "$SPAWNED_PID"
