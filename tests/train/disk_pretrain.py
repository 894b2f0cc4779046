"""Pretrain a tiny model for two steps per objective on a prepared token directory; report peak RSS.

Usage: python disk_pretrain.py DATA_DIR OUT_DIR OBJECTIVE...   (names of pretrain_utils.OBJECTIVES)

Each objective first runs on the small in-memory corpus, so that imports, kernels and allocator
pools are in place; the resident-set high-water mark after those runs is the baseline. Then every
objective runs on DATA_DIR through lmforge.data.TokenDataset (memmaps). Prints one JSON line:
``{"baseline_mb": ..., "peak_mb": ..., "steps": {objective: n}}``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pretrain_utils import OBJECTIVES, QUIET, SPECIAL_TOKENS, VOCAB, memory_data

from lmforge.data import TokenDataset
from lmforge.train import DataBundle, load_config, pretrain

# Blocks of 128 tokens: the epoch permutation (one int64 per example) stays small next to the budget.
SETTINGS = [*QUIET, "max_steps=2", "eval_every=2", "eval_batches=1", "objective.seq_len=128"]
# Masked LM reads the word-start flags too (the other objectives ignore the setting).
SETTINGS += ["objective.whole_word_masking=true"]


def peak_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so this child of pytest would start at
    # the parent's peak and show no growth however much it allocates.
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


if __name__ == "__main__":
    data_dir, out, *names = sys.argv[1:]
    for name in names:
        pretrain(
            load_config(None, [*OBJECTIVES[name], *SETTINGS]), Path(out) / f"warm-{name}", data=memory_data()
        )
    baseline = peak_mb()
    bundle = DataBundle(
        train=TokenDataset(data_dir, "train"),
        validation=TokenDataset(data_dir, "validation"),
        vocab_size=VOCAB,
        special_tokens=dict(SPECIAL_TOKENS),
        source=data_dir,
    )
    examples = {}
    for name in names:
        report = pretrain(load_config(None, [*OBJECTIVES[name], *SETTINGS]), Path(out) / name, data=bundle)
        examples[name] = report["steps"]
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak_mb(), "steps": examples}))
