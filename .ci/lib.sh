# .ci/lib.sh — what the .ci scripts share: the checkout, free ports, process groups, bounded waits.
# Source it (`. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`): it sets ROOT to the checkout, cds
# there, and defines functions.
# shellcheck shell=bash
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit

# bind_ports PORT...: binds each PORT on 127.0.0.1 for a moment (0 = any free port) and prints
# the ports it got; exits 3 when one of them is taken. Node is the one runtime every script has.
bind_ports() {
  node -e '
    const net = require("net");
    const bind = (port) => new Promise((ok, fail) => {
      const server = net.createServer().once("error", fail);
      server.listen(port, "127.0.0.1", () => ok(server));
    });
    Promise.all(process.argv.slice(1).map((p) => bind(Number(p)))).then((servers) => {
      console.log(servers.map((s) => s.address().port).join(" "));
      servers.forEach((s) => s.close());
    }, () => process.exit(3));' "$@"
}

# free_ports N: N distinct ports that are free right now.
free_ports() {
  local zeros=()
  while [ "${#zeros[@]}" -lt "$1" ]; do zeros+=(0); done
  bind_ports "${zeros[@]}"
}

# port_taken PORT: true when something already holds PORT on 127.0.0.1.
port_taken() {
  local rc=0
  bind_ports "$1" >/dev/null 2>&1 || rc=$?
  [ "$rc" = 3 ]
}

# spawn_group DIR CMD...: runs CMD in DIR as the leader of a new session and process group, stdin
# from /dev/null, other output where the caller redirects it. Its pid, which is also its
# group id, goes to SPAWNED_PID. Stop it, and whatever it spawned, with stop_groups.
spawn_group() {
  local dir=$1
  shift
  (cd "$dir" && exec setsid "$@" </dev/null) &
  # shellcheck disable=SC2034 # the caller reads it
  SPAWNED_PID=$!
}

# stop_groups PGID...: SIGTERM to each whole process group, up to 5 s for it to go, then SIGKILL.
stop_groups() {
  local g _
  for g in "$@"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  for g in "$@"; do
    for _ in $(seq 50); do
      kill -0 -- "-$g" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$g" 2>/dev/null || true
  done
}

# pong PORT: true when the RESP server on 127.0.0.1:PORT answers PING.
pong() { [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; }

# wait_until SECONDS PID CMD...: polls CMD (output discarded) until it succeeds. Returns 0 then,
# 1 as soon as PID has exited, 2 after SECONDS.
wait_until() {
  local deadline=$(($(date +%s) + $1)) pid=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$(date +%s)" -lt "$deadline" ] || return 2
    sleep 0.25
  done
}
