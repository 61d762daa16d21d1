"""Pieces shared by the completion and chat request models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import InvalidRequest, UnsupportedParameter

NonNegInt = Annotated[int, Field(ge=0)]


class OpenAIModel(BaseModel):
    """Base for request bodies. Unknown fields are kept in `model_extra` so that the router can
    refuse them by name (or, when the server is told to be lenient, log and drop them)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    include_obfuscation: bool | None = None


class SamplingFields(OpenAIModel):
    """Fields both generation endpoints take, OpenAI's first, then the GPT4All API's extras."""

    model: str | None = None
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    max_tokens: int | None = Field(None, ge=0)
    n: int | None = Field(None, ge=1, le=128)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    user: str | None = None

    # -- extras of llama.cpp / the original gpt4all API ----------------------------------
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, gt=0.0)
    repeat_penality: float | None = Field(None, gt=0.0, description="The original API's spelling.")
    repeat_last_n: int | None = Field(None, ge=-1)
    prompt_template: str | None = None
    prompt_batch_size: int | None = Field(None, ge=1)
    # extension: false turns prompt-lookup drafting off, true drafts even where the engine
    # measured that drafts do not pay; omitted, the engine decides
    prompt_lookup: bool | None = None
    reload: bool | None = False
    thread_count: int | None = Field(None, ge=1)
    keep_alive: float | str | None = Field(
        None, description="How long the model stays loaded when idle: seconds or '5m'; <0 forever."
    )

    @model_validator(mode="after")
    def _check_common(self) -> SamplingFields:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise InvalidRequest("stop takes at most 4 sequences", param="stop")
        if (
            self.repeat_penalty is not None
            and self.repeat_penality is not None
            and (self.repeat_penalty != self.repeat_penality)
        ):
            raise InvalidRequest(
                "repeat_penalty and repeat_penality (its old spelling) disagree",
                param="repeat_penality",
            )
        return self

    @property
    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def refuse_unless(value: Any, neutral: Any | tuple[Any, ...], name: str, why: str = "") -> None:
    """Accept a field we do not implement only at its neutral value (as clients send it)."""
    allowed = neutral if isinstance(neutral, tuple) else (neutral,)
    if value is not None and value not in allowed:
        raise UnsupportedParameter(
            f"'{name}' is not supported by this server{': ' + why if why else ''}", param=name
        )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gpt4all-api"
