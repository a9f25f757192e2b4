# Type stubs of optcore.kernels._buffers (hand-written: not a spec kernel).

from typing import Any, Sequence

class BufferSet:
    """Bound kernel buffers (C-level; nothing is readable from Python)."""

def check_buffers(names: Sequence[str], objs: Sequence[Any], roles: Sequence[str | None],
                  labels: Sequence[str | Sequence[str] | None] | None = None, *,
                  mixed: bool = False) -> None:
    """Check the buffers of one kernel call exactly as the kernel's own
    binding does (same errors, same messages); nothing is written."""

def check_calls(calls: Sequence[Sequence[Any]], *, mixed: bool = False) -> None:
    """``check_buffers`` for each call, then the overlap rule over all calls;
    a call is ``(names, objs, roles)`` or ``(names, objs, roles, labels)``."""
