#!/usr/bin/env bash
# The browser tests: builds the page (web/build.sh) and the native CLI, then
#  1. the page in headless Chromium against `chunkwise generate` (web/test_chromium.py);
#  2. the wasm build under Node with Dawn: every kernel compiled by Tint in f32 and f16, and the
#     `check` cases against the float64 reference (web/test_node.mjs).
# Needs chromium, node, the wasm target and wasm-bindgen-cli (web/build.sh names the version),
# the npm packages (`npm ci --prefix web`) and, on Debian 12, lavapipe 25 for Dawn
# (web/fetch-lavapipe25.sh); `.ci/run` installs them all. Arguments go to test_chromium.py.
set -euo pipefail
cd "$(dirname "$0")/.."
web/build.sh
cargo build --release --quiet
python3 web/test_chromium.py "$@"
if [ -f target/lavapipe25/lvp_icd.json ]; then
    export VK_DRIVER_FILES="$PWD/target/lavapipe25/lvp_icd.json"
    export LD_LIBRARY_PATH="$PWD/target/lavapipe25/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
node web/test_node.mjs "${CHUNKWISE_NODE_SCOPE:-smoke}"
