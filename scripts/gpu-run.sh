#!/usr/bin/env bash
# The GPU-run checklist (BENCHMARKS.md) as one command, for a Linux GPU machine that has the GPU
# driver but no Rust toolchain: everything runs from the release binary.
#
#   scripts/gpu-run.sh BINARY OUT_DIR [GOLDEN_DIR]
#
# Writes into OUT_DIR: info.txt, info.json, check.txt + check.jsonl (every kernel family against
# the float64 reference, and the golden cases when GOLDEN_DIR is given), gemm.jsonl, layers.txt +
# layers.jsonl (`bench layers --preset paper`), model.txt + model.jsonl, and each step's stderr.
# A step that fails or runs past its time limit is recorded in steps.txt and the rest still run,
# so one broken kernel does not cost the whole (short) GPU session; JSON Lines are written row by
# row, so a step cut short keeps the rows it finished. The limits add up to about 10 minutes.
set -uo pipefail
bin=${1:?usage: gpu-run.sh BINARY OUT_DIR [GOLDEN_DIR]}
out=${2:?usage: gpu-run.sh BINARY OUT_DIR [GOLDEN_DIR]}
golden=${3:-}
mkdir -p "$out"
: > "$out/steps.txt"

# The loader may be unpacked beside the binary (shared/notes/gpu-runs.md); NVIDIA's ICD file is
# sometimes outside the loader's search path.
if ! "$bin" info >/dev/null 2>&1 && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

step() { # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$out/$name.txt" 2> "$out/$name.stderr"
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - t0)) s (limit $limit s): $*" >> "$out/steps.txt"
}

step info 30 "$bin" info
"$bin" info --json > "$out/info.json" 2>> "$out/info.stderr"
if [ -n "$golden" ]; then
    step check 150 "$bin" check --json "$out/check.jsonl" --golden "$golden"
else
    step check 150 "$bin" check --json "$out/check.jsonl"
fi
# `bench gemm --json` prints its rows on stdout.
step gemm 45 "$bin" bench gemm --json --samples 5 \
    --sizes 1024x1024x1024,4096x4096x4096,16384x2048x2048,1x4096x4096,16x4096x4096
mv "$out/gemm.txt" "$out/gemm.jsonl"
step layers 300 "$bin" bench layers --preset paper --json "$out/layers.jsonl"
step model 90 "$bin" bench model --json "$out/model.jsonl"
cat "$out/steps.txt"
