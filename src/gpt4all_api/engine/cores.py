"""How many decode threads to run: the cores other processes leave free.

llama.cpp's threads meet at a barrier after every operation of the graph. On a dedicated
machine they should spin there (a sleeping thread's wake-up costs a quarter of the speed of one
sequence on two cores, docs/performance.md); on a machine where another process wants a core, a
spinning thread waits for a partner that is not running, and decoding collapses. Neither wait
policy is right for both, so the engine keeps the spinning policy and changes the number of
threads instead (`llama_set_n_threads`, between two decodes), from what the machine's other
processes used over the last second: `/proc/stat` (every process) less `/proc/self/stat`
(this one, whose spinning counts as busy).

Down at once when the others use ~0.6 of a core or more beyond what we left them, back up
only when they use under ~0.3: a hog beside the server costs it one core, not the collapse.
Linux only; elsewhere (no `/proc`) the thread count stays as configured.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: (jiffies every CPU spent busy, jiffies this process spent) since boot.
Sample = tuple[int, int]

WINDOW = 1.0  # seconds between two looks
DOWN_AT = 0.6  # cores the others use that make us give one up
UP_BELOW = 0.3  # ... and that they must use less than before we take it back
IDLE = 5.0  # idle longer than this (seconds): the window starts again with the next step


def proc_sample() -> Sample | None:
    """Busy jiffies of all CPUs and of this process, from /proc; None where there is none."""
    try:
        cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if cpu[0] != "cpu":
        return None
    values = [int(v) for v in cpu[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy, int(own[11]) + int(own[12])  # utime, stime


class CoreShare:
    """Decides the decode thread count from one sample a second (`advise`, engine thread)."""

    def __init__(
        self,
        threads: int,
        *,
        cores: int | None = None,
        sample: Callable[[], Sample | None] = proc_sample,
        clock: Callable[[], float] = time.monotonic,
        ticks: float | None = None,
    ):
        self.max_threads = threads
        self.threads = threads
        self.cores = cores or os.cpu_count() or threads
        self._sample = sample
        self._clock = clock
        self._ticks = ticks or float(os.sysconf("SC_CLK_TCK"))
        self._last: tuple[float, Sample] | None = None
        self._idle_since: float | None = None
        self.others = 0.0  # cores the other processes used over the last window
        self.enabled = threads > 1 and sample() is not None

    def idle(self) -> None:
        """The engine has nothing to decode. After `IDLE` seconds of that the next window
        starts afresh (one spanning the idle time would count the others' use while we wanted
        no core); short gaps between requests stay in the window. A slow step, however long,
        does too: beside busy processes steps take seconds, which is when a decision is due."""
        if self._idle_since is None:
            self._idle_since = self._clock()

    def advise(self) -> int | None:
        """The new thread count when it should change, else None. Cheap between windows."""
        if not self.enabled:
            return None
        now = self._clock()
        if self._idle_since is not None:
            if now - self._idle_since > IDLE:
                self._last = None
            self._idle_since = None
        if self._last is not None and now - self._last[0] < WINDOW:
            return None
        sample = self._sample()
        if sample is None:
            return None
        last, self._last = self._last, (now, sample)
        if last is None:
            return None
        seconds = now - last[0]
        busy = (sample[0] - last[1][0]) / self._ticks / seconds
        ours = (sample[1] - last[1][1]) / self._ticks / seconds
        self.others = max(0.0, busy - ours)
        # cores the others leave: room for that many threads of ours
        down = self.cores - math.floor(self.others + 1 - DOWN_AT)
        up = self.cores - math.floor(self.others + 1 - UP_BELOW)
        want = self.threads
        if down < self.threads:
            want = down
        elif up > self.threads:
            want = up
        want = max(1, min(self.max_threads, want))
        if want == self.threads:
            return None
        log.info(
            "other processes use %.1f cores: decoding on %d threads (was %d)",
            self.others,
            want,
            self.threads,
        )
        self.threads = want
        return want
