"""Arithmetic on packed arrays of unsigned numbers (bytes or an array's buffer), at C speed."""

from __future__ import annotations

import sys
from array import array
from typing import Literal


def shifted(
    numbers: bytes | array[int],
    size: int,
    delta: int,
    order: Literal["little", "big"] = sys.byteorder,
) -> bytes:
    """Each `size`-byte number of `numbers` plus `delta`, packed the same way. Read as one
    big integer, the numbers are its base-2**(8 * size) digits, so one addition of `delta`
    times 0x...0001...0001 adds it to each. Every result must fit its size: nothing
    carries (end offsets stay below 2**32, ids below 2**63)."""
    count = memoryview(numbers).nbytes // size
    ones = int.from_bytes((1).to_bytes(size, order) * count, order)
    total = int.from_bytes(numbers, order) + delta * ones
    return total.to_bytes(size * count, order)
