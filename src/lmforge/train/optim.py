"""Optimizers, weight-decay groups, the L1 penalty and learning-rate schedules.

The schedule is a pure function of the step (:func:`learning_rate`), set on the optimizer before
each step: resuming needs nothing but the step number to continue it exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.train.config import OptimConfig


def parameter_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    """Split trainable parameters into decayed (matrices) and not decayed (biases, norms, embeddings).

    Decay shrinks weights towards zero; for a norm's gain or a bias that only fights the
    layer's scale, and embeddings of rare tokens would decay towards zero between their uses
    (GPT-2 and BERT exclude them too). ``decay_embeddings`` puts embeddings back.
    """
    embedding_params = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, param in model.named_parameters():  # tied weights appear once
        if not param.requires_grad:
            continue
        is_embedding = id(param) in embedding_params and not config.decay_embeddings
        (no_decay if param.ndim < 2 or is_embedding else decay).append(param)
    return [
        {"params": decay, "weight_decay": config.weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW (decoupled decay) or SGD with momentum over :func:`parameter_groups`.

    AdamW uses torch's fused kernel (one pass over each parameter and its states, CPU or CUDA):
    on a CPU it measured 10-30x faster than the default multi-tensor loop for a 30M model.
    """
    groups = parameter_groups(model, config)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=fused)


def l1_penalty(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """Sum of absolute values of the decayed parameters (the group decay applies to)."""
    params = [p for group in optimizer.param_groups if group.get("name") == "decay" for p in group["params"]]
    return torch.stack([p.abs().sum() for p in params]).sum()


def learning_rate(step: int, max_steps: int, config: OptimConfig) -> float:
    """Learning rate for 0-based ``step``: linear warmup to ``lr``, then the schedule's decay.

    Warmup starts at ``lr / warmup_steps`` (never 0, so the first step learns something);
    cosine and linear decay reach ``min_lr_ratio * lr`` at ``max_steps``.
    """
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    span = max(max_steps - config.warmup_steps, 1)
    progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
    floor = config.min_lr_ratio
    if config.schedule == "linear":
        return config.lr * (floor + (1 - floor) * (1 - progress))
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate to ``lr`` times its ``lr_scale`` (1 unless set: layer-wise decay)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
