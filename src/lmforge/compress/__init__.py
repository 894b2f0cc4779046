"""Model compression: quantization, pruning and distillation, each writing a normal lmforge checkpoint.

- :mod:`~lmforge.compress.quantize`: ``int8`` dynamic, ``int8-wo`` / ``int4-wo`` weight-only and
  ``gptq-int4`` (:mod:`~lmforge.compress.gptq`) post-training quantization (``lmforge quantize``).
- :mod:`~lmforge.compress.report`: accuracy, ECE (with its noise floor) and NLL of a classifier
  before compression, after it and after recalibrating it; size and speed.

The layers the checkpoints hold live in :mod:`lmforge.models.quantized` (the loader builds them);
this package holds the algorithms. It sits above train (recovery fine-tuning and distillation run
through its loop) and calibrate (recalibration of the compressed model).

Example:
    >>> from lmforge.compress import QuantizeConfig, quantize
    >>> quantize("runs/minilm-sentiment", "runs/minilm-int8", QuantizeConfig("int8"))  # doctest: +SKIP
"""

from lmforge.compress.quantize import QuantizeConfig, calibration_batches, quantize, quantize_model

__all__ = ["QuantizeConfig", "calibration_batches", "quantize", "quantize_model"]
