"""Task heads on top of the Transformer stack: LM, masked LM, NSP/SOP, classification, QA."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.models.mlp import ACTIVATIONS
from lmforge.models.norms import make_norm


class Pooler(nn.Module):
    """Dense + tanh over the pooled token (BERT / ALBERT pooler, RoBERTa classification head).

    RoBERTa's classification head also drops out its input (``config.pooler_dropout``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout_rate) if config.pooler_dropout else nn.Identity()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, pooled: Tensor) -> Tensor:
        return torch.tanh(self.dense(self.dropout(pooled)))


def pool(
    hidden: Tensor, config: ModelConfig, attention_mask: Tensor | None, input_ids: Tensor | None
) -> Tensor:
    """Pick one vector per sequence from ``hidden`` (B, T, H): the first token, or the last real one.

    The last real token comes from ``attention_mask`` when given, else from ``pad_token_id``.
    """
    if config.pooling == "cls":
        return hidden[:, 0]
    batch, length = hidden.shape[:2]
    positions = torch.arange(length, device=hidden.device)
    if attention_mask is not None:
        real = attention_mask.bool()
    elif input_ids is not None and config.pad_token_id is not None:
        real = input_ids != config.pad_token_id
    else:
        real = torch.ones(batch, length, dtype=torch.bool, device=hidden.device)
    last = (positions * real).argmax(-1)  # (B,)
    return hidden[torch.arange(batch, device=hidden.device), last]


def mean_pool(hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Average of token vectors over real tokens (sentence embeddings): (B, T, H) -> (B, H)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class LMHead(nn.Module):
    """Projection to the vocabulary, optionally preceded by BERT's dense + act + norm transform.

    The decoder weight is tied to the token embedding when ``config.tie_embeddings`` (done by
    the model, which owns both).
    """

    def __init__(self, config: ModelConfig, masked: bool) -> None:
        super().__init__()
        assert config.embedding_size is not None
        self.transform = masked and config.mlm_transform
        dim = config.embedding_size if masked else config.hidden_size
        if self.transform:
            self.dense = nn.Linear(config.hidden_size, dim)
            self.act = ACTIVATIONS[config.activation]
            self.norm = make_norm(config, dim)
        tied_scale = config.scale_tied_lm_head and config.tie_embeddings
        self.scale = config.hidden_size**-0.5 if tied_scale else 1.0
        self.decoder = nn.Linear(dim, config.vocab_size, bias=masked)

    def features(self, hidden: Tensor) -> Tensor:
        """What the vocabulary projection sees: (..., H) -> (..., E); training fuses the projection
        with the loss (``lmforge.tasks.losses``)."""
        if self.transform:
            hidden = self.norm(self.act(self.dense(hidden)))
        if self.scale != 1.0:
            hidden = hidden * self.scale
        return hidden

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.features(hidden))  # (B, T, V)


class Classifier(nn.Module):
    """Dropout (``config.classifier_dropout_rate``; none with ``dropout=False``) + a linear layer
    mapping hidden vectors to ``out`` scores."""

    def __init__(self, config: ModelConfig, out: int, bias: bool = True, dropout: bool = True) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout_rate) if dropout else nn.Identity()
        self.linear = nn.Linear(config.hidden_size, out, bias=bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.linear(self.dropout(hidden))
