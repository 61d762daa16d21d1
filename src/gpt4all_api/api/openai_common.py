"""What the OpenAI chat and completions translators share: unknown fields, the GPT4All API's
extras, and the sampling fields as a plan's `Sampling`."""

from __future__ import annotations

import logging
from typing import Any

from ..core.plan import Sampling
from ..core.run import Run
from ..errors import UnknownParameter, UnsupportedParameter
from ..protocol.common import SamplingFields
from ..state import ServerState

log = logging.getLogger(__name__)


def check_unknown(state: ServerState, body: Any, where: str = "") -> None:
    """Refuse (or, when configured, log) fields that are not in the reference or ours."""
    extra = getattr(body, "model_extra", None)
    if not extra:
        return
    names = ", ".join(sorted(extra))
    if state.settings.reject_unknown_fields:
        first = sorted(extra)[0]
        raise UnknownParameter(
            f"Unrecognized request argument supplied: {names}", param=where + first
        )
    log.warning("ignoring unknown request fields: %s", names)
    extra.clear()


def check_thread_count(state: ServerState, req: SamplingFields) -> None:
    if req.thread_count is not None and req.thread_count != state.settings.threads:
        raise UnsupportedParameter(
            f"thread_count is a server setting (now {state.settings.threads}); start the server "
            "with --threads to change it",
            param="thread_count",
        )


def sampling_of(req: SamplingFields) -> Sampling:
    return Sampling(
        temperature=req.temperature,
        top_k=req.top_k,
        top_p=req.top_p,
        min_p=req.min_p,
        repeat_penalty=req.repeat_penalty
        if req.repeat_penalty is not None
        else req.repeat_penality,
        repeat_last_n=req.repeat_last_n,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        seed=req.seed,
        logit_bias=tuple((req.logit_bias or {}).items()),
    )


def openai_usage(state: ServerState, run: Run, prompt_template: str | None) -> dict[str, Any]:
    prompt, completion, cached = run.tokens()
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": run.reasoning_tokens},
        "thread_count": state.settings.threads,
        "prompt_template": prompt_template,
    }
