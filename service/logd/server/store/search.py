"""Which events of a chunk hold a byte string: the C-speed step of every scan.

The C version (`_search.c`, beside this file) finds a case-insensitive needle without
lowering the chunk: it looks for the needle's rarest byte in both cases with memchr and
compares the rest only there. Without it (a LOGD_PURE_PYTHON=1 build) bytes.find does the
same on the bytes, or on a lowered copy when folded.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable

from logd.server.filters import whole_field_in

_CSearch = Callable[[bytes | bytearray, "array[int]", bytes, bool, bool], list[int]]
try:
    from logd.server.store._search import containing as _loaded
except ImportError:  # built without C
    _c_containing: _CSearch | None = None
else:
    _c_containing = _loaded


def containing(
    data: bytes | bytearray, ends: array[int], needle: bytes, *, folded: bool, whole: bool
) -> list[int]:
    """Indexes of the events (in order, each once) where `needle` starts: in `data.lower()`
    when `folded` (the needle ASCII and lower-case), as a whole field when `whole`
    (filters.whole_field_in). `ends`: each event's end offset in `data`."""
    if _c_containing is not None:
        return _c_containing(data, ends, needle, folded, whole)
    return python_containing(data, ends, needle, folded=folded, whole=whole)


def python_containing(
    data: bytes | bytearray, ends: array[int], needle: bytes, *, folded: bool, whole: bool
) -> list[int]:
    """`containing` in Python (the C version gives the same answers: tests/test_search.py)."""
    haystack = data.lower() if folded else data
    found: list[int] = []
    pos = whole_field_in(needle, haystack) if whole else haystack.find(needle)
    while pos >= 0:
        i = bisect_right(ends, pos)
        found.append(i)
        if i + 1 >= len(ends):
            break
        after = ends[i]
        pos = whole_field_in(needle, haystack, after) if whole else haystack.find(needle, after)
    return found
