"""POST /v1/chat/completions, in the order of OpenAI's reference."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidRequest, UnsupportedParameter
from .common import SamplingFields, refuse_unless

FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class OtherPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: FunctionName
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart | OtherPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None
    refusal: str | None = None
    reasoning_content: str | None = None  # an earlier reply's thinking, as this server sends it
    reasoning: str | None = None  # the same, under the name some clients use

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


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: FunctionName


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    audio: Any = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    functions: list[FunctionDefinition] | None = None
    logprobs: bool | None = False
    max_completion_tokens: int | None = Field(None, ge=0)
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    parallel_tool_calls: bool | None = None
    prediction: Any = None
    prompt_cache_key: str | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # extension: the model's template variables
    reasoning_budget: int | None = Field(None, ge=0)  # extension: most tokens spent thinking
    response_format: ResponseFormat | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    store: bool | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    tools: list[ToolDefinition] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    verbosity: str | None = None
    web_search_options: Any = None
    # -- extension: GPT4All LocalDocs ---------------------------------------------------
    localdocs: list[str] | None = Field(
        None,
        description="LocalDocs collections (vector store names or ids) to answer from; each "
        "choice then carries `references` (null when nothing was found).",
    )

    def check_supported(self) -> None:
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs requires logprobs to be true", param="top_logprobs")
        refuse_unless(self.audio, (), "audio", "no audio output")
        if self.modalities not in (None, ["text"]):
            raise UnsupportedParameter("only the 'text' modality is supported", param="modalities")
        refuse_unless(self.prediction, (), "prediction")
        refuse_unless(self.web_search_options, (), "web_search_options", "no web search")
        refuse_unless(self.verbosity, "medium", "verbosity")
        refuse_unless(self.service_tier, ("auto", "default"), "service_tier")
        refuse_unless(self.store, False, "store", "completions are not stored")
        if self.tools is not None and self.functions is not None:
            raise InvalidRequest(
                "use either tools or the legacy functions, not both", param="functions"
            )
        rf = self.response_format
        if (
            rf is not None
            and rf.type == "json_schema"
            and (rf.json_schema is None or rf.json_schema.schema_ is None)
        ):
            raise InvalidRequest(
                "json_schema response_format needs json_schema.schema",
                param="response_format.json_schema",
            )
        names = {f.name for f in self.function_defs()}
        wanted = self.named_tool()
        if wanted is not None and wanted not in names:
            raise InvalidRequest(
                f"tool_choice names an unknown function '{wanted}'",
                param="tool_choice" if self.tools else "function_call",
            )
        choice = self.function_call if self.legacy_functions else self.tool_choice
        if choice not in (None, "none", "auto") and not names:
            raise InvalidRequest(
                "tool_choice asks for a tool call but no tools are given", param="tool_choice"
            )
        if self.tool_mode() in ("required", "named") and rf is not None and rf.type != "text":
            raise InvalidRequest(
                "a forced tool call cannot also have a response_format", param="response_format"
            )

    # -- tools --------------------------------------------------------------------------------

    @property
    def legacy_functions(self) -> bool:
        return self.functions is not None

    def function_defs(self) -> list[FunctionDefinition]:
        if self.functions is not None:
            return list(self.functions)
        return [t.function for t in self.tools or []]

    def named_tool(self) -> str | None:
        choice = self.function_call if self.legacy_functions else self.tool_choice
        if isinstance(choice, NamedToolChoice):
            return choice.function.name
        if isinstance(choice, NamedFunction):
            return choice.name
        return None

    def tool_mode(self) -> str:
        """`none`, `auto`, `required` or `named`."""
        if not self.function_defs():
            return "none"
        if self.named_tool() is not None:
            return "named"
        choice = self.function_call if self.legacy_functions else self.tool_choice
        return choice or "auto"  # type: ignore[return-value]
