"""Evaluation stage: metrics computed on model outputs (calibration metrics live here so that the
fine-tuning evaluator and the calibrate stage share one implementation)."""
