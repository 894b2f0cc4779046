"""Text generation: incremental detokenization that never splits a UTF-8 character, stop strings
matched on decoded text across token boundaries, and per-row deltas of a batch."""

from __future__ import annotations

import pytest
import torch
from scripted import byte_bpe, chain, scripted_model

from lmforge.generate import GenerationConfig
from lmforge.generate.text import IncrementalDecoder, encode_prompts, generate_text, stream_text
from lmforge.models import TransformerModel, preset_config
from lmforge.tokenizers import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

CJK_EMOJI = "世界🎉天气"  # every character spans several tokens of the small BPE
END = " END there"  # tokens " ", "EN", "D", " the", "re": the stop string "ND" spans two


def _pushed(tokenizer: Tokenizer, text: str) -> list[str]:
    decoder = IncrementalDecoder(tokenizer)
    deltas = []
    for token in tokenizer.encode(text, add_special_tokens=False):
        decoder.push(token)
        deltas.append(decoder.delta())
    decoder.finish()
    deltas.append(decoder.delta(final=True))
    return deltas


def _assert_whole_characters(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids), "the text must split characters over tokens"
    deltas = _pushed(tokenizer, text)
    assert all("\ufffd" not in d for d in deltas), deltas
    assert "".join(deltas) == text


def test_incremental_decoding_never_splits_a_character() -> None:
    _assert_whole_characters(byte_bpe(), "你好，世界！今天天气很好。🙂🎉🚀 👍🏽")


def test_incremental_decoding_with_the_gpt2_bpe() -> None:
    from lmforge.errors import LmforgeError
    from lmforge.tokenizers import load_gpt2_bpe

    try:
        tokenizer = load_gpt2_bpe()
    except LmforgeError:
        pytest.skip("gpt2-bpe asset not installed")
    _assert_whole_characters(tokenizer, "北京是中国的首都，上海很大。🙂🎉👍🏽 end")


@pytest.mark.slow
def test_incremental_decoding_with_the_smollm2_tokenizer() -> None:
    from lmforge.assets import asset_path
    from lmforge.errors import LmforgeError
    from lmforge.models.io.gguf import read_gguf

    try:
        path = asset_path("smollm2-135m-instruct")
    except LmforgeError:
        pytest.skip("smollm2-135m-instruct asset not installed")
    tokenizer = Tokenizer.from_gguf(read_gguf(path).metadata)
    _assert_whole_characters(tokenizer, "北京是中国的首都，鱻龘🙂🎉👍🏽 and English")


def test_incomplete_bytes_at_the_end_show_as_replacement() -> None:
    tokenizer = byte_bpe()
    ids = tokenizer.encode("你好🙂", add_special_tokens=False)[:-1]  # the emoji's last byte is missing
    decoder = IncrementalDecoder(tokenizer)
    decoder.extend(ids)
    assert decoder.delta() == "你好"
    decoder.finish()
    assert decoder.delta(final=True) == "\ufffd"


@pytest.fixture(scope="module")
def scripted() -> tuple[TransformerModel, Tokenizer, dict[str, list[int]]]:
    """A model that, after prompt token "ST", writes CJK_EMOJI; after "OP", writes END; then EOS."""
    tokenizer = byte_bpe()
    prompts = {
        "ST": tokenizer.encode("ST", add_special_tokens=False),
        "OP": tokenizer.encode("OP", add_special_tokens=False),
    }
    cjk = prompts["ST"] + tokenizer.encode(CJK_EMOJI, add_special_tokens=False)
    end = prompts["OP"] + tokenizer.encode(END, add_special_tokens=False)
    assert not set(cjk) & set(end)
    eos = tokenizer.eos_token_id
    assert eos is not None
    model = scripted_model(
        tokenizer.vocab_size, {**chain(cjk), **chain(end), cjk[-1]: eos, end[-1]: eos}, eos
    )
    return model, tokenizer, {"cjk": cjk[1:], "end": end[1:]}


def _joined(steps: list, row: int) -> str:
    return "".join(step.deltas[row] for step in steps)


def test_stream_text_batch_rows_get_their_own_whole_character_deltas(scripted) -> None:
    model, tokenizer, ids = scripted
    steps = list(
        stream_text(
            model, tokenizer, ["ST", "OP"], GenerationConfig(max_new_tokens=20), add_special_tokens=False
        )
    )
    assert _joined(steps, 0) == CJK_EMOJI
    assert _joined(steps, 1) == END
    assert all("\ufffd" not in step.deltas[0] for step in steps)
    assert [step.finished[1] for step in steps].count("stop") == 1
    assert steps[-1].finished[0] == "stop"  # the EOS after the text
    assert sum(1 for step in steps if step.deltas[0]) == len(CJK_EMOJI)  # one delta per character


def test_generate_text_returns_text_ids_reason_and_logprobs(scripted) -> None:
    model, tokenizer, ids = scripted
    config = GenerationConfig(max_new_tokens=3, logprobs=True, top_logprobs=2)
    short, full = generate_text(model, tokenizer, ["ST", "OP"], config, add_special_tokens=False)
    assert (short.text, short.token_ids, short.finish_reason) == (
        "世\ufffd",
        ids["cjk"][:3],
        "length",
    )  # 界 cut off after one byte
    assert full.text == " END" and full.finish_reason == "length" and full.prompt_tokens == 1
    assert short.logprobs is not None and len(short.logprobs) == 3 and all(lp <= 0 for lp in short.logprobs)
    assert short.top_logprobs is not None and short.top_logprobs[1][0][0] == ids["cjk"][1]


def test_stop_string_split_over_two_tokens_stops_and_is_cut(scripted) -> None:
    model, tokenizer, ids = scripted
    config = GenerationConfig(max_new_tokens=20, stop=["ND"], logprobs=True)
    (result,) = generate_text(model, tokenizer, ["OP"], config, add_special_tokens=False)
    assert result.text == " E"
    assert result.finish_reason == "stop"
    assert result.token_ids == ids["end"][:3]  # up to the token that completed the stop string
    assert result.logprobs is not None and len(result.logprobs) == 3
    steps = list(stream_text(model, tokenizer, ["OP"], config, add_special_tokens=False))
    assert _joined(steps, 0) == " E"  # the "N" of "EN" was held back, never sent
    assert len(steps) == 3  # the engine stopped decoding at the stop string


def test_stop_string_in_one_row_leaves_the_other_running(scripted) -> None:
    model, tokenizer, _ = scripted
    config = GenerationConfig(max_new_tokens=20, stop=["ND", "🎉"])
    cjk, end = generate_text(model, tokenizer, ["ST", "OP"], config, add_special_tokens=False)
    assert (cjk.text, cjk.finish_reason) == ("世界", "stop")
    assert (end.text, end.finish_reason) == (" E", "stop")


def test_held_back_prefix_is_released_when_the_stop_string_does_not_complete(scripted) -> None:
    model, tokenizer, _ = scripted
    config = GenerationConfig(max_new_tokens=20, stop=["ENDX"])
    steps = list(stream_text(model, tokenizer, ["OP"], config, add_special_tokens=False))
    assert _joined(steps, 0) == END
    deltas = [step.deltas[0] for step in steps]
    assert deltas[:3] == [" ", "", ""]  # "EN", "END" could still become "ENDX"
    assert steps[-1].finished[0] == "stop"


def test_beam_search_cuts_at_stop_strings_too(scripted) -> None:
    model, tokenizer, _ = scripted
    config = GenerationConfig(max_new_tokens=8, num_beams=2, stop=["ND"])
    (result,) = generate_text(model, tokenizer, ["OP"], config, add_special_tokens=False)
    assert (result.text, result.finish_reason) == (" E", "stop")


def test_n_samples_are_prompt_major_and_seeded() -> None:
    tokenizer = byte_bpe()
    torch.manual_seed(0)
    model = TransformerModel(
        preset_config("gpt2-tiny", head="causal_lm", vocab_size=tokenizer.vocab_size)
    ).eval()
    config = GenerationConfig(max_new_tokens=6, temperature=1.0, n=2, seed=3, ignore_eos=True)
    first = generate_text(model, tokenizer, ["你好", "Hello world"], config)
    again = generate_text(model, tokenizer, ["你好", "Hello world"], config)
    assert [c.prompt_index for c in first] == [0, 0, 1, 1]
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert all(c.text == tokenizer.decode(c.token_ids) for c in first)


def test_encode_prompts_left_pads() -> None:
    tokenizer = byte_bpe()
    ids, mask = encode_prompts(tokenizer, ["ST", "Hello world"], add_special_tokens=False)
    assert mask[0].tolist()[-1] == 1 and mask[0].tolist()[0] == 0
    assert ids[0, -1].item() == tokenizer.encode("ST", add_special_tokens=False)[-1]
