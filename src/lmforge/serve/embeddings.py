"""``POST /v1/embeddings``: mean-pooled, L2-normalised last hidden states (sentence-transformers'
recipe for MiniLM and the like), as floats or base64 little-endian float32 as OpenAI sends them."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
import torch

from lmforge.models import TransformerModel, mean_pool
from lmforge.serve.errors import bad_request
from lmforge.serve.schemas import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage
from lmforge.serve.state import ServerState


async def create_embeddings(state: ServerState, body: EmbeddingRequest) -> EmbeddingResponse:
    state.check_model(body.model)
    raw = _inputs(body.input)
    if not raw:
        raise bad_request("input: give at least one text", "input")
    if len(raw) > state.config.max_prompts:
        raise bad_request(
            f"input: {len(raw)} inputs in one request, over this server's limit of {state.config.max_prompts}",
            "input",
        )
    hidden = state.model.config.hidden_size
    if body.dimensions is not None and body.dimensions != hidden:
        raise bad_request(
            f"dimensions: this model's embeddings have {hidden}; other sizes are not supported", "dimensions"
        )
    rows = [
        state.encode(item, param="input" if len(raw) == 1 else f"input[{i}]") for i, item in enumerate(raw)
    ]
    context = state.model.config.max_positions
    longest = max(len(ids) for ids in rows)
    if state.model.config.positions != "relative" and longest > context:
        raise bad_request(
            f"input: {longest} tokens, over this model's context length of {context}",
            "input",
            "context_length_exceeded",
        )
    with state.admitted():
        vectors = await state.backend.run(lambda: embed(state.model, rows, state.tokenizer.pad_token_id or 0))
    data = [
        Embedding(index=index, embedding=_encode(vector, body.encoding_format))
        for index, vector in enumerate(vectors)
    ]
    tokens = sum(len(ids) for ids in rows)
    return EmbeddingResponse(
        data=data, model=state.model_name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )


def embed(model: TransformerModel, rows: Sequence[Sequence[int]], pad_id: int = 0) -> np.ndarray:
    """Unit-length mean-pooled embeddings (N, H) of token-id rows, right-padded into one batch."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, : len(ids)] = 1
    with torch.inference_mode():
        hidden = model.encode(input_ids, mask)  # (N, T, H); the encoder's for encoder-decoder models
        pooled = torch.nn.functional.normalize(mean_pool(hidden.float(), mask), dim=-1)  # (N, H)
    return pooled.cpu().numpy()


def _inputs(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [list(value)]  # type: ignore[arg-type]
    return list(value)  # type: ignore[arg-type]


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
