"""Arithmetic on packed arrays of unsigned numbers, at C speed."""

from __future__ import annotations

import sys
from array import array
from typing import Literal


def shifted(
    numbers: array[int], delta: int, order: Literal["little", "big"] = sys.byteorder
) -> bytes:
    """Each number of `numbers` (its bytes read in `order`) plus `delta`, as bytes in that
    order. Read as one big integer, the numbers are its base-2**(8 * itemsize) digits, so
    one addition of `delta` times 0x...0001...0001 adds it to each. Every result must fit
    its item size: nothing carries (end offsets stay below 2**32, ids below 2**63)."""
    size = numbers.itemsize
    ones = int.from_bytes((1).to_bytes(size, order) * len(numbers), order)
    total = int.from_bytes(numbers, order) + delta * ones
    return total.to_bytes(size * len(numbers), order)
