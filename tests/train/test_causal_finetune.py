"""Causal-LM fine-tuning (``--task lm|chat``): assistant-only label masks, the shifted loss, LoRA SFT
end to end through the CLI, and ``lmforge evaluate`` perplexity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as Backend
from typer.testing import CliRunner

import lmforge
from lmforge.errors import ConfigError
from lmforge.models import TransformerModel, preset_config
from lmforge.tasks.causal import (
    IGNORE_INDEX,
    assistant_spans,
    causal_lm_loss,
    encode_chat_example,
    encode_lm,
    shifted_nll,
)
from lmforge.tokenizers import Tokenizer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Six, of course."},
]
CORPUS = [
    "What is two plus two? Four. And three plus three? Six, of course.",
    "The cat sat on the mat. The dog ran in the park. Be brief and kind.",
] * 4


def _tokenizer(template: str = CHATML) -> Tokenizer:
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    backend.add_special_tokens([AddedToken(t, special=True) for t in specials])
    return Tokenizer(
        backend,
        special_tokens={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": "<|im_start|>"},
        chat_template=template,
    )


def _scored_runs(tokenizer: Tokenizer, item: dict[str, list[int]]) -> list[str]:
    """Decoded maximal runs of scored tokens; also checks that each scored label is its input id."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(item["input_ids"], item["labels"]):
        scored = label != IGNORE_INDEX
        if scored:
            assert label == token
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = scored
    return [tokenizer.decode(run, skip_special_tokens=False) for run in runs]


def test_chatml_masks_cover_exactly_assistant_content_and_end_token() -> None:
    tokenizer = _tokenizer()
    item = encode_chat_example(tokenizer, CONVERSATION, 512)
    assert item is not None
    assert _scored_runs(tokenizer, item) == ["Four.<|im_end|>", "Six, of course.<|im_end|>"]
    # token-exact: the scored ids are the content's ids followed by the end token's id
    end = tokenizer.backend.token_to_id("<|im_end|>")
    scored = [t for t, label in zip(item["input_ids"], item["labels"]) if label != IGNORE_INDEX]
    expected = (
        tokenizer.encode("Four.", add_special_tokens=False)
        + [end]
        + tokenizer.encode("Six, of course.", add_special_tokens=False)
        + [end]
    )
    assert scored == expected


def test_template_with_trim_and_prefixed_headers() -> None:
    template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] | trim }}\n"
        "{% elif m['role'] == 'assistant' %}BOT: {{ m['content'] | trim }}{{ eos_token }}\n"
        "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}BOT: {% endif %}"
    )
    tokenizer = _tokenizer(template)
    messages = [dict(m) for m in CONVERSATION]
    messages[2]["content"] = "  Four.  "
    item = encode_chat_example(tokenizer, messages, 512)
    assert item is not None
    assert _scored_runs(tokenizer, item) == ["Four.<|im_end|>", "Six, of course.<|im_end|>"]


def test_template_that_rewrites_content_is_refused() -> None:
    tokenizer = _tokenizer(CHATML.replace("m['content']", "m['content'] | upper"))
    with pytest.raises(ConfigError, match="assistant message 2"):
        assistant_spans(tokenizer, CONVERSATION)


def test_truncation_keeps_whole_turns() -> None:
    tokenizer = _tokenizer()
    full = encode_chat_example(tokenizer, CONVERSATION, 512)
    first = encode_chat_example(tokenizer, CONVERSATION[:3], 512)
    assert full is not None and first is not None
    # the last turn's trailing newline may go; its end token too: cut after the first assistant turn
    assert _scored_runs(
        tokenizer, encode_chat_example(tokenizer, CONVERSATION, len(full["input_ids"]) - 1)
    ) == [
        "Four.<|im_end|>",
        "Six, of course.<|im_end|>",
    ]
    cut = encode_chat_example(tokenizer, CONVERSATION, len(full["input_ids"]) - 2)
    assert cut is not None
    assert _scored_runs(tokenizer, cut) == ["Four.<|im_end|>"]
    assert cut["input_ids"] == first["input_ids"][: len(cut["input_ids"])]
    assert tokenizer.decode(cut["input_ids"], skip_special_tokens=False).endswith("Four.<|im_end|>")
    # nothing of an assistant turn fits: dropped
    assert encode_chat_example(tokenizer, CONVERSATION, 5) is None


def test_smollm2_template_masks() -> None:
    from lmforge.assets import asset_path
    from lmforge.errors import AssetMissingError
    from lmforge.models.io.gguf import read_gguf

    try:
        path = asset_path("smollm2-135m-instruct")
    except AssetMissingError:
        pytest.skip("smollm2-135m-instruct asset not installed")
    tokenizer = Tokenizer.from_gguf(read_gguf(path).metadata)
    messages = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! 你好"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    item = encode_chat_example(tokenizer, messages, 512)
    assert item is not None
    assert _scored_runs(tokenizer, item) == ["Hello! 你好<|im_end|>", "4<|im_end|>"]
    text = tokenizer.decode(item["input_ids"], skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_lm_windows_score_every_token() -> None:
    tokenizer = _tokenizer()
    encoded = encode_lm(tokenizer, [CORPUS[0]], 8)
    ids = tokenizer.encode(CORPUS[0]) + [tokenizer.eos_token_id]
    assert [t for item in encoded for t in item["input_ids"]] == ids
    assert all(
        item["labels"][0] == IGNORE_INDEX and item["labels"][1:] == item["input_ids"][1:] for item in encoded
    )


def test_shifted_loss_matches_reference() -> None:
    torch.manual_seed(0)
    logits, ids = torch.randn(2, 6, 11), torch.randint(0, 11, (2, 6))
    labels = ids.clone()
    labels[:, :2] = IGNORE_INDEX
    labels[1, 5] = IGNORE_INDEX
    nll, count = shifted_nll(logits, labels)
    manual = [
        -torch.log_softmax(logits[b, t - 1], -1)[ids[b, t]]
        for b in range(2)
        for t in range(1, 6)
        if labels[b, t] != IGNORE_INDEX
    ]
    assert count.tolist() == [4, 3]
    assert float(nll.sum()) == pytest.approx(float(sum(manual)), rel=1e-5)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert float(causal_lm_loss(logits, labels)) == pytest.approx(float(expected), rel=1e-5)


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = _tokenizer()
    torch.manual_seed(0)
    config = preset_config(
        "llama-tiny", head="causal_lm", vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=2,
        num_heads=2, num_kv_heads=1, intermediate_size=64, max_positions=128,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("models") / "llama"
    lmforge.save(TransformerModel(config), path, tokenizer)
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_chat_lora_sft_cli_end_to_end(tiny_llama: Path, tmp_path: Path) -> None:
    from lmforge.cli import app

    pairs = [
        {"prompt": "What is two plus two?", "response": "Four."},
        {"instruction": "Add three and three.", "input": "", "output": "Six, of course."},
        {"messages": CONVERSATION},
    ]
    train = _write_jsonl(tmp_path / "train.jsonl", pairs * 4)
    val = _write_jsonl(tmp_path / "val.jsonl", pairs)
    run = tmp_path / "run"
    args = ["finetune", "--task", "chat", "--model", str(tiny_llama), "--data", str(train)]
    args += ["--validation", str(val), "--out", str(run), "--max-steps", "24", "--batch-size", "4"]
    args += [
        "--lr",
        "3e-2",
        "--lora-rank",
        "4",
        "--eval-every",
        "8",
        "--schedule",
        "constant",
        "--threads",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "report.json").read_text())
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert len(evals) == 3 and evals[-1]["loss"] < evals[0]["loss"]
    assert report["best"]["perplexity"] == pytest.approx(math.exp(report["best"]["loss"]), rel=1e-4)
    # merged on save: a plain model, q_proj changed by the adapters, k_proj untouched
    tuned, base = lmforge.load(run), lmforge.load(tiny_llama)
    assert not any("lora" in n for n, _ in tuned.model.named_parameters())
    assert tuned.config.extra["task"] == "chat"
    tuned_params, base_params = dict(tuned.model.named_parameters()), dict(base.model.named_parameters())
    q = next(n for n in tuned_params if n.endswith("q_proj.weight"))
    k = next(n for n in tuned_params if n.endswith("k_proj.weight"))
    assert not torch.equal(tuned_params[q], base_params[q])
    assert torch.equal(tuned_params[k], base_params[k])

    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--model", str(run), "--data", str(val), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["loss"] == pytest.approx(report["best"]["loss"], rel=1e-4)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-6)


def test_lm_loss_falls_on_repeated_text(tiny_llama: Path, tmp_path: Path) -> None:
    from lmforge.train import OptimConfig
    from lmforge.train.finetune import FinetuneConfig
    from lmforge.train.finetune_run import run_finetune

    text = tmp_path / "train.txt"
    text.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    config = FinetuneConfig(
        task="lm", max_length=32, batch_size=4, max_steps=30, eval_every=10, metric="perplexity",
        optim=OptimConfig(lr=1e-2, schedule="constant"), progress=False, threads=1,
    )  # fmt: skip
    report = run_finetune(tiny_llama, text, tmp_path / "run", config, validation=text)
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in evals if r["kind"] == "eval"]
    assert losses[-1] < 0.6 * losses[0], losses
    assert report["best"]["step"] == 30


def test_augmented_copies_only_in_the_train_split(tiny_llama: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lmforge.cli import app
    from lmforge.train import finetune_run

    rows = [{"prompt": f"please say the number {n} twice", "response": f"{n} {n}"} for n in range(5)]
    train = _write_jsonl(tmp_path / "train.jsonl", rows)
    run = tmp_path / "run"
    args = ["finetune", "--task", "chat", "--model", str(tiny_llama), "--data", str(train), "--validation"]
    args += [str(train), "--out", str(run), "--max-steps", "1", "--augment", "deletion,swap"]
    args += ["--augment-copies", "2", "--augment-prob", "0.3", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "report.json").read_text())
    assert report["augmented"] == 10
    assert report["encoding"]["train"]["examples"] == 15 and report["encoding"]["validation"]["examples"] == 5

    # classification takes the same path: the training split grows, the validation split does not
    seen: dict[str, int] = {}

    def fake_finetune(model, tokenizer, train_split, out_dir, config, label_names, validation=None, **kw):  # type: ignore[no-untyped-def]
        seen.update(train=train_split.source.num_examples, validation=validation.source.num_examples)
        return {}

    monkeypatch.setattr(finetune_run, "finetune_model", fake_finetune)
    csv = tmp_path / "train.csv"
    csv.write_text(
        "text,label\n" + "".join(f"number {n} is here,{n % 2}\n" for n in range(6)), encoding="utf-8"
    )
    config = finetune_run.FinetuneConfig(augment=("swap",), augment_copies=3, progress=False)
    finetune_run.run_finetune(tiny_llama, csv, tmp_path / "clf", config, validation=csv)
    assert seen == {"train": 24, "validation": 6}
