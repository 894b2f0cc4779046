"""Errors meant for people: each says what was wrong, where, and what to do.

The CLI prints an :class:`LmforgeError` as one message without a traceback and exits non-zero.
"""

from __future__ import annotations


class LmforgeError(Exception):
    """Base class for every error lmforge raises on purpose."""

    exit_code: int = 1


class ConfigError(LmforgeError):
    """A configuration field is missing, unknown or has an invalid value."""


class CheckpointError(LmforgeError):
    """A checkpoint or weight file is missing, corrupt, truncated or does not match its config."""


class UnsupportedError(LmforgeError):
    """The input is valid but uses something lmforge does not support (architecture, quant type)."""


class ShapeError(LmforgeError):
    """Inputs to a model have inconsistent shapes (mask vs input ids, cache vs mask)."""


class DataError(LmforgeError):
    """Input text is unreadable or malformed (undecodable bytes, missing field, empty corpus); names file and line."""


class EvaluationError(LmforgeError, ValueError):
    """Predictions, references or scores given to an evaluation metric are malformed or disagree
    (lengths, shapes, label ranges), or the task is unknown."""


class AssetMissingError(LmforgeError):
    """A bundled asset package is not installed; the message carries the exact install command."""

    exit_code = 2


class CalibrationError(LmforgeError, ValueError):
    """Logits, probabilities or labels given to a metric or calibrator are malformed or disagree,
    or a calibrator file cannot be read."""


class LmforgeWarning(UserWarning):
    """A request lmforge could only partly meet (e.g. a vocabulary larger than the data supports);
    the CLI prints it as one ``warning:`` line."""
