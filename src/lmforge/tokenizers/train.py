"""Train a tokenizer from text: byte-level BPE, WordPiece or Unigram, with a model family's specials.

The ``tokenizers`` library does the training; this module sets up each family as its reference
tokenizer is laid out (normalizer, pre-tokenizer, special tokens and their ids, post-processor):

==========  =========  ===================================================================
family      kind       special tokens (ids in order) / what the post-processor adds
==========  =========  ===================================================================
gpt2        bpe        ``<|endoftext|>`` (0) as BOS/EOS/UNK/pad; adds nothing
llama       bpe        ``<|begin_of_text|>`` (0), ``<|end_of_text|>`` (1); adds BOS (Llama 3)
roberta     bpe        ``<s> <pad> </s> <unk> <mask>`` (0-4); ``<s> A </s></s> B </s>``
bert        wordpiece  ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (0-4); ``[CLS] A [SEP] B [SEP]`` + type ids
albert      unigram    ``<pad> <unk> [CLS] [SEP] [MASK]`` (0-4); as BERT
t5          unigram    ``<pad> </s> <unk>`` (0-2), ``<extra_id_0..99>`` last (0 highest); ``A </s>``
==========  =========  ===================================================================

WordPiece (BERT) puts spaces around every CJK character before splitting, so Chinese text is one
token per character, as in Google's Chinese BERT.

Example:
    >>> config = TokenizerTrainConfig(kind="wordpiece", vocab_size=8000, family="bert")
    >>> tokenizer = train_tokenizer(open("corpus.txt", encoding="utf-8"), config)  # doctest: +SKIP
    >>> tokenizer.save("runs/tok")  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE, Unigram, WordPiece

from lmforge.errors import ConfigError, LmforgeWarning
from lmforge.tokenizers.tokenizer import Tokenizer

__all__ = ["FAMILY_KINDS", "TokenizerTrainConfig", "train_tokenizer"]

TokenizerKind = Literal["bpe", "wordpiece", "unigram"]
TokenizerFamily = Literal["gpt2", "llama", "roberta", "bert", "albert", "t5"]

#: Which tokenizer model each family uses; the first family of a kind is its default.
FAMILY_KINDS: dict[str, TokenizerKind] = {
    "gpt2": "bpe",
    "llama": "bpe",
    "roberta": "bpe",
    "bert": "wordpiece",
    "t5": "unigram",
    "albert": "unigram",
}
_T5_SENTINELS = 100
# Llama 3's pre-tokenizer split (the GPT-4 pattern): digits in runs of at most three.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class TokenizerTrainConfig:
    """What to train.

    Attributes:
        kind: ``"bpe"`` (byte-level), ``"wordpiece"`` or ``"unigram"``.
        vocab_size: size of the final vocabulary, special tokens (and T5 sentinels) included.
        family: special tokens and layout, see the module table; default by kind (gpt2, bert, t5).
        lowercase: lowercase the text first (uncased models).
        min_frequency: a BPE merge / WordPiece piece must occur this often.
        model_max_length: longest sequence the model will accept (tokenizer default truncation).
    """

    kind: TokenizerKind
    vocab_size: int
    family: TokenizerFamily | None = None
    lowercase: bool = False
    min_frequency: int = 2
    model_max_length: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("bpe", "wordpiece", "unigram"):
            raise ConfigError(f"kind={self.kind!r}: use bpe, wordpiece or unigram")
        if self.family is not None and FAMILY_KINDS.get(self.family) != self.kind:
            fitting = [f for f, k in FAMILY_KINDS.items() if k == self.kind]
            raise ConfigError(
                f"family={self.family!r} does not use {self.kind}; for {self.kind} use one of {fitting}"
            )
        floor = 256 + 8 if self.kind == "bpe" else 8 + (_T5_SENTINELS if self.resolved_family == "t5" else 0)
        if self.vocab_size < floor:
            raise ConfigError(
                f"vocab_size={self.vocab_size} is too small for {self.kind}/{self.resolved_family}: need >= {floor}"
            )

    @property
    def resolved_family(self) -> str:
        """The family, defaulted by kind."""
        return self.family or {"bpe": "gpt2", "wordpiece": "bert", "unigram": "t5"}[self.kind]


def _normalizer(config: TokenizerTrainConfig) -> normalizers.Normalizer | None:
    family = config.resolved_family
    if family == "bert":
        # NFKC first, as `lmforge data prepare` cleans the corpus (full-width "，" is "," there, so raw
        # text at inference would otherwise meet [UNK]); then BERT's own normalizer: CJK characters
        # padded with spaces, control characters dropped.
        return normalizers.Sequence(
            [
                normalizers.NFKC(),
                normalizers.BertNormalizer(
                    clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=config.lowercase
                ),
            ]
        )
    steps: list[normalizers.Normalizer] = []
    if family in ("t5", "albert"):
        # SentencePiece-style: NFKC, ``` and '' as double quotes (ALBERT), runs of spaces as one.
        steps += (
            [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')] if family == "albert" else []
        )
        steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    if config.lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps) if steps else None


def _layout(
    config: TokenizerTrainConfig, limit_alphabet: int | None = None
) -> tuple[Backend, trainers.Trainer, dict[str, str], list[str]]:
    """Backend (untrained), trainer, special-token roles and the special tokens in id order."""
    family, size, frequency = config.resolved_family, config.vocab_size, config.min_frequency
    if config.kind == "bpe":
        specials = {
            "gpt2": ["<|endoftext|>"],
            "llama": ["<|begin_of_text|>", "<|end_of_text|>"],
            "roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        }[family]
        backend = Backend(
            BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
        )
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=family != "llama")
        if family == "llama":
            split = pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False)
            backend.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
        else:
            backend.pre_tokenizer = byte_level
        backend.decoder = decoders.ByteLevel()
        trainer: trainers.Trainer = trainers.BpeTrainer(
            vocab_size=size,
            min_frequency=frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        roles = {
            "gpt2": {
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
            },
            # Neither GPT-2 nor Llama 3 has a pad token; padding with EOS under an attention mask is the custom.
            "llama": {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
            "roberta": {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "cls_token": "<s>",
                "sep_token": "</s>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "mask_token": "<mask>",
            },
        }[family]
        roles.setdefault("pad_token", roles["eos_token"])
        return backend, trainer, roles, specials
    if config.kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        backend = Backend(WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        trainer = trainers.WordPieceTrainer(
            vocab_size=size,
            min_frequency=frequency,
            special_tokens=specials,
            continuing_subword_prefix="##",
            # Chinese has thousands of characters: keep the most frequent ones within the budget
            # (the rest become [UNK]) instead of overshooting vocab_size.
            limit_alphabet=limit_alphabet or size - len(specials),
            show_progress=False,
        )
        roles = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), specials))
        return backend, trainer, roles, specials
    if family == "t5":
        specials = ["<pad>", "</s>", "<unk>"]
        roles = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
        size -= _T5_SENTINELS
    else:
        specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
        roles = {
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
            "bos_token": "[CLS]",
            "eos_token": "[SEP]",
        }
    backend = Backend(Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=size, special_tokens=specials, unk_token="<unk>", max_piece_length=16, show_progress=False
    )
    return backend, trainer, roles, specials


def _post_processor(family: str, backend: Backend) -> processors.PostProcessor | None:
    vocab = backend.get_vocab()

    def ids(*tokens: str) -> list[tuple[str, int]]:
        return [(token, vocab[token]) for token in tokens]

    if family in ("bert", "albert"):
        return processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=ids("[CLS]", "[SEP]"),
        )
    if family == "t5":
        return processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=ids("</s>")
        )
    if family == "llama":
        bos = "<|begin_of_text|>"
        return processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=ids(bos)
                ),
            ]
        )
    if family == "roberta":
        return processors.RobertaProcessing(
            ids("</s>")[0], ids("<s>")[0], trim_offsets=True, add_prefix_space=False
        )
    return processors.ByteLevel(trim_offsets=False)


def _with_character_coverage(texts: list[str], max_chars: int, coverage: float = 0.9995) -> list[str]:
    """Texts without the rarest characters: keep those covering ``coverage`` of all, at most ``max_chars``."""
    counts = collections.Counter(ch for text in texts for ch in text if not ch.isspace())
    total, covered, keep = sum(counts.values()), 0, set()
    for ch, count in counts.most_common(max_chars):
        if covered >= coverage * total:
            break
        keep.add(ch)
        covered += count
    if len(keep) == len(counts):
        return texts
    return ["".join(ch for ch in text if ch in keep or ch.isspace()) for text in texts]


def train_tokenizer(texts: Iterable[str], config: TokenizerTrainConfig) -> Tokenizer:
    """Train a tokenizer on texts and return it ready to use and save.

    Args:
        texts: documents or lines (an open text file works: one line at a time).
        config: kind, size and family.

    Returns:
        The trained :class:`Tokenizer`; ``tokenizer.save(dir)`` writes ``tokenizer.json`` and
        ``tokenizer_config.json``, ``Tokenizer.from_dir(dir)`` reads them back.

    Raises:
        ConfigError: the texts are empty.
    """
    corpus = [text for text in texts if text.strip()]
    if not corpus:
        raise ConfigError("no text to train the tokenizer on: every input was empty")
    if config.kind == "unigram":
        # The unigram trainer fails when the alphabet exceeds the vocabulary; drop rare characters
        # as SentencePiece's character_coverage does (they become <unk>).
        # Characters may take up to 90% of the budget (Chinese needs most of it for characters).
        corpus = _with_character_coverage(corpus, int(0.9 * config.vocab_size))
    limit_alphabet = None
    for _ in range(3):
        backend, trainer, roles, specials = _layout(config, limit_alphabet)
        backend.normalizer = _normalizer(config)
        backend.train_from_iterator(corpus, trainer=trainer)
        excess = backend.get_vocab_size() - config.vocab_size
        if config.kind != "wordpiece" or excess <= 0:
            break
        # WordPiece adds "##c" forms on top of the alphabet: shrink the alphabet by the excess.
        limit_alphabet = max(1, (limit_alphabet or config.vocab_size - len(specials)) - excess)
    family = config.resolved_family
    # Registered as special added tokens so that e.g. "[MASK]" in text stays one token.
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, lstrip=t == "<mask>") for t in specials]
    )
    if family == "t5":
        # As in T5: <extra_id_0> has the highest id, counting down.
        backend.add_special_tokens(
            [
                AddedToken(f"<extra_id_{i}>", special=True, normalized=False)
                for i in reversed(range(_T5_SENTINELS))
            ]
        )
    backend.post_processor = _post_processor(family, backend)
    if backend.get_vocab_size() < config.vocab_size:
        # The trainer stops when the text has no more merges / pieces to offer: say so rather than
        # hand back a smaller vocabulary than asked for in silence.
        warnings.warn(
            LmforgeWarning(
                f"vocab_size={config.vocab_size}: the text supports only {backend.get_vocab_size()} tokens "
                f"(special tokens included), so the tokenizer has {backend.get_vocab_size()}; give more text "
                "or a smaller --vocab-size"
            ),
            stacklevel=2,
        )
    with_types = family in ("bert", "albert")
    return Tokenizer(
        backend,
        special_tokens=roles,
        model_max_length=config.model_max_length,
        model_input_names=("input_ids", "token_type_ids", "attention_mask")
        if with_types
        else ("input_ids", "attention_mask"),
    )
