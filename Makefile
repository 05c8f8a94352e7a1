# Anneal's set-up, build and test entry points. README names two: `make run` and `make test`.
# Every install step is guarded, so running them again installs nothing twice.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
E2E := $(ROOT)/end2end
CARGO_LEPTOS_VERSION := 0.3.10
# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The project's Python first (torch-sys finds libtorch through it), then npm's wasm-opt (Debian's
# binaryen breaks hydration), then cargo-installed tools.
export PATH := $(VENV)/bin:$(E2E)/node_modules/.bin:$(HOME)/.cargo/bin:$(PATH)
export VIRTUAL_ENV := $(VENV)
export LIBTORCH_USE_PYTORCH := 1
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: help setup run build test test-rust test-e2e fmt clippy clean-site

help:
	@echo "make run    install what is missing, build, start Anneal on http://127.0.0.1:8080"
	@echo "make test   install what is missing, build, run every test"
	@echo "make build  build target/release/anneal and its console assets (target/site)"

## ---- set-up: each step installs only what is missing -------------------------------------

setup: .make/rust-tools .make/venv .make/node .make/chromium

.make:
	@mkdir -p .make

# The WASM target, cargo-leptos (without its own downloads) and wasm-bindgen-cli.
.make/rust-tools: Cargo.lock | .make
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@cargo leptos --version 2>/dev/null | grep -qx "cargo-leptos $(CARGO_LEPTOS_VERSION)" || \
	  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
	  cargo install cargo-leptos --version $(CARGO_LEPTOS_VERSION) --locked --features no_downloads
	@wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $(WASM_BINDGEN_VERSION)" || \
	  cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) --force
	@touch $@

# The Python virtual environment with the torch that tch expects.
.make/venv: requirements.txt | .make
	@[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	@$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

# Playwright (without a browser download) and npm's binaryen (wasm-opt for release WASM).
.make/node: end2end/package.json end2end/package-lock.json | .make
	@cd end2end && npm ci --no-audit --no-fund
	@touch $@

# Debian's Chromium for the browser tests.
.make/chromium: | .make
	@command -v chromium >/dev/null || { $(SUDO) apt-get update && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
	@touch $@

## ---- build --------------------------------------------------------------------------------

# The console assets (WASM, JS, CSS into target/site) and the release binary target/release/anneal.
build: .make/rust-tools .make/venv .make/node
	cargo leptos build --release --frontend-only
	cargo build --release -p server --bin anneal

run: build
	@echo "Starting Anneal: console at http://127.0.0.1:8080/ (data in $${ANNEAL_DATA_DIR:-~/.anneal}); Ctrl-C stops it."
	./target/release/anneal serve

## ---- tests --------------------------------------------------------------------------------

test: setup build test-rust test-e2e

# One invocation, so `app` is built with the features the server gives it (no second build).
test-rust:
	cargo test --release -p app -p server

test-e2e:
	cd end2end && npx playwright test

fmt:
	cargo fmt --all

clippy:
	cargo clippy --release -p server --all-targets
