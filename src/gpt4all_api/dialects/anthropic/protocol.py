"""POST /v1/messages and /v1/messages/count_tokens: the request bodies, in the order of
Anthropic's reference.

Content blocks, system blocks and tools stay plain dicts here: the translator checks each one and
names the exact place of a problem (`messages[0].content[1].type`), which a union of models would
blur. Fields that only steer Anthropic's hosted service are accepted and do nothing (see
docs/dialects/anthropic.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...errors import InvalidRequest
from ...protocol.common import OpenAIModel


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant", "system"]  # Claude Code sends system messages too
    content: str | list[dict[str, Any]]


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(BaseModel):
    """Accepted for every model; it has no effect on models that do not reason."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(None, ge=0)
    display: Literal["summarized", "omitted"] | None = None

    @model_validator(mode="after")
    def _budget(self) -> Thinking:
        if self.type == "enabled" and self.budget_tokens is None:
            raise InvalidRequest(
                "thinking.budget_tokens: required when thinking is enabled",
                param="thinking.budget_tokens",
            )
        return self


class OutputFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(..., alias="schema")


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effort: str | None = None  # low, medium, high, xhigh, max: a no-op here
    format: OutputFormat | None = None


class CountTokensRequest(OpenAIModel):
    """The fields `count_tokens` takes; `/v1/messages` takes these and more."""

    messages: list[Message] = Field(..., min_length=1)
    model: str | None = None
    cache_control: dict[str, Any] | None = None
    context_management: dict[str, Any] | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    output_config: OutputConfig | None = None
    speed: Literal["standard", "fast"] | None = None
    system: str | list[dict[str, Any]] | None = None
    thinking: Thinking | None = None
    tool_choice: ToolChoice | None = None
    tools: list[dict[str, Any]] | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(..., ge=1)
    container: str | dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None
    inference_geo: str | None = None
    metadata: dict[str, Any] | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    # -- extension: GPT4All LocalDocs ---------------------------------------------------
    localdocs: list[str] | None = Field(
        None,
        description="LocalDocs collections (vector store names or ids) to answer from; the "
        "answer then carries `references` (null when nothing was found).",
    )
