"""What one benchmark request records, and the per-level summary computed from many of them."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

TokenSource = Literal["usage", "tokenizer", "chunks"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between ranks; None when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@dataclass
class RequestRecord:
    """One streamed request: when it started, when each content chunk came, what usage said."""

    started: float
    finished: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    text: str = ""
    error: str | None = None
    finish_reason: str | None = None
    usage_prompt: int | None = None
    usage_completion: int | None = None
    cached_tokens: int | None = None
    counted_tokens: int | None = None  # the output re-tokenized with the model's tokenizer

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.started if self.chunk_times else None

    def gaps(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in itertools.pairwise(t)]

    def tokens(self, source: TokenSource) -> int:
        if source == "usage":
            return self.usage_completion or 0
        if source == "tokenizer":
            return self.counted_tokens or 0
        return len(self.chunk_times)


def token_source(records: Sequence[RequestRecord], have_tokenizer: bool) -> TokenSource:
    """`usage` when every successful request reported it, else the tokenizer, else chunks."""
    ok = [r for r in records if r.ok]
    if ok and all(r.usage_completion is not None for r in ok):
        return "usage"
    return "tokenizer" if have_tokenizer else "chunks"


@dataclass
class LevelResult:
    """Aggregate figures of one closed-loop concurrency level."""

    concurrency: int
    requests: int
    errors: int
    wall_s: float
    output_tokens: int
    usage_tokens: int | None  # what the server's `usage` said, when it always said
    tokenizer_tokens: int | None  # the output re-tokenized, when a tokenizer was given
    token_source: TokenSource
    tokens_per_s: float
    requests_per_s: float
    ttft_p50: float | None
    ttft_p95: float | None
    itl_p50: float | None
    itl_p95: float | None
    peak_rss_mb: float | None = None
    server_cpu_s: float | None = None  # CPU time of the server's process tree during the level
    #: ... of its threads but the `--threads` busiest (decode) ones: HTTP, event loop, glue
    other_cpu_s: float | None = None
    error_samples: list[str] = field(default_factory=list)


def summarize(
    concurrency: int, records: Sequence[RequestRecord], wall_s: float, source: TokenSource
) -> LevelResult:
    """Per-level figures: throughput over the level's wall time, latency percentiles."""
    ok = [r for r in records if r.ok]
    tokens = sum(r.tokens(source) for r in ok)
    usage = [r.usage_completion for r in ok]
    ttfts = [t for r in ok if (t := r.ttft) is not None]
    gaps = [g for r in ok for g in r.gaps()]
    wall = max(wall_s, 1e-9)
    return LevelResult(
        concurrency=concurrency,
        requests=len(ok),
        errors=len(records) - len(ok),
        wall_s=wall_s,
        output_tokens=tokens,
        usage_tokens=sum(u for u in usage if u is not None)
        if ok and all(u is not None for u in usage)
        else None,
        tokenizer_tokens=sum(r.counted_tokens or 0 for r in ok)
        if ok and all(r.counted_tokens is not None for r in ok)
        else None,
        token_source=source,
        tokens_per_s=tokens / wall,
        requests_per_s=len(ok) / wall,
        ttft_p50=percentile(ttfts, 50),
        ttft_p95=percentile(ttfts, 95),
        itl_p50=percentile(gaps, 50),
        itl_p95=percentile(gaps, 95),
        error_samples=sorted({r.error for r in records if r.error})[:3],
    )


def cpu_ms_per_token(level: LevelResult, *, outside_decode: bool = False) -> float | None:
    """Server CPU milliseconds per output token: a figure less sensitive to a busy machine.
    `outside_decode`: only the CPU of the threads that do not decode."""
    cpu = level.other_cpu_s if outside_decode else level.server_cpu_s
    if cpu is None or not level.output_tokens:
        return None
    return 1000 * cpu / level.output_tokens
