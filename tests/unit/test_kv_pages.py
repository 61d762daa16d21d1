"""Finding the KV buffer's zero pages (engine/kv_pages.py)."""

from __future__ import annotations

import ctypes
import mmap

import numpy as np

from gpt4all_api.engine.kv_pages import PAGE, anonymous_regions, best_run, release, zero_runs

MAPS = """\
55600f4d6000-556010da0000 rw-p 00000000 00:00 0                          [heap]
7f71fe4d9000-7f721f6cc000 rw-p 00000000 00:00 0
7f7225714000-7f7225e07000 r--p 00000000 08:01 1234                       /usr/lib/libc.so.6
7f7225e07000-7f7225e08000 ---p 00000000 00:00 0
7ffd1b6a1000-7ffd1b6c2000 rw-p 00000000 00:00 0                          [stack]
"""


def test_only_private_anonymous_read_write_mappings_count() -> None:
    assert anonymous_regions(MAPS) == {(0x7F71FE4D9000, 0x7F721F6CC000)}


def test_the_run_closest_to_the_buffer_is_taken() -> None:
    zero = np.array([0, 1, 1, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
    runs = zero_runs(zero)
    assert runs == [(1, 2), (4, 4), (9, 1)]
    assert best_run(runs, 3) == (1, 2)  # the buffer less its partial first and last page
    assert best_run(runs, 4) == (4, 4)
    assert best_run(runs, 7) is None
    assert zero_runs(np.zeros(4, dtype=bool)) == []


def resident(base: int, pages: int) -> list[bool]:
    vec = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None)
    assert libc.mincore(ctypes.c_void_p(base), ctypes.c_size_t(pages * PAGE), vec) == 0
    return [bool(v & 1) for v in vec]


def test_a_zeroed_buffer_is_given_back_and_its_neighbours_kept() -> None:
    """A new mapping: a header page, 64 zero pages (the buffer), a page of data after it.
    Made meanwhile, as an allocator would: a larger mapping never touched (it reads as zeros
    but is not in memory) and a resident zeroed one of another size. Neither is the buffer."""
    before = anonymous_regions()
    untouched = mmap.mmap(-1, 256 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    other = mmap.mmap(-1, 200 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    other[:] = bytes(200 * PAGE)
    area = mmap.mmap(-1, 66 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    area[:8] = b"header!!"
    area[65 * PAGE : 65 * PAGE + 4] = b"data"
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    other_base = ctypes.addressof(ctypes.c_char.from_buffer(other))
    untouched_base = ctypes.addressof(ctypes.c_char.from_buffer(untouched))
    area[PAGE : 65 * PAGE] = bytes(64 * PAGE)  # written: resident, all zeros
    try:
        assert release(before, 64 * PAGE) == 64 * PAGE
        vec = resident(base, 66)
        assert vec[0] and vec[65]  # kept
        assert not any(vec[1:65])  # given back
        assert all(resident(other_base, 200))  # the other zeroed mapping is left alone
        assert not any(resident(untouched_base, 256))  # and the untouched one not read in
        assert area[:8] == b"header!!" and area[65 * PAGE : 65 * PAGE + 4] == b"data"
        assert area[PAGE : 65 * PAGE] == bytes(64 * PAGE)  # and reads the same
    finally:
        del base, other_base, untouched_base
        area.close()
        other.close()
        untouched.close()
