"""What a server may be asked to do: :class:`ServeConfig`, checked field by field."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from lmforge.errors import ConfigError

API_KEY_ENV = "LMFORGE_API_KEY"


@dataclass
class ServeConfig:
    """How ``lmforge serve`` listens and what it accepts.

    Limits (every one answers a 4xx with an OpenAI-style error): ``max_body_bytes`` per request
    body (413), ``max_prompt_tokens`` per prompt and ``max_tokens`` per completion (400),
    ``max_queued`` requests generating or waiting at once (429 with ``Retry-After``), ``max_prompts``
    per completions request and ``max_n`` samples per prompt (400). A generation still running after
    ``request_timeout_s`` (queueing included; None: no limit) is cancelled and ends as if it had
    reached ``max_tokens`` (finish reason "length").

    Args:
        host: address to bind; loopback by default, so nothing outside the machine can reach it.
        port: TCP port.
        api_key: when set (or ``LMFORGE_API_KEY`` in the environment), every route but ``/health``
            needs ``Authorization: Bearer <key>``.
        model_name: the id clients send as ``model`` (default: the checkpoint directory's name).
        max_batch: sequences decoded together (1: one request at a time; more: continuous batching).
        device: where the model runs.
        labels: class names of a sequence classifier, in index order (default: the checkpoint's
            ``id2label``, else ``LABEL_i``).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    model_name: str | None = None
    max_batch: int = 1
    device: str = "cpu"
    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int | None = None
    max_tokens: int = 2048
    max_queued: int = 64
    max_prompts: int = 64
    max_n: int = 16
    retry_after_s: int = 1
    labels: list[str] | None = None
    request_timeout_s: float | None = 600.0

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host must be an address or host name, got {self.host!r}")
        _int("port", self.port, 0, 65535)
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ConfigError("api_key must be a non-empty string (or unset for no authentication)")
        for name in ("max_batch", "max_body_bytes", "max_tokens", "max_queued", "max_prompts", "max_n"):
            _int(name, getattr(self, name), 1)
        _int("retry_after_s", self.retry_after_s, 0)
        if self.labels is not None and (
            not isinstance(self.labels, list)
            or not self.labels
            or not all(isinstance(x, str) and x for x in self.labels)
        ):
            raise ConfigError(f"labels must be a non-empty list of non-empty names, got {self.labels!r}")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels must be distinct, got {self.labels!r}")
        if self.request_timeout_s is not None and not (
            isinstance(self.request_timeout_s, int | float)
            and not isinstance(self.request_timeout_s, bool)
            and self.request_timeout_s > 0
        ):
            raise ConfigError(
                f"request_timeout_s must be > 0 seconds (or None), got {self.request_timeout_s!r}"
            )
        if self.max_prompt_tokens is not None:
            _int("max_prompt_tokens", self.max_prompt_tokens, 1)

    @property
    def is_loopback(self) -> bool:
        """Whether the bound address is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _int(name: str, value: object, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
