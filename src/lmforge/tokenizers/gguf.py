"""Building a ``tokenizers`` backend from a GGUF file's ``tokenizer.ggml.*`` metadata.

A GGUF file carries no ``tokenizer.json``: llama.cpp stores the vocabulary, merges, token types
and special token ids as metadata. This module rebuilds the fast tokenizer from them, replicating
``transformers``' GGUF converter (``transformers/integrations/gguf/gguf_tokenizer_mapping.py``)
so that ids are identical to ``AutoTokenizer.from_pretrained(dir, gguf_file=...)``:

* ``tokenizer.ggml.model == "gpt2"``: byte-level BPE as in ``GPT2Tokenizer`` (tokens not spelled in
  the byte alphabet are respelled through it), with a regex ``Split`` in front of the byte-level
  pre-tokenizer when ``tokenizer.ggml.pre`` names a known split (Llama 3, Qwen 2, GPT-4o, ...).
* ``tokenizer.ggml.model == "llama"``: SentencePiece-style BPE with byte fallback as in
  ``LlamaTokenizer``; merges come from the file or are rebuilt from the token scores.

In both, CONTROL tokens (type 3) become special added tokens and USER_DEFINED ones (type 4) plain
added tokens, so they are matched whole; the post-processor adds BOS / EOS according to
``tokenizer.ggml.add_bos_token`` / ``add_eos_token`` (BOS defaults to on for ``"llama"``).

One deliberate difference: transformers builds through ``GPT2Tokenizer`` / ``LlamaTokenizer``, whose
class-default special tokens (``<|endoftext|>``; ``<unk>``, ``<s>``, ``</s>``) get appended as new
ids past the end of the vocabulary when the file does not have them. Those ids have no embedding
row, so lmforge leaves them out; text containing such a literal string is tokenized as plain text.

This module takes the metadata dict, not a path, so the tokenizers stage stays independent of the
models stage that reads the file (``lmforge.models.io.gguf``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE

from lmforge.errors import CheckpointError, UnsupportedError

__all__ = ["GGUFTokenizerParts", "build_gguf_tokenizer"]

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp's llama_token_type values

# Architectures whose "llama" (SentencePiece) vocabulary transformers builds differently.
_UNSUPPORTED_SENTENCEPIECE_ARCHS = ("gemma", "gemma2", "gemma3", "gemma4", "phi3")

# Pre-tokenizer splits by `tokenizer.ggml.pre`, the same table as transformers'. Any other value
# (e.g. SmolLM2's "smollm") keeps GPT-2's built-in byte-level regex.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZER_SPLITS: dict[str, str] = {
    **dict.fromkeys(
        ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2")
        + ("jina-v5-nano", "dbrx", "smaug-bpe"),
        _LLAMA3_SPLIT,
    ),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2_SPLIT),
    "qwen35": _QWEN35_SPLIT,
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O_SPLIT),
}


@dataclass
class GGUFTokenizerParts:
    """What a GGUF's metadata says about its tokenizer, ready for ``lmforge.tokenizers.Tokenizer``.

    Attributes:
        backend: the fast tokenizer (vocabulary, merges, pre-tokenizer, post-processor, decoder).
        special_tokens: ``"bos_token"`` / ``"eos_token"`` / ``"unk_token"`` / ``"pad_token"`` ->
            token string, for the ids the file names.
        chat_template: Jinja chat template, if the file has one.
        model_max_length: ``{architecture}.context_length``, if present.
    """

    backend: Backend
    special_tokens: dict[str, str] = field(default_factory=dict)
    chat_template: str | None = None
    model_max_length: int | None = None


def build_gguf_tokenizer(metadata: Mapping[str, Any]) -> GGUFTokenizerParts:
    """Build the tokenizer described by GGUF metadata.

    Args:
        metadata: decoded GGUF key/values, e.g. ``lmforge.models.io.gguf.read_gguf(path).metadata``.

    Returns:
        The backend tokenizer and its special tokens, chat template and context length.

    Raises:
        CheckpointError: the metadata has no vocabulary, or its merges are malformed.
        UnsupportedError: the tokenizer model is not ``"gpt2"`` or ``"llama"`` (or is a
            SentencePiece variant transformers treats specially, such as Gemma or Phi-3).
    """
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not tokens:
        raise CheckpointError(
            "GGUF metadata has no tokenizer.ggml.tokens: this file carries no tokenizer. "
            "Load one from a tokenizer directory with Tokenizer.from_dir instead."
        )
    tokenizer_model = metadata.get("tokenizer.ggml.model")
    architecture = metadata.get("general.architecture")
    token_types = list(metadata.get("tokenizer.ggml.token_type") or ())
    if tokenizer_model == "gpt2":
        backend = _byte_level_bpe(tokens, _merges(metadata))
        add_bos_default = False
    elif tokenizer_model == "llama" and architecture not in _UNSUPPORTED_SENTENCEPIECE_ARCHS:
        backend = _sentencepiece_bpe(tokens, _merges(metadata))
        # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise.
        add_bos_default = True
    else:
        raise UnsupportedError(
            f"GGUF tokenizer.ggml.model={tokenizer_model!r} (architecture {architecture!r}) is not "
            "supported; lmforge builds 'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE) "
            "tokenizers. Load the model's tokenizer.json with Tokenizer.from_dir instead."
        )

    _add_typed_tokens(backend, tokens, token_types, byte_level=tokenizer_model == "gpt2")
    special_tokens = {}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        token_id = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            special_tokens[f"{name}_token"] = tokens[token_id]
    # Like transformers, a named special token that is not already an added token becomes one,
    # so it is never split and `skip_special_tokens` drops it.
    added = {token.content for token in backend.get_added_tokens_decoder().values()}
    missing = [token for token in special_tokens.values() if token not in added]
    if missing:
        backend.add_special_tokens([AddedToken(token, special=True) for token in dict.fromkeys(missing)])

    split = PRE_TOKENIZER_SPLITS.get(metadata.get("tokenizer.ggml.pre", ""))
    if split is not None and tokenizer_model == "gpt2":
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    backend.post_processor = _bos_eos_template(
        special_tokens,
        backend,
        add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", add_bos_default)),
        add_eos=bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
    )
    context_length = metadata.get(f"{architecture}.context_length")
    return GGUFTokenizerParts(
        backend=backend,
        special_tokens=special_tokens,
        chat_template=metadata.get("tokenizer.chat_template"),
        model_max_length=int(context_length) if context_length is not None else None,
    )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (byte-level BPE's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {byte: chr(byte) for byte in printable}
    shift = 0
    for byte in range(256):
        if byte not in table:
            # Unprintable bytes map to code points above 255, in byte order.
            table[byte] = chr(256 + shift)
            shift += 1
    return dict(sorted(table.items()))


def _merges(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Merges from the file, or (SentencePiece files without any) rebuilt from the token scores."""
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is None:
        tokens = metadata["tokenizer.ggml.tokens"]
        scores = metadata.get("tokenizer.ggml.scores")
        if scores is None:
            raise CheckpointError(
                "GGUF metadata has neither tokenizer.ggml.merges nor tokenizer.ggml.scores, so the BPE "
                "merges cannot be known. The file's tokenizer is incomplete; use Tokenizer.from_dir."
            )
        return _merges_from_scores(tokens, scores)
    pairs = []
    for index, merge in enumerate(merges):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise CheckpointError(
                f"GGUF metadata tokenizer.ggml.merges[{index}] is {merge!r}, not two tokens separated "
                "by one space. The file's tokenizer is corrupt."
            )
        pairs.append((parts[0], parts[1]))
    return pairs


def _merges_from_scores(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """Every split of a token into two vocabulary tokens, best-scored token first.

    Same order as transformers' ``generate_merges(vocab, vocab_scores)``: for each token, its
    splits sorted by the ids of the two halves; then all of them by (score, left length, right
    length), descending.
    """
    vocab = {token: index for index, token in enumerate(tokens)}
    candidates = []
    for token, score in dict(zip(tokens, scores, strict=True)).items():
        local = [
            (token[:cut], token[cut:], score)
            for cut in range(1, len(token))
            if token[:cut] in vocab and token[cut:] in vocab
        ]
        candidates.extend(sorted(local, key=lambda merge: (vocab[merge[0]], vocab[merge[1]])))
    candidates.sort(key=lambda merge: (merge[2], len(merge[0]), len(merge[1])), reverse=True)
    return [(left, right) for left, right, _ in candidates]


def _byte_level_bpe(tokens: list[str], merges: list[tuple[str, str]]) -> Backend:
    """GPT-2 style byte-level BPE, as ``transformers.GPT2Tokenizer`` builds it."""
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    # Some converters store tokens as raw text; BPE needs them spelled in the byte alphabet.
    vocab = {
        token if set(token) <= alphabet else "".join(spelling[byte] for byte in token.encode("utf-8")): index
        for index, token in enumerate(tokens)
    }
    backend = Backend(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    )
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_bpe(tokens: list[str], merges: list[tuple[str, str]]) -> Backend:
    """SentencePiece-style BPE with byte fallback, as ``transformers.LlamaTokenizer`` builds it."""
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = Backend(BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True, dropout=None))
    # "first": only the start of the text gets the "▁" word marker, not each added-token split.
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(content=" ", left=1),
        ]
    )
    return backend


def _add_typed_tokens(backend: Backend, tokens: list[str], token_types: list[int], byte_level: bool) -> None:
    """Register CONTROL tokens as special and USER_DEFINED ones as plain added tokens."""
    alphabet = set(bytes_to_unicode().values()) if byte_level else None
    # A CONTROL token spelled outside the byte alphabet is a llama.cpp mislabel; adding it would
    # grow the vocabulary past the embedding size, so (like transformers) it is skipped.
    control = [
        AddedToken(token, normalized=False, special=True)
        for token, token_type in zip(tokens, token_types, strict=False)
        if token_type == _CONTROL and (alphabet is None or set(token) <= alphabet)
    ]
    if control:
        backend.add_special_tokens(control)
    vocab = backend.get_vocab()
    user_defined = [
        AddedToken(token, normalized=False, special=False)
        for token, token_type in zip(tokens, token_types, strict=False)
        if token_type == _USER_DEFINED and token in vocab
    ]
    if user_defined:
        backend.add_tokens(user_defined)


def _bos_eos_template(
    special_tokens: Mapping[str, str], backend: Backend, add_bos: bool, add_eos: bool
) -> processors.TemplateProcessing:
    """``[BOS] $A [EOS]`` (each part optional), the post-processor transformers installs."""
    bos = special_tokens.get("bos_token") if add_bos else None
    eos = special_tokens.get("eos_token") if add_eos else None
    single = f"{f'{bos}:0 ' if bos else ''}$A:0{f' {eos}:0' if eos else ''}"
    pair = f"{single}{f' {bos}:1' if bos else ''} $B:1{f' {eos}:1' if eos else ''}"
    specials = [(token, backend.token_to_id(token)) for token in (bos, eos) if token is not None]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
