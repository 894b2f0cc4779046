"""Constrained decoding: a random model's sampled text follows the grammar (JSON schema, regex,
choice) in the engine and in the continuous batcher, where constrained and free rows share a batch."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("llguidance")

sys.path.insert(0, str(Path(__file__).parent))
from schema_check import validate  # noqa: E402
from scripted import byte_bpe  # noqa: E402

from lmforge.errors import ConfigError  # noqa: E402
from lmforge.generate import GenerationConfig, generate_detailed  # noqa: E402
from lmforge.generate.batch import BatchDecoder  # noqa: E402
from lmforge.generate.constrain import Grammar, mask_logits  # noqa: E402
from lmforge.models import TransformerModel, preset_config  # noqa: E402
from lmforge.tokenizers import Tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "你好"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "ok"],
    "additionalProperties": False,
}
REGEX = r"[0-9]{3}-[a-z]{2,4}(\.[A-Z])?"
CHOICES = ["yes", "no", "maybe so", "你好🙂"]
SEEDS = range(5)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return byte_bpe()


@pytest.fixture(scope="module")
def model(tokenizer: Tokenizer) -> TransformerModel:
    """A tiny random Llama (logits widened past the tokenizer's vocabulary, as padded embeddings are)
    whose sampled text is garbage: without the constraint nothing below would parse."""
    torch.manual_seed(0)
    config = preset_config(
        "llama-tiny",
        head="causal_lm",
        vocab_size=tokenizer.vocab_size + 20,
        num_layers=2,
        eos_token_id=tokenizer.eos_token_id,
        max_positions=512,
    )
    model = TransformerModel(config).eval()
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0.0, 0.2)
    return model


def _prompt(tokenizer: Tokenizer) -> torch.Tensor:
    return torch.tensor([tokenizer.encode("Hello world, the", add_special_tokens=False)])


def _texts(model: TransformerModel, tokenizer: Tokenizer, config: GenerationConfig) -> list[tuple[str, str]]:
    output = generate_detailed(model, _prompt(tokenizer), config=config)
    return [
        (tokenizer.decode(sequence), reason)
        for sequence, reason in zip(output.sequences, output.finish_reasons, strict=True)
    ]


def _sampling(seed: int, grammar: Grammar | None, **kwargs: Any) -> GenerationConfig:
    fields: dict[str, Any] = {"max_new_tokens": 160, "temperature": 1.0, **kwargs}
    return GenerationConfig(seed=seed, constraint=grammar, **fields)


def test_without_the_constraint_the_random_model_writes_no_json(model, tokenizer):
    for seed in SEEDS:
        text, _ = _texts(model, tokenizer, _sampling(seed, None, max_new_tokens=40))[0]
        with pytest.raises(ValueError):
            json.loads(text)


@pytest.mark.parametrize("seed", SEEDS)
def test_json_schema_sampled_text_parses_and_validates(model, tokenizer, seed):
    grammar = Grammar.json_schema(tokenizer, SCHEMA, vocab_size=model.config.vocab_size)
    text, reason = _texts(model, tokenizer, _sampling(seed, grammar))[0]
    assert reason == "stop"
    validate(SCHEMA, json.loads(text))


def test_json_object_and_n_samples(model, tokenizer):
    grammar = Grammar.json_object(tokenizer, vocab_size=model.config.vocab_size)
    config = _sampling(3, grammar, n=3, max_new_tokens=300, top_k=50)
    results = _texts(model, tokenizer, config)
    assert len(results) == 3
    for text, reason in results:
        if reason == "stop":  # an open-ended object may run out of tokens; a finished one parses
            assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("seed", SEEDS)
def test_regex_output_fullmatches(model, tokenizer, seed):
    grammar = Grammar.regex(tokenizer, REGEX, vocab_size=model.config.vocab_size)
    text, reason = _texts(model, tokenizer, _sampling(seed, grammar))[0]
    assert re.fullmatch(REGEX, text), text
    assert reason == "stop"


@pytest.mark.parametrize("seed", SEEDS)
def test_choice_output_is_one_of_the_choices(model, tokenizer, seed):
    grammar = Grammar.choice(tokenizer, CHOICES, vocab_size=model.config.vocab_size)
    text, reason = _texts(model, tokenizer, _sampling(seed, grammar))[0]
    assert text in CHOICES and reason == "stop"


def test_greedy_and_logprobs_under_a_constraint(model, tokenizer):
    grammar = Grammar.json_schema(tokenizer, SCHEMA, vocab_size=model.config.vocab_size)
    config = GenerationConfig(max_new_tokens=160, constraint=grammar, logprobs=True, top_logprobs=3)
    output = generate_detailed(model, _prompt(tokenizer), config=config)
    validate(SCHEMA, json.loads(tokenizer.decode(output.sequences[0])))
    assert output.logprobs is not None
    assert all(value > float("-inf") for value in output.logprobs[0])  # the model's, not the mask's


def test_stop_tokens_only_where_the_grammar_accepts(model, tokenizer):
    """A regex that ends only after "ab": before it EOS is masked; after "a" or "ab" it is allowed
    exactly when the text so far is complete."""
    grammar = Grammar.regex(tokenizer, "a+b?", vocab_size=model.config.vocab_size)
    eos = tokenizer.eos_token_id
    assert eos is not None
    row = grammar.start([eos])
    vocab = model.config.vocab_size
    assert not row.allowed(vocab)[eos]  # nothing yet: "" does not match
    a = tokenizer.encode("a", add_special_tokens=False)
    assert len(a) == 1
    row.advance(a[0])
    allowed = row.allowed(vocab)
    assert allowed[eos] and allowed[a[0]]
    assert not allowed[tokenizer.vocab_size :].any()  # ids past the tokenizer are never text
    logits = torch.zeros(2, vocab)
    masked = mask_logits(logits, [row, None])
    assert torch.equal(masked[0] == 0, allowed) and bool((masked[1] == 0).all())


def test_batched_constrained_and_free_rows(model, tokenizer):
    """One batch: JSON, regex and choice rows sampled, a greedy JSON row, and free rows; each
    constrained row parses, each free row is exactly what it gets decoded alone."""
    vocab = model.config.vocab_size
    schema = Grammar.json_schema(tokenizer, SCHEMA, vocab_size=vocab)
    regex = Grammar.regex(tokenizer, REGEX, vocab_size=vocab)
    choice = Grammar.choice(tokenizer, CHOICES, vocab_size=vocab)
    prompt = _prompt(tokenizer)[0].tolist()
    free = GenerationConfig(max_new_tokens=12, temperature=0.0)
    free_sampled = GenerationConfig(max_new_tokens=12, temperature=1.0, seed=7)
    requests = {
        "json": _sampling(1, schema),
        "greedy-json": GenerationConfig(max_new_tokens=160, constraint=schema),
        "free": free,
        "regex": _sampling(2, regex),
        "free-sampled": free_sampled,
        "choice": _sampling(3, choice),
    }
    decoder = BatchDecoder(model, max_batch=4)
    names = {decoder.add(prompt, config): name for name, config in requests.items()}
    tokens: dict[str, list[int]] = {name: [] for name in requests}
    reasons: dict[str, str] = {}
    while decoder.has_work():
        for request_id, step in decoder.step():
            tokens[names[request_id]] += step.tokens[0]
            if step.finished[0] is not None:
                reasons[names[request_id]] = step.finished[0]
    text = {name: tokenizer.decode(ids) for name, ids in tokens.items()}
    validate(SCHEMA, json.loads(text["json"]))
    validate(SCHEMA, json.loads(text["greedy-json"]))
    assert re.fullmatch(REGEX, text["regex"]) and text["choice"] in CHOICES
    for name in ("json", "greedy-json", "regex", "choice"):
        assert reasons[name] == "stop"
    # free rows: unaffected by their constrained neighbours
    for name, config in (("free", free), ("free-sampled", free_sampled)):
        alone = generate_detailed(model, _prompt(tokenizer), config=config).sequences[0]
        assert tokens[name] == alone
    # greedy under a constraint: the same tokens alone and batched
    alone = generate_detailed(model, _prompt(tokenizer), config=requests["greedy-json"]).sequences[0]
    assert tokens["greedy-json"] == alone


def test_bad_grammars_are_config_errors_with_the_reason(tokenizer):
    with pytest.raises(ConfigError, match="does not exist"):
        Grammar.json_schema(tokenizer, {"type": "object", "properties": {"a": {"$ref": "#/nope"}}})
    with pytest.raises(ConfigError, match="strin"):
        Grammar.json_schema(tokenizer, {"type": "strin"})
    with pytest.raises(ConfigError, match="unclosed group"):
        Grammar.regex(tokenizer, "a(b")
    with pytest.raises(ConfigError, match="choices"):
        Grammar.choice(tokenizer, [])


def test_constraint_refuses_decoding_modes_it_cannot_steer(tokenizer):
    grammar = Grammar.regex(tokenizer, "a+")
    with pytest.raises(ConfigError, match="num_beams"):
        GenerationConfig(num_beams=2, constraint=grammar)
    with pytest.raises(ConfigError, match="min_new_tokens"):
        GenerationConfig(min_new_tokens=2, constraint=grammar)
    with pytest.raises(ConfigError, match="constraint must be"):
        GenerationConfig(constraint="a+")  # type: ignore[arg-type]
    config = GenerationConfig(constraint=grammar)
    assert dataclasses.replace(config, seed=1).constraint is grammar
