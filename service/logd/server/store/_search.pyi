# The C chunk search (_search.c): types for mypy.
from array import array

def containing(
    data: bytes | bytearray, ends: array[int], needle: bytes, folded: bool, whole: bool, /
) -> list[int]: ...
