"""Finding the KV buffer's zero pages (engine/kv_pages.py)."""

from __future__ import annotations

import ctypes
import mmap

import numpy as np

from gpt4all_api.engine.kv_pages import PAGE, anonymous_regions, release, zero_run

MAPS = """\
55600f4d6000-556010da0000 rw-p 00000000 00:00 0                          [heap]
7f71fe4d9000-7f721f6cc000 rw-p 00000000 00:00 0
7f7225714000-7f7225e07000 r--p 00000000 08:01 1234                       /usr/lib/libc.so.6
7f7225e07000-7f7225e08000 ---p 00000000 00:00 0
7ffd1b6a1000-7ffd1b6c2000 rw-p 00000000 00:00 0                          [stack]
"""


def test_only_private_anonymous_read_write_mappings_count() -> None:
    assert anonymous_regions(MAPS) == {(0x7F71FE4D9000, 0x7F721F6CC000)}


def test_the_first_run_long_enough_is_taken() -> None:
    zero = np.array([0, 1, 1, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
    assert zero_run(zero, 2) == (1, 2)
    assert zero_run(zero, 3) == (4, 4)
    assert zero_run(zero, 5) is None
    assert zero_run(np.zeros(4, dtype=bool), 1) is None


def test_a_zeroed_buffer_is_given_back_and_its_neighbours_kept() -> None:
    """A new mapping: a header page, 64 zero pages (the buffer), a page of data after it."""
    before = anonymous_regions()
    area = mmap.mmap(-1, 66 * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    area[:8] = b"header!!"
    area[65 * PAGE : 65 * PAGE + 4] = b"data"
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    area[PAGE : 65 * PAGE] = bytes(64 * PAGE)  # written: resident, all zeros
    try:
        assert release(before, 64 * PAGE) == 64 * PAGE
        vec = (ctypes.c_ubyte * 66)()
        libc = ctypes.CDLL(None)
        assert libc.mincore(ctypes.c_void_p(base), ctypes.c_size_t(66 * PAGE), vec) == 0
        assert vec[0] & 1 and vec[65] & 1  # kept
        assert not any(vec[i] & 1 for i in range(1, 65))  # given back
        assert area[:8] == b"header!!" and area[65 * PAGE : 65 * PAGE + 4] == b"data"
        assert area[PAGE : 65 * PAGE] == bytes(64 * PAGE)  # and reads the same
    finally:
        del base
        area.close()
