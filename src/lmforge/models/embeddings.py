"""Input embeddings every family shares: tokens plus learned positions, token and task types, norm,
projection."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.models.norms import make_norm


class Embeddings(nn.Module):
    """Token embeddings plus optional learned positions, token types, norm and a projection.

    ALBERT factorises embeddings: tokens live in ``embedding_size`` and ``project`` maps them to
    ``hidden_size``. RoBERTa counts positions over non-pad tokens, starting at ``position_offset``.
    ERNIE adds a task-type embedding (``task_type_vocab_size``) to tokens, positions and token types.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.embedding_size is not None
        self.config = config
        dim = config.embedding_size
        self.token = nn.Embedding(config.vocab_size, dim)
        self.position = (
            nn.Embedding(config.max_positions + config.position_offset, dim)
            if config.positions == "learned"
            else None
        )
        self.token_type = nn.Embedding(config.type_vocab_size, dim) if config.type_vocab_size else None
        self.task_type = (
            nn.Embedding(config.task_type_vocab_size, dim) if config.task_type_vocab_size else None
        )
        self.norm = make_norm(config, dim) if config.embedding_norm else None
        self.dropout = nn.Dropout(config.embedding_dropout_rate)
        self.project = nn.Linear(dim, config.hidden_size) if dim != config.hidden_size else None

    def learned_position_ids(self, input_ids: Tensor, past: int) -> Tensor:
        config = self.config
        if config.positions_from_padding and config.pad_token_id is not None:
            real = (input_ids != config.pad_token_id).long()
            return (torch.cumsum(real, dim=1) + past) * real + config.position_offset - 1
        length = input_ids.shape[1]
        return torch.arange(past, past + length, device=input_ids.device)[None] + config.position_offset

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        past: int = 0,
        task_type_ids: Tensor | None = None,
    ) -> Tensor:
        """(B, T) ids (and optional (B, T) token-type, position and task-type ids) -> (B, T, H)."""
        x = self.token(input_ids)  # (B, T, E)
        if self.position is not None:
            if position_ids is None:
                position_ids = self.learned_position_ids(input_ids, past)
            x = x + self.position(position_ids)
        if self.token_type is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type(token_type_ids)
        if self.task_type is not None:  # task 0 when none is given, as transformers' ERNIE does
            x = x + self.task_type(
                task_type_ids if task_type_ids is not None else torch.zeros_like(input_ids)
            )
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        return self.project(x) if self.project is not None else x  # (B, T, H)
