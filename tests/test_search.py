"""The chunk search (store/search.py): the C version, the Python one and the definition
(every event where the needle starts, in the lowered bytes when folded) agree."""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from logd.server.store import search

C = pytest.mark.skipif(search._c_containing is None, reason="built without C")

# Letters in both cases, the bytes a whole-field check looks at (0, small lengths), a
# multi-byte character and the bytes around the ASCII letters' case bit.
ALPHABET = b"aAbBqQzZ@`[{\x00\x01\x02\x03\x7f\x80\xc3\xa9-_ "
events = st.lists(
    st.binary(max_size=40).map(lambda b: bytes(ALPHABET[c % len(ALPHABET)] for c in b)), max_size=30
)
needles = st.binary(min_size=1, max_size=4).map(
    lambda b: bytes(ALPHABET[c % len(ALPHABET)] for c in b)
)


def chunk(parts: list[bytes]) -> tuple[bytes, array[int]]:
    ends = array("I")
    total = 0
    for part in parts:
        total += len(part)
        ends.append(total)
    return b"".join(parts), ends


def defined(data: bytes, ends: array[int], needle: bytes, folded: bool, whole: bool) -> list[int]:
    """The events holding a start of `needle` (whole: after a byte that can end its length)."""
    haystack = data.lower() if folded else data
    last = len(needle)
    while last >= 0x80:
        last >>= 7
    starts = [
        s
        for s in range(len(haystack) - len(needle) + 1)
        if haystack[s : s + len(needle)] == needle
        and (not whole or (s > 0 and haystack[s - 1] in (last, 0)))
    ]
    return sorted({bisect_right(ends, s) for s in starts})


SEARCHES = [
    pytest.param(search.python_containing, id="python"),
    pytest.param(search.containing, id="c", marks=C),
]


@pytest.mark.parametrize("find", SEARCHES)
@given(parts=events, needle=needles, folded=st.booleans(), whole=st.booleans())
@settings(max_examples=400, deadline=None)
@example(parts=[b"xQz", b"qz"], needle=b"qz", folded=True, whole=False)  # both cases
@example(parts=[b"Aa", b"`@"], needle=b"a@", folded=True, whole=False)  # the case bit only
@example(parts=[b"\x02ab", b"ab"], needle=b"ab", folded=False, whole=True)  # after its length
# No byte the table calls rare: the byte to scan for is chosen by the chunk's sample.
@example(parts=[b"aaaa-a", b"A-_a", b"_ a-_"], needle=b"a-_", folded=True, whole=False)
@example(parts=[b"a-a-a-", b"-a_a", b"a"], needle=b"-a_", folded=False, whole=False)
def test_the_search_is_the_definition(
    find: Callable[..., list[int]], parts: list[bytes], needle: bytes, folded: bool, whole: bool
) -> None:
    data, ends = chunk(parts)
    if folded:
        needle = needle.lower()
    want = defined(data, ends, needle, folded, whole)
    assert find(data, ends, needle, folded=folded, whole=whole) == want
    assert find(bytearray(data), ends, needle, folded=folded, whole=whole) == want


@C
def test_c_search_refuses_what_it_cannot_read() -> None:
    data, ends = chunk([b"abc"])
    with pytest.raises(ValueError, match="needle not empty"):
        search.containing(data, ends, b"", folded=False, whole=False)
    with pytest.raises(ValueError, match="uint32"):
        search._c_containing(data, b"\x00\x00", b"a", False, False)
    assert search.containing(b"", array("I"), b"a", folded=True, whole=False) == []
