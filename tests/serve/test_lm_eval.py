"""lm-eval's ``local-completions`` model against the lmforge server scores a multiple-choice task as
lm-eval's own ``hf`` backend does on the same weights (the oracle).

lm-eval reads log-likelihoods from ``/v1/completions`` with ``echo`` + ``logprobs`` (and
``max_tokens: 1``, whose generated token it slices off), so an off-by-one in the echoed prompt
scores, a wrong first-token ``None``, or a tokenizer that disagrees with the exported one changes
the per-choice numbers compared here. Everything is offline: a task YAML over a local JSONL, a tiny
random Llama exported as a transformers directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from serving import chat_tokenizer, serving

import lmforge
from lmforge.assets import check_asset
from lmforge.models import TransformerModel, preset_config
from lmforge.serve.config import ServeConfig

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-eval is not installed (pip install 'lm-eval>=0.4.9,<0.5')"
)

# ~12 s on 2 cores for the tiny model (most of it importing lm-eval and transformers), ~25 s for SmolLM2
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

DATA = Path(__file__).parent / "data" / "lm_eval_choices.jsonl"
TASK = "lmforge_choices"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama with the tests' byte-level BPE, as a directory both backends load."""
    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    config = preset_config("llama-tiny", head="causal_lm", vocab_size=tokenizer.vocab_size, max_positions=256)
    model = TransformerModel(config).eval()
    return lmforge.save_hf(model, tmp_path_factory.mktemp("lm_eval") / "tiny-llama-hf", tokenizer)


@pytest.fixture(scope="module")
def task_manager(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """lm-eval's TaskManager with one local multiple-choice task over DATA (no hub dataset)."""
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("lm_eval_task")
    task = {
        "task": TASK,
        "dataset_path": "json",
        # the datasets cache goes to tmp, not ~/.cache
        "dataset_kwargs": {"data_files": {"test": str(DATA)}, "cache_dir": str(folder / "cache")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(task))
    return TaskManager(include_path=str(folder))


def _evaluate(task_manager: Any, model: str, model_args: str, **kwargs: Any) -> dict[str, Any]:
    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=[TASK],
        task_manager=task_manager,
        log_samples=True,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
        **kwargs,
    )


def _scores(output: dict[str, Any]) -> tuple[list[tuple[int, int]], list[float], list[bool]]:
    """Per (document, choice): its id, its log-likelihood and whether it is the greedy continuation."""
    keys, loglikelihoods, greedy = [], [], []
    for sample in sorted(output["samples"][TASK], key=lambda s: s["doc_id"]):
        for choice, response in enumerate(sample["resps"]):
            loglikelihood, is_greedy = response[0]
            keys.append((sample["doc_id"], choice))
            loglikelihoods.append(float(loglikelihood))
            greedy.append(bool(is_greedy))
    return keys, loglikelihoods, greedy


def _hf_reference(task_manager: Any, hf_dir: Path) -> dict[str, Any]:
    return _evaluate(task_manager, "hf", f"pretrained={hf_dir},dtype=float32,device=cpu", batch_size=8)


def _served(
    task_manager: Any, model: Path | lmforge.LoadedModel, hf_dir: Path, tokenized_requests: bool = True
) -> dict[str, Any]:
    """local-completions against ``model`` served by lmforge; lm-eval counts tokens with ``hf_dir``."""
    with serving(model, config=ServeConfig(model_name="served")) as server:
        args = (
            f"base_url={server.url}/v1/completions,model=served,tokenizer={hf_dir},"
            f"tokenizer_backend=huggingface,tokenized_requests={tokenized_requests},max_retries=1"
        )
        return _evaluate(task_manager, "local-completions", args, batch_size=4)


def _assert_same_scores(served: dict[str, Any], reference: dict[str, Any]) -> list[bool]:
    keys, expected, expected_greedy = _scores(reference)
    got_keys, got, got_greedy = _scores(served)
    assert len(keys) == 60 and got_keys == keys  # 20 documents, 2-4 choices each
    assert got == pytest.approx(expected, abs=1e-3)
    assert got_greedy == expected_greedy
    for metric in ("acc,none", "acc_norm,none"):
        assert served["results"][TASK][metric] == reference["results"][TASK][metric]
    return got_greedy


@pytest.fixture(scope="module")
def reference(hf_dir: Path, task_manager: Any) -> dict[str, Any]:
    return _hf_reference(task_manager, hf_dir)


@pytest.mark.parametrize("tokenized_requests", [True, False], ids=["token-ids", "text"])
def test_local_completions_scores_like_the_hf_backend(
    hf_dir: Path, task_manager: Any, reference: dict[str, Any], tokenized_requests: bool
) -> None:
    """Token-id prompts test the echoed scores alone; text prompts add the server's tokenizer."""
    _assert_same_scores(_served(task_manager, hf_dir, hf_dir, tokenized_requests), reference)


@pytest.mark.skipif(not check_asset("smollm2-135m-instruct")["ok"], reason="SmolLM2 asset not installed")
def test_smollm2_served_scores_like_the_hf_backend(task_manager: Any, tmp_path: Path) -> None:
    """Real weights: above-chance accuracy and some greedy continuations, which random weights never give."""
    bundle = lmforge.load("smollm2-135m-instruct")
    hf_dir = lmforge.save_hf(bundle.model, tmp_path / "smollm2-hf", bundle.tokenizer)
    reference = _hf_reference(task_manager, hf_dir)
    greedy = _assert_same_scores(_served(task_manager, bundle, hf_dir), reference)
    assert reference["results"][TASK]["acc,none"] >= 0.5  # chance is 0.36 on these items
    assert any(greedy)
