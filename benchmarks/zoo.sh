#!/usr/bin/env bash
# A headline model of BENCHMARKS.md ("Reaching the published likelihoods"): train it with the
# literature's protocol (dynamic binarisation, 10,000 held-out validation images, linear KL warm-up,
# cosine learning rate, early stopping on the validation bound), evaluate it on all 10,000 test images
# at K = 5000, check the evaluator against an independent per-image computation, and copy the run
# into zoo/<model>/ without its optimizer state.
#   OMP_NUM_THREADS=1 bash benchmarks/zoo.sh vae        # MODEL: vae | vamp | hvae-vamp
# Epoch counts are sized to this project's 2-core machines: vae ~70 minutes on one core
# (OMP_NUM_THREADS=1), vamp ~80 minutes alone on both (OMP_NUM_THREADS=2: 12 s per epoch with
# validation, against ~17 s on one core beside another run), hvae-vamp ~115 minutes alone on both
# (17 s per epoch): longer than the 90-minute budget, the longer run BENCHMARKS.md reports.
set -euo pipefail
model=${1:?usage: zoo.sh vae|vamp|hvae-vamp [RUNS_DIR]}
runs=${2:-runs/zoo}
vaelab=${VAELAB:-.venv/bin/vaelab}
python=${PYTHON:-.venv/bin/python}
common=(--dataset fashion-mnist --binarize dynamic --val-size 10000 --arch gated --hidden 300 300
        --latent-dim 40 --batch-size 100 --lr 1e-3 --lr-schedule cosine --lr-min 1e-5 --warmup-epochs 20
        --early-stopping 50 --seed 0 --no-plots --no-progress)
case $model in
    vae) extra=(--epochs 450) ;;                                                                # ~9 s/epoch
    # The VampPrior encodes its 500 pseudo-inputs at every step, whatever the batch: batch 200 (lr x1.4)
    # halves that cost per epoch, and its validation curve matched batch 100's epoch for epoch (BENCHMARKS.md).
    vamp) extra=(--prior vamp:500 --batch-size 200 --lr 1.4e-3 --epochs 400) ;;                  # ~12 s/epoch, 2 threads
    hvae-vamp) extra=(--prior vamp:500 --stochastic-layers 2 --batch-size 200 --lr 1.4e-3 --epochs 400) ;; # ~17 s/epoch, 2 threads
    *) echo "unknown model $model" >&2; exit 2 ;;
esac
mkdir -p "$runs"
run="$runs/$model"
if [ -f "$run/training_state.safetensors" ]; then
    $vaelab train --resume "$run" --no-progress          # continue (or finish) an interrupted run
else
    $vaelab train "${common[@]}" "${extra[@]}" --out "$run"
fi
$vaelab evaluate "$run" --iw-samples 5000 --json --no-progress > "$runs/$model-nll.json"
$python benchmarks/evaluate_speed.py "$run" --iw-samples 5000 --images 100 --loop-images 100 | tee "$runs/$model-check.txt"
mkdir -p zoo
rm -rf "zoo/$model"
mkdir "zoo/$model"
cp "$run"/{config.json,model.safetensors,metrics.jsonl,summary.json} "$run"/evaluation-test-K5000.json "zoo/$model/"
[ ! -f "$run/data.json" ] || cp "$run/data.json" "zoo/$model/"
