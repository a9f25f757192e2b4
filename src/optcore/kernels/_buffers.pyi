# Type stubs of optcore.kernels._buffers (hand-written: not a spec kernel).

from typing import Any

class BufferSet:
    """Bound kernel buffers (C-level; nothing is readable from Python)."""

def find_overlap(written: list[Any], read: list[Any]) -> tuple[int, int] | None: ...
