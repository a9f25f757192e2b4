"""Flat layout of the sharded optimizer: the parameters of one (group, dtype)
packed end to end into one buffer padded to a multiple of the world size,
each rank owning one contiguous slice of it."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np


class Segment:
    """The parameters of one group and dtype, laid out flat.

    ``offsets[j]`` is where parameter ``j`` starts in the flat buffer,
    ``total`` the element count without padding, ``padded`` a multiple of
    ``world`` (at least ``world``, so that every shard is non-empty) and
    ``shard`` the elements each rank owns: rank ``r`` owns
    ``[r * shard, (r + 1) * shard)``."""

    __slots__ = ("group", "dtype", "indices", "params", "offsets", "ends", "total",
                 "padded", "shard")

    def __init__(self, group: int, dtype: np.dtype, indices: Sequence[int],
                 params: Sequence[np.ndarray], world: int) -> None:
        self.group = group
        self.dtype = dtype
        self.indices = list(indices)          # global parameter indices
        self.params = list(params)
        self.offsets: list[int] = []
        total = 0
        for p in self.params:
            self.offsets.append(total)
            total += p.size
        self.ends = [o + p.size for o, p in zip(self.offsets, self.params)]
        self.total = total
        self.shard = max(1, -(-total // world))
        self.padded = self.shard * world

    def owned(self, rank: int) -> tuple[int, int]:
        """The flat range rank ``rank`` owns."""
        return rank * self.shard, (rank + 1) * self.shard

    def copy_range(self, arrays: Sequence[np.ndarray], lo: int, hi: int,
                   out: np.ndarray) -> None:
        """Write the flat elements ``[lo, hi)`` of ``arrays`` (laid out like
        this segment's parameters) into ``out``; padding reads as zero."""
        j = bisect.bisect_right(self.ends, lo)
        pos = lo
        while pos < hi and j < len(arrays):
            start, end = self.offsets[j], self.ends[j]
            stop = min(hi, end)
            if stop > pos:
                flat = arrays[j].reshape(-1)
                out[pos - lo:stop - lo] = flat[pos - start:stop - start]
                pos = stop
            j += 1
        if pos < hi:
            out[pos - lo:hi - lo] = 0

    def scatter(self, flat: np.ndarray, arrays: Sequence[np.ndarray]) -> None:
        """Write the flat buffer ``flat`` into ``arrays`` (laid out like this
        segment's parameters), in place; the padding is dropped."""
        for a, start in zip(arrays, self.offsets):
            np.copyto(a, flat[start:start + a.size].reshape(a.shape))


def segments(groups: Sequence[Sequence[np.ndarray]], world: int) -> list[Segment]:
    """One Segment per (group, dtype), dtypes in the order they first appear
    in the group; global indices count over all groups."""
    out, start = [], 0
    for g, params in enumerate(groups):
        by_dtype: dict[np.dtype, list[int]] = {}
        for j, p in enumerate(params):
            by_dtype.setdefault(p.dtype, []).append(j)
        for dt, js in by_dtype.items():
            out.append(Segment(g, dt, [start + j for j in js], [params[j] for j in js],
                               world))
        start += len(params)
    return out
