#!/usr/bin/env bash
# The GPU-run checklist (BENCHMARKS.md) as one command, for a Linux GPU machine that has the GPU
# driver but no Rust toolchain: everything runs from the release binary.
#
#   scripts/gpu-run.sh BINARY OUT_DIR [GOLDEN_DIR]
#
# Writes into OUT_DIR: info.txt, info.json, check.txt + check.jsonl (every kernel family against
# the float64 reference, and the golden cases when GOLDEN_DIR is given), tune.txt + tune.json (the
# tuned GEMM tiles, attention kernels and Mesa plans, used by the steps after it), gemm.jsonl, gemm-TILE.txt, layers.txt +
# layers.jsonl (`bench layers --preset paper`), model.txt + model.jsonl, and each step's stderr.
# A step that fails or runs past its time limit is recorded in steps.txt and the rest still run,
# so one broken kernel does not cost the whole (short) GPU session; JSON Lines are written row by
# row, so a step cut short keeps the rows it finished. The limits add up to about 10.75 minutes.
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
    step check 120 "$bin" check --json "$out/check.jsonl" --golden "$golden"
else
    step check 120 "$bin" check --json "$out/check.jsonl"
fi
# Tune the GPU GEMM tiles, flash-forward kernels and Mesa CG plans (each checked against float64
# first; tensor-core variants where the device has cooperative matrices) into a cache the later
# steps read; it is written after each family, so a cut-short tune keeps the families it finished.
export CHUNKWISE_TUNE_CACHE="$out/tune.json"
step tune 60 "$bin" tune
# `bench gemm --json` prints its rows on stdout: the tuned choice, then every tile at 4096³.
step gemm 45 "$bin" bench gemm --json --samples 5 \
    --sizes 1024x1024x1024,4096x4096x4096,16384x2048x2048,1x4096x4096,16x4096x4096
mv "$out/gemm.txt" "$out/gemm.jsonl"
for tile in 64x64 128x64 128x128 coop16 coop8; do
    step "gemm-$tile" 10 "$bin" bench gemm --json --samples 5 --schedule tiled --tile "$tile" \
        --sizes 4096x4096x4096,16384x2048x2048
done
step layers 270 "$bin" bench layers --preset paper --json "$out/layers.jsonl"
step model 75 "$bin" bench model --json "$out/model.jsonl"
cat "$out/steps.txt"
