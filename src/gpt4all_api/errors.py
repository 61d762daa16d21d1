"""One exception tree; each class knows its HTTP status and OpenAI error `type` and `code`.

APIError
├── InvalidRequest (400)
│   ├── UnsupportedParameter
│   ├── UnknownParameter
│   └── ContextLengthExceeded
├── AuthenticationError (401)
├── NotFound (404)
│   └── ModelNotFound
├── Conflict (409)
├── PayloadTooLarge (413)
├── ServiceUnavailable (503)
│   └── Overloaded
├── InternalError (500)
├── DownloadFailed (502)
│   └── ChecksumMismatch
├── InsufficientStorage (507)
└── RequestTimeout (504)
"""

from __future__ import annotations

from typing import Any, Literal

Dialect = Literal["openai", "anthropic", "ollama"]


class APIError(Exception):
    status_code = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if request_id:
            error["request_id"] = request_id
        return {"error": error}

    def headers(self) -> dict[str, str]:
        return {}


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def dialect_of(path: str) -> Dialect:
    """Which API a path belongs to, so that its errors take that API's shape."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/api/"):
        return "ollama"
    return "openai"


def error_body(err: APIError, dialect: Dialect, request_id: str | None = None) -> dict[str, Any]:
    """The one boundary from our exceptions to each API's error body.

    OpenAI: `{"error": {"message", "type", "param", "code"}}`; Anthropic:
    `{"type": "error", "error": {"type", "message"}}`; Ollama: `{"error": "message"}`."""
    if dialect == "anthropic":
        kind = _ANTHROPIC_TYPES.get(err.status_code, "api_error")
        body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": err.message}}
        if request_id:
            body["request_id"] = request_id
        return body
    if dialect == "ollama":
        return {"error": err.message}
    return err.body(request_id)


class InvalidRequest(APIError):
    status_code = 400
    type = "invalid_request_error"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class UnknownParameter(InvalidRequest):
    code = "unknown_parameter"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationError(APIError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(APIError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str):
        super().__init__(f"The model '{model}' does not exist", param="model")


class Conflict(APIError):
    status_code = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(APIError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ServiceUnavailable(APIError):
    status_code = 503
    type = "server_error"
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after else {}


class Overloaded(ServiceUnavailable):
    code = "server_overloaded"


class InternalError(APIError):
    status_code = 500
    type = "server_error"
    code = "internal_error"


class EngineError(InternalError):
    """llama.cpp failed on something we handed it."""

    code = "engine_error"


class DownloadFailed(APIError):
    """A model download could not be completed (network, upstream server, or bad data)."""

    status_code = 502
    type = "server_error"
    code = "download_failed"


class ChecksumMismatch(DownloadFailed):
    code = "checksum_mismatch"


class InsufficientStorage(APIError):
    status_code = 507
    type = "server_error"
    code = "insufficient_storage"


class RequestTimeout(APIError):
    """A generation ran past the server's per-request time limit and was stopped."""

    status_code = 504
    type = "server_error"
    code = "request_timeout"
