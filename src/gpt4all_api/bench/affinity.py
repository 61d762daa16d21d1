"""`gpt4all-api bench-affinity`: does prefix-affinity routing pay on a Ray cluster?

Deploys the app on Ray Serve once per router (`prefix`, then Ray's default power of two
choices, `pow2`), and each time runs `conversations` conversations of `turns` turns each, in
rounds (`concurrency` requests at a time), whose first turn carries a history of about
`history_tokens` tokens. For turns 2 and later it
counts the turns that found their conversation's prefix in the KV cache of the replica they
reached (`cached_tokens` at least half the prompt) and the p50 time to first token.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from ..settings import Settings
from .load import RequestRecord, history_messages, new_client, stream_chat
from .stats import percentile

log = logging.getLogger(__name__)


@dataclass
class AffinityResult:
    routing: str
    later: list[RequestRecord] = field(default_factory=list)  # turns 2..n
    first: list[RequestRecord] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(not r.ok for r in (*self.first, *self.later))

    @property
    def reused(self) -> int:
        return sum(
            1
            for r in self.later
            if r.cached_tokens and r.usage_prompt and r.cached_tokens >= r.usage_prompt / 2
        )

    @property
    def reuse_share(self) -> float:
        return self.reused / len(self.later) if self.later else 0.0

    def ttft_p50(self, first: bool = False) -> float | None:
        recs = self.first if first else self.later
        return percentile([t for r in recs if (t := r.ttft) is not None], 50)


@dataclass
class Conversation:
    messages: list[dict[str, str]]
    records: list[RequestRecord] = field(default_factory=list)

    def advance(self, record: RequestRecord) -> None:
        self.records.append(record)
        turn = len(self.records)
        self.messages = [
            *self.messages,
            {"role": "assistant", "content": record.text or "ok"},
            {"role": "user", "content": f"Thank you. Question {turn + 1}: what next?"},
        ]


async def run_conversations(
    base_url: str,
    routing: str,
    *,
    model: str | None = None,
    conversations: int = 8,
    turns: int = 4,
    history_tokens: int = 1500,
    max_tokens: int = 16,
    concurrency: int = 2,
) -> AffinityResult:
    """Turns go in rounds: every conversation's turn 1, then every one's turn 2, ..., at most
    `concurrency` requests at once, so other conversations run on the replicas between two
    turns of one conversation, as with many users."""
    convs = [
        Conversation(history_messages(uuid.uuid4().hex[:12], history_tokens))
        for _ in range(conversations)
    ]
    gate = asyncio.Semaphore(concurrency)
    async with new_client(concurrency) as client:

        async def turn(conv: Conversation) -> None:
            async with gate:
                conv.advance(await stream_chat(client, base_url, model, conv.messages, max_tokens))

        for n in range(turns):
            log.info("routing %s: round %d of %d", routing, n + 1, turns)
            await asyncio.gather(*(turn(c) for c in convs))
    result = AffinityResult(routing)
    for conv in convs:
        result.first.append(conv.records[0])
        result.later.extend(conv.records[1:])
    return result


def measure(settings: Settings, routings: tuple[str, ...], **options: int) -> list[AffinityResult]:
    """Deploy once per routing on a Ray cluster (local unless `ray_address`), run, tear down."""
    import ray
    from ray import serve

    from ..cluster import launch

    results = []
    launch.connect(settings, log_to_driver=False)
    try:
        for routing in routings:
            s = settings.model_copy(update={"routing": routing})
            launch.deploy(s)
            base = f"http://127.0.0.1:{s.port}/v1"
            log.info("routing %s: running", routing)
            results.append(asyncio.run(run_conversations(base, routing, **options)))
            serve.delete("gpt4all-api")
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def table(results: list[AffinityResult]) -> str:
    def ms(v: float | None) -> str:
        return f"{v * 1000:,.0f}" if v is not None else "n/a"

    lines = [
        "| router | later turns reusing their cache | TTFT p50, turns 2+ (ms) | "
        "TTFT p50, turn 1 (ms) | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.routing} | {r.reused}/{len(r.later)} ({r.reuse_share:.0%}) | "
            f"{ms(r.ttft_p50())} | {ms(r.ttft_p50(first=True))} | {r.errors} |"
        )
    if len(results) == 2 and results[0].ttft_p50() and results[1].ttft_p50():
        ratio = results[1].ttft_p50() / results[0].ttft_p50()  # type: ignore[operator]
        lines.append(f"\nlater turns' TTFT p50, {results[1].routing} / {results[0].routing}: "
                     f"{ratio:.1f}x")  # fmt: skip
    return "\n".join(lines)
