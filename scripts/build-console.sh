#!/usr/bin/env bash
# Builds the console's assets into target/site, as the server's shell loads them
# (`app::shell` → leptos' `HydrationScripts`: /pkg/anneal.js and /pkg/anneal.wasm, because
# LEPTOS_OUTPUT_NAME is set in .cargo/config.toml; the stylesheet /pkg/anneal.css):
#
# 1. `frontend` (the `hydrate` feature through its dependencies) for wasm32 with the size-tuned
#    `wasm-release` profile;
# 2. wasm-bindgen (the CLI at the crate's exact version) for the browser's ES module loader;
# 3. wasm-opt -Oz from npm's binaryen (end2end/node_modules; Debian's binaryen breaks hydration);
# 4. style/main.css as pkg/anneal.css and public/* into the site root.
#
# Steps 2 and 3 run only when cargo produced a new .wasm, so a second run takes about a second.
# The Makefile puts the project's tools first on PATH; run it through `make build` (or with that
# PATH) by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

site=target/site
pkg=$site/pkg
wasm=target/wasm32-unknown-unknown/wasm-release/frontend.wasm

cargo build -p frontend --lib --target wasm32-unknown-unknown --profile wasm-release

mkdir -p "$pkg"
if [[ ! -f $pkg/anneal.js || ! -f $pkg/anneal.wasm || $wasm -nt $pkg/anneal.wasm ]]; then
    # Build into a fresh folder, then move the results in, so a failed step leaves no half site.
    out=$(mktemp -d target/console-pkg.XXXXXX)
    trap 'rm -rf "$out"' EXIT
    echo "+ wasm-bindgen $(wasm-bindgen --version)"
    wasm-bindgen --target web --no-typescript --out-dir "$out" --out-name anneal "$wasm"
    echo "+ wasm-opt ($(wasm-opt --version)) -Oz"
    wasm-opt -Oz --enable-bulk-memory "$out/anneal_bg.wasm" -o "$out/anneal.wasm"
    rm "$out/anneal_bg.wasm"
    rm -rf "$pkg/snippets"
    mv "$out"/* "$pkg"/
    touch "$pkg/anneal.wasm"
    echo "+ $(du -h "$pkg/anneal.wasm" | cut -f1) $pkg/anneal.wasm"
fi
cmp -s style/main.css "$pkg/anneal.css" || cp style/main.css "$pkg/anneal.css"
cp -R public/. "$site"/
