#!/usr/bin/env bash
# zh-sentiment calibration, replicated under a protocol fixed before measuring (issue 6).
#
# The sentiment recipe (bert-zh-sentiment.sh) reached test ECE 0.79% with "MC dropout, 10 passes,
# then temperature", but only as the fourth configuration looked at on the same test split, where even
# a perfectly calibrated model shows 1.8% ECE on average. This script measures that configuration again
# on classifiers whose test scores nobody has seen, with every choice fixed in advance:
#   - encoder: the given bert-zh-small checkpoint, unchanged;
#   - classifiers: the recipe's fine-tuning command, one per seed (an existing CLASSIFIERS/classifier-sS
#     directory is reused, not retrained);
#   - predictive: `lmforge evaluate --mc-dropout 10 --seed 0` on validation and test, and the
#     deterministic forward pass beside it;
#   - calibrator: temperature, fitted on validation, scored on test with 15 equal-width bins;
#   - decision: the target holds if the mean test ECE after temperature of the MC-dropout predictive
#     over all seeds is <= 1.0% and every seed keeps at most half of its uncalibrated ECE.
# summary.json and the printed table carry every seed's figures, the noise floor (`ece_floor`) included.
#
# Measured (2026-11-24, runs/bert-zh-small/model, seeds 0 2 3; committed before any of it was run), test
# ECE (15 bins) none -> temperature, then the ECE a perfectly calibrated model shows here and the p-value:
#   MC dropout 10   seed 0: 5.67% -> 1.85% (floor 1.83%, p 0.45)   accuracy 0.847
#                   seed 2: 1.45% -> 1.75% (floor 1.78%, p 0.51)   accuracy 0.858
#                   seed 3: 4.30% -> 1.51% (floor 1.77%, p 0.69)   accuracy 0.850
#   deterministic   seed 0: 8.21% -> 3.46% (p 0.00); seed 2: 3.45% -> 1.60% (p 0.70); seed 3: 6.96% -> 2.66% (p 0.04)
#   decision: mean 1.70% > 1.0%, and seed 2 was already at the floor before calibration: NOT met.
#   Every MC-dropout model ends where a perfectly calibrated one would (p 0.45-0.69); two of three
#   deterministic ones keep a miscalibration the split can resolve. The earlier 0.79% (seed 1) was a
#   low draw: ECE <= 1.0% needs a sharper classifier than ~85% accuracy on 1,703 reviews.
#
# Usage: bash recipes/finetune/zh-sentiment-calibration-replication.sh ENCODER OUT SEED [SEED ...]
#   e.g. ... runs/bert-zh-sentiment/pretrain/model runs/zh-replication 0 2 3
# About 22 min per pair of seeds to fine-tune and 16 min per seed to evaluate on 2 CPU cores.
set -euo pipefail
ENCODER=$1
OUT=$2
shift 2
SEEDS=("$@")
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"

pending=()
for seed in "${SEEDS[@]}"; do
  [ -f "$OUT/classifier-s$seed/model.safetensors" ] || pending+=("$seed")
done
for ((i = 0; i < ${#pending[@]}; i += 2)); do
  pids=()
  for seed in "${pending[@]:i:2}"; do
    lmforge finetune --task classification --model "$ENCODER" --data zh-sentiment \
      --out "$OUT/classifier-s$seed" --max-length 256 --lr 2e-4 --batch-size 32 --epochs 3 --dropout 0.1 \
      --metric accuracy --eval-every 200 --patience 4 --precision bf16 --threads 1 --seed "$seed" \
      >"$OUT/classifier-s$seed.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done  # a failed fine-tune stops the script
done

for seed in "${SEEDS[@]}"; do
  for split in validation test; do
    lmforge evaluate --model "$OUT/classifier-s$seed" --data zh-sentiment --split $split \
      --out "$OUT/eval-s$seed-$split" --threads 2
    lmforge evaluate --model "$OUT/classifier-s$seed" --data zh-sentiment --split $split \
      --mc-dropout 10 --seed 0 --out "$OUT/eval-mc-s$seed-$split" --threads 2
  done
  for kind in eval eval-mc; do
    lmforge calibrate --method temperature --fit "$OUT/$kind-s$seed-validation/logits.npz" \
      --eval "$OUT/$kind-s$seed-test/logits.npz" --out "$OUT/cal${kind#eval}-s$seed" --bins 15
  done
done

"$PYTHON" - "$OUT" "${SEEDS[@]}" <<'PY'
import json
import sys
from pathlib import Path

out, seeds = Path(sys.argv[1]), sys.argv[2:]
rows = []
for predictive, kind in (("deterministic", ""), ("mc-dropout-10", "-mc")):
    for seed in seeds:
        metrics = json.loads((out / f"cal{kind}-s{seed}" / "metrics.json").read_text())
        before, after = metrics["before"], metrics["after"]
        rows.append({
            "predictive": predictive, "seed": int(seed), "accuracy": after["accuracy"],
            "ece_before": before["ece"], "ece_after": after["ece"],
            "temperature": metrics["calibrators"]["temperature"]["temperature"],
            "ece_floor_before": metrics["ece_floor"]["before"]["mean"],
            "ece_floor_after": metrics["ece_floor"]["temperature"]["mean"],
            "p_value_after": metrics["ece_floor"]["temperature"]["p_value"],
        })
mc = [r for r in rows if r["predictive"] == "mc-dropout-10"]
mean_after = sum(r["ece_after"] for r in mc) / len(mc)
decision = {
    "mean_ece_after": mean_after,
    "mean_ece_at_most_1pct": mean_after <= 0.01,
    "every_seed_at_most_half": all(r["ece_after"] <= r["ece_before"] / 2 for r in mc),
}
(out / "summary.json").write_text(json.dumps({"rows": rows, "decision": decision}, indent=2) + "\n")
for r in rows:
    print(f"{r['predictive']:>14} seed {r['seed']}: accuracy {r['accuracy']:.3f}  ECE {r['ece_before']:.2%} -> "
          f"{r['ece_after']:.2%} (T={r['temperature']:.2f}; a perfectly calibrated model: {r['ece_floor_after']:.2%}, p = {r['p_value_after']:.2f})")
print(json.dumps(decision))
PY
