"""The engine: one thread owns a llama.cpp context and decodes every running request together.

Each step builds one `llama_batch` holding the next token of every sequence that is generating
(with the tokens prompt lookup drafts for it) plus prompt chunks of newly admitted ones, calls
`llama_decode` once and samples each sequence with its own sampler chain, keeping the drafted
tokens the model agrees with.

Each sequence has `context_size` cells of KV cache of its own, or, with `kv_unified`, all share
one pool (llama.cpp's unified KV cache): a sequence takes cells as it grows, up to
`context_size`, and more sequences fit in the same memory. Requests wait in FIFO order for a
free sequence and room in the pool; a finished or cancelled request leaves at once. An idle
sequence keeps the tokens it holds so that a later request sharing a prefix (the next turn of a
conversation) skips re-evaluating it, until a shared pool needs its cells. When the running
sequences outgrow a shared pool, the newest one is preempted: its cells are freed and it waits
again, to re-read its prompt and answer so far and go on. A request for `n` choices evaluates
its prompt once and shares those cells with its other `n - 1` sequences.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time

import llama_cpp as lc

from ..errors import APIError, EngineError, InvalidRequest, Overloaded
from . import kv_pages, llama_log
from .admission import Admission
from .batch_order import sort_batch
from .cores import CoreShare
from .emit import GONE, Emitter, Ending
from .jobs import JobMaker
from .logprobs import LogprobReader
from .model import Model, kv_cache_types
from .prompt_cache import PromptCache
from .request import (
    ErrorEvent,
    GenerationRequest,
    Outbox,
    PromptLogprobsEvent,
    RequestHandle,
)
from .sequences import EngineConfig, EngineStats, Job
from .slots import Slots
from .speculation import Drafter

log = logging.getLogger(__name__)


class Engine(Admission):
    """Continuous-batching generation over one model. Thread-safe `submit` and `cancel`."""

    def __init__(self, model: Model, config: EngineConfig, name: str | None = None):
        self.model = model
        self.config = config
        self.name = name or model.path.name
        n_ctx_seq = min(config.context_size, config.pool_cells)
        params = lc.llama_context_default_params()
        trained = model.n_ctx_train
        if trained and n_ctx_seq > trained:
            # Past the trained length positions are stretched by YaRN (as llama-server's
            # --rope-scaling yarn), so that coding agents' long prompts fit a small model.
            params.rope_scaling_type = lc.LLAMA_ROPE_SCALING_TYPE_YARN
            params.rope_freq_scale = trained / n_ctx_seq
            params.yarn_orig_ctx = trained
            log.warning(
                "%s: context %d per slot is past the model's trained %d; using YaRN RoPE "
                "scaling (x%.2f): quality may drop",
                self.name,
                n_ctx_seq,
                trained,
                n_ctx_seq / trained,
            )
        params.n_ctx = config.pool_cells
        params.n_seq_max = config.parallel
        params.n_batch = max(config.batch_size, config.parallel * 2)
        params.n_ubatch = params.n_batch
        params.n_threads = config.threads
        params.n_threads_batch = config.threads
        params.kv_unified = config.kv_unified
        kv_cache_types(params, config.kv_types, config.flash)
        params.no_perf = True
        regions = kv_pages.anonymous_regions() if config.lazy_kv else set()
        with llama_log.capture() as buffers:
            self._ctx = lc.llama_init_from_model(model.ptr, params)
        if not self._ctx:
            raise EngineError(f"llama.cpp could not create a context for {self.name}")
        host_kv = sum(n for (b, kind), n in buffers.sizes.items() if kind == "KV" and b == "CPU")
        if config.lazy_kv and host_kv:
            freed = kv_pages.release(regions, host_kv)
            log.info("%s: %d MiB of KV cache pages wait to be written", self.name, freed >> 20)
        self.unified = config.kv_unified
        self.n_cells = lc.llama_n_ctx(self._ctx)  # all sequences' cells
        self.n_ctx_seq = min(lc.llama_n_ctx_seq(self._ctx), n_ctx_seq)
        self.n_batch = lc.llama_n_batch(self._ctx)
        self._batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self._logprobs = LogprobReader(self._ctx, model.n_vocab)
        self._emit = Emitter(model, self._ctx, self._logprobs, self.n_ctx_seq)
        self._commands: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._outbox = Outbox()
        self._waiting: collections.deque[list[Job]] = collections.deque()
        self._active: list[Job] = []
        self._closing = False
        self.crashed = False
        self._steps = 0
        self._prompt_total = 0
        self._cached_total = 0
        self._preempted = 0
        mb = config.prompt_cache_mb
        self._kv = Slots(
            self._ctx,
            config.parallel,
            unified=self.unified,
            n_cells=self.n_cells,
            cache=PromptCache(mb << 20) if mb > 0 else None,
            name=self.name,
        )
        self._admitted = 0
        self._drafter = Drafter(self.n_ctx_seq)
        self._jobs = JobMaker(model, config)
        cores = CoreShare(config.threads) if config.share_cores else None
        self._cores = cores if cores is not None and cores.enabled else None
        self.last_used = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"engine:{self.name}", daemon=True)
        self._thread.start()

    # -- public, any thread -----------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self._closing and self._thread.is_alive()

    @property
    def parallel(self) -> int:
        return len(self._kv)

    def submit(
        self,
        request: GenerationRequest,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue | None = None,
        index: int = 0,
    ) -> RequestHandle:
        if self._closing:
            raise Overloaded("the model is being unloaded; retry", retry_after=1)
        if len(request.prompt_tokens) >= self.n_ctx_seq:
            raise InvalidRequest(
                f"the prompt has {len(request.prompt_tokens)} tokens; the context holds "
                f"{self.n_ctx_seq}",
                code="context_length_exceeded",
            )
        if request.n > len(self._kv):
            raise InvalidRequest(
                f"n={request.n} is more than this server's {len(self._kv)} parallel slots",
                param="n",
            )
        if self.config.max_queue and len(self._waiting) >= self.config.max_queue:
            raise Overloaded("too many requests are waiting; retry shortly", retry_after=1)
        handle = RequestHandle(request, loop, queue, index)
        handle.outbox = self._outbox
        self.last_used = time.monotonic()
        self._commands.put(("submit", handle))
        return handle

    def cancel(self, handle: RequestHandle) -> None:
        handle.cancelled.set()
        self._commands.put(("cancel", handle))

    def close(self, *, drain: bool = True) -> None:
        """Stop taking requests; finish running ones (or cancel them), then free llama.cpp."""
        self._closing = True
        self._commands.put(("close", drain))

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def busy(self) -> bool:
        return bool(self._active or self._waiting) or not self._commands.empty()

    def stats(self) -> EngineStats:
        return EngineStats(
            slots=len(self._kv),
            busy_slots=sum(1 for s in self._kv.all if s.job is not None),
            waiting=len(self._waiting),
            context_per_slot=self.n_ctx_seq,
            kv_tokens=self._kv.held(),
            kv_capacity=self.n_cells,
            steps=self._steps,
            generated_tokens=self._emit.generated,
            reasoning_tokens=self._emit.reasoning,
            prompt_tokens=self._prompt_total,
            cached_prompt_tokens=self._cached_total,
            draft_tokens=self._drafter.drafted,
            draft_accepted=self._drafter.accepted,
            preempted=self._preempted,
            prefix_copies=self._kv.prefix_copies,
            prompt_cache_restores=self._kv.cache.restores if self._kv.cache else 0,
            prompt_cache_bytes=self._kv.cache.held if self._kv.cache else 0,
            threads=self._cores.threads if self._cores else self.config.threads,
        )

    # -- engine thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                idle = not self._active and not self._waiting
                if self._closing and idle:
                    break
                if idle and self._cores is not None:
                    self._cores.idle()
                self._drain_commands(block=idle)
                self._admit()
                if self._active:
                    self._step()
                self._deliver()
        except Exception:  # a bug of ours: fail everything that is running, loudly
            log.exception("engine %s crashed", self.name)
            self._closing = True
            self.crashed = True
            for job in [*self._active, *(g[0] for g in self._waiting)]:
                job.handle.push(ErrorEvent(EngineError("the engine failed; see the server log")))
        finally:
            for job in [*self._active, *(j for g in self._waiting for j in g)]:
                self._release(job)
            self._deliver()
            self._free()

    def _deliver(self) -> None:
        """Hand this step's events to the event loops; cancel requests whose loop is gone."""
        for handle in self._outbox.flush():
            self._commands.put(("cancel", handle))

    def _drain_commands(self, block: bool) -> None:
        while True:
            try:
                kind, arg = self._commands.get(block=block, timeout=0.5 if block else None)
            except queue.Empty:
                return
            block = False
            if kind == "submit":
                assert isinstance(arg, RequestHandle)
                if not arg.cancelled.is_set():
                    try:
                        self._waiting.append(self._jobs.group(arg))
                    except APIError as exc:
                        arg.push(ErrorEvent(exc))
                    except Exception:
                        log.exception("could not start a request")
                        arg.push(ErrorEvent(EngineError("could not start the request")))
            elif kind == "cancel":
                assert isinstance(arg, RequestHandle)
                self._cancel(arg)
            elif kind == "close":
                self._closing = True
                if not arg:
                    for job in list(self._active):
                        self._finish(job)
                    for group in self._waiting:
                        group[0].handle.push(ErrorEvent(Overloaded("the server is shutting down")))
                        for job in group:
                            job.free_chains()
                    self._waiting.clear()

    def _cancel(self, handle: RequestHandle) -> None:
        for job in [j for j in self._active if j.handle is handle]:
            self._finish(job)
        for group in list(self._waiting):
            if group[0].handle is handle:
                self._waiting.remove(group)
                for job in group:
                    job.free_chains()

    def _step(self) -> None:
        if not self._preempt():
            self._decode_failed(1)  # cannot happen while one sequence fits in the pool
            return
        for job in self._active:
            job.batch_index = -1
        generating = self._generating()
        n = self._put_generation(generating)
        generation_only = n
        n, scored = self._put_prompts(n)
        if n == 0:
            return
        # with a KV stream per sequence, new prompts share the generating sequences' pass
        # once the batch is in sequence order (`batch_order`); logits positions move along
        if not self.unified and n > generation_only and (where := sort_batch(self._batch, n)):
            for job in self._active:
                if job.batch_index >= 0:
                    job.batch_index = where[job.batch_index]
            scored = [(job, where[first], start) for job, first, start in scored]
        self._batch.n_tokens = n
        if self._cores is not None and (threads := self._cores.advise()) is not None:
            lc.llama_set_n_threads(self._ctx, threads, threads)
        started = time.perf_counter()
        rc = lc.llama_decode(self._ctx, self._batch)
        decoded = time.perf_counter() - started
        self._steps += 1
        if rc != 0:
            self._decode_failed(rc)
            return
        for job, first, start in scored:
            self._score_prompt(job, first, start)
        for job in [j for j in self._active if j.batch_index >= 0 and j.followers]:
            self._start_followers(job)  # they sample from their leader's last prompt logits
        for job in [j for j in self._active if j.batch_index >= 0]:
            if not job.done:
                self._verify(job)
        took = time.perf_counter() - started
        if self._cores is not None:
            self._cores.record(n, took)
        # the line is one pass's: with the KV apart, steps of several sequences with drafts
        # took several passes
        one_pass = self.unified or len(generating) == 1 or generation_only == len(generating)
        if generating and n == generation_only and one_pass:
            self._drafter.step_cost.record(n, decoded)

    def _put_generation(self, generating: list[Job]) -> int:
        """Put the next token of every generating sequence in the batch, each followed by the
        tokens prompt lookup drafts for it that are expected to pay (`drafting.py`). Returns
        the tokens in the batch."""
        drafts = self._drafts(generating)
        n = 0
        for job, draft in zip(generating, drafts, strict=True):
            slot = job.slot
            assert slot is not None and job.pending is not None
            pos = len(slot.cached)
            self._put(n, job.pending, pos, slot.seq_id, True)
            slot.cached.append(job.pending)
            job.batch_index = n
            n += 1
            job.drafts = draft
            for i, token in enumerate(draft):
                self._put(n, token, pos + 1 + i, slot.seq_id, True)
                n += 1
        return n

    def _drafts(self, generating: list[Job]) -> list[list[int]]:
        """Each generating sequence's drafted tokens for this step (`Drafter.drafts`). A step
        carries at most `draft_max` + 1 tokens of generation, and in a shared pool no more than
        the free cells."""
        budget = min(self.n_batch, self.config.draft_max + 1) - len(generating)
        if self.unified:
            budget = min(budget, self._free_cells() - len(generating))
        if budget <= 0:
            return [[] for _ in generating]
        # with a KV stream per sequence, llama.cpp puts drafted tokens in passes of their own
        split = not self.unified and len(generating) > 1
        return self._drafter.drafts(generating, budget, split, waiting=bool(self._prefilling()))

    def _put_prompts(self, n: int) -> tuple[int, list[tuple[Job, int, int]]]:
        """Fill the batch from position `n` with prompt chunks of the sequences still
        prefilling, oldest first. Returns (tokens in the batch, the chunks to score for `echo`
        as (job, batch position, prompt position))."""
        scored: list[tuple[Job, int, int]] = []
        for job in self._active:
            if n >= self.n_batch:
                break
            slot = job.slot
            if job.leader is not None or slot is None or len(slot.cached) >= len(job.fill):
                continue
            fill = job.fill
            start = len(slot.cached)
            take = min(self.n_batch - n, job.request.prompt_chunk, len(fill) - start)
            score = job.request.echo_logprobs
            if score:
                scored.append((job, n, start))
            for i in range(start, start + take):
                self._put(n, fill[i], i, slot.seq_id, score)
                n += 1
            slot.cached.extend(fill[start : start + take])
            # The last prompt token's logits give the first token (a preempted job coming back
            # has its next token already).
            if start + take == len(fill) and job.pending is None:
                self._batch.logits[n - 1] = 1
                job.batch_index = n - 1
        return n, scored

    def _verify(self, job: Job) -> None:
        """Sample the job's next token, and while it equals the next drafted token (which the
        batch already holds), the token after it: the tokens are those plain decoding would
        give. The KV of the drafts after the first disagreement is dropped."""
        drafts, job.drafts = job.drafts, []
        slot = job.slot
        first = job.batch_index
        self._on_logits(job)
        accepted = 0
        for i, token in enumerate(drafts):
            if job.done or job.pending != token or slot is None:
                break
            accepted += 1
            slot.cached.append(token)  # its KV is in place
            job.pending = None
            job.batch_index = first + 1 + i
            self._on_logits(job)
        if drafts and slot is not None:
            self._kv.drop_after(slot, len(slot.cached))
        self._drafter.settle(job, len(drafts), accepted)

    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits

    def _score_prompt(self, job: Job, first: int, start: int) -> None:
        """Log-probabilities of each prompt token given the ones before it (for `echo`)."""
        prompt = job.prompt
        end = len(job.slot.cached) if job.slot else start
        k = job.request.logprobs or 0
        if start == 0:
            job.prompt_scores.append(None)
        for pos in range(start, min(end, len(prompt) - 1)):
            job.prompt_scores.append(
                self._logprobs.read(first + pos - start, prompt[pos + 1], k, job.chain.params)
            )
        if end >= len(prompt):
            for j in [job, *job.followers]:
                j.handle.push(PromptLogprobsEvent(j.index, tuple(job.prompt_scores)))

    def _start_followers(self, leader: Job) -> None:
        """The leader's prompt is in its KV: give each follower a copy and the same logits."""
        assert leader.slot is not None
        for f in leader.followers:
            if f.done or f.slot is None:
                continue
            if not self._kv.copy(leader.slot, f.slot):
                f.handle.push(ErrorEvent(EngineError("could not copy the prompt's KV")))
                self._finish(f)  # cannot happen with a healthy context
                continue
            f.cached_tokens = leader.cached_tokens
            f.batch_index = leader.batch_index
            f.leader = None
        leader.followers = []

    def _on_logits(self, job: Job) -> None:
        ending = self._emit.token(job)
        if ending is not None:
            self._finish(job, ending)

    def _finish(self, job: Job, ending: Ending = GONE) -> None:
        """End a job; by default as cancelled (nothing more is sent)."""
        self._emit.end(job, ending)
        self._release(job)

    def _release(self, job: Job) -> None:
        job.done = True
        if job in self._active:
            self._active.remove(job)
        slot = job.slot
        if slot is not None:
            slot.job = None
            slot.last_used = time.monotonic()
            if job.leader is not None:  # a follower that never got its copy holds nothing valid
                self._kv.clear(slot)
            job.slot = None
        for f in job.followers:  # followers cannot outlive a cancelled leader's prefill
            if not f.done:
                self._release(f)
        job.free_chains()

    def _decode_failed(self, rc: int) -> None:
        log.error("llama_decode failed with %d for %d sequences", rc, len(self._active))
        err: APIError = EngineError(f"llama_decode failed ({rc})")
        for job in list(self._active):
            if job.batch_index >= 0 or job.pending is None:
                job.handle.push(ErrorEvent(err))
                slot = job.slot
                self._finish(job)
                if slot is not None:
                    self._kv.clear(slot)

    def _free(self) -> None:
        if self._ctx:
            lc.llama_batch_free(self._batch)
            lc.llama_free(self._ctx)
            self._ctx = None
        log.info("engine %s stopped", self.name)
