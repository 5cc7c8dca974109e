#!/usr/bin/env bash
# Test NLL (importance-weighted bound, K = 5000) of the classic MLP VAE and of the conv VAE on
# dynamically binarised Fashion-MNIST, the speed of `evaluate` against the per-image loop, and the
# classifier Fréchet distance of prior samples against samples from a GMM fitted to the codes.
#   bash benchmarks/likelihood_fashion.sh [OUT_DIR]      (about 1.5 hours on 2 CPU cores)
set -euo pipefail
out=${1:-runs/benchmarks}
vaelab=${VAELAB:-.venv/bin/vaelab}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"

[ -d "$out/mlp" ] || $vaelab train --dataset fashion-mnist --binarize dynamic --arch mlp --hidden 400 \
    --latent-dim 20 --epochs 50 --out "$out/mlp" --no-progress
[ -d "$out/conv" ] || $vaelab train --dataset fashion-mnist --binarize dynamic --arch conv --channels 32 64 \
    --hidden 256 --latent-dim 20 --epochs 10 --out "$out/conv" --no-progress

$vaelab evaluate "$out/mlp" --iw-samples 5000 --json --no-progress | tee "$out/mlp-nll.json"
$vaelab quality "$out/mlp" --json --no-progress | tee "$out/quality-standard.json"
$vaelab quality "$out/mlp" --prior gmm:10 --json --no-progress | tee "$out/quality-gmm10.json"
$python benchmarks/evaluate_speed.py "$out/mlp" --iw-samples 1000 --loop-images 100 | tee "$out/evaluate-speed.txt"
$vaelab evaluate "$out/conv" --iw-samples 5000 --limit 1000 --json --no-progress | tee "$out/conv-nll.json"
