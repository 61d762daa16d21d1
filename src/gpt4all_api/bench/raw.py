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

from ..engine.kv_types import DEFAULT_KV_TYPES, flash_attention_on
from ..engine.model import Model, kv_cache_types
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


@dataclass
class StepCost:
    """What a step of `tokens` tokens of one sequence costs (a token and its drafts, verified)."""

    tokens: int
    ms: float  # median llama_decode time
    steps: float = 0.0  # that time in single-token steps

    @property
    def ceiling(self) -> float:
        """The speed-up over plain decoding if every drafted token were accepted."""
        return self.tokens / self.steps if self.steps else 0.0


def step_costs(
    model: Model,
    sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
    *,
    threads: int,
    context_size: int = 2048,
    batch_size: int = 512,
    kv_types: tuple[str, str] = DEFAULT_KV_TYPES,
    flash_attention: str = "auto",
    trials: int = 7,
    context: int | None = None,
    all_logits: bool = True,
) -> list[StepCost]:
    """Prompt-lookup speculation's ceiling on this machine: one sequence with a chat prompt in
    its KV, then `llama_decode` of k tokens after it (dropped again), `trials` times for each k.
    A draft of k - 1 tokens all accepted gives k tokens for one step of k.

    `context`: that many filler tokens in the KV instead of the chat prompt; `all_logits` False:
    only the step's last token's logits (verifying a draft needs them all)."""
    n_batch = max(batch_size, max(sizes))
    flash = flash_attention_on(flash_attention, kv_types)
    ctx = _context(model, context_size, 1, n_batch, threads, kv_types, flash, "the step costs")
    batch = lc.llama_batch_init(n_batch, 0, 1)
    sampler = lc.llama_sampler_init_greedy()
    mem = lc.llama_get_memory(ctx)
    try:
        if context is None:
            prompt = chat_prompt(model, 0)
        else:
            prompt = [100 + (i * 7919) % (model.n_vocab - 200) for i in range(context)]
        first = _prefill(ctx, batch, 0, prompt, n_batch, sampler)
        out: list[StepCost] = []
        for k in sizes:
            times = []
            for _ in range(trials):
                for j in range(k):
                    _put(batch, j, first, len(prompt) + j, 0, all_logits or j == k - 1)
                batch.n_tokens = k
                start = time.perf_counter()
                if lc.llama_decode(ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed while timing steps")
                times.append(time.perf_counter() - start)
                lc.llama_memory_seq_rm(mem, 0, len(prompt), -1)
            out.append(StepCost(tokens=k, ms=1000 * statistics.median(times)))
        one = next((c.ms for c in out if c.tokens == 1), 0.0)
        for c in out:
            c.steps = c.ms / one if one else 0.0
        return out
    finally:
        lc.llama_sampler_free(sampler)
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)


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
    kv_types: tuple[str, str] = DEFAULT_KV_TYPES,
    flash_attention: str = "auto",
    reps: int = 3,
) -> RawResult:
    """Median over `reps` runs of greedy decoding `steps` tokens for each of `n_seq` sequences,
    with the KV cache types and flash attention the servers run."""
    n_batch = max(batch_size, n_seq)
    flash = flash_attention_on(flash_attention, kv_types)
    ctx = _context(
        model, context_size, n_seq, n_batch, threads, kv_types, flash, "the raw benchmark"
    )
    batch = lc.llama_batch_init(n_batch, 0, 1)
    samplers = [lc.llama_sampler_init_greedy() for _ in range(n_seq)]
    result = RawResult(n_seq=n_seq, steps=steps)
    try:
        prompts = [chat_prompt(model, i) for i in range(n_seq)]
        for _ in range(reps):
            lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
            t_prefill = time.perf_counter()
            pending = [
                _prefill(ctx, batch, s, p, n_batch, samplers[s]) for s, p in enumerate(prompts)
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


def _context(
    model: Model,
    context_size: int,
    n_seq: int,
    n_batch: int,
    threads: int,
    kv_types: tuple[str, str],
    flash: bool | None,
    purpose: str,
) -> lc.llama_context_p:
    """A context of `n_seq` sequences of `context_size` tokens, each in its own KV stream."""
    params = lc.llama_context_default_params()
    params.n_ctx = context_size * n_seq
    params.n_seq_max = n_seq
    params.n_batch = params.n_ubatch = n_batch
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = False
    kv_cache_types(params, kv_types, flash)  # as the servers run it
    params.no_perf = True
    ctx = lc.llama_init_from_model(model.ptr, params)
    if not ctx:
        raise RuntimeError(f"llama.cpp could not create a context for {purpose}")
    return ctx


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
