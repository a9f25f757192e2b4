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
                 "padded", "shard", "owner")

    def __init__(self, group: int, dtype: np.dtype, indices: Sequence[int],
                 params: Sequence[np.ndarray], world: int, whole: bool = False) -> None:
        self.group = group
        self.dtype = dtype
        self.indices = list(indices)          # global parameter indices
        self.params = list(params)
        sizes = [p.size for p in self.params]
        if whole:
            # Whole parameters per rank (for kernels that need whole-tensor
            # norms): rank r's slice holds the parameters it owns end to end.
            self.owner = _partition(sizes, world)
            runs = [0] * world
            self.offsets = []
            for n, r in zip(sizes, self.owner):
                self.offsets.append(runs[r])
                runs[r] += n
            self.shard = max(1, max(runs))
            self.offsets = [o + r * self.shard for o, r in zip(self.offsets, self.owner)]
        else:
            self.owner = []
            self.offsets = list(np.cumsum([0] + sizes[:-1], dtype=np.int64).tolist())
            self.shard = max(1, -(-sum(sizes) // world))
        self.ends = [o + n for o, n in zip(self.offsets, sizes)]
        self.total = self.ends[-1] if self.ends else 0   # the end of the last parameter
        self.padded = self.shard * world

    def slots(self, rank: int) -> list[int | None]:
        """What rank ``rank`` steps as separate arrays: None for its whole
        slice, or the positions of the whole parameters it owns."""
        mine: list[int | None] = [j for j, r in enumerate(self.owner) if r == rank]
        return mine if mine else [None]

    def piece(self, shard: np.ndarray, j: int | None, rank: int) -> np.ndarray:
        """Slot ``j`` of rank ``rank``'s slice ``shard`` (see ``slots``)."""
        if j is None:
            return shard
        lo = rank * self.shard
        return shard[self.offsets[j] - lo:self.ends[j] - lo]

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
            if start > pos:                     # a gap before a whole parameter
                gap = min(start, hi)
                out[pos - lo:gap - lo] = 0
                pos = gap
            stop = min(hi, end)
            if stop > pos:
                flat = arrays[j].reshape(-1)
                out[pos - lo:stop - lo] = flat[pos - start:stop - start]
                pos = stop
            j += 1
        if pos < hi:
            out[pos - lo:hi - lo] = 0

    def pieces(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """The parameters in the flat range ``[lo, hi)``: ``(j, a, b)`` for
        the flat elements ``[a, b)`` of parameter ``j`` (gaps and padding
        are in none)."""
        out = []
        for j in range(bisect.bisect_right(self.ends, lo), len(self.params)):
            a, b = max(lo, self.offsets[j]), min(hi, self.ends[j])
            if self.offsets[j] >= hi:
                break
            if b > a:
                out.append((j, a, b))
        return out

    def scatter(self, flat: np.ndarray, arrays: Sequence[np.ndarray]) -> None:
        """Write the flat buffer ``flat`` into ``arrays`` (laid out like this
        segment's parameters), in place; the padding is dropped."""
        for a, start in zip(arrays, self.offsets):
            np.copyto(a, flat[start:start + a.size].reshape(a.shape))


def _partition(sizes: Sequence[int], world: int) -> list[int]:
    """The owning rank of each parameter: consecutive runs, at most one per
    rank, the largest run as small as it can be."""
    def owners(capacity: int) -> list[int]:
        out, rank, used = [], 0, 0
        for n in sizes:
            if used and used + n > capacity:
                rank, used = rank + 1, 0
            out.append(rank)
            used += n
        return out

    lo, hi = max(sizes, default=0), max(1, sum(sizes))
    while lo < hi:
        mid = (lo + hi) // 2
        if owners(mid)[-1] < world:
            hi = mid
        else:
            lo = mid + 1
    return owners(lo)


def segments(groups: Sequence[Sequence[np.ndarray]], world: int,
             whole: bool = False) -> list[Segment]:
    """One Segment per (group, dtype), dtypes in the order they first appear
    in the group; global indices count over all groups."""
    out, start = [], 0
    for g, params in enumerate(groups):
        by_dtype: dict[np.dtype, list[int]] = {}
        for j, p in enumerate(params):
            by_dtype.setdefault(p.dtype, []).append(j)
        for dt, js in by_dtype.items():
            out.append(Segment(g, dt, [start + j for j in js], [params[j] for j in js],
                               world, whole))
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


def shard_state(whole: Any, segs: Sequence[Segment], rank: int,
                slots: Sequence[tuple[int, int | None]]) -> dict[str, Any]:
    """The state dict of rank ``rank``'s sharded optimizer (one entry per
    slot: segment and piece of its slice), from the single-process optimizer
    ``whole`` over all the parameters; the parameters of one segment must
    have the same scalar state (step count)."""
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
        arrays: dict[str, np.ndarray] = {}
        lo, hi = seg.owned(rank)
        for key, value in entries[0].items():
            if isinstance(value, np.ndarray):
                fill = whole._fill(key, whole.param_groups[seg.group])
                shard = np.full(seg.shard, fill, seg.dtype)
                seg.copy_range([e[key] for e in entries], lo, min(hi, seg.total),
                               shard[:max(0, min(hi, seg.total) - lo)])
                arrays[key] = shard
        for s, (si, j) in enumerate(slots):
            if si == i:
                state[s] = {k: (seg.piece(arrays[k], j, rank).copy() if k in arrays
                                else scalars[k]) for k in entries[0]}
    groups = [{**{k: v for k, v in g.items() if k != "params"},
               "params": [s for s, (i, _) in enumerate(slots) if segs[i].group == gi]}
              for gi, g in enumerate(whole.state_dict()["param_groups"])]
    return {"state": state, "param_groups": groups}
