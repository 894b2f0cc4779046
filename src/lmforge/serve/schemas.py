"""Request and response bodies, shaped as OpenAI's (completions, chat, models) plus the tokenizer routes.

Requests are strict: a string where a number belongs, a number where a string belongs or an
unknown field is a 400 naming the field, never a silent conversion. Ranges follow OpenAI's where
it has them (temperature in [0, 2], penalties in [-2, 2], top logprobs up to 20).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

TokenIds = list[Annotated[StrictInt, Field(ge=0)]]
Temperature = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False, strict=True)]
Penalty = Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False, strict=True)]
TopP = Annotated[float, Field(gt=0, le=1, strict=True)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Request):
    include_usage: StrictBool = False


class _Sampling(_Request):
    """The sampling fields completions and chat share (OpenAI's, plus vLLM's common extras)."""

    model: StrictStr
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[StrictInt, Field(ge=1)] = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: Annotated[StrictInt, Field(ge=0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    user: StrictStr | None = None
    # Beyond OpenAI (vLLM names): top-k, min-p and repetition penalty.
    top_k: Annotated[StrictInt, Field(ge=1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1, strict=True)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, strict=True)] | None = None
    ignore_eos: StrictBool = False
    # Structured output (vLLM's names; see lmforge.serve.structured): at most one of them.
    guided_json: dict[str, Any] | StrictStr | None = None
    guided_regex: StrictStr | None = None
    guided_choice: Annotated[list[StrictStr], Field(min_length=1)] | None = None


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: one prompt (text or token ids) or a list of them."""

    prompt: StrictStr | list[StrictStr] | TokenIds | list[TokenIds]
    max_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    echo: StrictBool = False
    best_of: Annotated[StrictInt, Field(ge=1)] | None = None
    logit_bias: dict[str, float] | None = None
    suffix: StrictStr | None = None


class TextPart(_Request):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class JsonSchemaFormat(_Request):
    """OpenAI's ``response_format.json_schema``: the schema the reply must satisfy."""

    name: StrictStr
    description: StrictStr | None = None
    # "schema" would shadow a BaseModel attribute: the field takes it as its alias.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    logprobs: StrictBool = False
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None


class EmbeddingRequest(_Request):
    """``POST /v1/embeddings``: texts or token ids."""

    model: StrictStr
    input: StrictStr | list[StrictStr] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None
    user: StrictStr | None = None


class ClassifyRequest(_Request):
    """``POST /v1/classify``: one text or several."""

    model: StrictStr
    input: StrictStr | list[StrictStr]
    user: StrictStr | None = None


class TokenizeRequest(_Request):
    """``POST /tokenize``: a text or a chat (rendered with the model's template)."""

    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: StrictBool = True
    add_generation_prompt: StrictBool = True


class DetokenizeRequest(_Request):
    model: StrictStr | None = None
    tokens: TokenIds


# ---------------------------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Classification(BaseModel):
    index: int
    label: str
    #: calibrated when the checkpoint has a calibrator, else equal to raw_probs
    probs: dict[str, float]
    #: the classifier's own softmax
    raw_probs: dict[str, float]


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    #: the calibrator's method ("temperature", "isotonic", ...), or "none"
    calibration: str
    #: how the probabilities were predicted when not one pass: {"method": "mc_dropout", ...}
    predictive: dict[str, Any] | None = None
    data: list[Classification]
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lmforge"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int | None


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfo(BaseModel):
    vocab_size: int
    bos_token: str | None
    eos_token: str | None
    pad_token: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    model_max_length: int | None
    chat_template: str | None
