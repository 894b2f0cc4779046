"""Distillation against references: the KL loss is its definition, recorded attention scores are
the model's, a cut student copies the right teacher layers, and a distilled student beats the same
student trained without its teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from compress_utils import tiny_classifier

import lmforge
from lmforge.compress.distill import DistillConfig, build_student, distill
from lmforge.compress.distill_losses import Recorder, layer_map, soft_target_kl
from lmforge.compress.report import EvalData
from lmforge.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_soft_target_kl_is_tau_squared_times_the_kl_divergence() -> None:
    torch.manual_seed(0)
    student, teacher, tau = torch.randn(5, 3), torch.randn(5, 3), 2.5
    p_t, p_s = F.softmax(teacher / tau, -1), F.softmax(student / tau, -1)
    expected = tau**2 * (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    assert torch.allclose(soft_target_kl(student, teacher, tau), expected, atol=1e-6)
    reference = F.kl_div(
        F.log_softmax(student / tau, -1),
        F.log_softmax(teacher / tau, -1),
        log_target=True,
        reduction="batchmean",
    )
    assert torch.allclose(soft_target_kl(student, teacher, tau), tau**2 * reference, atol=1e-6)
    assert float(soft_target_kl(teacher, teacher, tau)) == pytest.approx(0.0, abs=1e-7)
    # (B, T, V) logits: the mean over the real positions only.
    s3, t3 = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    per_token = tau**2 * (
        F.softmax(t3 / tau, -1) * (F.log_softmax(t3 / tau, -1) - F.log_softmax(s3 / tau, -1))
    ).sum(-1)
    assert torch.allclose(soft_target_kl(s3, t3, tau, mask), per_token[mask.bool()].mean(), atol=1e-6)


def test_layer_map_meets_at_the_last_block() -> None:
    assert layer_map(2, 6) == [2, 5]
    assert layer_map(3, 6) == [1, 3, 5]
    assert layer_map(4, 4) == [0, 1, 2, 3]


def test_recorded_attention_scores_are_the_models(tmp_path: Path) -> None:
    """softmax(scores + padding mask) applied to v reproduces what o_proj receives."""
    model = lmforge.load(tiny_classifier(tmp_path)).model
    record = Recorder(model, [0, 1], attention=True)
    seen: dict[str, torch.Tensor] = {}
    attn = model.stack.layers[1].attn
    handles = [
        attn.v_proj.register_forward_hook(lambda _m, _a, out: seen.__setitem__("v", out)),
        attn.o_proj.register_forward_pre_hook(lambda _m, args: seen.__setitem__("o_in", args[0])),
    ]
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        model(ids, attention_mask=mask)
    for h in handles:
        h.remove()
    record.close()
    scores = record.scores[1]  # (B, nh, T, T)
    probs = torch.softmax(scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf")), -1)
    v = seen["v"].view(2, 7, attn.num_heads, attn.head_dim).transpose(1, 2)
    out = (probs @ v).transpose(1, 2).reshape(2, 7, -1)
    assert torch.allclose(out, seen["o_in"], atol=1e-5)
    assert set(record.hidden) == {-1, 0, 1}


def test_a_cut_student_copies_every_other_teacher_layer(tmp_path: Path) -> None:
    teacher = lmforge.load(tiny_classifier(tmp_path, num_layers=4))
    student = build_student(teacher, DistillConfig(data="x", student_layers=2))
    assert student.config.num_layers == 2
    t_state, s_state = teacher.model.state_dict(), student.model.state_dict()
    for s_index, t_index in ((0, 0), (1, 2)):
        key = f"stack.layers.{s_index}.attn.q_proj.weight"
        assert torch.equal(s_state[key], t_state[f"stack.layers.{t_index}.attn.q_proj.weight"])
    assert torch.equal(s_state["classifier.linear.weight"], t_state["classifier.linear.weight"])
    assert student.config.extra["id2label"] == ["neg", "pos"]


def _fine_tuned_teacher(tmp_path: Path) -> Path:
    from lmforge.train.config import OptimConfig
    from lmforge.train.finetune import FinetuneConfig
    from lmforge.train.finetune_run import run_finetune

    base = tiny_classifier(tmp_path, num_layers=2, hidden_size=48, num_heads=4, intermediate_size=96)
    config = FinetuneConfig(
        max_length=16, batch_size=16, max_steps=60, optim=OptimConfig(lr=3e-3, schedule="linear", min_lr_ratio=0.0),
        keep_last=0, progress=False,
    )  # fmt: skip
    run_finetune(base, tmp_path / "train.csv", tmp_path / "teacher", config)
    return tmp_path / "teacher"


def test_a_distilled_student_beats_the_same_student_without_its_teacher(tmp_path: Path) -> None:
    """Students see training labels with 35% of them flipped; the teacher learned the clean task,
    so its soft targets carry what the noisy labels hide. Same student init, data, steps, seed."""
    teacher = _fine_tuned_teacher(tmp_path)
    rows = (tmp_path / "train.csv").read_text(encoding="utf-8").splitlines()
    noisy = [rows[0]]
    for i, row in enumerate(rows[1:]):
        text, label = row.rsplit(",", 1)
        noisy.append(f"{text},{('pos' if label == 'neg' else 'neg') if i % 20 < 7 else label}")
    (tmp_path / "noisy.csv").write_text("\n".join(noisy) + "\n", encoding="utf-8")
    data = EvalData(tmp_path / "test.csv", fit_data=tmp_path / "train.csv", fit_split="train")
    common = dict(
        data=tmp_path / "noisy.csv", student_layers=1, init="random", steps=60, batch_size=16, lr=3e-3
    )
    taught = distill(teacher, tmp_path / "taught", DistillConfig(alpha=0.9, temperature=2.0, **common), data)  # type: ignore[arg-type]
    alone = distill(teacher, tmp_path / "alone", DistillConfig(alpha=0.0, **common), data)  # type: ignore[arg-type]
    teacher_accuracy = taught["calibration"]["before"]["raw"]["accuracy"]
    taught_accuracy = taught["calibration"]["after"]["raw"]["accuracy"]
    alone_accuracy = alone["calibration"]["after"]["raw"]["accuracy"]
    assert teacher_accuracy >= 0.9
    assert taught_accuracy >= alone_accuracy + 0.05, (teacher_accuracy, taught_accuracy, alone_accuracy)
    assert taught["parameters_after"] < taught["parameters_before"]
    saved = json.loads((tmp_path / "taught" / "compression.json").read_text())
    assert saved["kind"] == "distill" and lmforge.load(tmp_path / "taught").config.num_layers == 1


def test_intermediate_losses_train_and_decrease(tmp_path: Path) -> None:
    teacher = tiny_classifier(tmp_path, num_layers=2)
    config = DistillConfig(
        data=tmp_path / "train.csv", student_layers=1, init="random", steps=30, batch_size=16, lr=3e-3,
        alpha=0.5, hidden_weight=1.0, attention_weight=1.0,
    )  # fmt: skip
    from lmforge.compress.data import read_train_data
    from lmforge.compress.distill import distill_model

    loaded = lmforge.load(teacher)
    student = build_student(loaded, config)
    train = read_train_data(loaded, config.data)
    first = distill_model(
        loaded,
        build_student(loaded, DistillConfig(**{**config.__dict__, "steps": 1})),
        train,
        config.__class__(**{**config.__dict__, "steps": 1}),
    )
    run = distill_model(loaded, student, train, config)
    for term in ("kd", "hidden", "attention"):
        assert run["last"][term] < first["last"][term], term
    assert run["steps"] == 30


def test_hidden_loss_with_factorised_embeddings(tmp_path: Path) -> None:
    """ALBERT-style embeddings (embedding_size < hidden_size) are projected to hidden_size inside
    the embeddings, so the embedding-layer MSE compares (B, T, H) states."""
    from lmforge.compress.data import read_train_data
    from lmforge.compress.distill import distill_model

    loaded = lmforge.load(tiny_classifier(tmp_path, num_layers=2, embedding_size=16))
    config = DistillConfig(
        data=tmp_path / "train.csv", student_layers=1, init="random", steps=2, batch_size=8, hidden_weight=1.0
    )
    run = distill_model(loaded, build_student(loaded, config), read_train_data(loaded, config.data), config)
    assert run["steps"] == 2 and run["last"]["hidden"] > 0


def test_bad_settings_are_refused_before_writing(tmp_path: Path) -> None:
    teacher = tiny_classifier(tmp_path)
    cases = [
        (DistillConfig(data=tmp_path / "train.csv"), "--student MODEL or --student-layers N"),
        (DistillConfig(data=tmp_path / "train.csv", student_layers=1, temperature=0), "--temperature 0"),
        (DistillConfig(data=tmp_path / "train.csv", student_layers=1, alpha=1.5), "--alpha 1.5"),
        (DistillConfig(data=tmp_path / "train.csv", student_layers=1, init="zeros"), "--init"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError, match=message):
            distill(teacher, tmp_path / "out", config)
        assert not (tmp_path / "out").exists()
