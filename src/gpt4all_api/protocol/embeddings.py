"""POST /v1/embeddings, in the order of OpenAI's reference."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..errors import InvalidRequest
from .common import OpenAIModel


class EmbeddingRequest(OpenAIModel):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    dimensions: int | None = Field(None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    def inputs(self) -> list[str | list[int]]:
        raw = self.input
        if isinstance(raw, str):
            items: list[str | list[int]] = [raw]
        elif raw and all(isinstance(x, int) for x in raw):
            items = [list(raw)]  # type: ignore[arg-type]
        else:
            items = list(raw)  # type: ignore[arg-type]
        if not items or any(x == "" or x == [] for x in items):
            raise InvalidRequest("input must not be empty", param="input")
        if len(items) > 2048:
            raise InvalidRequest("at most 2048 inputs per request", param="input")
        return items
