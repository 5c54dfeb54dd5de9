#!/usr/bin/env bash
# .ci/dev-smoke.sh — `make dev` as a user runs it; .ci/run runs this first, on its fresh clone.
#   1. starts `make dev` on a free port (FLASHGATE_DEV_PORT), leading a process group of its own;
#   2. waits (bounded) until /api/health reports the origin ok and / serves static/index.html;
#   3. sends SIGINT to make's process group, as Ctrl-C in a terminal does;
#   4. checks that every process `make dev` had started is gone: the whole process tree it had
#      while serving (by PID and start time) and those processes' groups.
# It prints its elapsed times, and exits non-zero on any failure with the end of make's log.
#
# Knobs: DEV_SMOKE_WAIT (seconds until it serves; default 1200, because a fresh clone sets up
# and compiles the worker and the CLI first), DEV_SMOKE_STOP_WAIT (seconds to stop; 30).
set -euo pipefail
# shellcheck source=.ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # sets ROOT to the checkout and cds there
WAIT=${DEV_SMOKE_WAIT:-1200}
STOP_WAIT=${DEV_SMOKE_STOP_WAIT:-30}
T0=$(date +%s)
elapsed() { echo "$(($(date +%s) - T0))"; }
say() { printf '[dev-smoke +%4ss] %s\n' "$(elapsed)" "$*"; }
fail() {
  printf '[dev-smoke] FAILED after %ss: %s\n' "$(elapsed)" "$*" >&2
  echo "[dev-smoke] the end of make dev's log ($LOG):" >&2
  tail -n 40 "$LOG" >&2 || true
  exit 1
}

# tree PID: "pid:starttime:pgid" for PID and every process below it, read from /proc.
tree() {
  local -A parent=() start=() group=()
  local f pid stat fields queue=("$1") out=() p c
  for f in /proc/[0-9]*/stat; do
    read -r stat 2>/dev/null <"$f" || continue
    pid=${f#/proc/}
    pid=${pid%/stat}
    read -ra fields <<<"${stat##*) }" # [0] state, [1] ppid, [2] pgrp, ..., [19] starttime
    parent[$pid]=${fields[1]}
    group[$pid]=${fields[2]}
    start[$pid]=${fields[19]}
  done
  while [ "${#queue[@]}" -gt 0 ]; do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    [ -n "${start[$p]:-}" ] || continue
    out+=("$p:${start[$p]}:${group[$p]}")
    for c in "${!parent[@]}"; do [ "${parent[$c]}" = "$p" ] && queue+=("$c"); done
  done
  echo "${out[@]}"
}

# alive PID:STARTTIME:PGID: that very process still exists (and is not a zombie).
alive() {
  local pid=${1%%:*} rest=${1#*:} stat fields
  read -r stat 2>/dev/null <"/proc/$pid/stat" || return 1
  read -ra fields <<<"${stat##*) }"
  [ "${fields[19]}" = "${rest%%:*}" ] && [ "${fields[0]}" != Z ]
}

# leftovers: the processes of TREE, and the members of their groups, that are still there.
leftovers() {
  local entry g
  local -A groups=()
  for entry in $TREE; do
    alive "$entry" && echo "pid ${entry%%:*}: $(tr '\0' ' ' <"/proc/${entry%%:*}/cmdline" 2>/dev/null)"
    groups[${entry##*:}]=1
  done
  for g in "${!groups[@]}"; do
    kill -0 -- "-$g" 2>/dev/null && echo "process group $g still has members"
  done
  return 0
}

LOG=$(mktemp "${TMPDIR:-/tmp}/flashgate-dev-smoke.XXXXXX")
TREE=""
MAKE_PID=""
cleanup() {
  local rc=$? entry
  trap - EXIT INT TERM HUP
  if [ -n "$MAKE_PID" ] && kill -0 -- "-$MAKE_PID" 2>/dev/null; then stop_groups "$MAKE_PID"; fi
  for entry in $TREE; do # only what this smoke started, and only if it outlived the checks
    alive "$entry" && kill -KILL "${entry%%:*}" 2>/dev/null
  done
  if [ "$rc" = 0 ]; then rm -f "$LOG"; else echo "[dev-smoke] log kept: $LOG" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

read -r PORT < <(free_ports 1)
BASE=http://127.0.0.1:$PORT
say "make dev on port $PORT (log: $LOG)"
# A shell that was itself started in the background hands its children SIGINT ignored, and make
# and bash keep it so; a terminal's make has the default action. --default-signal restores it.
spawn_group "$ROOT" env --default-signal=INT,QUIT FLASHGATE_DEV_PORT="$PORT" make --no-print-directory dev >"$LOG" 2>&1
MAKE_PID=$SPAWNED_PID

serving() {
  local health page
  health=$(curl -fsS --max-time 5 "$BASE/api/health") || return 1
  [[ "$health" == *'"ok":true'* ]] || return 1 # the origin's PING; 503 otherwise
  page=$(curl -fsS --max-time 5 "$BASE/") || return 1
  [ "$page" = "$(cat static/index.html)" ]
}
rc=0
wait_until "$WAIT" "$MAKE_PID" serving || rc=$?
if [ "$rc" = 1 ]; then
  wait "$MAKE_PID" && status=0 || status=$?
  fail "make dev exited (status $status) before serving $BASE"
fi
[ "$rc" = 0 ] || fail "make dev did not serve a healthy $BASE/api/health and the page within ${WAIT}s"
SERVING=$(elapsed)
say "serving after ${SERVING}s: $(curl -fsS --max-time 5 "$BASE/api/health")"

TREE=$(tree "$MAKE_PID")
names=$(for entry in $TREE; do cat "/proc/${entry%%:*}/comm" 2>/dev/null; done | sort | uniq -c | awk '{ printf "%s%s×%s", sep, $2, $1; sep = ", " }')
say "make dev runs $(wc -w <<<"$TREE") processes ($names); SIGINT to its process group (Ctrl-C)"
kill -INT -- "-$MAKE_PID"
gone() { ! kill -0 "$1" 2>/dev/null; }
STOPPING=$(date +%s)
wait_until "$STOP_WAIT" $$ gone "$MAKE_PID" || fail "make dev still runs ${STOP_WAIT}s after SIGINT"
wait "$MAKE_PID" && status=0 || status=$?
STOPPED=$(($(date +%s) - STOPPING))
left=$(leftovers)
[ -z "$left" ] || fail "make dev left processes behind after SIGINT:
$left"
say "make dev stopped (status $status) ${STOPPED}s after SIGINT, nothing left behind"
say "passed in $(elapsed)s (serving after ${SERVING}s)"
