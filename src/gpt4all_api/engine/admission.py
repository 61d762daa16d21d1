"""The engine's admission: which waiting request runs next and in which sequence, what of its
prompt that sequence already holds or gets (its own cache, a copy of another sequence's
prefix, a state saved in RAM), room in a shared KV pool, and preemption when the running
sequences outgrow it. `Engine` (scheduler.py) runs these on its own thread."""

from __future__ import annotations

import collections
import logging

from .sequences import Job, Slot, common_prefix_len
from .slots import MIN_SEED, Slots, place, runs_added

log = logging.getLogger(__name__)


class Admission:
    """Admission and preemption, as part of `Engine` (the state is the engine's)."""

    name: str
    unified: bool
    n_cells: int
    _kv: Slots
    _waiting: collections.deque[list[Job]]
    _active: list[Job]
    _admitted: int
    _prompt_total: int
    _cached_total: int
    _preempted: int

    def _admit(self) -> None:
        while self._waiting:
            group = self._waiting[0]
            free = [s for s in self._kv.all if s.job is None]
            if len(free) < len(group):
                return  # FIFO: later requests wait behind this one
            leader = group[0]
            fill = leader.fill
            reuse = not leader.request.echo_logprobs  # scoring needs logits of every token
            busy = None if self.unified else {s.seq_id for s in self._kv.all if s.job is not None}
            spot = place(free, self._kv.all, fill if reuse else [], busy)
            best = spot.slot
            keep = min(spot.keep, len(fill) - 1)
            seed = min(spot.seed, len(fill) - 1)
            saved, restore = None, 0
            if self._kv.cache is not None and reuse:
                saved, restore = self._kv.cache.longest(fill)
                restore = min(restore, len(fill) - 1)
                if restore < max(keep, seed) + MIN_SEED:
                    saved, restore = None, 0
            # Room in the pool for the rest of the prompt and a first stretch of answer (the
            # other choices share the prompt's cells; a restored state takes cells of its own).
            reserve = min(leader.request.max_tokens, 64) * len(group)
            need = len(fill) + reserve - (0 if saved is not None else max(keep, seed))
            if not self._make_room(need, best, 0 if saved is not None else keep):
                return
            self._waiting.popleft()
            if spot.source is not None:
                # making room may have dropped an idle source's tokens
                seed = min(seed, common_prefix_len(spot.source.cached, fill))
            self._kv.stash(best, keep)
            if saved is not None:
                keep = self._kv.restore(best, saved, restore)
            elif spot.source is not None and seed > keep:
                keep = self._kv.seed(best, spot.source, seed)
            else:
                self._kv.trim(best, keep)
            self._attach(leader, best, keep)
            free.remove(best)
            if busy is not None:
                busy.add(best.seq_id)
            for job in group[1:]:
                slot = min(free, key=lambda s: (runs_added(busy, s.seq_id), s.last_used))
                free.remove(slot)
                if busy is not None:
                    busy.add(slot.seq_id)
                self._kv.evict(slot)
                self._attach(job, slot, 0)

    def _prefilling(self) -> list[Job]:
        """The running sequences with prompt tokens still to bring into their slot."""
        return [
            j
            for j in self._active
            if j.slot is not None and j.leader is None and len(j.slot.cached) < len(j.fill)
        ]

    def _free_cells(self) -> int:
        """Cells nobody holds or is about to: the pool less every sequence's tokens (idle ones'
        included) and the prompt tokens running sequences have still to bring in."""
        owed = sum(len(j.fill) - len(j.slot.cached) for j in self._prefilling())
        return self.n_cells - self._kv.held() - owed

    def _make_room(self, need: int, spare: Slot | None = None, keep: int = 0) -> bool:
        return self._kv.make_room(need, self._free_cells(), spare, keep)

    def _generating(self) -> list[Job]:
        """The jobs whose next token goes into this step (their prompt is in the KV), in the
        order of their sequences: across per-sequence streams llama.cpp puts into one ubatch
        (one pass over the weights) only tokens whose sequence ids follow each other, in batch
        order, so any other order splits the step into several passes."""
        jobs = [
            j
            for j in self._active
            if j.pending is not None and j.slot is not None and len(j.slot.cached) >= len(j.fill)
        ]
        jobs.sort(key=lambda j: j.slot.seq_id if j.slot is not None else -1)
        return jobs

    def _preempt(self) -> bool:
        """Make a cell for every generating sequence's next token, if need be by sending the
        newest sequences back to wait (first in line): their cells are dropped, and they later
        re-read the prompt and what they wrote so far, then go on. False when the one running
        sequence cannot be given room."""
        while not self._make_room(len(self._generating())):
            movable = [
                j
                for j in self._active
                if j.leader is None and not j.followers and not j.request.echo_logprobs
            ]
            if not movable or len(self._active) <= 1:
                return False
            job = max(movable, key=lambda j: j.order)
            slot = job.slot
            assert slot is not None
            if len(slot.cached) >= len(job.fill):  # past its prompt: resume from all it holds
                job.fill = list(slot.cached)
            self._active.remove(job)
            self._kv.clear(slot)
            slot.job = None
            job.slot = None
            self._waiting.appendleft([job])
            self._preempted += 1
            log.info("%s: KV pool full; preempted a sequence (%d tokens)", self.name, len(job.fill))
        return True

    def _attach(self, job: Job, slot: Slot, cached: int) -> None:
        slot.job = job
        job.slot = slot
        first = job.order == 0  # not a preempted job coming back
        self._admitted += 1
        job.order = self._admitted
        if first:
            job.cached_tokens = cached
            if job.leader is None:
                self._prompt_total += len(job.prompt)
                self._cached_total += cached
        self._active.append(job)
