"""The bench counts the CPU of a server's threads that do not decode apart from the rest (a real
child process with one busy thread and one sleeping)."""

from __future__ import annotations

import subprocess
import sys
import time

from gpt4all_api.bench.servers import RssSampler


def test_cpu_outside_the_decode_threads_is_counted_apart() -> None:
    # a process with one busy thread (as a decode thread) and a main thread that only sleeps
    code = (
        "import threading, time\n"
        "def spin():\n"
        "    end = time.monotonic() + 1.0\n"
        "    while time.monotonic() < end: pass\n"
        "threading.Thread(target=spin).start()\n"
        "time.sleep(1.5)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        sampler = RssSampler(proc.pid, decode_threads=1)
        time.sleep(0.2)  # the interpreter has started
        sampler.reset()
        time.sleep(0.8)
        total, other = sampler.cpu_since_reset(), sampler.other_cpu_since_reset()
        assert other is not None and total > 0.3 and other < 0.2 * total
        assert RssSampler(proc.pid).other_cpu_since_reset() is None  # no decode threads given
    finally:
        proc.wait()
