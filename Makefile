# Anneal's set-up, build and test entry points. README names two: `make run` and `make test`.
# Every install step is guarded, so running them again installs nothing twice. Each step says in
# one line what it does; installer and compiler output goes to .make/log/<step>.log, and a failing
# step prints its log's tail (scripts/step.sh).
#
# The steps run as one parallel make (-j4): downloads (torch, npm, Chromium) overlap compiling
# (wasm-bindgen-cli, the WASM bundle, the server), and the server and the console build side by
# side; they share no compiled crates (the WASM bundle has its own target and profile).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
E2E := $(ROOT)/end2end
STEP := $(ROOT)/scripts/step.sh
PARALLEL := $(MAKE) --no-print-directory -j4
# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# For the progress lines: "first build: <estimate>" or "only what changed", and how many crates a
# cold build compiles (cargo's package count for each build at the time of writing; only a guide).
FIRST = $(if $(wildcard $(1)),only what changed,first build: $(2))
SERVER_CRATES := 380
CONSOLE_CRATES := 180
SETUP := .make/rust-target .make/wasm-bindgen .make/venv .make/node .make/chromium .make/postgresql
# The suites that exercise the store and the API; `make test` runs them a second time on PostgreSQL.
POSTGRES_SUITES := jobs job_plans tuning batch_prediction models_versions api_conventions auth limits official_client

# The project's Python first (torch-sys finds libtorch through it), then npm's wasm-opt (Debian's
# binaryen breaks hydration), then cargo-installed tools. The prefix is added once (a sub-make
# inherits it already added): server/build.rs reruns when PATH changes, and then the server
# crate compiles again (2 min), so every make, and a shell with the same prefix, must agree.
TOOLS_PATH := $(VENV)/bin:$(E2E)/node_modules/.bin:$(HOME)/.cargo/bin
export PATH := $(TOOLS_PATH):$(patsubst $(TOOLS_PATH):%,%,$(PATH))
export VIRTUAL_ENV := $(VENV)
export LIBTORCH_USE_PYTORCH := 1
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: help setup build run test server console test-rust test-rust-sqlite test-rust-postgres test-e2e fmt clippy

help:
	@echo "make run    install what is missing, build, start Anneal on http://127.0.0.1:8080"
	@echo "make test   install what is missing, build, run every test"
	@echo "make build  build target/release/anneal and its console assets (target/site)"

## ---- entry points ---------------------------------------------------------------------------

setup:
	@+$(PARALLEL) $(SETUP)

# The console assets (WASM, JS, CSS into target/site) and the release binary target/release/anneal.
build:
	@+$(PARALLEL) server console

run:
	@+$(PARALLEL) server console
	@echo "Starting Anneal on $${ANNEAL_ADDR:-127.0.0.1:8080} (data in $${ANNEAL_DATA_DIR:-~/.anneal}); Ctrl-C stops it."
	./target/release/anneal serve

# Set-up and build in one parallel make, then the Rust tests, then the browser tests.
test:
	@+$(PARALLEL) $(SETUP) server console
	@+$(MAKE) --no-print-directory test-rust test-e2e

## ---- set-up: each step installs only what is missing ---------------------------------------

.make:
	@mkdir -p .make

# The WASM target of the machine's Rust toolchain.
.make/rust-target: | .make
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || \
	  $(STEP) rust-target "adding Rust's wasm32 target" "" -- rustup target add wasm32-unknown-unknown
	@touch $@

# wasm-bindgen-cli at the crate's version, from crates.io (`--locked` does not resolve for it).
.make/wasm-bindgen: Cargo.lock | .make
	@wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $(WASM_BINDGEN_VERSION)" || \
	  $(STEP) wasm-bindgen "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) from crates.io" "about 6 min on 2 cores" -- \
	    cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --force
	@touch $@

# The Python virtual environment with the torch that tch expects.
.make/venv: requirements.txt | .make
	@[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	@$(STEP) venv "installing requirements.txt into .venv (torch is a 4.7 GB download)" "about 3 min" -- \
	  $(VENV)/bin/python -m pip install --disable-pip-version-check --progress-bar off -r requirements.txt
	@touch $@

# Playwright (without a browser download) and npm's binaryen (wasm-opt for release WASM).
.make/node: end2end/package.json end2end/package-lock.json | .make
	@$(STEP) node "installing end2end's npm packages (Playwright, binaryen)" "" -- \
	  bash -c 'cd end2end && npm ci --no-audit --no-fund'
	@touch $@

# Debian's Chromium for the browser tests.
.make/chromium: | .make
	@command -v chromium >/dev/null || \
	  $(STEP) chromium "installing Debian's chromium with apt" "about 1 min" -- \
	    bash -c '$(SUDO) apt-get update && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y chromium'
	@touch $@

# Debian's PostgreSQL server, for the tests' second backend: scripts/with-postgres.sh starts a
# throwaway one for each test run (the package's own service is not used).
.make/postgresql: | .make
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  $(STEP) postgresql "installing Debian's postgresql with apt" "about 1 min" -- \
	    bash -c '$(SUDO) apt-get update && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql'
	@touch $@

## ---- build (cargo decides what is stale; a build with nothing to do takes a few seconds) ----

server: .make/venv
	@$(if $(wildcard target/release/deps),,STEP_EXPECTED_CRATES=$(SERVER_CRATES)) \
	  $(STEP) server "building the server, target/release/anneal" \
	    "$(call FIRST,target/release/anneal,about 10 min on 2 cores)" -- \
	    cargo build --release -p server --bin anneal --bin anneal-sandbox

console: .make/rust-target .make/wasm-bindgen .make/node
	@$(if $(wildcard target/wasm32-unknown-unknown/wasm-release/deps),,STEP_EXPECTED_CRATES=$(CONSOLE_CRATES)) \
	  $(STEP) console "building the console, target/site" \
	    "$(call FIRST,target/site/pkg/anneal.wasm,about 5 min on 2 cores)" -- \
	    scripts/build-console.sh

## ---- tests --------------------------------------------------------------------------------

# Every Rust suite on SQLite, then the store and API suites again on PostgreSQL, with one
# throwaway PostgreSQL server for both passes (the nodes and database-outage suites use it in the
# first). One cargo invocation per pass, so `app` is built with the features the server gives it
# (no second build) and the second pass builds nothing.
# A throwaway single-node Ray head (scripts/with-ray.sh, ~15 s to start, ~1.6 GB) serves the ray
# suite (tests/ray.rs) in the first pass.
test-rust: .make/postgresql
	scripts/with-postgres.sh scripts/with-ray.sh $(MAKE) --no-print-directory test-rust-sqlite test-rust-postgres

test-rust-sqlite:
	cargo test --release -p app -p server

test-rust-postgres:
	ANNEAL_TEST_BACKEND=postgres cargo test --release -p server $(addprefix --test ,$(POSTGRES_SUITES))

test-e2e:
	cd end2end && npx playwright test

fmt:
	cargo fmt --all

clippy:
	cargo clippy --release -p server --all-targets
