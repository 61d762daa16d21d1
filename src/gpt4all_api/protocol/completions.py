"""POST /v1/completions, in the order of OpenAI's reference."""

from __future__ import annotations

from pydantic import Field

from ..errors import InvalidRequest
from .common import SamplingFields, refuse_unless


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]] | None = None
    best_of: int | None = Field(None, ge=1, le=20)
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None

    def check_supported(self) -> None:
        refuse_unless(self.best_of, 1, "best_of")
        refuse_unless(self.n, 1, "n")
        refuse_unless(self.echo, False, "echo")
        refuse_unless(self.logprobs, (), "logprobs")
        refuse_unless(self.suffix, "", "suffix")

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
