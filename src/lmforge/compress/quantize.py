"""Post-training quantization of a model's linear layers (``lmforge quantize``).

Methods (the layers are in :mod:`lmforge.models.quantized`):

- ``int8``: int8 per-channel weights with activations quantized per call (fbgemm dynamic
  quantization), for CPU inference of encoders and classifiers; the token table becomes int8 too
  unless an LM head shares it.
- ``int8-wo``: int8 per-channel weights, bf16 activations: weight-only, for decoders.
- ``int4-wo``: 4-bit group-wise weights (``--group-size`` 32 / 64 / 128) rounded to nearest.
- ``gptq-int4`` / ``gptq-int8``: the int4-wo / int8-wo formats with codes chosen by GPTQ
  (:mod:`lmforge.compress.gptq`) on a small calibration text.

The quantized linears are those of the Transformer blocks (and ALBERT's embedding projection);
task heads, the LM head and norms stay in float: they are a small share of the weights and the
most sensitive to rounding. The result is a normal lmforge checkpoint that ``lmforge.load`` reads.

With ``format="gguf"`` the method is a GGUF tensor type (``q8_0``, ``q4_0``, ``q4_1``, ``f16``,
``f32``) and the result one llama.cpp ``.gguf`` file (:mod:`lmforge.models.io.gguf_export`), which
``lmforge.load`` also reads.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmforge.compress.output import prepare_output, publish
from lmforge.compress.report import EvalData
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models import TransformerModel
from lmforge.models.io.checkpoint import load
from lmforge.models.model import parameter_bytes
from lmforge.models.quantized import (
    GROUP_SIZES,
    LINEAR_CLASSES,
    METHODS,
    Int4WeightOnlyLinear,
    Int8Embedding,
    check_group_size,
)
from lmforge.models.quantized_layout import quantization_spec, set_module
from lmforge.runtime import torch_threads
from lmforge.tokenizers import Tokenizer

#: Output formats: an lmforge checkpoint directory, or one llama.cpp GGUF file.
FORMATS = ("lmforge", "gguf")
#: Methods of ``format="gguf"``: the GGUF tensor type of the weight matrices.
GGUF_METHODS = ("q8_0", "q4_0", "q4_1", "f16", "f32")

__all__ = [
    "FORMATS",
    "GGUF_METHODS",
    "QuantizeConfig",
    "calibration_batches",
    "quantizable_linears",
    "quantize",
    "quantize_model",
]


@dataclass
class QuantizeConfig:
    """Settings of ``lmforge quantize``.

    Attributes:
        method: one of :data:`lmforge.models.quantized.METHODS`.
        group_size: int4 methods: input columns per grid (32, 64 or 128; default 64).
        embeddings: ``int8``: also quantize the token table (when no LM head reads it).
        lm_head: also quantize the LM head's projection (round to nearest): decoding reads it for
            every token, so it is a large share of the time; a tied embedding table stays float.
        calibration: GPTQ methods: text files or corpus assets (``web-bible``) to calibrate on.
        calibration_samples: GPTQ: sequences of ``calibration_length`` tokens used.
        calibration_length: tokens per calibration sequence.
        damp: GPTQ: Hessian damping as a share of its mean diagonal.
        threads: torch CPU threads (``None``: torch's default).
        format: ``"lmforge"`` (a checkpoint directory) or ``"gguf"`` (one ``.gguf`` file; the
            method is then one of :data:`GGUF_METHODS`).
    """

    method: str
    group_size: int | None = None
    embeddings: bool = True
    calibration: tuple[str, ...] = ()
    lm_head: bool = False
    calibration_samples: int = 32
    calibration_length: int = 256
    damp: float = 0.01
    threads: int | None = None
    format: str = "lmforge"

    def __post_init__(self) -> None:
        if self.group_size is None and self.method in ("int4-wo", "gptq-int4"):
            self.group_size = 64

    def validate(self) -> None:
        """Refuse bad settings before anything is read or written."""
        if self.format not in FORMATS:
            raise ConfigError(f"--format {self.format!r}: choose one of {', '.join(FORMATS)}")
        if self.format == "gguf":
            self._validate_gguf()
            return
        if self.method in GGUF_METHODS:
            raise ConfigError(f"--method {self.method} is a GGUF tensor type: add --format gguf")
        if self.method not in METHODS:
            raise ConfigError(
                f"--method {self.method!r}: choose one of {', '.join(METHODS)} (or, with --format gguf, "
                f"{', '.join(GGUF_METHODS)})"
            )
        if self.method in ("int8", "int8-wo", "gptq-int8"):
            if self.group_size is not None:
                raise ConfigError(
                    f"--group-size applies to int4-wo and gptq-int4; {self.method} has one scale per "
                    "output channel"
                )
        elif self.group_size not in GROUP_SIZES:
            raise ConfigError(
                f"--group-size {self.group_size}: choose one of {', '.join(map(str, GROUP_SIZES))}"
            )
        if self.method.startswith("gptq"):
            if not self.calibration:
                raise ConfigError(
                    f"--method {self.method} needs --calibration TEXT (a text file or web-bible)"
                )
            if self.calibration_samples < 1 or self.calibration_length < 8:
                raise ConfigError("--calibration-samples must be >= 1 and --calibration-length >= 8")
            if not 0 < self.damp < 1:
                raise ConfigError(f"--damp {self.damp}: must be in (0, 1)")
        elif self.calibration:
            raise ConfigError(f"--calibration is only used by the GPTQ methods, not {self.method}")

    def _validate_gguf(self) -> None:
        if self.method not in GGUF_METHODS:
            raise ConfigError(
                f"--format gguf: --method {self.method!r} is not a GGUF tensor type; choose one of "
                f"{', '.join(GGUF_METHODS)}"
            )
        for flag, given in (
            ("--group-size", self.group_size is not None),
            ("--calibration", bool(self.calibration)),
            ("--lm-head", self.lm_head),
        ):
            if given:
                raise ConfigError(f"{flag} does not apply to --format gguf (GGUF types fix their own blocks)")


def quantizable_linears(model: TransformerModel) -> list[str]:
    """Names of the linears a method quantizes: every ``nn.Linear`` of the stacks' blocks and the
    embedding projection (not the task heads or the LM head)."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.startswith(("stack.", "decoder.", "embeddings.")):
            names.append(name)
    return names


def check_supported(model: TransformerModel, config: QuantizeConfig, source: str) -> None:
    """Refuse a model the method has no kernel or path for, before any work."""
    if model.config.extra.get("quantization"):
        raise UnsupportedError(
            f"{source}: already quantized ({model.config.extra['quantization'].get('method')}); "
            "quantize the float model"
        )
    engines = torch.backends.quantized.supported_engines
    if config.method == "int8" and not {"fbgemm", "x86"} & set(engines):
        raise UnsupportedError(
            f"--method int8 needs torch's fbgemm engine (x86 CPUs); this torch has {', '.join(engines)}. "
            "Use --method int8-wo"
        )
    if config.method.startswith("gptq") and (model.decoder is not None or model.config.num_layer_groups):
        kind = "an encoder-decoder" if model.decoder is not None else "a layer-sharing (ALBERT)"
        raise UnsupportedError(
            f"{source}: {config.method} calibrates one stack of distinct blocks; {model.config.family} is {kind} "
            f"model. Use --method {'int4-wo' if config.method == 'gptq-int4' else 'int8-wo'}"
        )
    if config.group_size is not None and config.method in ("int4-wo", "gptq-int4"):
        names = quantizable_linears(model) + (
            ["lm_head.decoder"] if config.lm_head and model.lm_head is not None else []
        )
        for name in names:
            linear = model.get_submodule(name)
            assert isinstance(linear, nn.Linear)
            check_group_size(config.group_size, linear.in_features, name)


def calibration_batches(
    tokenizer: Tokenizer, inputs: tuple[str, ...], samples: int, length: int, batch_size: int = 4
) -> list[dict[str, Tensor]]:
    """``samples`` sequences of ``length`` tokens cut from the concatenated texts of ``inputs``
    (files or corpus assets), spread evenly over them, in batches.

    Raises:
        ConfigError: the texts hold fewer than ``length`` tokens.
    """
    from lmforge.data.readers import iter_texts

    ids: list[int] = []
    needed = samples * length * 8  # read enough text to spread the samples over, not the whole corpus
    for text in iter_texts(list(inputs)):
        ids.extend(tokenizer.encode(text, add_special_tokens=False))
        if len(ids) >= needed:
            break
    chunks = len(ids) // length
    if chunks == 0:
        raise ConfigError(
            f"--calibration {', '.join(inputs)}: {len(ids)} tokens, fewer than one sequence of {length}"
        )
    picks = torch.linspace(0, chunks - 1, min(samples, chunks)).round().long().tolist()
    rows = torch.tensor([ids[i * length : (i + 1) * length] for i in picks])  # (S, T)
    return [
        {"input_ids": rows[i : i + batch_size], "attention_mask": torch.ones_like(rows[i : i + batch_size])}
        for i in range(0, len(rows), batch_size)
    ]


@torch.no_grad()
def quantize_model(
    model: TransformerModel, config: QuantizeConfig, tokenizer: Tokenizer | None = None
) -> dict[str, Any]:
    """Quantize ``model`` in place (CPU, fp32) and record the layout in ``config.extra["quantization"]``.

    Args:
        model: a float model.
        config: the method and its settings (validated here).
        tokenizer: GPTQ: tokenises the calibration text.

    Returns:
        The quantization spec (method, group size, quantized module names).
    """
    config.validate()
    check_supported(model, config, "model")
    model.to("cpu", torch.float32).eval()
    if config.method.startswith("gptq"):
        if tokenizer is None:
            raise ConfigError(f"{config.method} needs the model's tokenizer for its calibration text")
        from lmforge.compress.gptq import gptq_quantize_stack

        batches = calibration_batches(
            tokenizer, config.calibration, config.calibration_samples, config.calibration_length
        )
        done = set(gptq_quantize_stack(model, batches, config.group_size, config.damp))
        rest = [name for name in quantizable_linears(model) if name not in done]  # e.g. ALBERT's projection
        _round_to_nearest(model, rest, config.method, config.group_size)  # same classes, rounded to nearest
    else:
        _round_to_nearest(model, quantizable_linears(model), config.method, config.group_size)
    if config.lm_head:
        if model.lm_head is None:
            raise ConfigError("--lm-head: this model has no LM head")
        _round_to_nearest(model, ["lm_head.decoder"], config.method, config.group_size)
    if config.method == "int8" and config.embeddings and model.lm_head is None:
        set_module(model, "embeddings.token", Int8Embedding.from_float(model.embeddings.token))
    spec = quantization_spec(model, config.method, config.group_size)
    # A new config object: the float model's config may be shared (a caller's, another model's).
    model.config = model.config.replace(extra={**model.config.extra, "quantization": spec})
    return spec


def _round_to_nearest(model: nn.Module, names: list[str], method: str, group_size: int | None) -> None:
    """Replace each named Linear with ``method``'s class, rounded to nearest (a GPTQ method's
    class too: for the layers GPTQ does not cover)."""
    cls = LINEAR_CLASSES[method]
    for name in names:
        linear = model.get_submodule(name)
        assert isinstance(linear, nn.Linear)
        if cls is Int4WeightOnlyLinear:
            assert group_size is not None
            set_module(model, name, Int4WeightOnlyLinear.from_float(linear, group_size))
        else:
            set_module(model, name, cls.from_float(linear))  # type: ignore[attr-defined]


def quantize(
    model: str | Path, out: str | Path, config: QuantizeConfig, eval_data: EvalData | None = None
) -> dict[str, Any]:
    """Quantize the model at ``model`` (any reference ``lmforge.load`` takes) into the checkpoint ``out``.

    Args:
        model: the float model.
        out: the checkpoint directory written (replaced whole).
        config: method and settings.
        eval_data: classifiers: also measure accuracy / ECE / NLL before, after and recalibrated
            (:mod:`lmforge.compress.report`) and save the recalibration with the model.

    Returns:
        The report written to ``out/compression.json``: method, settings, module count, bytes of
        weights before and after, file bytes (and the calibration report).
    """
    config.validate()
    if config.format == "gguf":
        return _quantize_to_gguf(model, Path(out), config, eval_data)
    prepare_output(out, eval_data)
    loaded = load(model)
    check_supported(loaded.model, config, str(model))
    before = copy.deepcopy(loaded) if eval_data is not None else None
    with torch_threads(config.threads):
        weight_bytes = parameter_bytes(loaded.model)
        spec = quantize_model(loaded.model, config, loaded.tokenizer)
        report = {
            "kind": "quantize",
            "model": str(model),
            "settings": asdict(config),
            "quantized_modules": len(spec["linears"]) + len(spec["embeddings"]),
            "weight_bytes_before": weight_bytes,
            "weight_bytes_after": parameter_bytes(loaded.model),
        }
        publish(out, loaded.model, loaded.tokenizer, report, before, eval_data)
    return report


def _quantize_to_gguf(
    model: str | Path, out: Path, config: QuantizeConfig, eval_data: EvalData | None
) -> dict[str, Any]:
    """``format="gguf"``: the model written as the one GGUF file ``out``."""
    from lmforge.models.io.gguf_export import check_exportable, export_gguf

    if eval_data is not None:
        raise ConfigError(
            "--eval-data does not apply to --format gguf; evaluate the written .gguf file instead"
        )
    if out.suffix != ".gguf" or out.is_dir():
        raise ConfigError(f"--out {out}: --format gguf writes one file; name it *.gguf (not a directory)")
    loaded = load(model)
    check_exportable(loaded.model, config.method.upper(), str(model))
    with torch_threads(config.threads):
        written = export_gguf(loaded.model, loaded.tokenizer, out, config.method.upper())
    return {
        "kind": "quantize",
        "model": str(model),
        "settings": asdict(config),
        "format": "gguf",
        "weight_bytes_before": parameter_bytes(loaded.model),
        **written,
    }
