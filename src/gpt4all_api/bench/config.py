"""What every benchmark run shares: the servers' names, our server's variants, the load to
send and the tokenizer that counts every server's output the same way."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..engine.model import Model
from .raw import render_messages
from .stats import RequestRecord

OURS = "gpt4all-api"
THEIRS = "llama-cpp-python"
LLAMA_SERVER = "llama-server"
_ENV_WORD = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass(frozen=True)
class Variant:
    """Our server once more under another name, with more flags and environment variables
    (a tuning point measured in the same run, e.g. `passive=OMP_WAIT_POLICY=passive`)."""

    name: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """`NAME=WORDS`: words like `KEY=VALUE` (upper-case key) are environment variables of
        the server process, the others flags of `gpt4all-api serve`."""
        name, sep, rest = spec.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"a variant is NAME=FLAGS-OR-ENV, got {spec!r}")
        args: list[str] = []
        env: list[tuple[str, str]] = []
        for word in shlex.split(rest):
            if _ENV_WORD.match(word):
                key, _, value = word.partition("=")
                env.append((key, value))
            else:
                args.append(word)
        return cls(name.strip(), tuple(args), tuple(env))

    @property
    def server_name(self) -> str:
        return f"{OURS} [{self.name}]"


@dataclass(frozen=True)
class BenchConfig:
    """How much load to send. Every level is bounded by a request count and a time limit."""

    levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    requests_per_client: int = 4
    min_requests: int = 8
    max_tokens: int = 64
    temperature: float = 0.0  # of the levels' requests (the grounded ones are greedy)
    time_limit: float = 120.0  # seconds per level; no request starts after it
    warmup: int = 2
    prefix: bool = True
    prefix_tokens: int = 1500
    prefix_reps: int = 3
    prefix_max_tokens: int = 16
    hog: int = 0  # with N > 0 every level runs again beside N busy-looping processes
    grounded_passes: int = 0  # passes over the grounded prompts (0: no grounded workload)
    grounded_max_tokens: int = 192
    #: After the servers ran one after the other: this many rounds with every server up at once,
    #: each level run by every server in turn (the order alternating round by round), so that
    #: the ratios compare runs seconds apart rather than minutes on a noisy machine.
    rounds: int = 0

    def requests_for(self, concurrency: int) -> int:
        return max(self.min_requests, concurrency * self.requests_per_client)


class TokenCounter:
    """Counts output tokens with the model's own tokenizer, the same way for every server."""

    def __init__(self, model: Model):
        self.model = model

    def count(self, text: str) -> int:
        return len(self.model.tokenize(text, add_special=False, parse_special=False))

    def count_messages(self, messages: list[dict[str, str]]) -> int:
        return len(self.model.tokenize(render_messages(self.model, messages)))


def count_tokens(records: list[RequestRecord], counter: TokenCounter | None) -> None:
    """Each good record's output counted with the model's tokenizer (`counted_tokens`)."""
    if counter is not None:
        for r in records:
            if r.ok:
                r.counted_tokens = counter.count(r.text)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"
