"""The lmforge tokenizer: a thin, typed wrapper around a ``tokenizers.Tokenizer`` (Rust) backend.

The backend does the work (normalize, pre-tokenize, BPE / WordPiece, post-process, decode); this
class adds what a model needs around it: special tokens, batching with padding and truncation,
chat templates, and a save / load layout that ``transformers.AutoTokenizer`` reads as well::

    tokenizer = Tokenizer.from_dir("path/to/model")  # tokenizer.json (+ tokenizer_config.json)
    batch = tokenizer(["Hello!", "A longer text."])  # input_ids / attention_mask, (B, T) tensors
    tokenizer.save("out/")                            # AutoTokenizer.from_pretrained("out/") works
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import jinja2
import torch
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend
from tokenizers.models import WordPiece

from lmforge.errors import CheckpointError, ConfigError
from lmforge.tokenizers.gguf import build_gguf_tokenizer

__all__ = ["SPECIAL_TOKEN_NAMES", "Tokenizer"]

#: Names of the special-token roles a tokenizer config may set.
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "sep_token",
    "cls_token",
    "mask_token",
)

# transformers writes this for "no limit" (int(1e30)); we keep None instead.
_NO_LIMIT = 10**20
_DEFAULT_INPUT_NAMES = ("input_ids", "attention_mask")
_BERT_INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")


class Tokenizer:
    """Text <-> token ids, with special tokens, batching and chat templates.

    Args:
        backend: the ``tokenizers.Tokenizer`` that encodes and decodes. Its own padding and
            truncation settings are cleared: this class applies them per call.
        special_tokens: role -> token string, roles from :data:`SPECIAL_TOKEN_NAMES`.
        chat_template: Jinja template rendering a list of ``{"role", "content"}`` messages.
        model_max_length: longest sequence the model accepts; default truncation length.
        padding_side: ``"right"`` or ``"left"`` (left for batched generation with decoders).
        truncation_side: ``"right"`` or ``"left"``.
        model_input_names: which encodings to return; include ``"token_type_ids"`` for BERT.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        special_tokens: Mapping[str, str | None] | None = None,
        chat_template: str | None = None,
        model_max_length: int | None = None,
        padding_side: Literal["right", "left"] = "right",
        truncation_side: Literal["right", "left"] = "right",
        model_input_names: Sequence[str] = _DEFAULT_INPUT_NAMES,
    ) -> None:
        unknown = set(special_tokens or {}) - set(SPECIAL_TOKEN_NAMES)
        if unknown:
            raise ConfigError(f"unknown special token role(s) {sorted(unknown)}; use {SPECIAL_TOKEN_NAMES}")
        self.backend = backend
        self.backend.no_padding()
        self.backend.no_truncation()
        self.special_tokens: dict[str, str] = {
            name: token for name, token in (special_tokens or {}).items() if token is not None
        }
        self.chat_template = chat_template
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.model_input_names = tuple(model_input_names)

    # ----------------------------------------------------------------- special tokens
    def special_token_id(self, name: str) -> int | None:
        """Id of the special token of role ``name`` (``"pad_token"``, ``"cls_token"`` ...), if any."""
        token = self.special_tokens.get(name)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_token(self) -> str | None:
        """Beginning-of-sequence token string, if any."""
        return self.special_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        """End-of-sequence token string, if any."""
        return self.special_tokens.get("eos_token")

    @property
    def pad_token(self) -> str | None:
        """Padding token string, if any."""
        return self.special_tokens.get("pad_token")

    @property
    def bos_token_id(self) -> int | None:
        """Id of :attr:`bos_token`, if any."""
        return self.special_token_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        """Id of :attr:`eos_token` (generation stops on it), if any."""
        return self.special_token_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        """Id of :attr:`pad_token`, if any."""
        return self.special_token_id("pad_token")

    @property
    def unk_token_id(self) -> int | None:
        """Id of the unknown token, if any."""
        return self.special_token_id("unk_token")

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included: the embedding table needs this many rows."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, special_tokens={self.special_tokens})"

    # ----------------------------------------------------------------- encode / decode
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of one text (BOS/EOS/[CLS]/[SEP] added as the post-processor says)."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Text of a 1-D sequence of ids."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(
        self, batch: Sequence[Sequence[int]] | torch.Tensor, skip_special_tokens: bool = True
    ) -> list[str]:
        """Texts of a batch of id sequences, shape ``(B, T)``."""
        if isinstance(batch, torch.Tensor):
            batch = batch.tolist()
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def batch_encode(
        self,
        texts: str | Sequence[str],
        padding: bool | Literal["longest", "max_length"] = True,
        truncation: bool = True,
        max_length: int | None = None,
        return_tensors: Literal["pt"] | None = "pt",
        add_special_tokens: bool = True,
    ) -> dict[str, Any]:
        """Encode a batch of texts (a single string is a batch of one).

        Args:
            texts: the texts.
            padding: ``True`` / ``"longest"`` pads to the longest in the batch, ``"max_length"`` to
                ``max_length`` (or ``model_max_length``), ``False`` not at all.
            truncation: cut sequences (special tokens kept) to ``max_length``, or to
                ``model_max_length`` when that is ``None``.
            max_length: length limit in tokens, special tokens included.
            return_tensors: ``"pt"`` for ``torch.long`` tensors of shape ``(B, T)``, ``None`` for lists.
            add_special_tokens: add BOS / EOS / [CLS] / [SEP] as the post-processor says.

        Returns:
            ``{"input_ids", "attention_mask"}`` and, if ``"token_type_ids"`` is among
            :attr:`model_input_names` (BERT), ``"token_type_ids"``; each ``(B, T)``.

        Raises:
            ConfigError: padding needs a pad token or a length that is not set, or tensors were
                requested for unpadded sequences of different lengths.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        limit = max_length if max_length is not None else self.model_max_length
        try:
            if truncation and limit is not None:
                self.backend.enable_truncation(max_length=limit, direction=self.truncation_side)
            if padding:
                self.backend.enable_padding(**self._padding_args(padding, limit))
            encodings = self.backend.encode_batch(batch, add_special_tokens=add_special_tokens)
        finally:
            # The backend is shared state; leave it as the constructor did.
            self.backend.no_padding()
            self.backend.no_truncation()

        result: dict[str, Any] = {
            "input_ids": [encoding.ids for encoding in encodings],
            "attention_mask": [encoding.attention_mask for encoding in encodings],
        }
        if "token_type_ids" in self.model_input_names:
            result["token_type_ids"] = [encoding.type_ids for encoding in encodings]
        if return_tensors is None:
            return result
        if return_tensors != "pt":
            raise ConfigError(f"return_tensors={return_tensors!r} is not supported; use 'pt' or None")
        if len({len(ids) for ids in result["input_ids"]}) > 1:
            raise ConfigError(
                "cannot stack sequences of different lengths into a tensor; "
                "pass padding=True or return_tensors=None"
            )
        return {name: torch.tensor(value, dtype=torch.long) for name, value in result.items()}

    __call__ = batch_encode

    def _padding_args(self, padding: bool | str, limit: int | None) -> dict[str, Any]:
        if padding not in (True, "longest", "max_length"):
            raise ConfigError(f"padding={padding!r} is not one of True, False, 'longest', 'max_length'")
        pad_id = self.pad_token_id
        if pad_id is None:
            raise ConfigError(
                "this tokenizer has no pad token, so it cannot pad a batch; set "
                "tokenizer.special_tokens['pad_token'] (often to the EOS token) or pass padding=False"
            )
        if padding == "max_length" and limit is None:
            raise ConfigError("padding='max_length' needs max_length (the tokenizer has no model_max_length)")
        return {
            "direction": self.padding_side,
            "pad_id": pad_id,
            "pad_token": self.special_tokens["pad_token"],
            "length": limit if padding == "max_length" else None,
        }

    # ----------------------------------------------------------------- chat templates
    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render a conversation as the model was trained to see it.

        Renders like ``transformers``' ``apply_chat_template(..., tokenize=False)``: a sandboxed
        Jinja environment with ``trim_blocks`` / ``lstrip_blocks``, the ``tojson`` filter and
        ``raise_exception`` / ``strftime_now``, and the special tokens as variables.

        Args:
            messages: ``[{"role": "user", "content": "..."}, ...]``.
            add_generation_prompt: end with the header that opens the assistant's turn.
            **kwargs: extra template variables (e.g. ``tools``).

        Returns:
            The rendered prompt text (tokenize it with ``encode(text, add_special_tokens=False)``).

        Raises:
            ConfigError: the tokenizer has no chat template, or the template fails.
        """
        if self.chat_template is None:
            raise ConfigError(
                "this tokenizer has no chat_template; set tokenizer.chat_template to a Jinja template"
            )
        # A JSON round trip hands the sandbox plain data only, never caller objects.
        plain_messages = json.loads(json.dumps(list(messages), default=str))
        variables = {**self.special_tokens, "tools": None, "documents": None, **kwargs}
        try:
            return _compile_chat_template(self.chat_template).render(
                messages=plain_messages, add_generation_prompt=add_generation_prompt, **variables
            )
        except jinja2.TemplateError as error:
            raise ConfigError(f"chat template failed to render: {error}") from error

    # ----------------------------------------------------------------- save / load
    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (transformers' layout).

        ``transformers.AutoTokenizer.from_pretrained(directory)`` loads the result and gives the
        same ids.

        Args:
            directory: created if missing.

        Returns:
            The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        config: dict[str, Any] = {
            # The generic class loads tokenizer.json as is; a model-specific class could rebuild it.
            "tokenizer_class": "TokenizersBackend",
            **self.special_tokens,
            "model_max_length": self.model_max_length if self.model_max_length is not None else int(1e30),
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "model_input_names": list(self.model_input_names),
            "clean_up_tokenization_spaces": False,
        }
        if self.chat_template is not None:
            config["chat_template"] = self.chat_template
        (directory / "tokenizer_config.json").write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n"
        )
        return directory

    @classmethod
    def from_dir(cls, directory: str | Path) -> Tokenizer:
        """Load a tokenizer saved by :meth:`save` or by ``transformers`` (``save_pretrained``).

        Reads ``tokenizer.json``, or builds an uncased/cased BERT WordPiece from ``vocab.txt`` when
        that is all there is; settings come from ``tokenizer_config.json``, ``special_tokens_map.json``
        and ``chat_template.jinja`` when present.

        Args:
            directory: the tokenizer (or model) directory.

        Raises:
            CheckpointError: the directory or its tokenizer files are missing or unreadable.
        """
        directory = Path(directory)
        config = _read_json(directory / "tokenizer_config.json")
        special_map = _read_json(directory / "special_tokens_map.json")
        if (directory / "tokenizer.json").is_file():
            try:
                backend = Backend.from_file(str(directory / "tokenizer.json"))
            except Exception as error:  # the Rust side raises a bare Exception on bad JSON
                raise CheckpointError(
                    f"{directory / 'tokenizer.json'}: cannot load tokenizer: {error}. The file is corrupt."
                ) from error
            bert_like = str(config.get("tokenizer_class", "")).startswith("Bert")
        elif (directory / "vocab.txt").is_file():
            backend = _bert_wordpiece(directory / "vocab.txt", config)
            bert_like = True
        else:
            raise CheckpointError(
                f"{directory}: no tokenizer.json or vocab.txt here. Point at a directory saved by "
                "Tokenizer.save or transformers' save_pretrained."
            )

        special_tokens = {}
        for name in SPECIAL_TOKEN_NAMES:
            token = _token_content(config.get(name)) or _token_content(special_map.get(name))
            if token is not None:
                special_tokens[name] = token
        if bert_like:
            for name, default in (("unk_token", "[UNK]"), ("sep_token", "[SEP]"), ("pad_token", "[PAD]")):
                special_tokens.setdefault(name, default)
            special_tokens.setdefault("cls_token", "[CLS]")
            special_tokens.setdefault("mask_token", "[MASK]")

        max_length = config.get("model_max_length")
        input_names = config.get("model_input_names") or (
            _BERT_INPUT_NAMES if bert_like else _DEFAULT_INPUT_NAMES
        )
        return cls(
            backend,
            special_tokens=special_tokens,
            chat_template=_chat_template(directory, config),
            model_max_length=int(max_length) if max_length is not None and max_length < _NO_LIMIT else None,
            padding_side=config.get("padding_side", "right"),
            truncation_side=config.get("truncation_side", "right"),
            model_input_names=input_names,
        )

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any]) -> Tokenizer:
        """Build the tokenizer a GGUF file describes in its ``tokenizer.ggml.*`` metadata.

        Ids are identical to ``transformers.AutoTokenizer.from_pretrained(dir, gguf_file=...)``;
        see :mod:`lmforge.tokenizers.gguf`. ``model_max_length`` is the file's context length.

        Args:
            metadata: decoded GGUF metadata, e.g. ``lmforge.models.io.gguf.read_gguf(path).metadata``.
        """
        parts = build_gguf_tokenizer(metadata)
        return cls(
            parts.backend,
            special_tokens=parts.special_tokens,
            chat_template=parts.chat_template,
            model_max_length=parts.model_max_length,
        )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error}); fix or delete the file") from error


def _token_content(value: Any) -> str | None:
    """A special token as written in a config: a string or a serialized AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(directory: Path, config: Mapping[str, Any]) -> str | None:
    """The default chat template, from chat_template.jinja (transformers v5) or the config."""
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template") or _read_json(directory / "chat_template.json").get(
        "chat_template"
    )
    if isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}, ...]
        named = {entry["name"]: entry["template"] for entry in template}
        template = named.get("default", next(iter(named.values()), None))
    return template


def _bert_wordpiece(vocab_file: Path, config: Mapping[str, Any]) -> Backend:
    """A BERT WordPiece tokenizer from ``vocab.txt``, laid out like BERT's tokenizer.json."""
    unk_token = _token_content(config.get("unk_token")) or "[UNK]"
    cls_token = _token_content(config.get("cls_token")) or "[CLS]"
    sep_token = _token_content(config.get("sep_token")) or "[SEP]"
    backend = Backend(WordPiece.from_file(str(vocab_file), unk_token=unk_token))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True),
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = backend.token_to_id(cls_token), backend.token_to_id(sep_token)
    if cls_id is None or sep_id is None:
        raise CheckpointError(f"{vocab_file}: {cls_token!r} or {sep_token!r} is not in the vocabulary")
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls_token}:0 $A:0 {sep_token}:0",
        pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
        special_tokens=[(cls_token, cls_id), (sep_token, sep_id)],
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    # Registered as added tokens so that "[CLS]" written in the text stays one token, as in BERT.
    specials = [
        _token_content(config.get(name)) or default
        for name, default in (("pad_token", "[PAD]"), ("unk_token", "[UNK]"), ("cls_token", "[CLS]"))
        + (("sep_token", "[SEP]"), ("mask_token", "[MASK]"))
    ]
    backend.add_special_tokens(
        [AddedToken(token, special=True) for token in specials if token in backend.get_vocab()]
    )
    return backend


@functools.lru_cache(maxsize=16)
def _compile_chat_template(source: str) -> jinja2.Template:
    """Compile in a sandbox: chat templates ship with downloaded models and are untrusted code."""

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kwargs: Any) -> str:
        # Jinja's own tojson HTML-escapes, which would change the rendered prompt.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kwargs)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)
