"""POST /v1/completions, in the order of OpenAI's reference."""

from __future__ import annotations

from pydantic import Field

from ..errors import InvalidRequest
from .common import SamplingFields


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]] | None = None
    best_of: int | None = Field(None, ge=1, le=20)
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None

    def check_supported(self) -> None:
        n = self.n or 1
        if self.best_of is not None and self.best_of < n:
            raise InvalidRequest("best_of must be greater than or equal to n", param="best_of")
        if self.stream and self.best_of is not None and self.best_of > n:
            raise InvalidRequest("best_of cannot be used with stream", param="best_of")

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of texts or token arrays; `empty prompt` when there is none."""
        p = self.prompt
        if p is None or p == "" or p == []:
            raise InvalidRequest("empty prompt", param="prompt")
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        out: list[str | list[int]] = list(p)  # type: ignore[arg-type]
        if any(x == "" or x == [] for x in out):
            raise InvalidRequest("empty prompt", param="prompt")
        return out
