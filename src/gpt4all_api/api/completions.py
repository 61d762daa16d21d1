"""POST /v1/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from ..core.plan import Limits, Plan, parse_keep_alive
from ..core.prompt import Prompt, completion_template
from ..core.run import Choice, Run, generation_request, load_model, new_id
from ..engine.request import GenerationRequest, PromptLogprobsEvent, TextEvent
from ..engine.templates import apply_prompt_template
from ..errors import InvalidRequest, UnsupportedParameter
from ..library.registry import Loaded
from ..protocol.completions import CompletionRequest
from ..state import ServerState
from .logprob_format import completion_logprobs, completion_logprobs_with_prompt
from .openai_common import check_thread_count, check_unknown, openai_usage, sampling_of
from .streaming import sse_response

router = APIRouter()

DEFAULT_MAX_TOKENS = 16


def _prompt_tokens(loaded: Loaded, body: CompletionRequest, template: str) -> list[list[int]]:
    model = loaded.model
    out = []
    for p in body.prompts():
        if isinstance(p, str):
            text = apply_prompt_template(template, p)
            if body.suffix:
                out.append(_fill_in_the_middle(loaded, text, body.suffix))
                continue
            tokens = model.tokenize(text)
        else:
            model.check_tokens(p, "prompt")
            tokens = list(p)
            if body.suffix:
                raise InvalidRequest("suffix needs a text prompt", param="suffix")
        if not tokens:
            raise InvalidRequest("empty prompt", param="prompt")
        out.append(tokens)
    return out


def _fill_in_the_middle(loaded: Loaded, prefix: str, suffix: str) -> list[int]:
    fim = loaded.model.fim_tokens()
    if fim is None:
        raise UnsupportedParameter(
            f"'{loaded.entry.id}' has no fill-in-the-middle tokens, so it cannot use suffix",
            param="suffix",
        )
    pre, suf, mid = fim
    model = loaded.model
    head = [model.bos_id] if model.add_bos and model.bos_id >= 0 else []
    return [
        *head,
        pre,
        *model.tokenize(prefix, add_special=False, parse_special=False),
        suf,
        *model.tokenize(suffix, add_special=False, parse_special=False),
        mid,
    ]


def translate(state: ServerState, body: CompletionRequest) -> Plan:
    check_unknown(state, body)
    body.check_supported()
    check_thread_count(state, body)
    body.prompts()  # "empty prompt" before anything is loaded
    n = body.n or 1
    best_of = body.best_of or n
    return Plan(
        model=body.model,
        prompt_template=body.prompt_template,
        sampling=sampling_of(body),
        stop=body.stop_list,
        limits=Limits(
            max_tokens=DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens,
            prompt_param="prompt",
        ),
        n=best_of,
        # best_of > n: sample best_of choices, keep the n with the highest mean log-probability
        logprobs=body.logprobs if body.logprobs is not None else (0 if best_of > n else None),
        stream=bool(body.stream),
        keep_alive=parse_keep_alive(body.keep_alive),
        reload=bool(body.reload),
        prompt_chunk=body.prompt_batch_size,
        prompt_lookup=body.prompt_lookup,
    )


@router.post("/v1/completions", response_model=None)
async def create_completion(body: CompletionRequest, request: Request) -> Any:
    state: ServerState = request.app.state.server
    plan = translate(state, body)
    loaded = await load_model(state, plan)
    template = completion_template(loaded, body.prompt_template, state.settings.prompt_template)
    n = body.n or 1
    best_of = plan.n
    echo_logprobs = bool(body.echo and body.logprobs is not None)
    requests = [
        generation_request(
            state, loaded, plan, Prompt(tokens, (), template), echo_logprobs=echo_logprobs
        )
        for tokens in _prompt_tokens(loaded, body, template)
    ]
    run = Run(loaded, requests)
    run.id = new_id("cmpl")
    if body.stream:
        return sse_response(_stream(state, run, body, template, requests), ready=run.ready)
    choices = await run.collect(request)
    if best_of > n:
        choices = _best(choices, n)
    return {
        "id": run.id,
        "object": "text_completion",
        "created": run.created,
        "model": loaded.entry.id,
        "system_fingerprint": None,
        "choices": [
            {
                "text": _echo(loaded, body, requests, c) + "".join(c.text),
                "index": i,
                "logprobs": _logprobs(loaded, body, requests, c),
                "finish_reason": c.finish_reason,
                "references": [],
            }
            for i, c in enumerate(choices)
        ],
        "usage": openai_usage(state, run, template),
    }


def _best(choices: list[Choice], n: int) -> list[Choice]:
    """For each prompt, the n choices with the highest mean log-probability per token."""
    by_prompt: dict[int, list[Choice]] = {}
    for c in choices:
        by_prompt.setdefault(c.prompt_index, []).append(c)

    def score(c: Choice) -> float:
        return sum(e.logprob for e in c.logprobs) / max(1, len(c.logprobs))

    return [c for group in by_prompt.values() for c in sorted(group, key=score, reverse=True)[:n]]


def _echo(
    loaded: Loaded, body: CompletionRequest, requests: list[GenerationRequest], c: Choice
) -> str:
    if not body.echo:
        return ""
    return loaded.model.detokenize(requests[c.prompt_index].prompt_tokens)


def _logprobs(
    loaded: Loaded, body: CompletionRequest, requests: list[GenerationRequest], c: Choice
) -> dict[str, Any] | None:
    if body.logprobs is None:
        return None
    if body.echo:
        return completion_logprobs_with_prompt(
            loaded.model,
            requests[c.prompt_index].prompt_tokens,
            c.prompt_logprobs or (),
            c.logprobs,
        )
    return completion_logprobs(loaded.model, c.logprobs)


async def _stream(
    state: ServerState,
    run: Run,
    body: CompletionRequest,
    template: str,
    requests: list[GenerationRequest],
) -> AsyncIterator[dict[str, Any]]:
    model = run.loaded.entry.id
    offsets = [0] * len(run.choices)

    def chunk(index: int, text: str, finish: str | None, logprobs: Any = None) -> dict[str, Any]:
        return {
            "id": run.id,
            "object": "text_completion",
            "created": run.created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}
            ],
        }

    if body.echo and body.logprobs is None:
        for c in run.choices:
            text = _echo(run.loaded, body, requests, c)
            offsets[c.index] = len(text)
            yield chunk(c.index, text, None)
    async for ev in run.events():
        if isinstance(ev, PromptLogprobsEvent):
            c = run.choices[ev.index]
            lp = completion_logprobs_with_prompt(
                run.loaded.model, requests[c.prompt_index].prompt_tokens, ev.entries, []
            )
            text = _echo(run.loaded, body, requests, c)
            offsets[ev.index] = len(text)
            yield chunk(ev.index, text, None, lp)
        elif isinstance(ev, TextEvent):
            if ev.text or ev.logprob is not None:
                lp = None
                if body.logprobs is not None and ev.logprob is not None:
                    lp = completion_logprobs(run.loaded.model, [ev.logprob], offsets[ev.index])
                offsets[ev.index] += len(ev.text)
                yield chunk(ev.index, ev.text, None, lp)
        else:
            yield chunk(ev.index, "", ev.reason)
    if body.include_usage:
        yield {
            "id": run.id,
            "object": "text_completion",
            "created": run.created,
            "model": model,
            "choices": [],
            "usage": openai_usage(state, run, template),
        }
