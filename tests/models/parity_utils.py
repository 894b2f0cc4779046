"""Build the same tiny model in lmforge and transformers, copying weights through our converter."""

from __future__ import annotations

import torch
import transformers

from lmforge.config import ModelConfig
from lmforge.models import TransformerModel, family
from lmforge.models.io.convert import import_weights


def hf_twin(config: ModelConfig, seed: int = 0) -> tuple[torch.nn.Module, TransformerModel]:
    """A random transformers model for ``config`` and an lmforge model loaded from its weights."""
    spec = family(config.family)
    torch.manual_seed(seed)
    hf_config = transformers.AutoConfig.for_model(**spec.hf_config(config))
    hf_model = getattr(transformers, spec.hf_architectures[config.head])(hf_config).eval()
    ours = TransformerModel(config).eval()
    weights = import_weights(hf_model.state_dict(), spec.hf_weight_rules(config), ours.state_dict(), "hf")
    missing, _ = ours.load_state_dict(weights, strict=False)
    tied = {"lm_head.decoder.weight"} if config.tie_embeddings else set()
    assert set(missing) <= tied, f"weights not imported: {missing}"
    return hf_model, ours


def padded_batch(
    vocab_size: int, lengths: list[int], seed: int = 0, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random ids (B, T) and their attention mask; ids avoid ``pad_id``."""
    generator = torch.Generator().manual_seed(seed)
    length = max(lengths)
    ids = torch.randint(pad_id + 1, vocab_size, (len(lengths), length), generator=generator)
    mask = (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, pad_id), mask


def max_diff_on_real_tokens(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Largest absolute difference, over real (unpadded) positions for per-token outputs."""
    if a.dim() >= 3 and mask is not None:
        return float((a - b)[mask.bool()].abs().max())
    return float((a - b).abs().max())


def head_output(output: object, head: str) -> torch.Tensor:
    """The tensor a head's output is compared on: QA start/end logits stacked, the base model's
    hidden states, else the logits (lmforge's and transformers' outputs name them alike)."""
    if head == "question_answering":
        return torch.stack([output.start_logits, output.end_logits], dim=-1)  # type: ignore[attr-defined]
    if head == "base":
        return output.last_hidden_state  # type: ignore[attr-defined]
    return output.logits  # type: ignore[attr-defined]
