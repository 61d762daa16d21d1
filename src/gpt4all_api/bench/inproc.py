"""Our engine alone: the server's scheduler in this process, without HTTP.

Between raw batched decode (`raw.py`, no scheduler) and our server behind HTTP, this level
runs the very engine the server runs, with the server's default settings, and drives it with
closed-loop clients that submit the same chat prompts straight to it, one asyncio task each.
The three figures, taken in the same rounds, part what the scheduler costs from what HTTP costs.
"""

from __future__ import annotations

import asyncio
import time

from ..app import engine_config
from ..engine.model import Model
from ..engine.request import FinishEvent, GenerationRequest, TextEvent
from ..engine.sampling import SamplingParams
from ..engine.scheduler import Engine
from ..settings import Settings
from .load import PROMPTS, SAMPLED, closed_loop
from .raw import chat_prompt
from .servers import ServerOptions
from .stats import RequestRecord

#: Its name in the rounds' tables.
ENGINE_ALONE = "engine alone (no HTTP)"


def bench_sampling(temperature: float) -> SamplingParams:
    """What the HTTP clients ask every server for (`load.stream_chat`): greedy, or
    `temperature` with top-k 40, top-p 0.95 and min-p 0.05; no repetition penalty."""
    if temperature <= 0:
        return SamplingParams(temperature=0.0, repeat_penalty=1.0)
    return SamplingParams(temperature=temperature, repeat_penalty=1.0, **SAMPLED)


class EngineAlone:
    """Our server's engine on `model`, configured as `ours_command` configures the server
    (`options`; everything else at the server's defaults), for as long as the `with` lasts."""

    name = ENGINE_ALONE

    def __init__(self, model: Model, options: ServerOptions):
        settings = Settings(
            threads=options.threads,
            context_size=options.context_size,
            parallel=options.parallel,
            batch_size=options.batch_size,
            kv_cache_type_k=options.kv_types[0],
            kv_cache_type_v=options.kv_types[1],
            flash_attention=options.flash_attention,
        )
        self.model = model
        self.config = engine_config(settings)
        self.engine: Engine | None = None

    def __enter__(self) -> EngineAlone:
        self.engine = Engine(self.model, self.config, name=ENGINE_ALONE)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.engine is not None:
            self.engine.close(drain=False)
            self.engine.join(30)
            self.engine = None

    async def run_level(
        self,
        concurrency: int,
        n_requests: int,
        max_tokens: int,
        time_limit: float,
        temperature: float = 0.0,
    ) -> tuple[list[RequestRecord], float]:
        """As `load.run_level` (`load.closed_loop`), each text event a chunk: the records and
        the wall time."""
        engine = self.engine
        if engine is None:
            raise RuntimeError("the engine runs only inside `with`")
        loop = asyncio.get_running_loop()
        sampling = bench_sampling(temperature)
        prompts: dict[int, list[int]] = {}

        async def one(i: int) -> RequestRecord:
            key = i % len(PROMPTS)
            if key not in prompts:
                prompts[key] = chat_prompt(self.model, key)
            rec = RequestRecord(started=time.perf_counter())
            request = GenerationRequest(
                prompt_tokens=prompts[key], max_tokens=max_tokens, sampling=sampling
            )
            handle = engine.submit(request, loop)
            parts: list[str] = []
            while True:
                event = await handle.queue.get()
                if isinstance(event, TextEvent):
                    if event.text:
                        rec.chunk_times.append(time.perf_counter())
                        parts.append(event.text)
                elif isinstance(event, FinishEvent):
                    rec.finish_reason = event.reason
                    rec.usage_prompt = event.prompt_tokens
                    rec.usage_completion = event.completion_tokens
                    rec.cached_tokens = event.cached_tokens
                    break
                else:
                    rec.error = f"engine error: {event!r}"
                    break
            rec.finished = time.perf_counter()
            rec.text = "".join(parts)
            return rec

        return await closed_loop(concurrency, n_requests, time_limit, one)
