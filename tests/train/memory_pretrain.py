"""Run ``pretrain`` on the synthetic in-memory corpus; subprocess tests start it (kill -9, torchrun).

Usage: python memory_pretrain.py OUT [--resume] key=value ...
"""

from __future__ import annotations

import sys

from pretrain_utils import memory_data

from lmforge.train import load_config, pretrain

if __name__ == "__main__":
    out, *rest = sys.argv[1:]
    overrides = [item for item in rest if item != "--resume"]
    pretrain(load_config(None, overrides), out, data=memory_data(), resume="--resume" in rest)
