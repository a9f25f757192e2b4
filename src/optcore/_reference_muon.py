"""The NumPy twins of Muon's elementwise kernels (``muon_momentum``,
``muon_apply``; ``optcore.reference`` exports them), and the exactly rounded
fused multiply-add they need, written with NumPy operations.

torch's CPU kernels of ``lerp`` and ``add_(alpha=)`` round ``x * y + z`` once
(an FMA instruction); NumPy has no fma. ``fma`` below computes it exactly
from plain roundings (Boldo and Melquiond, "Emulation of FMA and correctly
rounded sums: proved algorithms using rounding to odd", IEEE TC 2008): the
product split exactly into two terms (Dekker's product through Veltkamp's
split for float64; through float64 for float32, where it is exact), the sum
with ``z`` exactly into two terms (Knuth's TwoSum), the two low terms added
with rounding to odd, then one rounding to nearest. Exact for finite inputs
whose products and sums neither overflow nor fall into the subnormal range;
where the plainly rounded value is not finite it is returned instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from optcore._typing import Buffers

__all__ = ["fma", "lerp", "muon_momentum", "muon_apply"]

_SPLIT = 134217729.0            # 2**27 + 1: Veltkamp's constant for float64


def _two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _two_prod(a: Any, b: Any) -> tuple[Any, Any]:
    p = a * b
    if p.dtype == np.float32:
        # a * b is exact in float64 (48 bits); so is its remainder in float32
        return p, (a.astype(np.float64) * b - p).astype(np.float32)
    c = _SPLIT * a
    ah = c - (c - a)
    al = a - ah
    c = _SPLIT * b
    bh = c - (c - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _add_odd(a: Any, b: Any) -> Any:
    """``a + b`` rounded to odd: the rounded sum, or its odd neighbour
    towards the exact sum when the sum is inexact and rounded to even."""
    s, err = _two_sum(a, b)
    bits = s.view(np.uint32 if s.dtype == np.float32 else np.uint64)
    fix = (err != 0) & ((bits & 1) == 0)
    if not fix.any():
        return s
    towards = np.where(err > 0, np.inf, -np.inf).astype(s.dtype)
    return np.where(fix, np.nextafter(s, towards), s)


def fma(x: Any, y: Any, z: Any) -> Any:
    """``x * y + z`` rounded once, elementwise, in the arrays' dtype (float32
    or float64; a scalar takes the arrays' dtype)."""
    arrays = [np.asarray(v) for v in (x, y, z) if isinstance(v, np.ndarray)]
    dt = arrays[0].dtype.type
    x, y, z = (np.atleast_1d(np.asarray(v, dtype=dt)) for v in (x, y, z))
    x, y, z = np.broadcast_arrays(x, y, z)
    with np.errstate(over="ignore", invalid="ignore"):
        p, e = _two_prod(x, y)
        hi, lo = _two_sum(z, p)
        exact = hi + _add_odd(lo, e)
        plain = x * y + z
    return np.where(np.isfinite(plain) & np.isfinite(exact), exact, plain)


def _tensors(*buffers: Any) -> list[tuple[Any, ...]]:
    if isinstance(buffers[0], (list, tuple)):
        n = len(buffers[0])
        return list(zip(*[b if isinstance(b, (list, tuple)) else [b] * n for b in buffers]))
    return [buffers]


def lerp(start: Any, end: Any, weight: float) -> Any:
    """torch.lerp(start, end, weight) as torch's CPU kernel: one fma, the
    weight in the dtype (``|w| < 0.5``: from start, else from end)."""
    w = start.dtype.type(weight)
    if abs(w) < 0.5:
        return fma(w, end - start, start)
    return fma(w - start.dtype.type(1), end - start, end)


def muon_momentum(grad: Buffers, momentum_buffer: Buffers, out: Buffers | None = None, *,
                  momentum: float = 0.95, nesterov: bool = True) -> None:
    for g, b, o in _tensors(grad, momentum_buffer, out):
        g, b = np.asarray(g).reshape(-1), np.asarray(b).reshape(-1)
        b[...] = lerp(b, g, 1.0 - momentum)
        if nesterov:
            np.asarray(o).reshape(-1)[...] = lerp(g, b, momentum)


def muon_apply(param: Buffers, update: Buffers, *, lr: float, decay: float = 1.0) -> None:
    for p, u in _tensors(param, update):
        p, u = np.asarray(p).reshape(-1), np.asarray(u).reshape(-1)
        dt = p.dtype.type
        p[...] = fma(u.astype(p.dtype, copy=False), dt(-lr), p * dt(decay))
