"""The position-wise feed-forward block and the activations it (and the MLM head) can use."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.config import ModelConfig

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class MLP(nn.Module):
    """Position-wise feed-forward: ``down(act(up(x)))``, or gated ``down(act(gate(x)) * up(x))``.

    T5 also drops out the inner activation (``config.mlp_dropout``); GPT-2, BERT and Llama apply
    dropout only to the block's residual branch (ALBERT not even there), as their reference
    implementations do.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(hidden, inner, bias=bias) if config.gated_mlp else None
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        self.act = ACTIVATIONS[config.activation]
        self.dropout = nn.Dropout(config.dropout) if config.mlp_dropout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_proj is not None:
            return self.down_proj(self.dropout(self.act(self.gate_proj(x)) * self.up_proj(x)))
        return self.down_proj(self.dropout(self.act(self.up_proj(x))))
