"""The prompted-classification protocol behind ``lmforge prompt``: templates × shots × seeds × calibrations.

For every template, number of shots and seed, k demonstrations are drawn from the pool (seeded;
the same demonstrations for every template, so templates are compared on equal terms), the fixed
test set is scored once (prefix KV cache reused), and every calibration method turns the same
scores into probabilities:

* ``none``: softmax of the label scores over the label set;
* ``contextual``: content-free inputs "N/A", "", "[MASK]" under the same prompt (Zhao et al. 2021);
* ``batch``: the test set's mean label probability as the bias (Zhou et al. 2023);
* ``pmi``: domain-conditional PMI against the template's answer cue (Holtzman et al. 2021);
* any post-hoc calibrator of :mod:`lmforge.calibrate` (``temperature``, ``platt``, ...): fitted on
  the normalised label log-probabilities of ``fit_size`` labelled pool examples (not the
  demonstrations), drawn per seed.

Zero-shot prompts do not depend on the seed: their scores are computed once per template and
repeated for every seed, so their spread reflects the templates only.

Each row has accuracy, macro-F1 and top-label ECE (15 equal-width bins by default); the aggregate
is mean and sample standard deviation (ddof=1) over templates × seeds for each (shots, calibration).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.calibrate.base import log_softmax
from lmforge.calibrate.contextual import (
    CONTENT_FREE_INPUTS,
    batch_calibrate,
    contextual_calibrate,
    pmi_calibrate,
    prompt_probs,
)
from lmforge.calibrate.registry import CALIBRATORS, get_calibrator
from lmforge.errors import ConfigError
from lmforge.fileio import atomic_write, atomic_write_text, check_output_dir
from lmforge.metrics.calibration import expected_calibration_error
from lmforge.metrics.classification import precision_recall_f1
from lmforge.prompting.data import (
    BUNDLED_DATASETS,
    LabelledData,
    hash_split,
    load_labelled,
    parse_label_spec,
)
from lmforge.prompting.scorer import PromptScorer
from lmforge.prompting.scoring import SCORINGS, Scoring
from lmforge.prompting.templates import PromptTemplate

__all__ = [
    "PROMPT_CALIBRATIONS",
    "PromptRunConfig",
    "aggregate_rows",
    "macro_f1",
    "run_prompt_protocol",
    "sample_demonstrations",
]

PROMPT_CALIBRATIONS = ("none", "contextual", "batch", "pmi")
METRICS = ("accuracy", "macro_f1", "ece")


@dataclass
class PromptRunConfig:
    """Everything one ``lmforge prompt`` run needs (the CLI only parses into this).

    Attributes:
        model: asset name, checkpoint or transformers dir, or ``.gguf`` file.
        data: ``zh-sentiment``, ``pang-lee-polarity`` or a CSV path.
        templates: prompt templates with ``{text}`` (and optionally ``{label}``).
        labels: ``"negative,positive"`` or ``"negative=terrible,positive=great"`` (class=word).
        text_column / label_column: CSV columns.
        shots: demonstrations per prompt, e.g. ``[0, 4]``.
        seeds: demonstration draws per (template, shots).
        calibration: methods, see the module docstring.
        scoring: ``sum``, ``mean`` or ``first`` over label tokens.
        limit: keep the first N test examples (of the hash-ordered test split).
        balanced: draw the same number of demonstrations per class (the remainder at random);
            otherwise draw uniformly from the pool. Either way their order is shuffled.
        chat: wrap prompts in the tokenizer's chat template (instruct models).
        instruction: text before the demonstrations.
        separator: between instruction, demonstrations and the input.
        test_fraction: share of the data (by text hash) that is test; the rest is the pool.
        fit_size: labelled pool examples for post-hoc calibrators.
        batch_size: inputs per forward pass.
        max_text_chars: truncate every text (demonstrations too) to this many characters.
        n_bins: ECE bins.
    """

    model: str
    data: str
    templates: list[str]
    labels: str
    text_column: str = "text"
    label_column: str = "label"
    shots: list[int] = field(default_factory=lambda: [0])
    seeds: int = 5
    calibration: list[str] = field(default_factory=lambda: ["none"])
    scoring: Scoring = "sum"
    limit: int | None = None
    balanced: bool = True
    chat: bool = False
    instruction: str = ""
    separator: str = "\n\n"
    test_fraction: float = 0.5
    fit_size: int = 32
    batch_size: int = 16
    max_text_chars: int | None = None
    n_bins: int = 15

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        if not self.templates:
            raise ConfigError("give at least one --template")
        for template in self.templates:
            PromptTemplate(template)
        unknown = [c for c in self.calibration if c not in PROMPT_CALIBRATIONS and c not in CALIBRATORS]
        if unknown or not self.calibration:
            raise ConfigError(
                f"--calibration {unknown}: choose from {', '.join(PROMPT_CALIBRATIONS + tuple(CALIBRATORS))}"
            )
        if self.scoring not in SCORINGS:
            raise ConfigError(f"--scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if not self.shots or min(self.shots) < 0:
            raise ConfigError(f"--shots must be non-negative integers, got {self.shots}")
        if self.seeds < 1 or self.batch_size < 1 or (self.limit is not None and self.limit < 1):
            raise ConfigError("--seeds, --batch-size and --limit must be positive")


def macro_f1(
    labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray, num_classes: int
) -> float:
    """Unweighted mean over classes of F1 (a class never predicted nor present scores 0, as sklearn's
    ``f1_score(average="macro", labels=range(C), zero_division=0)``)."""
    return float(precision_recall_f1(labels, predictions, num_classes)["macro_f1"])


def sample_demonstrations(pool: LabelledData, shots: int, seed: int, balanced: bool = True) -> list[int]:
    """Indices of ``shots`` pool examples, drawn with ``seed``, in shuffled order.

    Balanced: ``shots // C`` per class, the remaining ``shots % C`` from distinct random classes.
    """
    if shots == 0:
        return []
    if shots > len(pool.texts):
        raise ConfigError(f"--shots {shots} exceeds the {len(pool.texts)} examples of the demonstration pool")
    rng = np.random.default_rng([seed, shots])
    if not balanced:
        return [int(i) for i in rng.choice(len(pool.texts), size=shots, replace=False)]
    labels = np.asarray(pool.labels)
    num_classes = len(pool.classes)
    per_class = [shots // num_classes] * num_classes
    for c in rng.choice(num_classes, size=shots % num_classes, replace=False):
        per_class[int(c)] += 1
    chosen: list[int] = []
    for c, count in enumerate(per_class):
        members = np.flatnonzero(labels == c)
        if count > len(members):
            raise ConfigError(
                f"the pool has {len(members)} examples of class {pool.classes[c]!r}, need {count}"
            )
        chosen += [int(i) for i in rng.choice(members, size=count, replace=False)]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _calibrated(
    method: str,
    scores: np.ndarray,
    cf_scores: np.ndarray | None,
    premise: np.ndarray | None,
    fit: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    if method == "none":
        return prompt_probs(scores)
    if method == "contextual":
        assert cf_scores is not None
        return contextual_calibrate(scores, cf_scores)
    if method == "batch":
        return batch_calibrate(scores)
    if method == "pmi":
        assert premise is not None
        return pmi_calibrate(scores, premise)
    assert fit is not None
    calibrator = get_calibrator(method).fit(log_softmax(fit[0]), fit[1])
    return calibrator.predict_proba(log_softmax(scores))


def aggregate_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std (ddof=1; 0 for one row) of each metric per (shots, calibration)."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["shots"], row["calibration"]), []).append(row)
    out = []
    for (shots, method), members in groups.items():
        entry: dict[str, Any] = {"shots": shots, "calibration": method, "n": len(members)}
        for metric in METRICS:
            values = np.array([m[metric] for m in members], dtype=np.float64)
            entry[f"{metric}_mean"] = float(values.mean())
            entry[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def _truncate(text: str, limit: int | None) -> str:
    return text if limit is None else text[:limit]


def run_prompt_protocol(
    config: PromptRunConfig,
    out_dir: str | Path | None = None,
    scorer: PromptScorer | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the protocol and (with ``out_dir``) write ``results.json`` and ``prompt_results.png``.

    Args:
        config: the run.
        out_dir: where to write; None writes nothing.
        scorer: a ready scorer (tests); by default ``config.model`` is loaded.
        progress: called with one line per finished (template, shots, seed).

    Returns:
        ``{"config", "data", "rows", "aggregate", "timing"}`` as written to ``results.json``.
    """
    config.validate()
    if out_dir is not None:
        check_output_dir(out_dir)
    start = time.perf_counter()
    keys, words = parse_label_spec(config.labels)
    # A CSV's label column holds class values (the words themselves unless class=word is given);
    # bundled datasets have fixed classes that the words follow in order.
    classes = keys if config.data in BUNDLED_DATASETS else (keys or words)
    data = load_labelled(config.data, config.text_column, config.label_column, classes)
    if len(words) != len(data.classes):
        raise ConfigError(f"--labels gives {len(words)} words for {len(data.classes)} classes {data.classes}")
    present = sorted(set(data.labels))
    if len(present) != len(words):  # CSV labels may be indices: a word too many names no class
        raise ConfigError(
            f"--labels gives {len(words)} words but {config.data} has examples of {len(present)} classes "
            f"{[data.classes[i] for i in present]}; give one label word per class, in class order"
        )
    data.texts = [_truncate(t, config.max_text_chars) for t in data.texts]
    pool, test = hash_split(data, config.test_fraction)
    if config.limit is not None:
        test = test.subset(list(range(min(config.limit, len(test.texts)))))
    y_test = np.asarray(test.labels)
    if scorer is None:
        from lmforge.models.io.checkpoint import load

        bundle = load(config.model)
        if bundle.tokenizer is None:
            raise ConfigError(f"{config.model}: the model has no tokenizer; prompting needs one")
        scorer = PromptScorer(
            bundle.model, bundle.tokenizer, config.scoring, config.chat, config.batch_size, cached=True
        )
    posthoc = [m for m in config.calibration if m in CALIBRATORS]
    templates = [PromptTemplate(t, config.instruction, config.separator) for t in config.templates]
    premises = [scorer.score_premise(t, words) for t in templates] if "pmi" in config.calibration else None
    rows: list[dict[str, Any]] = []
    for t_index, template in enumerate(templates):
        for shots in config.shots:
            zero_shot_scores: np.ndarray | None = None
            for seed in range(config.seeds):
                tick = time.perf_counter()
                demo_index = sample_demonstrations(pool, shots, seed, config.balanced)
                demos = [(pool.texts[i], words[pool.labels[i]]) for i in demo_index]
                fit_index: list[int] = []
                if posthoc:
                    taken = set(demo_index)
                    rest = [i for i in range(len(pool.texts)) if i not in taken]
                    rng = np.random.default_rng([seed, shots, 7])
                    fit_index = [rest[i] for i in rng.permutation(len(rest))[: config.fit_size]]
                cf_inputs = list(CONTENT_FREE_INPUTS) if "contextual" in config.calibration else []
                reused = shots == 0 and zero_shot_scores is not None and not posthoc
                if reused:
                    assert zero_shot_scores is not None
                    scores = zero_shot_scores
                else:
                    texts = test.texts + cf_inputs + [pool.texts[i] for i in fit_index]
                    scores = scorer.score(template, texts, words, demos)
                    if shots == 0:
                        zero_shot_scores = scores
                n = len(test.texts)
                test_scores, cf_scores = scores[:n], scores[n : n + len(cf_inputs)]
                fit = (scores[n + len(cf_inputs) :], np.asarray([pool.labels[i] for i in fit_index]))
                for method in config.calibration:
                    probs = _calibrated(
                        method, test_scores, cf_scores, None if premises is None else premises[t_index], fit
                    )
                    predictions = probs.argmax(axis=1)
                    rows.append(
                        {
                            "template": t_index,
                            "shots": shots,
                            "seed": seed,
                            "calibration": method,
                            "accuracy": float(np.mean(predictions == y_test)),
                            "macro_f1": macro_f1(y_test, predictions, len(words)),
                            "ece": expected_calibration_error(probs, y_test, n_bins=config.n_bins),
                            "predicted_fraction": np.bincount(predictions, minlength=len(words)).tolist(),
                            "scores_reused": reused,
                            "demonstrations": demo_index,
                        }
                    )
                if progress is not None:
                    done = rows[-len(config.calibration) :]
                    summary = ", ".join(f"{r['calibration']} {r['accuracy']:.3f}" for r in done)
                    progress(
                        f"template {t_index} shots {shots} seed {seed}: {summary} "
                        f"({time.perf_counter() - tick:.1f}s)"
                    )
    results: dict[str, Any] = {
        "config": asdict(config),
        "data": {
            "source": data.source,
            "classes": data.classes,
            "label_words": words,
            "n_total": len(data.texts),
            "n_pool": len(pool.texts),
            "n_test": len(test.texts),
            "test_label_counts": np.bincount(y_test, minlength=len(words)).tolist(),
            **data.info,
        },
        "templates": config.templates,
        "rows": rows,
        "aggregate": aggregate_rows(rows),
        "timing": {"seconds": time.perf_counter() - start},
    }
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        atomic_write(
            out / "prompt_results.png",
            lambda path: plot_aggregate(results["aggregate"], path, f"{config.data} · {config.model}"),
        )
    return results


def plot_aggregate(aggregate: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Grouped bars of mean ± std of each metric: shots on the x axis, one bar per calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = sorted({a["shots"] for a in aggregate})
    methods = list(dict.fromkeys(a["calibration"] for a in aggregate))
    lookup = {(a["shots"], a["calibration"]): a for a in aggregate}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6))
    width = 0.8 / len(methods)
    for ax, metric in zip(axes, METRICS):
        for j, method in enumerate(methods):
            xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(shots))]
            entries = [lookup.get((s, method)) for s in shots]
            means = [e[f"{metric}_mean"] if e else np.nan for e in entries]
            stds = [e[f"{metric}_std"] if e else 0.0 for e in entries]
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=method)
        ax.set_xticks(range(len(shots)), [f"{s}-shot" for s in shots])
        ax.set_title(metric.replace("_", "-") + (" (lower is better)" if metric == "ece" else ""))
        ax.grid(axis="y", alpha=0.3)
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="calibration")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
