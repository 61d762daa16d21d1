"""POST /v1/chat/completions, in the order of OpenAI's reference."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidRequest, UnsupportedParameter
from .common import SamplingFields, refuse_unless


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class OtherPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart | OtherPart] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts: list[str] = []
        for j, part in enumerate(self.content):
            if isinstance(part, TextPart):
                parts.append(part.text)
            else:
                raise UnsupportedParameter(
                    f"content parts of type '{part.type}' are not supported (text only; "
                    "this server has no vision or audio)",
                    param=f"messages[{index}].content[{j}]",
                )
        return "".join(parts)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    audio: Any = None
    function_call: Any = None
    functions: list[Any] | None = None
    logprobs: bool | None = False
    max_completion_tokens: int | None = Field(None, ge=0)
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    parallel_tool_calls: bool | None = None
    prediction: Any = None
    reasoning_effort: str | None = None
    response_format: dict[str, Any] | None = None
    service_tier: str | None = None
    store: bool | None = None
    tool_choice: Any = None
    tools: list[Any] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    web_search_options: Any = None

    def check_supported(self) -> None:
        refuse_unless(self.n, 1, "n")
        refuse_unless(self.logprobs, False, "logprobs")
        refuse_unless(self.top_logprobs, 0, "top_logprobs")
        refuse_unless(self.audio, (), "audio", "no audio output")
        if self.modalities not in (None, ["text"]):
            raise UnsupportedParameter("only the 'text' modality is supported", param="modalities")
        refuse_unless(self.prediction, (), "prediction")
        refuse_unless(self.web_search_options, (), "web_search_options", "no web search")
        refuse_unless(self.reasoning_effort, (), "reasoning_effort")
        refuse_unless(self.service_tier, ("auto", "default"), "service_tier")
        refuse_unless(self.store, False, "store", "completions are not stored")
        if self.response_format not in (None, {"type": "text"}):
            raise UnsupportedParameter(
                "'response_format' is not supported yet", param="response_format"
            )
        if self.tools:
            raise UnsupportedParameter("'tools' is not supported yet", param="tools")
        refuse_unless(self.tool_choice, "none", "tool_choice")
        if self.functions:
            raise UnsupportedParameter("'functions' is not supported yet", param="functions")
        refuse_unless(self.function_call, "none", "function_call")
        for i, m in enumerate(self.messages):
            if m.role in ("tool", "function"):
                raise UnsupportedParameter(
                    f"messages with role '{m.role}' are not supported yet",
                    param=f"messages[{i}].role",
                )

    def plain_messages(self) -> list[dict[str, str]]:
        """Messages as role/content dicts for templates (`developer` counts as `system`)."""
        out = []
        for i, m in enumerate(self.messages):
            role = "system" if m.role == "developer" else m.role
            if m.model_extra:
                name = next(iter(m.model_extra))
                raise InvalidRequest(
                    f"Unrecognized field in message: '{name}'", param=f"messages[{i}].{name}"
                )
            out.append({"role": role, "content": m.text(i)})
        return out
