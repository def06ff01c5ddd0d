#!/usr/bin/env bash
# One prepared session on a lent GPU machine (no network there, its own torch/transformers).
#
#   bash benchmarks/gpu_session.sh prepare   # here: fill .gpu/ (ignored) with what must travel
#   bash benchmarks/gpu_session.sh run       # there, from the repo root, with .gpu carried
#
# .gpu/ holds wheels the GPU image lacks (datasets, dill, multiprocess) or has in another
# version (transformers, pinned to what sftlib is tested with), the rotten-tomatoes asset as
# cached here (its sha256 check passes there), and MiniLM-L6 stored in fp16 to fit the 64 MiB
# a call may carry (sftlib loads it back into fp32 master weights). What `run` does, each part
# under its own time limit so one failure does not cost the others:
#   1. bench_gpu.py: speed and share of the bf16 matmul peak (random weights, no data)
#   2. `sftlib train` with the default config on the GPU: the main job's training on an H200
#   3. bench_train.py: tutorial recipe vs plain Trainer vs sftlib, on the GPU
# Logs and JSON go to $OUT (the device tool brings them back) or reports/benchmarks/gpu.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu

prepare() {
    local py=.venv/bin/python
    mkdir -p "$CARRY/whl" "$CARRY/cache"
    grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >>.git/info/exclude
    $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 -d "$CARRY/whl" \
        transformers==5.24.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
    $py -m sftlib assets fetch rotten-tomatoes && $py -m sftlib assets fetch minilm-l6
    rm -rf "$CARRY/cache/rotten-tomatoes"
    cp -a "${SFTLIB_CACHE:-$HOME/.cache/sftlib}/rotten-tomatoes" "$CARRY/cache/"
    $py - "$CARRY/minilm-l6" <<'EOF'
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
from sftlib import assets
src, dst = Path(assets.resolve_model("minilm-l6")), Path(sys.argv[1])
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.name not in ("model.safetensors", "sftlib-asset.json"):
        shutil.copy(f, dst / f.name)
weights = load_file(src / "model.safetensors")
save_file({k: v.half().contiguous() if v.is_floating_point() else v for k, v in weights.items()},
          dst / "model.safetensors", metadata={"format": "pt"})
EOF
    du -sh "$CARRY"
}

run() {
    local out=${OUT:-reports/benchmarks/gpu}
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$CARRY"/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 SFTLIB_CACHE=$PWD/$CARRY/cache \
        HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
        --format=csv | tee "$out/gpu.txt"
    python3 -c "import torch, transformers, datasets, sftlib.train; print('torch', \
torch.__version__, 'transformers', transformers.__version__, 'datasets', datasets.__version__)" \
        2>&1 | tee -a "$out/gpu.txt" || exit 1
    echo "== 1. bench_gpu"
    timeout "${GPU_BENCH_S:-330}" python3 benchmarks/bench_gpu.py --budget-s \
        "${GPU_BENCH_BUDGET_S:-230}" 2>&1 | grep --line-buffered -v Warning | tee "$out/bench_gpu.log"
    echo "== 2. sftlib train, default config"
    local began=$SECONDS
    timeout "${GPU_TRAIN_S:-150}" python3 -m sftlib train --set "model=$CARRY/minilm-l6" \
        --output-dir /tmp/gpu-train 2>&1 | tee "$out/sftlib_train.log" | tail -30
    echo "sftlib train wall time: $((SECONDS - began)) s" | tee -a "$out/sftlib_train.log"
    echo "== 3. bench_train"
    timeout "${GPU_RECIPES_S:-150}" python3 -m benchmarks.bench_train --reps 2 --steps 40 \
        --tutorial-steps 20 --model "$CARRY/minilm-l6" --out "$out" 2>&1 | tail -25
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash benchmarks/gpu_session.sh prepare|run" >&2; exit 2 ;;
esac
