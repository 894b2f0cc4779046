"""Back-translation augmentation with a (tiny, random) lmforge encoder-decoder checkpoint."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as Backend

import lmforge
from lmforge.data.augment import augment_task_data
from lmforge.data.classification import ClassificationData, ClassificationExample
from lmforge.errors import ConfigError
from lmforge.generate.backtranslate import load_back_translator, translate
from lmforge.models import TransformerModel, preset_config
from lmforge.tokenizers import Tokenizer
from lmforge.train.augmentation import augment_training
from lmforge.train.finetune import FinetuneConfig

TEXTS = ["the film was good", "a dull and long story", "great acting and a fine plot"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TEXTS * 3, trainer)
    backend.add_special_tokens([AddedToken(t, special=True) for t in ("<pad>", "</s>")])
    tokenizer = Tokenizer(backend, special_tokens={"pad_token": "<pad>", "eos_token": "</s>"})
    torch.manual_seed(0)
    config = preset_config("t5-tiny", head="seq2seq_lm", vocab_size=tokenizer.vocab_size)
    path = tmp_path_factory.mktemp("models") / "t5"
    lmforge.save(TransformerModel(config), path, tokenizer)
    return path


def test_round_trip_is_greedy_and_deterministic(tiny_t5: Path) -> None:
    translator = load_back_translator(str(tiny_t5), "to pivot: ", "back: ", max_new_tokens=6)
    first = translator(TEXTS, np.random.default_rng(0))
    assert len(first) == len(TEXTS) and all(isinstance(t, str) and t for t in first)
    assert translator(TEXTS, np.random.default_rng(1)) == first  # greedy: the rng plays no part
    # the round trip is pivot-then-back: the same as two explicit translations
    loaded = lmforge.load(tiny_t5)
    pivot = translate(loaded, TEXTS, "to pivot: ", max_new_tokens=6)
    back = translate(loaded, pivot, "back: ", max_new_tokens=6)
    assert first == [b if b.strip() else t for b, t in zip(back, TEXTS)]


def test_back_translation_augments_the_training_split(tiny_t5: Path) -> None:
    data = ClassificationData([ClassificationExample(t, i % 2) for i, t in enumerate(TEXTS)], ["neg", "pos"])
    translator = load_back_translator([str(tiny_t5), str(tiny_t5)], max_new_tokens=4)
    config = FinetuneConfig(augment=("backtranslation",), augment_copies=1)
    out = augment_training(data, config, [translator])
    assert len(out.examples) == 2 * len(TEXTS) and out.info["augmentations"] == ["backtranslation"]
    assert out.examples == augment_task_data(data, [translator], 1, 0).examples
    with pytest.raises(ConfigError, match="--augment-model"):
        augment_training(data, config)


def test_bad_models_are_refused(tiny_t5: Path) -> None:
    with pytest.raises(ConfigError, match="one or two"):
        load_back_translator(["a", "b", "c"])
    config = SimpleNamespace(is_encoder_decoder=False, family="llama", head="causal_lm")
    decoder_only = SimpleNamespace(config=config, source="llama-dir", tokenizer=None)
    with pytest.raises(ConfigError, match="encoder-decoder"):
        translate(decoder_only, TEXTS)  # type: ignore[arg-type]
