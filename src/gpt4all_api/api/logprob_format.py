"""Token log-probabilities in OpenAI's two shapes: legacy completions and chat."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..engine.model import Model
from ..engine.request import TokenLogprob


def _piece(model: Model, token: int) -> tuple[str, bytes]:
    data = model.token_bytes(token, special=True)
    return data.decode("utf-8", "replace"), data


def completion_logprobs(
    model: Model, entries: Sequence[TokenLogprob | None], offset: int = 0
) -> dict[str, Any]:
    """`{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`; `offset` is where the
    first token's text starts in the choice's text (after an echoed prompt, say)."""
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []
    for entry in entries:
        if entry is None:  # the first prompt token has no score
            continue
        text, _ = _piece(model, entry.token)
        tokens.append(text)
        token_logprobs.append(entry.logprob)
        top_logprobs.append({_piece(model, t)[0]: lp for t, lp in entry.top} or None)
        text_offset.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": text_offset,
    }


def prompt_entries(
    model: Model, prompt: Sequence[int], scores: Sequence[TokenLogprob | None]
) -> list[TokenLogprob | None]:
    """The echoed prompt's entries: its first token is listed with a null logprob."""
    out: list[TokenLogprob | None] = []
    for i, token in enumerate(prompt):
        score = scores[i] if i < len(scores) else None
        out.append(score if score is not None else TokenLogprob(token=token, logprob=float("nan")))
    return out


def completion_logprobs_with_prompt(
    model: Model,
    prompt: Sequence[int],
    scores: Sequence[TokenLogprob | None],
    generated: Sequence[TokenLogprob],
) -> dict[str, Any]:
    out = completion_logprobs(model, [*prompt_entries(model, prompt, scores), *generated])
    # OpenAI reports the first prompt token with null logprob and null alternatives
    out["token_logprobs"] = [None if lp != lp else lp for lp in out["token_logprobs"]]
    out["top_logprobs"] = [
        None if lp is None else top
        for lp, top in zip(out["token_logprobs"], out["top_logprobs"], strict=True)
    ]
    return out


def chat_logprobs(model: Model, entries: Iterable[TokenLogprob]) -> dict[str, Any]:
    content = []
    for entry in entries:
        text, data = _piece(model, entry.token)
        content.append(
            {
                "token": text,
                "logprob": entry.logprob,
                "bytes": list(data),
                "top_logprobs": [
                    {"token": t_text, "logprob": lp, "bytes": list(t_data)}
                    for t, lp in entry.top
                    for t_text, t_data in [_piece(model, t)]
                ],
            }
        )
    return {"content": content, "refusal": None}
