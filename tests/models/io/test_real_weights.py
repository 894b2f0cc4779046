"""Real weights: SmolLM2-135M (GGUF Q4_1) and all-MiniLM-L6-v2 against transformers."""

from __future__ import annotations

import pytest
import torch
import transformers

import lmforge
from lmforge.assets import asset_path
from lmforge.generate import GenerationConfig, generate
from lmforge.models import mean_pool

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a land far away,",
    "北京是中国的首都，",
]


@pytest.fixture(scope="module")
def smollm2() -> tuple[lmforge.LoadedModel, torch.nn.Module]:
    gguf_file = asset_path("smollm2-135m-instruct")
    ours = lmforge.load(gguf_file)
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    ).eval()
    return ours, reference


@pytest.mark.slow
def test_smollm2_logits_match_transformers_gguf_loader(
    smollm2: tuple[lmforge.LoadedModel, torch.nn.Module],
) -> None:
    ours, reference = smollm2
    assert ours.tokenizer is not None
    for prompt in PROMPTS:
        ids = torch.tensor([ours.tokenizer.encode(prompt)])
        with torch.no_grad():
            expected = reference(input_ids=ids).logits
            actual = ours.model(ids).logits
        assert float((expected - actual).abs().max()) <= 1e-4, prompt


@pytest.mark.slow
def test_smollm2_greedy_continuation_identical(smollm2: tuple[lmforge.LoadedModel, torch.nn.Module]) -> None:
    ours, reference = smollm2
    assert ours.tokenizer is not None
    ids = torch.tensor([ours.tokenizer.encode(PROMPTS[0])])
    expected, step, past = ids, ids, None
    with torch.no_grad():  # greedy in transformers with its own cache, no generate() stopping rules
        for _ in range(32):
            out = reference(input_ids=step, past_key_values=past, use_cache=True)
            step, past = out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values
            expected = torch.cat((expected, step), dim=1)
    expected = expected[0, ids.shape[1] :]
    actual = generate(ours.model, ids, config=GenerationConfig(max_new_tokens=32, ignore_eos=True))[0]
    assert actual.tolist() == expected.tolist()


def test_minilm_hidden_states_and_embeddings_match() -> None:
    model_dir = asset_path("minilm-l6")
    ours = lmforge.load("minilm-l6")
    reference = transformers.AutoModel.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    sentences = [
        "A man is eating food.",
        "Le chat dort.",
        "Transformers are neural networks that",
        "ok",
        "北京",
    ]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
        actual = ours.model(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        ).last_hidden_state
    mask = batch["attention_mask"]
    assert float((expected - actual)[mask.bool()].abs().max()) <= 1e-4
    diff = (mean_pool(expected, mask) - mean_pool(actual, mask)).abs().max()
    assert float(diff) <= 1e-4
