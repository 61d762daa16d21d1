"""The ceiling: batched greedy decoding with llama.cpp directly, no HTTP and no scheduler.

One context with `n_seq_max` = N, the N chat prompts prefilled, then every step puts one token per
sequence into one `llama_batch`, calls `llama_decode` once and samples each sequence with its own
greedy sampler. The decode steps alone give the ceiling; the same figure counting the prompts'
prefill too is the whole work a server does for these requests.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import llama_cpp as lc

from ..engine.model import Model
from ..engine.templates import render_jinja, render_plain
from .load import chat_messages


@dataclass
class RawResult:
    """Decode throughput of `n_seq` sequences, one figure per repetition."""

    n_seq: int
    steps: int
    runs_tokens_per_s: list[float] = field(default_factory=list)
    runs_cpu_ms_per_token: list[float] = field(default_factory=list)  # this process's CPU time
    # The whole job of a server answering these requests: prompts prefilled, then decoded.
    runs_with_prefill_tokens_per_s: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return statistics.median(self.runs_tokens_per_s) if self.runs_tokens_per_s else 0.0

    @property
    def with_prefill_tokens_per_s(self) -> float:
        runs = self.runs_with_prefill_tokens_per_s
        return statistics.median(runs) if runs else 0.0

    @property
    def cpu_ms_per_token(self) -> float | None:
        runs = self.runs_cpu_ms_per_token
        return statistics.median(runs) if runs else None


def render_messages(model: Model, messages: list[dict[str, str]]) -> str:
    """The prompt text a chat server renders from `messages` with the model's template."""
    if model.chat_template:
        return render_jinja(
            model.chat_template, messages, bos_token=model.bos_text, eos_token=model.eos_text
        )
    return render_plain(messages)


def chat_prompt(model: Model, i: int) -> list[int]:
    """The tokens a chat server would evaluate for prompt `i`."""
    return model.tokenize(render_messages(model, chat_messages(i)))


def raw_decode(
    model: Model,
    n_seq: int,
    steps: int,
    *,
    threads: int,
    context_size: int = 2048,
    batch_size: int = 512,
    reps: int = 3,
) -> RawResult:
    """Median over `reps` runs of greedy decoding `steps` tokens for each of `n_seq` sequences."""
    params = lc.llama_context_default_params()
    params.n_ctx = context_size * n_seq
    params.n_seq_max = n_seq
    params.n_batch = params.n_ubatch = max(batch_size, n_seq)
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = False
    params.no_perf = True
    ctx = lc.llama_init_from_model(model.ptr, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context for the raw benchmark")
    batch = lc.llama_batch_init(params.n_batch, 0, 1)
    samplers = [lc.llama_sampler_init_greedy() for _ in range(n_seq)]
    result = RawResult(n_seq=n_seq, steps=steps)
    try:
        prompts = [chat_prompt(model, i) for i in range(n_seq)]
        for _ in range(reps):
            lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
            t_prefill = time.perf_counter()
            pending = [
                _prefill(ctx, batch, s, p, params.n_batch, samplers[s])
                for s, p in enumerate(prompts)
            ]
            pos = [len(p) for p in prompts]
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                for s in range(n_seq):
                    _put(batch, s, pending[s], pos[s], s, True)
                    pos[s] += 1
                batch.n_tokens = n_seq
                if lc.llama_decode(ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed in the raw benchmark")
                for s in range(n_seq):
                    pending[s] = lc.llama_sampler_sample(samplers[s], ctx, s)
            elapsed = time.perf_counter() - start
            result.runs_tokens_per_s.append(n_seq * steps / elapsed)
            result.runs_with_prefill_tokens_per_s.append(
                n_seq * steps / (time.perf_counter() - t_prefill)
            )
            result.runs_cpu_ms_per_token.append(
                1000 * (time.process_time() - cpu) / (n_seq * steps)
            )
    finally:
        for s in samplers:
            lc.llama_sampler_free(s)
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
    return result


def _prefill(
    ctx: lc.llama_context_p,
    batch: lc.llama_batch,
    seq: int,
    prompt: list[int],
    n_batch: int,
    sampler: lc.llama_sampler_p,
) -> int:
    """Evaluate one sequence's prompt in chunks of n_batch tokens; sample its first token."""
    for start in range(0, len(prompt), n_batch):
        chunk = prompt[start : start + n_batch]
        for j, t in enumerate(chunk):
            _put(batch, j, t, start + j, seq, start + j == len(prompt) - 1)
        batch.n_tokens = len(chunk)
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed while prefilling the raw benchmark")
    return lc.llama_sampler_sample(sampler, ctx, len(chunk) - 1)


def _put(batch: lc.llama_batch, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = logits
