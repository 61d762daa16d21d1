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
A drop is then checked against what it gives: the engine reports each decode's tokens and time
(`record`), and when fewer threads decoded more than `KEEP_SLOWER` slower over the `CHECK`
seconds after the drop than over the window before it (the others were a client's bursts between
our steps, not a process that wants a core all the time), the thread comes back and no drop is
tried for a while, 10 s, then twice as long after each such miss, up to 160 s. The check comes
sooner than the next window would: a drop that does not pay costs a quarter of a second at the
lower speed, not a whole one.
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
CHECK = 0.25  # ... but this soon after a drop, to see whether it pays
DOWN_AT = 0.6  # cores the others use that make us give one up
UP_BELOW = 0.3  # ... and that they must use less than before we take it back
IDLE = 5.0  # idle longer than this (seconds): the window starts again with the next step
KEEP_SLOWER = 0.9  # a drop stays if it keeps this share of the decode rate before it
HOLD = 10.0  # seconds without a drop after one that did not pay; doubles each miss ...
HOLD_MAX = 160.0  # ... up to this


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
        self._tokens = 0  # decoded in this window ...
        self._seconds = 0.0  # ... in this much decode time
        #: (tokens/s of decode, threads) in the window before a drop, checked after the next one
        self._before: tuple[float, int] | None = None
        self._hold = HOLD
        self._hold_until = -math.inf

    def record(self, tokens: int, seconds: float) -> None:
        """One decode: its batch's tokens and how long it took (engine thread)."""
        self._tokens += tokens
        self._seconds += seconds

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
        window = CHECK if self._before is not None else WINDOW
        if self._last is not None and now - self._last[0] < window:
            return None
        sample = self._sample()
        if sample is None:
            return None
        last, self._last = self._last, (now, sample)
        rate = self._tokens / self._seconds if self._seconds > 0 and self._tokens else None
        self._tokens, self._seconds = 0, 0.0
        if last is None:
            return None
        seconds = now - last[0]
        busy = (sample[0] - last[1][0]) / self._ticks / seconds
        ours = (sample[1] - last[1][1]) / self._ticks / seconds
        self.others = max(0.0, busy - ours)
        before = self._before
        if rate is not None:  # no decode since the drop: check at the next look
            self._before = None
        if before is not None and rate is not None and rate < KEEP_SLOWER * before[0]:
            # the window since the drop decoded slower than the one before it: undo it
            self._hold_until = now + self._hold
            log.info(
                "fewer decode threads were slower (%.0f against %.0f tokens/s): back to %d "
                "threads, no drop for %.0f s",
                rate,
                before[0],
                before[1],
                self._hold,
            )
            self._hold = min(HOLD_MAX, 2 * self._hold)
            self.threads = before[1]
            return self.threads
        # cores the others leave: room for that many threads of ours
        down = self.cores - math.floor(self.others + 1 - DOWN_AT)
        up = self.cores - math.floor(self.others + 1 - UP_BELOW)
        want = self.threads
        if down < self.threads and now >= self._hold_until:
            want = down
        elif up > self.threads:
            want = up
            self._hold = HOLD  # the others went quiet: a later drop gets a fresh start
            self._before = None  # nothing left to check
        want = max(1, min(self.max_threads, want))
        if want == self.threads:
            return None
        log.info(
            "other processes use %.1f cores: decoding on %d threads (was %d)",
            self.others,
            want,
            self.threads,
        )
        if want < self.threads and rate is not None:
            self._before = (rate, self.threads)
        self.threads = want
        return want
