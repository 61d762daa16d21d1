"""Run llama.cpp work on a thread that ends with it, so that its OpenMP team ends too.

llama.cpp decodes on an OpenMP team of the calling thread, and libgomp keeps that team for as
long as the thread lives. While libgomp manages more threads than there are cores, it cuts
every team's spinning at its barriers to 100 rounds (1,000 with `OMP_WAIT_POLICY=active`),
whatever `GOMP_SPINCOUNT` says, and a decode thread that sleeps at each barrier is a quarter
slower or more. So work besides the chat engine's (embeddings, the bench's raw decode) runs
here, and the chat engine's team is then the only one that lasts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_on_own_thread(fn: Callable[..., T], *args: object, name: str = "llama-work") -> T:
    """`fn(*args)` on a new thread, waited for; its exception is raised here."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join()
    if error:
        raise error[0]
    return result[0]
