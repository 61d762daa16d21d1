"""Ollama requests → plans. All of their validation happens here, once; unset options take the
server's defaults, the same as on the OpenAI endpoints (so greedy output is the same there)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from ...api.openai_common import check_unknown
from ...core import tools as tooling
from ...core.plan import (
    Limits,
    Plan,
    Reasoning,
    Sampling,
    ToolCall,
    ToolPlan,
    Turn,
    parse_keep_alive,
)
from ...engine.grammar import json_object_grammar, schema_grammar
from ...errors import InvalidRequest, NotFound, UnknownParameter, UnsupportedParameter
from ...state import ServerState
from .protocol import ChatRequest, GenerateRequest, Message

#: Sampling options: (type, minimum, maximum).
SAMPLING: dict[str, tuple[type, float | None, float | None]] = {
    "temperature": (float, 0.0, None),
    "top_k": (int, 0, None),
    "top_p": (float, 0.0, 1.0),
    "min_p": (float, 0.0, 1.0),
    "repeat_penalty": (float, 1e-9, None),
    "repeat_last_n": (int, -1, None),
    "presence_penalty": (float, None, None),
    "frequency_penalty": (float, None, None),
    "seed": (int, None, None),
}
#: Options that only steer resources (threads, GPU, memory mapping, batching, context shifting,
#: speculation depth): accepted, and they change nothing here.
NO_OPS: dict[str, type] = dict.fromkeys(
    ("num_keep", "num_batch", "num_gpu", "main_gpu", "num_thread", "draft_num_predict"), int
) | dict.fromkeys(("numa", "use_mmap", "use_mlock", "low_vram", "f16_kv"), bool)
#: Options whose only accepted value is the one this server does.
DEFAULT_ONLY: dict[str, Any] = {
    "mirostat": 0,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.1,
    "typical_p": 1.0,
    "tfs_z": 1.0,
    "penalize_newline": True,
    "logits_all": False,
    "vocab_only": False,
    "embedding_only": False,
}
_TYPE_NAMES = {int: "integer", float: "float", bool: "boolean"}


@dataclass(frozen=True)
class Options:
    sampling: Sampling = field(default_factory=Sampling)
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None  # None: up to the end of the context
    num_ctx: int | None = None  # checked against the slot context once the model is loaded


@dataclass(frozen=True)
class Translated:
    plan: Plan
    num_ctx: int | None = None


def _typed(key: str, value: Any, kind: type) -> Any:
    bad = InvalidRequest(
        f"option {key!r} must be of type {_TYPE_NAMES[kind]}", param=f"options.{key}"
    )
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad
    if kind is int:
        if value != int(value):
            raise bad
        return int(value)
    return float(value)


def options(raw: dict[str, Any] | None) -> Options:
    """The `options` map: sampling, `stop`, `num_predict`, `num_ctx`; resource options accepted
    as no-ops; sampler options this server lacks refused unless at their default."""
    sampling: dict[str, Any] = {}
    stop: tuple[str, ...] = ()
    max_tokens = num_ctx = None
    for key, value in (raw or {}).items():
        if value is None:
            continue
        param = f"options.{key}"
        if key in SAMPLING:
            kind, low, high = SAMPLING[key]
            v = _typed(key, value, kind)
            if (low is not None and v < low) or (high is not None and v > high):
                limits = f">= {low}" if high is None else f"between {low} and {high}"
                raise InvalidRequest(f"option {key!r} must be {limits}", param=param)
            sampling[key] = v
        elif key == "stop":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
                raise InvalidRequest("option 'stop' must be an array of strings", param=param)
            stop = tuple(s for s in items if s)
        elif key == "num_predict":
            n = _typed(key, value, int)
            if n < -2:
                raise InvalidRequest("option 'num_predict' must be -1, -2 or >= 0", param=param)
            max_tokens = n if n > 0 else None  # 0, -1 (no limit), -2 (fill the context)
        elif key == "num_ctx":
            num_ctx = _typed(key, value, int)
            if num_ctx < 1:
                raise InvalidRequest("option 'num_ctx' must be positive", param=param)
        elif key in NO_OPS:
            _typed(key, value, NO_OPS[key])
        elif key in DEFAULT_ONLY:
            default = DEFAULT_ONLY[key]
            if _typed(key, value, type(default)) != default:
                raise UnsupportedParameter(
                    f"option {key!r} is not supported by this server (only its default, "
                    f"{json.dumps(default)}, is accepted)",
                    param=param,
                )
        else:
            raise UnknownParameter(f"unknown option {key!r}", param=param)
    if sampling.get("seed", 0) < 0:
        sampling.pop("seed")  # Ollama's -1: a random seed
    return Options(Sampling(**sampling), stop, max_tokens, num_ctx)


def local_name(name: str) -> str:
    """An Ollama model name → a name the models folder knows: `id` or `id:latest`."""
    if not name:
        raise InvalidRequest("model is required", param="model")
    base, sep, tag = name.rpartition(":")
    if sep and tag == "latest":
        name = base
    if ":" in name or "/" in name:  # another tag, or a registry namespace
        raise not_found(name)
    return name


def not_found(name: str) -> NotFound:
    return NotFound(f"model '{name}' not found", param="model", code="model_not_found")


def grammar_of(fmt: str | dict[str, Any] | None) -> str | None:
    if not fmt:
        return None
    if fmt == "json":
        return json_object_grammar()
    assert isinstance(fmt, dict)
    return schema_grammar(fmt, "format")


def _check_common(state: ServerState, body: ChatRequest | GenerateRequest) -> None:
    check_unknown(state, body)
    if body.logprobs or body.top_logprobs:
        raise UnsupportedParameter("logprobs are not supported on /api/*", param="logprobs")


def _images(images: list[str] | None, param: str) -> None:
    if images:
        raise UnsupportedParameter(
            "images are not supported: this server runs text-only models", param=param
        )


def _call(raw: Any, param: str, fallback_id: str) -> ToolCall:
    fn = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise InvalidRequest("a tool call needs a function with a name", param=param)
    args = fn.get("arguments", {})
    if not isinstance(args, str):
        args = json.dumps(args, ensure_ascii=False)
    return ToolCall(str(raw.get("id") or fallback_id), fn["name"], args)


def _call_id(turns: list[Turn], name: str | None) -> str | None:
    """The id of the latest call of `name` (Ollama links results by tool name)."""
    for t in reversed(turns):
        for c in reversed(t.tool_calls):
            if name is None or c.name == name:
                return c.id
    return None


def chat_turns(state: ServerState, messages: list[Message]) -> tuple[Turn, ...]:
    turns: list[Turn] = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        check_unknown(state, m, where + ".")
        role = m.role.lower()
        if role not in ("system", "user", "assistant", "tool"):
            raise InvalidRequest(f"invalid role {m.role!r}", param=f"{where}.role")
        _images(m.images, f"{where}.images")
        if m.tool_calls and role != "assistant":
            raise InvalidRequest("only assistant messages hold tool_calls", param=where)
        text = m.content or ""
        if role == "assistant":
            calls = tuple(
                _call(c, f"{where}.tool_calls[{j}]", f"call_{i}_{j}")
                for j, c in enumerate(m.tool_calls or [])
            )
            turns.append(Turn("assistant", text, calls, reasoning=m.thinking or ""))
        elif role == "tool":
            call_id = m.tool_call_id or _call_id(turns, m.tool_name)
            turns.append(Turn("tool", text, tool_call_id=call_id, name=m.tool_name))
        else:
            turns.append(Turn(role, text))
    return tuple(turns)


def tool_plan(tools: list[dict[str, Any]] | None) -> ToolPlan:
    out = []
    for i, tool in enumerate(tools or []):
        kind = tool.get("type") or "function"
        if kind != "function":
            raise UnsupportedParameter(
                f"tools of type {kind!r} are not supported", param=f"tools[{i}].type"
            )
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest("a function tool needs a name", param=f"tools[{i}].function")
        params = fn.get("parameters") or {"type": "object"}
        if not isinstance(params, dict):
            raise InvalidRequest(
                "parameters must be a JSON schema object", param=f"tools[{i}].function.parameters"
            )
        out.append(tooling.Tool(fn["name"], str(fn.get("description") or ""), params))
    return ToolPlan(tuple(out), "auto" if out else "none")


def reasoning_of(think: bool | str | None) -> Reasoning:
    """`think`: true, false, or an effort ("low", "medium", "high"). A model that does not
    reason refuses any thinking asked for, as Ollama does."""
    if think is None or isinstance(think, bool):
        return Reasoning(enabled=think, param="think")
    if think not in ("low", "medium", "high"):
        raise InvalidRequest(
            f'think must be true, false, "low", "medium" or "high", got {think!r}', param="think"
        )
    return Reasoning(enabled=True, effort=think, param="think")


def _limits(opts: Options, prompt_param: str) -> Limits:
    return Limits(opts.max_tokens, "options.num_predict", prompt_param, clip=True)


def chat(state: ServerState, body: ChatRequest) -> Translated:
    _check_common(state, body)
    opts = options(body.options)
    plan = Plan(
        model=local_name(body.model),
        turns=chat_turns(state, body.messages or []),
        sampling=opts.sampling,
        stop=opts.stop,
        # Ollama's chat drops the oldest messages that do not fit, unless told not to
        limits=replace(_limits(opts, "messages"), truncate=body.truncate is not False),
        grammar=grammar_of(body.format),
        tools=tool_plan(body.tools),
        stream=body.stream is not False,
        keep_alive=parse_keep_alive(body.keep_alive),
        reasoning=reasoning_of(body.think),
    )
    return Translated(plan, opts.num_ctx)


def _template(template: str | None) -> str | None:
    """Only GPT4All `%1` templates can be run; Ollama's Go templates cannot."""
    if not template:
        return None
    if "%1" not in template:
        raise UnsupportedParameter(
            "template must be a GPT4All prompt template holding %1 (Go templates cannot be run "
            "by this server); leave it out to use the model's own chat template",
            param="template",
        )
    return template


def generate(state: ServerState, body: GenerateRequest) -> Translated:
    _check_common(state, body)
    _images(body.images, "images")
    if body.suffix:
        raise UnsupportedParameter(f'"{body.model}" does not support insert', param="suffix")
    if body.context:
        raise UnsupportedParameter(
            "context is not supported (no context is returned); use /api/chat for conversations",
            param="context",
        )
    if body.raw and (body.template or body.system):
        raise InvalidRequest("raw mode does not support template, system, or context", param="raw")
    opts = options(body.options)
    prompt = body.prompt or ""
    system = (Turn("system", body.system),) if body.system else ()
    plan = Plan(
        model=local_name(body.model),
        turns=() if body.raw else (*system, Turn("user", prompt)),
        prompt=prompt if body.raw else None,
        prompt_template=_template(body.template),
        raw=bool(body.raw),
        sampling=opts.sampling,
        stop=opts.stop,
        limits=_limits(opts, "prompt"),
        grammar=grammar_of(body.format),
        stream=body.stream is not False,
        keep_alive=parse_keep_alive(body.keep_alive),
        reasoning=reasoning_of(body.think),
    )
    return Translated(plan, opts.num_ctx)
