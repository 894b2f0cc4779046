"""Seq2seq fine-tuning: target masking, greedy decoding, `lmforge finetune/evaluate --task seq2seq` on a
tiny random T5 with a Unigram tokenizer trained here on English and Japanese lines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import lmforge
from lmforge.cli import app
from lmforge.data.seq2seq import Seq2SeqData, Seq2SeqExample
from lmforge.generate import GenerationConfig, generate
from lmforge.models import TransformerModel, preset_config
from lmforge.tasks.seq2seq import Seq2SeqLoss, greedy_decode, make_seq2seq_split
from lmforge.tokenizers import Tokenizer
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer
from lmforge.train.finetune import FinetuneConfig, finetune_model

runner = CliRunner()
# A toy en -> ja lexicon: each English word has one Japanese rendering, in the same order.
LEXICON = {
    "god": "神",
    "light": "光",
    "water": "水",
    "earth": "地",
    "heaven": "天",
    "man": "人",
    "day": "日",
    "night": "夜",
    "saw": "見",
    "made": "造",
    "good": "善",
    "king": "王",
}


def pairs(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    words = sorted(LEXICON)
    rows = []
    for _ in range(n):
        # Distinct words: a 2-layer model trained briefly miscounts repeats ("日日" -> "日").
        sentence = rng.sample(words, rng.randrange(2, 5))
        rows.append({"source": " ".join(sentence), "target": "".join(LEXICON[w] for w in sentence) + "なり"})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    rows = pairs(60, 0)
    return train_tokenizer(
        [t for r in rows for t in (r["source"], r["target"])],
        TokenizerTrainConfig("unigram", 160, family="t5"),
    )


def tiny_t5(tokenizer: Tokenizer, seed: int = 0) -> TransformerModel:
    torch.manual_seed(seed)
    config = preset_config(
        "t5-tiny",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        dropout=0.0,
    )
    return TransformerModel(config)


def test_padded_targets_do_not_count(tokenizer: Tokenizer) -> None:
    model = tiny_t5(tokenizer).eval()
    rows = [{"source": "god made light", "target": "神造光なり"}, {"source": "man", "target": "人"}]
    data = Seq2SeqData([Seq2SeqExample(r["source"], r["target"]) for r in rows])
    split = make_seq2seq_split(data, tokenizer, 32, 32)
    batch = {
        k: torch.from_numpy(v)
        for k, v in split.source.collate(np.arange(2), np.random.default_rng(0)).items()
    }
    short = len(split.source.encoded[1]["target_ids"])
    assert (batch["labels"][1, short:] == -100).all() and (batch["labels"][1, :short] >= 0).all()
    assert batch["labels"][0, -1] == tokenizer.eos_token_id  # targets end with </s>

    loss_module = Seq2SeqLoss(model)
    loss, logits = loss_module(batch)
    # Reference: each example alone, unpadded, decoder input = start token + target[:-1].
    total, count = 0.0, 0
    for item in split.source.encoded:
        source, target = torch.tensor([item["input_ids"]]), torch.tensor([item["target_ids"]])
        decoder_input = torch.cat((torch.zeros(1, 1, dtype=torch.long), target[:, :-1]), dim=1)
        out = model(source, torch.ones_like(source), decoder_input_ids=decoder_input).logits
        total += F.cross_entropy(out[0], target[0], reduction="sum").item()
        count += target.shape[1]
    torch.testing.assert_close(loss.item(), total / count, rtol=1e-5, atol=1e-6)
    # Garbage at padded positions changes nothing: the loss only reads real target tokens.
    noisy = dict(batch, input_ids=batch["input_ids"].clone())
    noisy["input_ids"][batch["attention_mask"] == 0] = 5
    torch.testing.assert_close(loss_module(noisy)[0], loss)


def _random_t5_batch() -> tuple[TransformerModel, torch.Tensor, torch.Tensor, list[int]]:
    """A tiny T5 with large random weights (its greedy choices differ per source and step) and
    four right-padded sources of different lengths."""
    torch.manual_seed(3)
    config = preset_config(
        "t5-tiny", vocab_size=48, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout=0.0
    )
    model = TransformerModel(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    lengths = [5, 9, 2, 7]
    ids, mask = torch.zeros(4, 9, dtype=torch.long), torch.zeros(4, 9, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(2, 48, (length,), generator=generator)
        mask[row, :length] = 1
    return model, ids, mask, lengths


# What the train stage's own greedy decoder produced on that batch before it was replaced by
# lmforge.generate (torch 2.13, CPU); row 3 reaches EOS (1) at step 5.
GREEDY_BEFORE = [
    [35, 5, 35, 5, 35, 5, 5, 5, 35, 5],
    [35, 47, 47, 47, 5, 47, 47, 5, 35, 5],
    [35, 35, 47, 40, 35, 7, 35, 47, 35, 47],
    [36, 22, 22, 22, 1, 12, 9, 22, 22, 22],
]


def test_seq2seq_greedy_decoding_is_the_generate_decoder() -> None:
    model, ids, mask, lengths = _random_t5_batch()
    no_stop = generate(model, ids, mask, GenerationConfig(max_new_tokens=10, ignore_eos=True))
    assert no_stop.tolist() == GREEDY_BEFORE
    # With the model's EOS, a finished row repeats EOS while the others go on.
    stopped = greedy_decode(model, ids, mask, max_new_tokens=10)
    assert stopped.tolist() == GREEDY_BEFORE[:3] + [GREEDY_BEFORE[3][:5] + [1] * 5]
    # The batch decodes as each source would alone, unpadded; alone, row 3 stops at its EOS.
    alone = [
        greedy_decode(model, ids[r : r + 1, :n], mask[r : r + 1, :n], 10)[0] for r, n in enumerate(lengths)
    ]
    assert [a.tolist() for a in alone] == GREEDY_BEFORE[:3] + [GREEDY_BEFORE[3][:5]]


def test_finetune_learns_toy_translation(tokenizer: Tokenizer, tmp_path: Path) -> None:
    """Eight pairs, seen many times: greedy decoding reproduces every target."""
    rows = pairs(8, 1)
    data = Seq2SeqData([Seq2SeqExample(r["source"], r["target"]) for r in rows], target_language="ja")
    split = make_seq2seq_split(data, tokenizer, 16, 16, seed=0)
    # Compare with what the tokenizer can write: its training drops the rarest characters (they
    # become <unk>), and which ones varies, as the Unigram trainer is not deterministic.
    split.references = [tokenizer.decode(tokenizer.encode(r["target"])) for r in rows]
    model = tiny_t5(tokenizer, seed=2)
    config = FinetuneConfig(
        task="seq2seq", batch_size=8, max_steps=300, eval_every=100, metric="exact_match",
        max_target_length=16, progress=False, threads=1,
    )  # fmt: skip
    config.optim.lr = 3e-3
    report = finetune_model(
        model,
        tokenizer,
        split,
        tmp_path / "run",
        config,
        [],
        validation=split,
    )
    assert report["best"]["exact_match"] == 1.0, report["best"]  # untrained: 0
    assert report["best"]["loss"] < 1.0  # untrained: about ln(160) = 5


def test_finetune_and_evaluate_cli(tokenizer: Tokenizer, tmp_path: Path) -> None:
    init = tmp_path / "init"
    lmforge.save(tiny_t5(tokenizer), init, tokenizer)
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"en": r["source"], "ja": r["target"]} for r in pairs(40, 2)]
    )
    val = write_jsonl(tmp_path / "val.jsonl", [{"en": r["source"], "ja": r["target"]} for r in pairs(10, 3)])
    run = tmp_path / "run"
    columns = ["--source-column", "en", "--target-column", "ja"]
    result = runner.invoke(
        app,
        ["finetune", "--task", "seq2seq", "--model", str(init), "--data", str(train), "--validation", str(val),
         "--out", str(run), "--max-steps", "8", "--eval-every", "4", "--batch-size", "8", "--lr", "1e-2",
         "--max-target-length", "12", "--eval-limit", "6", "--threads", "1", "--augment", "swap", *columns],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((run / "report.json").read_text())
    assert report["steps"] == 8 and report["validation_examples"] == 6
    assert report["augmented"] == 40  # one swapped copy of each training source
    assert {"chrf", "bleu", "loss"} <= set(report["best"]) and report["best"]["bleu_tokenize"] == "char"
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals if e["kind"] == "eval"] == [4, 8]
    loaded = lmforge.load(run)
    assert loaded.config.head == "seq2seq_lm" and loaded.config.extra["max_target_length"] == 12

    out = tmp_path / "eval"
    result = runner.invoke(
        app, ["evaluate", "--model", str(run), "--data", str(val), "--out", str(out), *columns]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 10 and metrics["num_examples"] == 10
    assert rows[0]["source"] == pairs(10, 3)[0]["source"] and rows[0]["id"] == 0
    predictions, references = [r["prediction"] for r in rows], [r["reference"] for r in rows]
    assert metrics["bleu_tokenize"] == "char" and "rouge1" not in metrics
    expected_bleu = sacrebleu.corpus_bleu(predictions, [references], tokenize="char").score
    assert metrics["bleu"] == pytest.approx(expected_bleu)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, [references]).score)


def test_finetune_rejects_a_decoder_only_model(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "train.jsonl", pairs(4, 0))
    tokenizer = train_tokenizer(["a b c d e f g"] * 4, TokenizerTrainConfig("bpe", 300))
    lmforge.save(
        TransformerModel(preset_config("gpt2-tiny", vocab_size=len(tokenizer))), tmp_path / "gpt", tokenizer
    )
    result = runner.invoke(
        app,
        ["finetune", "--task", "seq2seq", "--model", str(tmp_path / "gpt"), "--data", str(rows),
         "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "encoder-decoder" in str(result.exception) or "encoder-decoder" in result.output


def test_length_buckets_cover_each_example_once(tokenizer: Tokenizer) -> None:
    rows = pairs(48, 4)
    data = Seq2SeqData([Seq2SeqExample(r["source"], r["target"]) for r in rows])
    plain = make_seq2seq_split(data, tokenizer, 32, 32, seed=3).source
    bucketed = make_seq2seq_split(data, tokenizer, 32, 32, seed=3, bucket_batches=3).source

    def padded(batch: dict[str, np.ndarray]) -> int:
        return int(batch["input_ids"].size + batch["labels"].size)

    seen, cost, plain_cost = [], 0, 0
    for step in range(6):  # 6 batches of 8 = one epoch
        batch = bucketed.train_batch(step, 8)
        assert all(np.array_equal(batch[k], bucketed.train_batch(step, 8)[k]) for k in batch)  # deterministic
        seen += [tuple(r[r >= 0]) for r in batch["labels"]]
        cost, plain_cost = cost + padded(batch), plain_cost + padded(plain.train_batch(step, 8))
    expected = sorted(tuple(e["target_ids"]) for e in bucketed.encoded)
    assert sorted(seen) == expected  # every pair once per epoch, as without buckets
    assert cost < plain_cost
