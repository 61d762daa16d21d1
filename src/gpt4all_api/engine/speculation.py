"""The engine's prompt-lookup speculation: which drafted tokens each step carries, and what
the model made of them (the odds and the step costs `drafting.py` plans with, and the counts
the metrics report)."""

from __future__ import annotations

from collections.abc import Sequence

from .drafting import PRIOR_SLOPE, DraftOdds, PassCost, StepCost, can_pay, plan_drafts
from .sequences import Job


class Drafter:
    def __init__(self, n_ctx_seq: int):
        self.n_ctx_seq = n_ctx_seq
        self.step_cost = StepCost()  # what a step of generation costs, by its tokens
        self.odds = DraftOdds()  # how often each kind of draft is right
        self.drafted = 0  # tokens drafted and verified
        self.accepted = 0  # of those, the ones the model agreed with

    def drafts(
        self, generating: Sequence[Job], budget: int, split: bool, *, waiting: bool
    ) -> list[list[int]]:
        """Each generating sequence's drafted tokens for a step with room for `budget` of
        them: all a forced one's (`"prompt_lookup": true`) has, and of the others' the ones
        `plan_drafts` expects to raise the step's tokens per second. `split`: llama.cpp runs
        the drafted tokens of several sequences in passes of their own (a KV stream each).

        Drafts make a step longer, and every sequence waits for the step: none but forced
        ones while a new sequence's prompt is `waiting` to be read (its first token would
        come later) or where no draft could pay (`drafting.can_pay`: then the lookups are
        skipped too)."""
        drafts: list[list[int]] = [[] for _ in generating]
        planning = not waiting and can_pay(len(generating), budget, split)
        planned: list[tuple[int, list[float]]] = []
        for i, job in enumerate(generating):
            forced = job.request.prompt_lookup is True
            if job.lookup is None or job.forced or not (planning or forced):
                continue
            assert job.slot is not None
            room = min(
                budget,
                self.n_ctx_seq - len(job.slot.cached) - 2,
                job.request.max_tokens - job.n_generated - 1,
            )
            draft = job.lookup.draft(room)
            if not draft:
                continue
            drafts[i] = draft
            if forced:
                budget -= len(draft)
                continue
            look = job.lookup
            planned.append((i, self.odds.odds(look.source, look.run, min(len(draft), budget))))
        if not planned:
            return drafts
        cost = self.step_cost.cost() or PassCost(1 - PRIOR_SLOPE, PRIOR_SLOPE)
        candidates: list[list[float]] = [[] for _ in generating]
        for i, c in planned:
            candidates[i] = c
        seq_ids = [job.slot.seq_id for job in generating] if split else None
        taken = plan_drafts(candidates, len(generating), cost, budget, seq_ids)
        for i, _ in planned:
            drafts[i] = drafts[i][: taken[i]]
        return drafts

    def settle(self, job: Job, drafted: int, accepted: int) -> None:
        """After a step: `accepted` of the job's `drafted` tokens were the model's. The job's
        guess, drafted or not, is checked against what the model generated, so that its kind's
        odds learn from every step."""
        if drafted:
            self.drafted += drafted
            self.accepted += accepted
        look = job.lookup
        if look is not None and look.guess is not None:
            source, run = look.source, look.run
            right, wrong = look.settle(drafted, accepted, None if job.done else job.pending)
            self.odds.record(source, run, right, wrong)
