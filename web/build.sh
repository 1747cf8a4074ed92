#!/usr/bin/env bash
# Builds the page into web/dist/: the wasm library (release), its JS bindings, the page's files
# and the shipped model. Needs the wasm32-unknown-unknown target and wasm-bindgen-cli of the same
# version as the wasm-bindgen crate in Cargo.lock (the script says which when it is missing).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
    echo "web/build.sh: needs wasm-bindgen-cli $want (found '${have:-none}'):" >&2
    echo "  rustup target add wasm32-unknown-unknown" >&2
    echo "  cargo install wasm-bindgen-cli --version $want --locked" >&2
    exit 1
fi
cargo build --release --target wasm32-unknown-unknown -p chunkwise-web
rm -rf web/dist
mkdir -p web/dist/models
wasm-bindgen --target web --no-typescript --out-dir web/dist/pkg \
    target/wasm32-unknown-unknown/release/chunkwise_web.wasm
cp web/index.html web/main.js web/style.css web/dist/
cp -r models/rat-tiny-pystdlib web/dist/models/
echo "web/dist is ready: serve it, e.g. python3 -m http.server --bind 127.0.0.1 -d web/dist 8000"
