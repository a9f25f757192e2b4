"""Flat layout of the sharded optimizer: the parameters of one (group, dtype)
packed end to end into one buffer padded to a multiple of the world size,
each rank owning one contiguous slice of it."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

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


def param_views(segs: Sequence[Segment],
                flats: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """Arrays shaped like the parameters (in global order), views into one
    flat buffer per segment."""
    views: dict[int, np.ndarray] = {}
    for seg, flat in zip(segs, flats):
        assert flat is not None
        for idx, p, off in zip(seg.indices, seg.params, seg.offsets):
            views[idx] = flat[off:off + p.size].reshape(p.shape)
    return [views[i] for i in range(len(views))]


def shard_state(whole: Any, segs: Sequence[Segment], rank: int) -> dict[str, Any]:
    """The state dict of rank ``rank``'s sharded optimizer (one entry per
    segment, its slice), from the single-process optimizer ``whole`` over
    all the parameters; the parameters of one segment must have the same
    scalar state (step count)."""
    state: dict[int, dict[str, Any]] = {}
    for i, seg in enumerate(segs):
        entries = [whole.state.get(idx) for idx in seg.indices]
        if all(e is None for e in entries):
            continue
        if any(e is None for e in entries):
            raise ValueError(f"the state dict has state for some parameters of group "
                             f"{seg.group} ({seg.dtype}) but not for others; a "
                             f"sharded optimizer steps them together")
        scalars = {k: v for k, v in entries[0].items() if not isinstance(v, np.ndarray)}
        for idx, e in zip(seg.indices, entries):
            if {k: v for k, v in e.items() if not isinstance(v, np.ndarray)} != scalars:
                raise ValueError(f"parameter {idx} has other scalar state ({e.get('step')}"
                                 f" steps) than the others of group {seg.group} "
                                 f"({seg.dtype}); a sharded optimizer steps them together")
        entry: dict[str, Any] = dict(scalars)
        lo, hi = seg.owned(rank)
        for key, value in entries[0].items():
            if isinstance(value, np.ndarray):
                shard = np.full(seg.shard, whole._fill(key), seg.dtype)
                seg.copy_range([e[key] for e in entries], lo, min(hi, seg.total),
                               shard[:max(0, min(hi, seg.total) - lo)])
                entry[key] = shard
        state[i] = {k: entry[k] for k in entries[0]}
    groups = [{**{k: v for k, v in g.items() if k != "params"},
               "params": [i for i, s in enumerate(segs) if s.group == gi]}
              for gi, g in enumerate(whole.state_dict()["param_groups"])]
    return {"state": state, "param_groups": groups}

