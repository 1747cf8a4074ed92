#!/usr/bin/env bash
# The browser tests: builds the page (web/build.sh) and the native CLI, then runs the page in
# headless Chromium against `chunkwise generate` (web/test_chromium.py). Needs chromium, the wasm
# target and wasm-bindgen-cli (web/build.sh names the version); `.ci/run` installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
web/build.sh
cargo build --release --quiet
python3 web/test_chromium.py "$@"
