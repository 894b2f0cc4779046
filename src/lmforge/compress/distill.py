"""Knowledge distillation of a fine-tuned teacher into a smaller student (``lmforge distill``).

The student learns from ``alpha * KL_tau(teacher || student) + (1 - alpha) * task loss`` plus,
TinyBERT style, ``hidden_weight * MSE(W_h h_s, h_t)`` over the embeddings and mapped blocks and
``attention_weight * MSE(A_s, A_t)`` over the mapped blocks' attention scores
(:mod:`lmforge.compress.distill_losses`). The student is a model of its own (``student``: any
model reference sharing the teacher's vocabulary) or the teacher cut to ``student_layers`` blocks,
initialised from every ``L / N``-th teacher block (DistilBERT: every other layer) or at random.

Task-specific distillation reads the teacher's task data (classification); general distillation
is the same run on a causal LM teacher and a text corpus (``lm`` task): the KL is then taken over
the vocabulary at every real token. Training runs through the training stage's loop
(:class:`lmforge.train.loop.TrainingLoop`) as a :class:`DistillObjective`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmforge.compress.data import TrainData, read_train_data
from lmforge.compress.distill_losses import Recorder, layer_map, masked_mse, soft_target_kl
from lmforge.compress.output import prepare_output, publish
from lmforge.compress.report import EvalData
from lmforge.data import TaskDataConfig
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models import TransformerModel
from lmforge.models.io.checkpoint import LoadedModel, load
from lmforge.models.model import parameter_bytes
from lmforge.runtime import torch_threads
from lmforge.tasks.sources import to_tensors
from lmforge.train.config import OptimConfig
from lmforge.train.distributed import Runtime
from lmforge.train.finetune import save_finetuned
from lmforge.train.loop import LoopSettings, MicroBatches, TrainingLoop, seed_everything

__all__ = ["DistillConfig", "DistillLoss", "DistillObjective", "build_student", "distill", "distill_model"]

_TERMS = ("loss", "kd", "task", "hidden", "attention")


@dataclass
class DistillConfig:
    """Settings of ``lmforge distill``.

    Attributes:
        data: the teacher's training data (its task's format).
        data_config: columns and record limit.
        student: a model reference for the student; ``None``: the teacher cut to ``student_layers``.
        student_layers: blocks of a student cut from the teacher.
        init: a cut student starts from the ``teacher``'s blocks or at ``random``.
        temperature: ``tau`` of the soft targets.
        alpha: weight of the soft-target KL; ``1 - alpha`` weighs the task's own loss.
        hidden_weight: weight of the hidden-state MSE (through a learned projection).
        attention_weight: weight of the attention-score MSE (needs equal head counts).
        steps / batch_size / lr: the training run (AdamW, linear decay, 6% warmup).
        seed: student initialisation, batch order, dropout.
        threads: torch CPU threads.
    """

    data: str | Path
    data_config: TaskDataConfig = field(default_factory=TaskDataConfig)
    student: str | Path | None = None
    student_layers: int | None = None
    init: str = "teacher"
    temperature: float = 2.0
    alpha: float = 0.5
    hidden_weight: float = 0.0
    attention_weight: float = 0.0
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    threads: int | None = None

    @property
    def uses_teacher(self) -> bool:
        return bool(self.alpha or self.hidden_weight or self.attention_weight)

    def validate(self) -> None:
        """Refuse bad settings before anything is read or written."""
        if (self.student is None) == (self.student_layers is None):
            raise ConfigError("give the student: --student MODEL or --student-layers N (one of them)")
        if self.student_layers is not None and self.student_layers < 1:
            raise ConfigError(f"--student-layers {self.student_layers}: must be >= 1")
        if self.init not in ("teacher", "random"):
            raise ConfigError(f"--init {self.init!r}: teacher or random")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature {self.temperature}: must be > 0")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"--alpha {self.alpha}: the soft-target weight, in [0, 1]")
        if self.hidden_weight < 0 or self.attention_weight < 0:
            raise ConfigError("--hidden-weight and --attention-weight must be >= 0")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("--steps and --batch-size must be >= 1 and --lr > 0")


def build_student(teacher: LoadedModel, config: DistillConfig) -> LoadedModel:
    """The student: ``config.student`` loaded with the teacher's head, or the teacher cut to
    ``config.student_layers`` blocks (every ``L / N``-th block copied, or a random init)."""
    t_config = teacher.config
    if config.student is not None:
        student = load(config.student, head=t_config.head, num_labels=t_config.num_labels)
        if student.config.vocab_size != t_config.vocab_size:
            raise ConfigError(
                f"--student {config.student}: vocabulary {student.config.vocab_size} differs from the "
                f"teacher's {t_config.vocab_size}; the student reads the teacher's tokens"
            )
        student.model.config.extra.update({k: v for k, v in t_config.extra.items() if k != "quantization"})
        return LoadedModel(student.model, teacher.tokenizer, student.model.config, str(config.student))
    layers = config.student_layers
    assert layers is not None
    if (
        layers > t_config.num_layers
        or t_config.num_layer_groups is not None
        or teacher.model.decoder is not None
    ):
        raise UnsupportedError(
            f"--student-layers {layers}: a cut student needs a teacher of at least that many distinct "
            f"blocks and one stack ({t_config.family}, {t_config.num_layers} layers)"
        )
    chosen = [i * t_config.num_layers // layers for i in range(layers)]
    changes: dict[str, Any] = {"num_layers": layers, "extra": dict(t_config.extra)}
    for name in ("layer_num_heads", "layer_intermediate_sizes"):
        widths = getattr(t_config, name)
        changes[name] = None if widths is None else [widths[i] for i in chosen]
    if t_config.attention_layers is not None and len(t_config.attention_layers) == t_config.num_layers:
        changes["attention_layers"] = [t_config.attention_layers[i] for i in chosen]
    model = TransformerModel(t_config.replace(**changes))
    if config.init == "teacher":
        source = teacher.model.state_dict()
        state = {}
        for name in model.state_dict():
            parts = name.split(".")
            if name.startswith("stack.layers."):
                parts[2] = str(chosen[int(parts[2])])
            state[name] = source[".".join(parts)]
        model.load_state_dict(state)
    return LoadedModel(model, teacher.tokenizer, model.config, f"{teacher.source} ({layers} of its layers)")


class DistillLoss(nn.Module):
    """``forward(batch) -> (loss, stats)`` of the student against the frozen teacher; ``stats`` are
    the loss and its terms (``kd``, ``task``, ``hidden``, ``attention``)."""

    def __init__(
        self, student: LoadedModel, teacher: LoadedModel, train: TrainData, config: DistillConfig
    ) -> None:
        super().__init__()
        self.config = config
        self.student, self.teacher = student.model, teacher.model
        self.student_task, self.teacher_loss = (
            train.loss_with_logits(student),
            train.loss_with_logits(teacher),
        )
        s_layers, t_layers = self.student.config.num_layers, self.teacher.config.num_layers
        self.mapping = layer_map(s_layers, t_layers)
        intermediate = bool(config.hidden_weight or config.attention_weight)
        attention = bool(config.attention_weight)
        if attention:
            s_heads = [b.attn.num_heads for b in self.student.stack.layers]  # type: ignore[union-attr]
            t_heads = [self.teacher.stack.layers[i].attn.num_heads for i in self.mapping]  # type: ignore[union-attr]
            if s_heads != t_heads:
                raise ConfigError(
                    f"--attention-weight compares attention maps head by head; the student's heads {s_heads} "
                    f"differ from the mapped teacher layers' {t_heads}"
                )
            if self.student.config.positions == "rope":
                raise UnsupportedError(
                    "--attention-weight: rotary models' scores are not recorded yet; use --hidden-weight"
                )
        self.s_record = Recorder(self.student, range(s_layers), attention) if intermediate else None
        self.t_record = Recorder(self.teacher, self.mapping, attention) if intermediate else None
        s_hidden, t_hidden = self.student.config.hidden_size, self.teacher.config.hidden_size
        # TinyBERT's W_h (blocks) and W_e (embeddings): learned, trained with the student, not saved.
        self.project_hidden = nn.Linear(s_hidden, t_hidden, bias=False)
        # The embeddings' output is already hidden_size wide (ALBERT's factorisation projects inside).
        self.project_embeddings = nn.Linear(s_hidden, t_hidden, bias=False)
        for projection in (self.project_hidden, self.project_embeddings):
            if projection.in_features == projection.out_features:
                nn.init.eye_(projection.weight)
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> DistillLoss:
        super().train(mode)
        self.teacher.eval()  # the loop sets its module to train mode; the teacher never drops out
        return self

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        config = self.config
        for record in (self.s_record, self.t_record):
            if record is not None:
                record.clear()
        task_loss, s_logits = self.student_task(batch)
        zero = task_loss.new_zeros(())
        kd = hidden = attention = zero
        if config.uses_teacher:
            with torch.no_grad():
                _, t_logits = self.teacher_loss(batch)
            mask = batch.get("attention_mask")
            if config.alpha:
                kd = soft_target_kl(s_logits, t_logits, config.temperature, mask)
            if self.s_record is not None and self.t_record is not None:
                real = batch["attention_mask"]  # (B, T)
                if config.hidden_weight:
                    hidden = masked_mse(
                        self.project_embeddings(self.s_record.hidden[-1]),
                        self.t_record.hidden[-1],
                        real[..., None],
                    )
                    for s_index, t_index in enumerate(self.mapping):
                        hidden = hidden + masked_mse(
                            self.project_hidden(self.s_record.hidden[s_index]),
                            self.t_record.hidden[t_index],
                            real[..., None],
                        )
                if config.attention_weight:
                    pairs = real[:, None, :, None] * real[:, None, None, :]  # (B, 1, T, T) real query x key
                    for s_index, t_index in enumerate(self.mapping):
                        attention = attention + masked_mse(
                            self.s_record.scores[s_index], self.t_record.scores[t_index], pairs
                        )
        loss = (
            config.alpha * kd
            + (1 - config.alpha) * task_loss
            + config.hidden_weight * hidden
            + config.attention_weight * attention
        )
        stats = torch.stack([loss, kd, task_loss, hidden, attention]).detach().double()
        return loss, stats

    def close(self) -> None:
        for record in (self.s_record, self.t_record):
            if record is not None:
                record.close()


class DistillObjective:
    """Distillation as the training loop's :class:`~lmforge.train.loop.Objective`."""

    num_stats = len(_TERMS)

    def __init__(
        self, student: LoadedModel, loss: DistillLoss, train: TrainData, config: DistillConfig
    ) -> None:
        self.model, self.tokenizer = student.model, student.tokenizer
        self.loss, self.train, self.config = loss, train, config

    @property
    def module(self) -> nn.Module:
        return self.loss

    def batches(self, step: int) -> tuple[MicroBatches, int | None]:
        batch = self.train.split.source.train_batch(step, self.config.batch_size)
        return [(to_tensors(batch, torch.device("cpu")), 1.0)], None

    def terms(self, stats: Tensor) -> dict[str, float]:
        return {name: float(value) for name, value in zip(_TERMS, stats)}

    def epoch(self, step: int) -> float:
        return self.train.split.source.epoch_of(step, self.config.batch_size)

    def validate(self, loop: TrainingLoop) -> dict[str, Any]:
        return {}  # the run keeps its last weights; the report measures them

    def describe(self, metrics: dict[str, Any]) -> str:
        return ""

    def save_model(self, loop: TrainingLoop, path: Path) -> None:
        save_finetuned(self.model, path, self.tokenizer)


def _optimizer(module: nn.Module, config: DistillConfig) -> torch.optim.Optimizer:
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.dim() >= 2 and "embeddings" not in n]
    rest = [p for n, p in params if not (p.dim() >= 2 and "embeddings" not in n)]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": 0.01, "name": "decay"},
            {"params": rest, "weight_decay": 0.0, "name": "no_decay"},
        ],
        lr=config.lr,
    )


def distill_model(
    teacher: LoadedModel, student: LoadedModel, train: TrainData, config: DistillConfig
) -> dict[str, Any]:
    """Train ``student`` (in place) on ``train`` against ``teacher`` through the training loop.

    Returns:
        ``steps``, ``train_seconds``, ``examples_per_second`` and the last step's loss terms.
    """
    seed_everything(config.seed)
    loss = DistillLoss(student, teacher, train, config)
    objective = DistillObjective(student, loss, train, config)
    optim = OptimConfig(
        lr=config.lr, schedule="linear", min_lr_ratio=0.0, warmup_steps=int(0.06 * config.steps)
    )
    settings = LoopSettings(
        max_steps=config.steps, optim=optim, precision="fp32", eval_every=config.steps,
        checkpoint_every=config.steps, keep_last=0, progress=False, settings_file="distill.json",
        settings_text=json.dumps(_settings(config), indent=2) + "\n",
    )  # fmt: skip
    student.model.train()
    try:
        with tempfile.TemporaryDirectory(prefix="lmforge-distill-") as run:
            loop = TrainingLoop(
                objective, settings, Path(run), Runtime(torch.device("cpu")), lambda m: _optimizer(m, config)
            )
            loop.run(
                None, f"distilling into {student.model.num_parameters():,} parameters, {config.steps} steps"
            )
            last = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    finally:
        loss.close()
        student.model.eval()
    final = [r for r in last if r.get("kind") == "train"][-1]
    return {
        "steps": loop.step,
        "train_seconds": loop.train_seconds,
        "examples_per_second": loop.step * config.batch_size / max(loop.train_seconds, 1e-9),
        "last": {k: final[k] for k in _TERMS if k in final},
    }


def _settings(config: DistillConfig) -> dict[str, Any]:
    return {
        k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "data_config"
    }


def distill(
    teacher: str | Path, out: str | Path, config: DistillConfig, eval_data: EvalData | None = None
) -> dict[str, Any]:
    """Distill the fine-tuned ``teacher`` into a student written as the checkpoint ``out``.

    Returns:
        The report written to ``out/compression.json`` (with ``eval_data``: teacher vs student
        accuracy, ECE and NLL, raw and recalibrated).
    """
    config.validate()
    prepare_output(out, eval_data)
    loaded = load(teacher)
    if loaded.config.extra.get("quantization"):
        raise UnsupportedError(f"--teacher {teacher}: distil from the float model")
    with torch_threads(config.threads):
        seed_everything(config.seed)
        student = build_student(loaded, config)
        train = read_train_data(loaded, config.data, config.data_config, seed=config.seed)
        run = distill_model(loaded, student, train, config)
        report = {
            "kind": "distill",
            "teacher": str(teacher),
            "student": student.source,
            "settings": _settings(config),
            "parameters_before": loaded.model.num_parameters(),
            "parameters_after": student.model.num_parameters(),
            "weight_bytes_before": parameter_bytes(loaded.model),
            "weight_bytes_after": parameter_bytes(student.model),
            "run": run,
        }
        publish(out, student.model, student.tokenizer, report, loaded, eval_data)
    return report
