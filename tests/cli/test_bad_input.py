"""Every verb answers bad input with one clear line and writes nothing (issue 22).

One table of bad inputs over all verbs: usage errors (exit 2, the CLI library's usage message),
values checked before work starts and data lmforge refuses (exit 1, one line naming the option,
file or field). Each row runs through the real entry point, ``lmforge.cli.main``, and must leave
the workspace (every file name and mtime) as it was. The table runs in-process, which costs no
torch start-up per row; a representative row of each kind also runs as a real subprocess
(``python -m lmforge.cli``), as do the unexpected-error path and ``--debug``.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

WORDS = ["good", "great", "bad", "awful", "the", "movie", "was", "a", "plot", "story", "fine", "dull"]


class Case(NamedTuple):
    """One bad input: the arguments ({ws} is the workspace), the exit code, words the message must hold."""

    id: str
    args: str
    code: int
    says: tuple[str, ...]


def _sentences(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(" ".join(rng.choice(WORDS) for _ in range(6)), i % 2) for i in range(n)]


def _write_csv(
    path: Path, rows: list[tuple[str, object]], header: tuple[str, str] = ("text", "label")
) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def build_workspace(root: Path) -> Path:
    """Tiny models, tokenizers, data, logits and recipes, and the bad files the table points at."""
    import lmforge
    from lmforge.models import TransformerModel, preset_config
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    texts = [t for t, _ in _sentences(200, 0)]
    tok = train_tokenizer(texts, TokenizerTrainConfig(kind="wordpiece", vocab_size=64, lowercase=True))
    tok.save(root / "tok")
    torch.manual_seed(0)
    small = {"hidden_size": 32, "num_heads": 2, "intermediate_size": 64, "max_positions": 128}
    base = preset_config("bert-tiny", vocab_size=tok.vocab_size, **small)
    lmforge.save(TransformerModel(base), root / "tiny", tok)
    for name, labels in (("clf2", 2), ("clf3", 3)):
        config = preset_config(
            "bert-tiny", vocab_size=tok.vocab_size, head="sequence_classification", num_labels=labels, **small
        )
        lmforge.save(TransformerModel(config), root / name, tok)
    t5 = preset_config("t5-tiny", head="seq2seq_lm", vocab_size=tok.vocab_size)
    lmforge.save(TransformerModel(t5), root / "t5", tok)
    bpe = train_tokenizer(texts, TokenizerTrainConfig(kind="bpe", family="gpt2", vocab_size=300))
    gpt = preset_config("gpt2-tiny", head="causal_lm", vocab_size=len(bpe), **small)
    lmforge.save(TransformerModel(gpt), root / "gpt", bpe)
    (root / "truncated").mkdir()
    for item in (root / "tiny").iterdir():
        data = item.read_bytes()
        (root / "truncated" / item.name).write_bytes(
            data[: len(data) // 2] if item.suffix == ".safetensors" else data
        )
    (root / "no_hidden").mkdir()  # a checkpoint whose config lacks a field
    for item in (root / "tiny").iterdir():
        (root / "no_hidden" / item.name).write_bytes(item.read_bytes())
    config_json = json.loads((root / "tiny" / "config.json").read_text(encoding="utf-8"))
    del config_json["lmforge"]["hidden_size"]
    (root / "no_hidden" / "config.json").write_text(json.dumps(config_json), encoding="utf-8")
    _write_csv(root / "train.csv", _sentences(40, 1))
    _write_csv(root / "one_class.csv", [(t, 1) for t, _ in _sentences(20, 2)])
    _write_csv(
        root / "float.csv",
        [(t, round(random.Random(i).random(), 3)) for i, (t, _) in enumerate(_sentences(40, 3))],
    )
    (root / "empty.csv").write_bytes(b"")
    (root / "bad_utf8.csv").write_bytes(b"text,label\n\xff\xfe broken,1\nfine text,0\n")
    (root / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (root / "tiny.txt").write_text("!!\n??\n", encoding="utf-8")
    (root / "empty.txt").write_bytes(b"")
    (root / "bad_utf8.txt").write_bytes(b"hello \xff world\n")
    rng = np.random.default_rng(0)
    np.savez(root / "logits.npz", logits=rng.normal(size=(60, 2)), labels=rng.integers(0, 2, 60))
    np.savez(root / "no_labels.npz", logits=rng.normal(size=(60, 2)))
    (root / "recipe.yaml").write_text(
        "model: {preset: gpt2-tiny, hidden_size: 32, num_layers: 1, num_heads: 2}\n"
        "objective: {kind: causal_lm, seq_len: 16}\nmax_steps: 2\n",
        encoding="utf-8",
    )
    (root / "no_model.yaml").write_text(
        "objective: {kind: causal_lm, seq_len: 16}\nmax_steps: 2\nlrr: 1\n", encoding="utf-8"
    )
    (root / "bad.yaml").write_text("model: [unclosed\n", encoding="utf-8")
    (root / "afile").write_text("not a directory\n", encoding="utf-8")
    return root


FT = "finetune --task classification --model {ws}/tiny --data {ws}/train.csv"
TUNE = "tune --model {ws}/tiny --data {ws}/train.csv --validation {ws}/train.csv --trials 1"
BASE = "baseline --kind tfidf-lr --data {ws}/train.csv --test {ws}/train.csv"
CAL = "calibrate --method temperature --eval {ws}/logits.npz --fit {ws}/logits.npz"
PROMPT = "prompt --model {ws}/gpt --data {ws}/train.csv --labels bad,good --template '{{text}} is {{label}}'"
EVAL = "evaluate --model {ws}/clf2 --data {ws}/train.csv"
TOK = "tokenizer train --kind bpe --vocab-size 300 --input {ws}/corpus.txt"
PREP = "data prepare --input {ws}/corpus.txt --tokenizer {ws}/tok"
INIT = "init --preset bert-tiny --tokenizer {ws}/tok"

CASES = [
    # -- usage errors: the CLI library's usage message, exit 2
    Case("no-verb", "", 2, ("Usage",)),
    Case("misspelt-verb", "trian", 2, ("No such command", "trian")),
    Case("unknown-option", "info gpt2-124m --bogus", 2, ("--bogus",)),
    Case("missing-option", "finetune --task classification --model x --data y", 2, ("--out",)),
    Case("epochs-not-a-number", FT + " --out {ws}/run --epochs abc", 2, ("--epochs",)),
    Case("bins-not-a-number", CAL + " --out {ws}/cal --bins abc", 2, ("--bins",)),
    Case(
        "vocab-size-not-a-number",
        "tokenizer train --kind bpe --vocab-size abc --input x --out y",
        2,
        ("--vocab-size",),
    ),
    Case("quickstart-threads-not-a-number", "quickstart --threads abc", 2, ("--threads",)),
    Case("unexpected-positional", "info a b", 2, ("unexpected extra argument",)),
    Case("unknown-assets-subcommand", "assets frob", 2, ("No such command", "frob")),
    Case("on-error-choice", FT + " --out {ws}/run --on-error ignore", 2, ("--on-error",)),
    # -- --out naming an existing file, for every verb that writes
    Case("convert-out-file", "convert {ws}/tiny {ws}/afile", 1, ("afile", "not a directory")),
    Case("tokenizer-out-file", TOK + " --out {ws}/afile", 1, ("--out", "afile")),
    Case("prepare-out-file", PREP + " --out {ws}/afile", 1, ("--out", "afile")),
    Case(
        "pretrain-out-file",
        "pretrain --config {ws}/recipe.yaml --data {ws}/tok --out {ws}/afile",
        1,
        ("--out", "afile"),
    ),
    Case("init-out-file", INIT + " --out {ws}/afile", 1, ("--out", "afile")),
    Case("finetune-out-file", FT + " --out {ws}/afile", 1, ("--out", "afile")),
    Case("evaluate-out-file", EVAL + " --out {ws}/afile", 1, ("--out", "afile")),
    Case("calibrate-out-file", CAL + " --out {ws}/afile", 1, ("--out", "afile")),
    Case("prompt-out-file", PROMPT + " --out {ws}/afile", 1, ("--out", "afile")),
    Case("baseline-out-file", BASE + " --out {ws}/afile", 1, ("--out", "afile")),
    Case("compare-out-file", "compare {ws}/tiny --out {ws}/afile", 1, ("--out", "afile")),
    Case("tune-out-file", TUNE + " --out {ws}/afile", 1, ("--out", "afile")),
    # -- numeric ranges, checked before any work
    Case("finetune-lr-negative", FT + " --out {ws}/run --lr -1", 1, ("lr", "-1")),
    Case("finetune-batch-size-0", FT + " --out {ws}/run --batch-size 0", 1, ("batch_size", "0")),
    Case("finetune-epochs-0", FT + " --out {ws}/run --epochs 0", 1, ("epochs",)),
    Case("finetune-epochs-negative", FT + " --out {ws}/run --epochs -1", 1, ("epochs",)),
    Case("finetune-dropout-1", FT + " --out {ws}/run --dropout 1.5", 1, ("dropout",)),
    Case("finetune-cv-1", FT + " --out {ws}/run --cv 1", 1, ("cv",)),
    Case(
        "finetune-unknown-task",
        "finetune --task regression --model {ws}/tiny --data {ws}/train.csv --out {ws}/run",
        1,
        ("task", "regression"),
    ),
    Case("finetune-metric-for-task", FT + " --out {ws}/run --metric bleu", 1, ("metric", "bleu")),
    Case(
        "finetune-recipe-missing-file",
        FT + " --out {ws}/run --config {ws}/nowhere.yaml",
        1,
        ("nowhere.yaml",),
    ),
    Case("baseline-c-negative", BASE + " --out {ws}/b --c -1", 1, ("c", "-1")),
    Case("baseline-max-features-0", BASE + " --out {ws}/b --max-features 0", 1, ("max_features", "0")),
    Case("prepare-workers-0", PREP + " --out {ws}/prep --workers 0", 1, ("workers", "0")),
    Case("calibrate-bins-0", CAL + " --out {ws}/cal --bins 0", 1, ("bins", "0")),
    Case(
        "calibrate-cv-1",
        "calibrate --method temperature --eval {ws}/logits.npz --cv 1 --out {ws}/cal",
        1,
        ("cv",),
    ),
    Case("evaluate-batch-size-0", EVAL + " --out {ws}/ev --batch-size 0", 1, ("batch_size", "0")),
    Case("tune-trials-0", TUNE + " --out {ws}/tune --trials 0", 1, ("trials", "0")),
    Case("quickstart-unknown-lang", "quickstart --lang fr", 1, ("--lang", "fr", "zh, en")),
    Case("prompt-test-fraction", PROMPT + " --out {ws}/p --test-fraction 1.5", 1, ("test", "1.5")),
    # -- labels and data
    Case("tune-metric-bleu", TUNE + " --out {ws}/tune --metric bleu", 1, ("metric", "bleu")),
    Case("tune-label-column", TUNE + " --out {ws}/tune --label-column stars", 1, ("stars",)),
    Case(
        "finetune-label-column",
        FT + " --out {ws}/run --label-column stars",
        1,
        ("stars", "['text', 'label']"),
    ),
    Case(
        "finetune-one-class",
        "finetune --task classification --model {ws}/tiny --data {ws}/one_class.csv --out {ws}/run",
        1,
        ("one_class.csv", "class"),
    ),
    Case(
        "finetune-float-labels",
        "finetune --task classification --model {ws}/tiny --data {ws}/float.csv --out {ws}/run",
        1,
        ("float.csv", "label"),
    ),
    Case(
        "baseline-one-class",
        "baseline --kind tfidf-lr --data {ws}/one_class.csv --out {ws}/b",
        1,
        ("one_class.csv", "class"),
    ),
    Case(
        "finetune-empty-file",
        "finetune --task classification --model {ws}/tiny --data {ws}/empty.csv --out {ws}/run",
        1,
        ("empty.csv",),
    ),
    Case(
        "finetune-bad-utf8",
        "finetune --task classification --model {ws}/tiny --data {ws}/bad_utf8.csv --out {ws}/run",
        1,
        ("bad_utf8.csv",),
    ),
    Case(
        "finetune-missing-data",
        "finetune --task classification --model {ws}/tiny --data {ws}/nowhere.csv --out {ws}/run",
        1,
        ("nowhere.csv",),
    ),
    Case(
        "finetune-truncated-weights",
        "finetune --task classification --model {ws}/truncated --data {ws}/train.csv --out {ws}/run",
        1,
        ("truncated",),
    ),
    Case("info-truncated-weights", "info {ws}/truncated", 1, ("truncated",)),
    Case(
        "tokenizer-empty-input",
        "tokenizer train --kind bpe --vocab-size 300 --input {ws}/empty.txt --out {ws}/t",
        1,
        ("text",),
    ),
    Case(
        "tokenizer-bad-utf8",
        "tokenizer train --kind bpe --vocab-size 300 --input {ws}/bad_utf8.txt --out {ws}/t",
        1,
        ("bad_utf8.txt",),
    ),
    Case(
        "prepare-bad-utf8",
        "data prepare --input {ws}/bad_utf8.txt --tokenizer {ws}/tok --out {ws}/prep",
        1,
        ("bad_utf8.txt",),
    ),
    Case("init-vocab-too-small", INIT + " --out {ws}/m vocab_size=10", 1, ("vocab_size", "10")),
    Case("init-unknown-field", INIT + " --out {ws}/m hidden_sise=32", 1, ("hidden_sise",)),
    Case(
        "prompt-unknown-placeholder",
        "prompt --model {ws}/gpt --data {ws}/train.csv --labels bad,good --template '{{foo}} {{text}}' --out {ws}/p",
        1,
        ("{{foo}}",),
    ),
    Case(
        "prompt-label-count",
        "prompt --model {ws}/gpt --data {ws}/train.csv --labels bad,good,meh --template '{{text}}' --out {ws}/p",
        1,
        ("--labels", "3", "2"),
    ),
    Case(
        "calibrate-save-into-not-classifier",
        CAL + " --out {ws}/cal --save-into {ws}/tiny",
        1,
        ("tiny", "classifier"),
    ),
    Case(
        "calibrate-save-into-wrong-classes",
        CAL + " --out {ws}/cal --save-into {ws}/clf3",
        1,
        ("clf3", "3", "2"),
    ),
    Case(
        "pretrain-recipe-unknown-field",
        "pretrain --config {ws}/no_model.yaml --out {ws}/pt",
        1,
        ("no_model.yaml", "lrr"),
    ),
    Case("pretrain-recipe-bad-yaml", "pretrain --config {ws}/bad.yaml --out {ws}/pt", 1, ("bad.yaml",)),
    Case(
        "pretrain-lr-override",
        "pretrain --config {ws}/recipe.yaml --out {ws}/pt optim.lr=-1",
        1,
        ("optim.lr",),
    ),
    Case(
        "evaluate-not-a-run",
        "evaluate --model {ws}/nowhere --data {ws}/train.csv --out {ws}/ev",
        1,
        ("nowhere",),
    ),
]

# -- compression verbs (issue 17): every setting is checked before the output folder exists
QUANT = "quantize {ws}/clf2 --out {ws}/q"
DISTILL = "distill --teacher {ws}/clf2 --data {ws}/train.csv"
CASES += [
    Case("quantize-unknown-method", QUANT + " --method int3", 1, ("--method", "int3")),
    Case("quantize-group-size-int8", QUANT + " --method int8 --group-size 64", 1, ("--group-size", "int8")),
    Case("quantize-group-size-choice", QUANT + " --method int4-wo --group-size 48", 1, ("--group-size 48",)),
    Case(
        "quantize-group-size-not-dividing",
        "quantize {ws}/gpt --out {ws}/q --method int4-wo --group-size 64",
        1,
        ("--group-size 64", "does not divide", "32"),
    ),
    Case("quantize-gptq-no-calibration", QUANT + " --method gptq-int4", 1, ("--calibration",)),
    Case(
        "quantize-gptq-encoder-decoder",
        "quantize {ws}/t5 --out {ws}/q --method gptq-int4 --calibration {ws}/corpus.txt",
        1,
        ("t5", "encoder-decoder", "int4-wo"),
    ),
    Case("quantize-out-file", "quantize {ws}/clf2 --out {ws}/afile --method int8", 1, ("--out", "afile")),
    Case("quantize-missing-model", "quantize {ws}/nowhere --out {ws}/q --method int8", 1, ("nowhere",)),
    Case(
        "quantize-eval-file-without-fit",
        QUANT + " --method int8 --eval-data {ws}/train.csv",
        1,
        ("--eval-data", "--fit-data"),
    ),
    Case(
        "prune-heads-1",
        "prune {ws}/clf2 --out {ws}/p --heads 1 --data {ws}/train.csv",
        1,
        ("--heads", "[0, 1)"),
    ),
    Case(
        "prune-magnitude-negative",
        "prune {ws}/clf2 --out {ws}/p --magnitude -0.2",
        1,
        ("--magnitude", "-0.2"),
    ),
    Case("prune-nothing", "prune {ws}/clf2 --out {ws}/p", 1, ("nothing to prune",)),
    Case("prune-structured-without-data", "prune {ws}/clf2 --out {ws}/p --ffn 0.5", 1, ("--data",)),
    Case(
        "prune-heads-of-a-decoder",
        "prune {ws}/gpt --out {ws}/p --heads 0.5 --data {ws}/train.csv",
        1,
        ("--heads", "decoder", "--ffn"),
    ),
    Case("prune-out-file", "prune {ws}/clf2 --out {ws}/afile --magnitude 0.5", 1, ("--out", "afile")),
    Case("distill-no-student", DISTILL + " --out {ws}/d", 1, ("--student", "--student-layers")),
    Case(
        "distill-temperature-0",
        DISTILL + " --out {ws}/d --student-layers 1 --temperature 0",
        1,
        ("--temperature",),
    ),
    Case("distill-alpha", DISTILL + " --out {ws}/d --student-layers 1 --alpha 2", 1, ("--alpha", "[0, 1]")),
    Case(
        "distill-student-vocabulary",
        DISTILL + " --out {ws}/d --student {ws}/gpt",
        1,
        ("--student", "vocabulary"),
    ),
    Case("distill-out-file", DISTILL + " --out {ws}/afile --student-layers 1", 1, ("--out", "afile")),
]

# -- generate (issue 15): option values are checked before the model loads
GEN = "generate {ws}/gpt --prompt hello"
CASES += [
    Case("generate-missing-model", "generate {ws}/nowhere --prompt hello", 1, ("nowhere",)),
    Case("generate-no-prompt", "generate {ws}/gpt", 1, ("--prompt",)),
    Case(
        "generate-missing-prompt-file",
        "generate {ws}/gpt --prompt-file {ws}/nowhere.txt",
        1,
        ("nowhere.txt",),
    ),
    Case("generate-top-k-0", GEN + " --top-k 0", 1, ("top_k", "0")),
    Case("generate-temperature-negative", GEN + " --temperature -1", 1, ("temperature",)),
    Case("generate-top-p-2", GEN + " --top-p 2", 1, ("top_p", "2")),
    Case("generate-greedy-n", GEN + " --n 2", 1, ("n=2", "temperature")),
    Case("generate-max-new-tokens-not-a-number", GEN + " --max-new-tokens abc", 2, ("--max-new-tokens",)),
    Case("generate-beyond-max-positions", GEN + " --max-new-tokens 1000", 1, ("max_positions",)),
    Case("generate-classifier", "generate {ws}/clf2 --prompt hello", 1, ("clf2", "head")),
    Case("chat-missing-model", "chat {ws}/nowhere", 1, ("nowhere",)),
    Case("chat-top-p-0", "chat {ws}/gpt --top-p 0", 1, ("top_p",)),
    Case("chat-no-template", "chat {ws}/gpt", 1, ("chat template",)),
    # -- serve (issue 16): settings are checked before the model loads; nothing starts listening
    Case("serve-missing-model", "serve {ws}/nowhere", 1, ("nowhere",)),
    Case("serve-port-out-of-range", "serve {ws}/gpt --port 70000", 1, ("port", "70000")),
    Case("serve-max-batch-0", "serve {ws}/gpt --max-batch 0", 1, ("max_batch",)),
    Case("serve-empty-api-key", "serve {ws}/gpt --api-key ' '", 1, ("api_key",)),
    Case("serve-request-timeout", "serve {ws}/gpt --request-timeout -1", 1, ("request_timeout_s",)),
    Case("serve-log-level", "serve {ws}/gpt --log-level loud", 1, ("--log-level",)),
    Case("serve-labels-mismatch", "serve {ws}/clf2 --labels a,b,c", 1, ("labels", "3")),
    Case("serve-labels-repeated", "serve {ws}/clf2 --labels a,a", 1, ("labels", "distinct")),
]

# A representative row of each kind, run as a real process.
SUBPROCESS_CASES = [
    "misspelt-verb",
    "epochs-not-a-number",
    "finetune-out-file",
    "finetune-epochs-0",
    "tune-metric-bleu",
    "calibrate-save-into-not-classifier",
    "finetune-float-labels",
    "init-vocab-too-small",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("bad-input"))


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def argv(case: Case, ws: Path) -> list[str]:
    import shlex

    return shlex.split(case.args.format(ws=ws))


def check(case: Case, code: int, output: str, before: dict[str, int], ws: Path) -> None:
    """Exit code, no traceback, the message names what was wrong, nothing written."""
    shown = output.strip().replace(str(ws), "{ws}")[-600:]
    if code != case.code:
        pytest.fail(f"{case.id}: exit {code}, expected {case.code}: {shown}", pytrace=False)
    if "Traceback" in output:
        pytest.fail(f"{case.id}: printed a traceback: {shown}", pytrace=False)
    missing = [w for w in case.says if w.format(ws=ws).lower() not in output.lower()]
    if missing:
        pytest.fail(f"{case.id}: the message does not name {missing}: {shown}", pytrace=False)
    after = snapshot(ws)
    if after != before:
        changed = sorted(set(after.items()) ^ set(before.items()))
        pytest.fail(f"{case.id}: the workspace changed: {changed[:5]}: {shown}", pytrace=False)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_in_process(
    case: Case,
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from lmforge.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    before = snapshot(workspace)
    with pytest.raises(SystemExit) as exit_info:
        main(argv(case, workspace))
    captured = capsys.readouterr()
    code = exit_info.value.code if isinstance(exit_info.value.code, int) else 1
    check(case, code, captured.out + captured.err, before, workspace)
    assert not (tmp_path / "cache").exists(), f"{case.id}: an expected error wrote a crash log"


def run_process(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmforge.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "XDG_CACHE_HOME": str(tmp_path / "cache"), **env},
    )


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_as_a_process(name: str, workspace: Path, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == name)
    before = snapshot(workspace)
    result = run_process(argv(case, workspace), tmp_path)
    check(case, result.returncode, result.stdout + result.stderr, before, workspace)


BOOM = """
import sys
import lmforge.models.info

def boom(name):
    raise RuntimeError("kaboom in model_info")

lmforge.models.info.model_info = boom
from lmforge.cli import main
main(sys.argv[1:])
"""


def test_an_unexpected_error_is_one_line_with_a_log_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("LMFORGE_DEBUG", None)

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", BOOM, *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**env, **extra},
        )

    plain = run("info", "gpt2-124m")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1 and "RuntimeError: kaboom in model_info" in lines[0] and "--debug" in lines[0]
    logs = list((tmp_path / "cache" / "lmforge" / "logs").glob("lmforge-*.log"))
    assert len(logs) == 1 and str(logs[0]) in lines[0]
    log = logs[0].read_text(encoding="utf-8")
    assert "Traceback" in log and "kaboom in model_info" in log and "command: lmforge info gpt2-124m" in log
    for shown in (
        run("info", "gpt2-124m", "--debug"),
        run("--debug", "info", "gpt2-124m"),
        run("info", "gpt2-124m", LMFORGE_DEBUG="1"),
    ):
        assert shown.returncode == 1
        assert "Traceback" in shown.stderr and "RuntimeError: kaboom in model_info" in shown.stderr
    assert len(list((tmp_path / "cache" / "lmforge" / "logs").iterdir())) == 1  # --debug writes no log


def test_debug_flag_is_accepted_by_every_verb_and_a_good_run_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lmforge.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["info", "gpt2-124m", "--json", "--debug"])
    assert exit_info.value.code == 0
    assert json.loads(capsys.readouterr().out)["num_parameters"] == 124_439_808


def test_a_vocabulary_the_text_cannot_fill_is_a_warning(
    workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmforge.cli import main

    out = tmp_path / "tok"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "tokenizer",
                "train",
                "--kind",
                "bpe",
                "--vocab-size",
                "50000",
                "--input",
                str(workspace / "tiny.txt"),
                "--out",
                str(out),
            ]
        )
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    assert (
        "warning:" in captured.err and "vocab_size=50000" in captured.err and "Traceback" not in captured.err
    )
    assert (out / "tokenizer.json").is_file()
