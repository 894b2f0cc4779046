"""``lmforge quickstart``: the main job end to end, from raw text to a calibrated, compressed model
and an HTML report (:func:`run_quickstart`)."""

from lmforge.quickstart.plan import LANGS, Plan, QuickstartConfig
from lmforge.quickstart.run import run_quickstart

__all__ = ["LANGS", "Plan", "QuickstartConfig", "run_quickstart"]
