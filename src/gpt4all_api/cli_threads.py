"""How llama.cpp's decode threads wait at their barriers, chosen by the CLI for its own process.

llama.cpp (as llama-cpp-python builds it) runs every graph on an OpenMP team; its threads meet
at a barrier after each operation. libgomp's default is to spin there (about 300,000 rounds
when the team is no larger than the cores), which is fastest on a dedicated machine, and
collapses when another process takes a core: the spinning thread burns its time slice waiting
for a thread that is not running (docs/performance.md: ~70 → under 3 tokens/s).
`llama_attach_threadpool`'s `poll` does not help: with OpenMP, ggml's barrier is
`#pragma omp barrier` and the poll level is never read.

libgomp reads `OMP_WAIT_POLICY` / `GOMP_SPINCOUNT` once, when it loads, which is when
`llama_cpp` is imported: so the CLI sets them here, imported before anything that imports
llama.cpp, from `GPT4ALL_API_THREAD_WAIT` (an environment variable only, not a flag, because
it must be known before the flags are parsed):

- a number N: `GOMP_SPINCOUNT=N`, spin N rounds, then sleep. The default is 100000 (a few
  milliseconds: the threads spin through a step and the gap to the next, and sleep when the
  server is idle). Spinning is a quarter faster than sleeping at one sequence on two cores;
  the collapse it causes when another process takes a core is avoided by the engine, which
  then decodes on fewer threads (`share_cores`, engine/cores.py);
- `passive`: `OMP_WAIT_POLICY=passive`, a waiting thread sleeps at once (slower, but safe
  where `share_cores` cannot see the machine's load);
- `spin`: `OMP_WAIT_POLICY=active`, spin without end (an idle server keeps its cores busy);
- `inherit`: leave OpenMP's environment as it is.

When `OMP_WAIT_POLICY` or `GOMP_SPINCOUNT` is already set, nothing is changed. Applications
that import the library themselves (not through the CLI) set these variables themselves.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

ENV = "GPT4ALL_API_THREAD_WAIT"
DEFAULT = "100000"
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

log = logging.getLogger(__name__)

# What `apply` set in this process, so that child processes of other programs (the servers the
# benchmark compares) can be started without it.
applied: dict[str, str] = {}


def openmp_env(choice: str) -> dict[str, str]:
    """The OpenMP variables for a `GPT4ALL_API_THREAD_WAIT` value."""
    choice = choice.strip().lower()
    if choice == "passive":
        return {"OMP_WAIT_POLICY": "passive"}
    if choice == "spin":
        return {"OMP_WAIT_POLICY": "active"}
    if choice == "inherit":
        return {}
    if choice.isdigit():
        return {"GOMP_SPINCOUNT": choice}
    raise ValueError(f"{ENV} must be passive, spin, inherit or a spin count, not {choice!r}")


def apply(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set OpenMP's wait policy in `environ` (this process's) unless one is set already."""
    env = os.environ if environ is None else environ
    if any(k in env for k in OMP_VARS):
        return {}
    try:
        wanted = openmp_env(env.get(ENV, DEFAULT))
    except ValueError as exc:
        log.warning("%s; using %s", exc, DEFAULT)
        wanted = openmp_env(DEFAULT)
    env.update(wanted)
    if environ is None:
        applied.update(wanted)
    return wanted


def child_env() -> dict[str, str]:
    """This process's environment without what `apply` added: for other programs' servers."""
    return {k: v for k, v in os.environ.items() if applied.get(k) != v or k not in applied}


apply()
