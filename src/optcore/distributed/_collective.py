"""The collectives of the sharded optimizer: error agreement, the
deterministic gradient average, the in-place all-gather.

Every data-moving collective is preceded by ``agree``: a rank whose input is
bad says so in that small all-gather instead of skipping the collective the
others wait in, so all ranks raise the same error together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from optcore.distributed._layout import Segment

#: The exception types a refusal keeps (anything else is re-raised as
#: RuntimeError, its type named in the message).
_KEPT = {"TypeError": TypeError, "ValueError": ValueError, "KeyError": KeyError,
         "RuntimeError": RuntimeError, "FloatingPointError": FloatingPointError}


def describe(exc: BaseException) -> tuple[str, str]:
    """An exception as the (type name, message) pair ``agree`` exchanges."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return type(exc).__name__, str(text)


def agree(comm: Any, what: str, failure: tuple[str, str] | None) -> None:
    """Exchange every rank's ``failure`` (None when all is well); if any rank
    failed, raise on every rank the same exception: the lowest failing rank's
    type and message, naming the ranks that failed."""
    failures = comm.allgather(failure)
    bad = [r for r, f in enumerate(failures) if f is not None]
    if not bad:
        return
    kind, message = failures[bad[0]]
    ranks = ", ".join(map(str, bad))
    text = f"{what} refused on rank{'s' if len(bad) > 1 else ''} {ranks}: {message}"
    others = {failures[r][1] for r in bad[1:]} - {message}
    if others:
        text += f" (and other errors on the other ranks: {'; '.join(sorted(others))})"
    exc_type = _KEPT.get(kind)
    if exc_type is None:
        raise RuntimeError(f"{text} [{kind}]")
    raise exc_type(text)


def attempt(fn: Callable[[], Any]) -> tuple[Any, tuple[str, str] | None]:
    """Run ``fn``; its result and None, or None and the failure ``agree`` takes."""
    try:
        return fn(), None
    except Exception as exc:  # every failure must reach the other ranks
        return None, describe(exc)


#: Up to this many parameters per segment, one-bucket exchanges go point to
#: point from the gradients (a message per parameter piece); above, one
#: all-to-all, from a flat gradient buffer or a staging copy.
MAX_POINT_TO_POINT = 64


class Averager:
    """The gradient average of one segment, reduced onto the rank that owns
    each slice: ``avg = (((g_0 + g_1) + g_2) + ... + g_{N-1}) / N``, summed in
    rank order in the gradient's dtype and then divided by N (IEEE
    division), so the bits do not depend on MPI's reduction algorithm.

    Rank ``q`` receives the ``q``-th slice of every other rank's gradients
    (the data a reduce-scatter moves; a rank's own slice is read where it
    lies), into a receive buffer of ``(world - 1) * bucket`` elements kept
    between steps. With one bucket per slice (stages 0 and 1) and up to
    ``MAX_POINT_TO_POINT`` parameters the slices are sent from the
    gradients themselves, point to point; otherwise each bucket is one
    all-to-all, from the flat gradient buffer
    when the gradients are in it, else through a staging buffer of
    ``world * bucket`` elements they are copied into."""

    def __init__(self, comm: Any, segment: Segment, bucket: int) -> None:
        self.comm = comm
        self.world, self.rank = comm.Get_size(), comm.Get_rank()
        self.segment = segment
        self.bucket = max(1, min(bucket, segment.shard))
        self.others = [q for q in range(self.world) if q != self.rank]
        n = self.bucket if self.world > 1 else 0      # one rank: no exchange
        self.staging = np.empty(0, segment.dtype)     # allocated on first use
        self.recv = np.empty((self.world - 1) * n, segment.dtype)
        self.divisor = segment.dtype.type(self.world)

    def reduce_scatter(self, grads: list[np.ndarray], out: np.ndarray,
                       source: np.ndarray | None = None) -> np.ndarray:
        """The averaged gradient of this rank's slice: ``out``, or with one
        rank a view of ``source`` (the gradient itself, not copied).

        ``source`` is the segment's flat gradient buffer (``grads`` already
        in it), or None to read ``grads`` through the staging buffer."""
        seg, world, shard, rank = self.segment, self.world, self.segment.shard, self.rank
        if world == 1:
            if source is not None:
                return source[:shard]
            seg.copy_range(grads, 0, shard, out)
            return out
        from mpi4py.util.dtlib import from_numpy_dtype
        kind = from_numpy_dtype(seg.dtype)
        if self.bucket >= shard and len(seg.params) <= MAX_POINT_TO_POINT:
            self._reduce_scatter_direct(grads, out, kind)
            return out
        if source is None and self.staging.size < world * self.bucket:
            self.staging = np.empty(world * self.bucket, seg.dtype)
        counts = [0] * world
        recv_displs = [0] * world
        for k, q in enumerate(self.others):
            recv_displs[q] = k * self.bucket
        for a in range(0, shard, self.bucket):
            b = min(self.bucket, shard - a)
            for q in self.others:
                counts[q] = b
            if source is None:
                for q in range(world):
                    lo = q * shard + a
                    seg.copy_range(grads, lo, lo + b, self.staging[q * b:(q + 1) * b])
                send, send_displs = self.staging, [q * b for q in range(world)]
            else:
                send, send_displs = source, [q * shard + a for q in range(world)]
            own = send[send_displs[rank]:send_displs[rank] + b]
            self.comm.Alltoallv([send, (counts, send_displs), kind],
                                [self.recv, (counts, recv_displs), kind])
            terms = [own if q == rank else self.recv[recv_displs[q]:recv_displs[q] + b]
                     for q in range(world)]
            acc = out[a:a + b]
            np.add(terms[0], terms[1], out=acc)
            for term in terms[2:]:
                np.add(acc, term, out=acc)
            np.divide(acc, self.divisor, out=acc)
        return out


    def _reduce_scatter_direct(self, grads: list[np.ndarray], out: np.ndarray,
                               kind: Any) -> None:
        """The exchange in one bucket, sent from and summed in the
        gradients themselves: one message per parameter piece of each
        other rank's slice (the receiver knows the same pieces)."""
        seg, shard, rank = self.segment, self.segment.shard, self.rank
        flats = [g.reshape(-1) for g in grads]      # views of contiguous arrays
        requests = []
        mine = seg.pieces(rank * shard, (rank + 1) * shard)
        for k, q in enumerate(self.others):
            base = k * shard - rank * shard
            requests += [self.comm.Irecv([self.recv[base + a:base + b], kind], source=q)
                         for _, a, b in mine]
        for q in self.others:
            requests += [self.comm.Isend([flats[j][a - seg.offsets[j]:b - seg.offsets[j]],
                                          kind], dest=q)
                         for j, a, b in seg.pieces(q * shard, (q + 1) * shard)]
        self.wait(requests)
        where = {q: k * shard - rank * shard for k, q in enumerate(self.others)}
        for j, a, b in mine:
            own = flats[j][a - seg.offsets[j]:b - seg.offsets[j]]
            terms = [own if q == rank else self.recv[where[q] + a:where[q] + b]
                     for q in range(self.world)]
            acc = out[a - rank * shard:b - rank * shard]
            np.add(terms[0], terms[1], out=acc)
            for term in terms[2:]:
                np.add(acc, term, out=acc)
            np.divide(acc, self.divisor, out=acc)


    @staticmethod
    def wait(requests: list[Any]) -> None:
        """Complete the exchange's messages."""
        from mpi4py import MPI
        MPI.Request.Waitall(requests)


def allgather_in_place(comm: Any, flat: np.ndarray) -> None:
    """Every rank's slice of ``flat`` (equal slices, in rank order) to every
    rank, in place."""
    if comm.Get_size() == 1:
        return
    from mpi4py import MPI
    comm.Allgather(MPI.IN_PLACE, flat)
