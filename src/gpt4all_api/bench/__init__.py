"""A throughput and latency benchmark for any OpenAI-compatible server on this machine.

`gpt4all-api bench` drives a base URL with closed-loop clients; `--compare` also starts our
server and llama-cpp-python's one after the other and measures raw batched decoding as the
ceiling. See docs/performance.md.
"""

from .config import BenchConfig
from .runner import CompareReport, ServerReport, bench_url, run_compare
from .servers import ServerOptions

__all__ = [
    "BenchConfig",
    "CompareReport",
    "ServerOptions",
    "ServerReport",
    "bench_url",
    "run_compare",
]
