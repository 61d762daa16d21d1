"""Give back the KV cache's pages until a sequence writes them.

llama.cpp allocates every sequence's KV cells when it creates a context and fills them with
zeros, so a server with 16 sequences of 2,048 tokens holds all of their cache in RAM from the
start (400 MB for a 135M model with a q8_0 cache), used or not. A page of private anonymous
memory that is all zeros reads the same after `madvise(MADV_DONTNEED)`: the kernel hands out a
fresh zero page when it is next touched. So once the context exists, the engine finds the host
KV buffer and gives those pages back; a sequence's pages come back as its cells are written.
The buffer is the run of pages, in the memory mapped while the context was created, that are
resident and all zeros (llama.cpp has just cleared it) and whose length is closest to the size
llama.cpp logged for it. Pages never touched are not resident and never taken, so an untouched
neighbour (an allocator's fresh arena, say) is not mistaken for it. Resident memory then follows
the tokens held, not the slots times their context. Linux only; anywhere the buffer is not found,
nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MADV_DONTNEED = 4
PAGE = mmap.PAGESIZE

#: (start, end) of a private anonymous read-write mapping
Region = tuple[int, int]


def anonymous_regions(maps: str | None = None) -> set[Region]:
    """Private anonymous read-write mappings of this process (not the brk heap or stacks)."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return set()
    out: set[Region] = set()
    for line in maps.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[1] != "rw-p" or parts[4] != "0":
            continue
        if len(parts) > 5:  # [heap], [stack], a file
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        out.add((start, end))
    return out


def zero_runs(zero: np.ndarray) -> list[tuple[int, int]]:
    """(first page, count) of every run of pages whose flag in `zero` is set."""
    if not zero.any():
        return []
    edges = np.diff(np.concatenate(([0], zero.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def best_run(runs: list[tuple[int, int]], pages: int) -> tuple[int, int] | None:
    """The run that can hold a buffer of `pages` pages (less its partial first and last page)
    and whose length is closest to it; the earliest of equals."""
    fits = [r for r in runs if r[1] >= pages - 2]
    return min(fits, key=lambda r: abs(r[1] - pages)) if fits else None


def resident_pages(start: int, end: int) -> np.ndarray | None:
    """Which pages of [start, end) are in memory (mincore), None when it cannot be told."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    vec = np.zeros((end - start) // PAGE, dtype=np.uint8)
    if libc.mincore(start, end - start, vec.ctypes.data) != 0:
        return None
    return (vec & 1).astype(bool)


def zero_pages(mem: int, start: int, end: int, step: int = 4 << 20) -> np.ndarray | None:
    """Which pages of [start, end) are all zeros, read through /proc/self/mem (a range unmapped
    meanwhile is an error there, not a crash); None when it cannot be read."""
    flags = []
    for at in range(start, end, step):
        n = min(step, end - at)
        try:
            data = os.pread(mem, n, at)
        except OSError:
            return None
        if len(data) != n:
            return None
        flags.append(~np.frombuffer(data, np.uint64).reshape(-1, PAGE // 8).any(axis=1))
    return np.concatenate(flags) if flags else None


def release(before: set[Region], kv_bytes: int) -> int:
    """DONTNEED the host KV buffer's pages: within the anonymous mappings that are new since
    `before`, the run of resident zero pages whose length is closest to the buffer's, and no more
    than the buffer's size of it. Returns the bytes given back."""
    if not sys.platform.startswith("linux") or kv_bytes < 64 * PAGE:
        return 0
    pages = kv_bytes // PAGE
    try:
        mem = os.open("/proc/self/mem", os.O_RDONLY)
    except OSError:
        return 0
    runs: list[tuple[int, int]] = []  # (address, pages)
    try:
        for start, end in sorted(anonymous_regions() - before):
            if end - start < kv_bytes:
                continue
            resident = resident_pages(start, end)  # before reading: a read maps the zero page
            if resident is None:
                continue
            for first, count in zero_runs(resident):  # only resident pages are read
                if count < pages - 2:
                    continue
                at = start + first * PAGE
                zero = zero_pages(mem, at, at + count * PAGE)
                if zero is not None:
                    runs += [(at + f * PAGE, n) for f, n in zero_runs(zero)]
    finally:
        os.close(mem)
    run = best_run(runs, pages)
    if run is None:
        return 0
    at, count = run[0], min(run[1], pages)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.madvise(at, count * PAGE, MADV_DONTNEED) != 0:
        log.debug("madvise failed: %s", os.strerror(ctypes.get_errno()))
        return 0
    return count * PAGE
