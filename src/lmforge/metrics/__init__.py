"""Metrics: pure functions of predictions and references, shared by every stage that scores.

No model runs here, only numpy / scikit-learn-compatible definitions and the reference scorers
(sacreBLEU, ROUGE, METEOR) wrapped: :mod:`~lmforge.metrics.classification` (accuracy, P/R/F1,
ROC / PR curves, log loss), :mod:`~lmforge.metrics.sequence` (entity F1, seqeval's definition),
:mod:`~lmforge.metrics.qa` (SQuAD EM / F1), :mod:`~lmforge.metrics.generation` (BLEU, chrF,
ROUGE, METEOR, perplexity) and :mod:`~lmforge.metrics.calibration` (ECE and friends). Tasks
(:mod:`lmforge.tasks`) compute their validation metrics with them; :mod:`lmforge.evaluate`
writes evaluation folders around them; calibrators and baselines score with them.
"""
