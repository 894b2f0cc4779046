"""``POST /v1/classify``: label probabilities from a fine-tuned sequence classifier, calibrated when
its checkpoint carries a calibrator (``lmforge calibrate --save-into``), MC-dropout predictive
included; the response names the method and also gives the raw (softmax) probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmforge.api import CalibratedModel
from lmforge.calibrate.base import softmax
from lmforge.errors import ConfigError
from lmforge.serve.errors import bad_request
from lmforge.serve.schemas import Classification, ClassifyRequest, ClassifyResponse, EmbeddingUsage
from lmforge.serve.state import ServerState


def label_names(bundle: CalibratedModel, given: list[str] | None) -> list[str]:
    """The classes' names: ``given`` (``--labels``), the fine-tuned checkpoint's ``id2label`` (or a
    transformers directory's), else ``LABEL_i``."""
    count = bundle.config.num_labels
    if given:
        if len(given) != count:
            raise ConfigError(f"labels: {len(given)} names given for a classifier with {count} labels")
        return list(given)
    fine_tuned = bundle.config.extra.get("id2label")  # what `lmforge finetune` records, in class order
    if isinstance(fine_tuned, list) and len(fine_tuned) == count:
        return [str(name) for name in fine_tuned]
    try:  # a transformers directory's config.json
        saved = json.loads((Path(bundle.source) / "config.json").read_text(encoding="utf-8")).get("id2label")
    except (OSError, ValueError, AttributeError):
        saved = None
    if isinstance(saved, dict) and len(saved) == count:
        return [str(saved.get(str(i), saved.get(i, f"LABEL_{i}"))) for i in range(count)]
    return [f"LABEL_{i}" for i in range(count)]


async def create_classification(state: ServerState, body: ClassifyRequest) -> ClassifyResponse:
    state.check_model(body.model)
    bundle = state.classifier
    if bundle is None:
        raise bad_request(
            f"the model {state.model_name!r} (head {state.model.config.head!r}) is not a sequence "
            "classifier; /v1/classify needs one (lmforge finetune)",
            "model",
        )
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise bad_request("input: give at least one text", "input")
    if len(texts) > state.config.max_prompts:
        raise bad_request(
            f"input: {len(texts)} texts in one request, over this server's limit of {state.config.max_prompts}",
            "input",
        )
    rows = [
        state.encode(text, param="input" if len(texts) == 1 else f"input[{i}]")
        for i, text in enumerate(texts)
    ]
    longest, context = max(len(r) for r in rows), state.model.config.max_positions
    if longest > context:
        raise bad_request(
            f"input: {longest} tokens, over this model's context length of {context}",
            "input",
            "context_length_exceeded",
        )

    def predict() -> tuple[np.ndarray, np.ndarray]:
        raw = softmax(bundle.logits(rows))
        calibrated = bundle.predict_proba(rows) if bundle.calibrator is not None else raw
        return raw, calibrated

    with state.admitted():
        raw, calibrated = await state.backend.run(predict)
    names = state.label_names
    data = [
        Classification(
            index=index,
            label=names[int(np.argmax(p))],
            probs=dict(zip(names, map(float, p), strict=True)),
            raw_probs=dict(zip(names, map(float, r), strict=True)),
        )
        for index, (p, r) in enumerate(zip(calibrated, raw, strict=True))
    ]
    method = bundle.calibrator.method if bundle.calibrator is not None else "none"
    tokens = sum(len(r) for r in rows)
    return ClassifyResponse(
        model=state.model_name,
        calibration=method,
        predictive=bundle.predictive,
        data=data,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
