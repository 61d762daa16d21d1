"""The decode thread count follows the cores other processes leave free (engine/cores.py)."""

from __future__ import annotations

from gpt4all_api.engine.cores import CoreShare, proc_sample


class Machine:
    """A fake /proc: `run(seconds, ours, others)` adds busy jiffies at 100 per core-second."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = 0
        self.own = 0

    def run(self, seconds: float, ours: float, others: float) -> None:
        self.now += seconds
        self.busy += round((ours + others) * 100 * seconds)
        self.own += round(ours * 100 * seconds)

    def share(self, threads: int = 2, cores: int = 2) -> CoreShare:
        return CoreShare(
            threads,
            cores=cores,
            sample=lambda: (self.busy, self.own),
            clock=lambda: self.now,
            ticks=100,
        )


def dropped(step: float, ours: float, others: float, steps: int = 1) -> tuple[Machine, CoreShare]:
    """A server on 2 threads that ran `steps` 16-token decodes of `step` seconds each, whose
    first look then finds the others using `others` of a core: it has given one thread up."""
    m = Machine()
    share = m.share()
    share.advise()
    for _ in range(steps):
        share.record(16, step)
    m.run(1.0, ours=ours, others=others)
    assert share.advise() == 1
    return m, share


def test_a_hog_beside_the_server_takes_one_thread_and_gives_it_back_when_it_stops() -> None:
    m = Machine()
    share = m.share()
    assert share.advise() is None  # the first look only starts a window
    m.run(1.0, ours=2.0, others=0.0)
    assert share.advise() is None and share.threads == 2
    m.run(1.0, ours=1.33, others=0.67)  # a busy loop gets its share of the two cores
    assert share.advise() == 1
    m.run(1.0, ours=1.0, others=1.0)
    assert share.advise() is None and share.threads == 1
    m.run(1.0, ours=1.0, others=0.0)  # it stopped
    assert share.advise() == 2


def test_light_use_by_others_costs_nothing_and_the_middle_band_holds() -> None:
    m = Machine()
    share = m.share()
    share.advise()
    m.run(1.0, ours=1.8, others=0.2)  # a client process, the shell
    assert share.advise() is None and share.threads == 2
    m.run(1.0, ours=1.0, others=0.8)
    assert share.advise() == 1
    m.run(1.0, ours=1.0, others=0.45)  # between the two marks: stay
    assert share.advise() is None and share.threads == 1


def test_between_windows_and_after_idle_nothing_is_decided() -> None:
    m = Machine()
    share = m.share()
    share.advise()
    m.run(0.5, ours=0.0, others=2.0)
    assert share.advise() is None  # under a second
    share.idle()  # the engine had nothing to do for long: a new window starts
    m.run(30.0, ours=0.0, others=2.0)
    assert share.advise() is None and share.threads == 2
    share.idle()  # a short gap between two requests stays in the window
    m.run(0.5, ours=0.0, others=0.0)
    share.advise()
    m.run(1.0, ours=1.0, others=1.0)
    assert share.advise() == 1


def test_a_step_slowed_for_seconds_by_busy_processes_still_decides() -> None:
    m = Machine()
    share = m.share()
    share.advise()
    m.run(12.0, ours=0.5, others=1.5)  # one step of a collapsed decode
    assert share.advise() == 1


def test_never_below_one_thread_nor_above_the_setting() -> None:
    m = Machine()
    share = m.share(threads=4, cores=8)
    share.advise()
    m.run(1.0, ours=4.0, others=0.0)
    assert share.advise() is None and share.threads == 4  # 8 cores free, 4 asked for
    m.run(1.0, ours=1.0, others=7.0)
    assert share.advise() == 1


def test_one_thread_has_nothing_to_give_up() -> None:
    assert not Machine().share(threads=1).enabled


def test_this_machine_has_a_proc_sample() -> None:
    busy, own = proc_sample()  # type: ignore[misc]
    assert busy > 0 and own >= 0


def test_a_drop_that_decodes_slower_is_undone_and_not_tried_again_for_a_while() -> None:
    """A client's bursts between our steps look like a process wanting a core, but taking a
    thread away only slows us: the next window shows it, and the thread comes back."""
    m, share = dropped(0.1, ours=1.3, others=0.7, steps=10)  # 160 tokens/s on 2 threads
    for _ in range(6):
        share.record(16, 0.16)  # 100 tokens/s on 1 thread
    m.run(1.0, ours=1.3, others=0.7)
    assert share.advise() == 2  # undone
    for _ in range(9):  # 9 more windows of the same: held at 2 threads (10 s)
        share.record(16, 0.1)
        m.run(1.0, ours=1.3, others=0.7)
        assert share.advise() is None and share.threads == 2
    share.record(16, 0.1)
    m.run(1.0, ours=1.3, others=0.7)
    assert share.advise() == 1  # tried again ...
    share.record(16, 0.16)
    m.run(1.0, ours=1.3, others=0.7)
    assert share.advise() == 2  # ... missed again: now held twice as long
    for _ in range(19):
        share.record(16, 0.1)
        m.run(1.0, ours=1.3, others=0.7)
        assert share.advise() is None
    share.record(16, 0.1)
    m.run(1.0, ours=1.3, others=0.7)
    assert share.advise() == 1


def test_a_drop_that_pays_stays() -> None:
    """Beside a hog two spinning threads collapse; one thread decodes faster and keeps going."""
    m, share = dropped(2.0, ours=1.3, others=0.7)  # 8 tokens/s: the collapse
    for _ in range(8):
        share.record(16, 0.25)  # 64 tokens/s on one thread
    m.run(1.0, ours=1.0, others=1.0)
    assert share.advise() is None and share.threads == 1
    m.run(1.0, ours=1.0, others=1.0)
    assert share.advise() is None and share.threads == 1


def test_a_drop_is_checked_a_quarter_second_after_it() -> None:
    """A client's burst (a process starting) costs a quarter of a second on fewer threads, not
    the whole next window; with no decode in that time the check waits for one."""
    m, share = dropped(0.1, ours=1.1, others=0.9, steps=10)  # 160 tokens/s on 2 threads
    m.run(0.2, ours=1.0, others=0.45)  # the middle band: only the check decides
    assert share.advise() is None and share.threads == 1  # too soon
    m.run(0.1, ours=1.0, others=0.45)
    assert share.advise() is None and share.threads == 1  # no decode yet: nothing to compare
    share.record(16, 0.16)  # 100 tokens/s on 1 thread
    m.run(0.25, ours=1.0, others=0.45)
    assert share.advise() == 2  # undone
    m.run(0.5, ours=2.0, others=0.0)
    assert share.advise() is None  # back to one look a second
