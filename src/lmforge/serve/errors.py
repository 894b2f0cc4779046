"""OpenAI-style JSON errors: ``{"error": {"message", "type", "param", "code"}}``.

Bad input is a 4xx, never a 5xx: validation errors of the request schemas, malformed JSON, unknown
routes and lmforge's own :class:`LmforgeError` (a refused generation setting) all become 400-range
answers that the ``openai`` client raises as its own exception types.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.errors import LmforgeError

logger = logging.getLogger("lmforge.serve")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An answer other than success: HTTP ``status`` and the OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "api_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """One line for pydantic's errors: the first error's field and message, and how many more."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    # A union (prompt: str | list[str] | ...) reports one error per member, tagged by its type.
    param = _param(first)
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', message)})", None
    field = (param or "").split(".")[0]
    if field in _UNION_FORMS and all((_param(e) or "").split(".")[0] == field for e in errors):
        # every member of the union refused the value: say what it may be
        return f"{field} must be {_UNION_FORMS[field]}", field
    more = len(errors) - 1
    text = f"{param}: {message}" if param else message
    return text + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""), param


_UNION_FORMS = {
    "prompt": "a string, a list of strings, a list of token ids or a list of token-id lists",
    "stop": "a string or a list of strings",
    "input": "a string, a list of strings, a list of token ids or a list of token-id lists",
}


def _param(error: Any) -> str | None:
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    return ".".join(part for part in location if not _is_type_tag(part)) or None


def _is_type_tag(part: str) -> bool:
    return part.startswith(("list[", "str", "int", "function-", "constrained-")) or part in (
        "float",
        "bool",
        "dict",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure with an OpenAI-style JSON error."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(error.errors()))
        return bad_request(message, param).response()

    @app.exception_handler(LmforgeError)
    async def _lmforge(request: Request, error: LmforgeError) -> JSONResponse:
        return bad_request(str(error)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = str(error.detail)
        if error.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return APIError(error.status_code, message, headers=getattr(error, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return APIError(
            500, f"internal error: {type(error).__name__}: {error}", type="server_error"
        ).response()
