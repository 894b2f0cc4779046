"""Classic baselines beside the Transformers: TF-IDF + linear models, n-gram language models
(Kneser-Ney, Witten-Bell), word2vec / GloVe averaged-vector classifiers, TextCNN / BiLSTM
classifiers and a BiLSTM tagger; ``run_baseline`` trains and scores one (``lmforge baseline``) and
``compare_runs`` tabulates several runs' metrics (``lmforge compare``).

from lmforge.baselines import BaselineConfig, run_baseline
metrics = run_baseline(BaselineConfig("tfidf-lr", "zh-sentiment", Path("runs/tfidf-lr")))
"""

from lmforge.baselines.compare import compare_runs, load_metrics
from lmforge.baselines.ngram import KneserNeyLM, NGramLM, WittenBellLM
from lmforge.baselines.runner import KINDS, BaselineConfig, run_baseline
from lmforge.baselines.text import Vocabulary, tokenize

__all__ = [
    "KINDS",
    "BaselineConfig",
    "KneserNeyLM",
    "NGramLM",
    "Vocabulary",
    "WittenBellLM",
    "compare_runs",
    "load_metrics",
    "run_baseline",
    "tokenize",
]
