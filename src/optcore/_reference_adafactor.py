"""The NumPy twin of ``optcore.adafactor_step`` (``optcore.kernels.adafactor``),
re-exported by ``optcore.reference``: torch.optim.Adafactor's rule, one NumPy
operation per step in the parameter's dtype, the sums in double in the
kernel's order (so that the two agree bit for bit). bfloat16/float16 params
(or grads of either with float32 params) step in float32 over widened copies
(or the float32 master), and the param is rounded once on store as in
``optcore._reference_precision``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optcore import precision as pr
from optcore._reference_precision import _widen, store_param

__all__ = ["adafactor_step"]

_BLOCK, _LANES = 4096, 8


def _lane_sums(sq: np.ndarray) -> np.ndarray:
    """Sums of the last axis of float64 ``sq`` as the kernels' ``sum_squares``
    adds them: element i of the full groups of 8 to lane i % 8 (in order),
    the tail to lanes 0, 1, ..., the lanes combined pairwise."""
    m = sq.shape[-1]
    nfull = m - m % _LANES
    lanes = np.zeros(sq.shape[:-1] + (_LANES,))
    if nfull:
        # cumsum is sequential by definition: lane by lane, in order.
        lanes = np.cumsum(sq[..., :nfull].reshape(sq.shape[:-1] + (-1, _LANES)),
                          axis=-2)[..., -1, :].copy()
    lanes[..., :m - nfull] += sq[..., nfull:]
    return (((lanes[..., 0] + lanes[..., 1]) + (lanes[..., 2] + lanes[..., 3]))
            + ((lanes[..., 4] + lanes[..., 5]) + (lanes[..., 6] + lanes[..., 7])))


def _sum_squares_blocked(x: np.ndarray) -> float:
    """sum(x * x) in float64 over blocks of 4096 elements added in order."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    total = 0.0
    for start in range(0, flat.size, _BLOCK):
        total += float(_lane_sums(np.square(flat[start:start + _BLOCK])))
    return total


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start.lerp_(end, weight)`` with torch.lerp's two-sided formula."""
    dt = start.dtype.type
    w = dt(weight)
    if w < 0.5:
        start += w * (end - start)
    else:
        start[...] = end - (end - start) * (dt(1) - w)


def _norm(ss: float, dtype: Any) -> float:
    # torch's norm is a value of the tensor's dtype
    return float(dtype(math.sqrt(ss)))


def _each(x: Any, k: int) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x] * k


def adafactor_step(param: Any, grad: Any, row_var: Any = None, col_var: Any = None,
                   variance: Any = None, *, step: int, lr: float = 1e-2,
                   beta2_decay: float = -0.8, eps1: float | None = None,
                   eps2: float = 1e-3, d: float = 1.0, weight_decay: float = 0.0,
                   maximize: bool = False, master_param: Any = None,
                   rounding: str = "nearest", compensation: Any = None,
                   seed: int = 0) -> None:
    """The NumPy twin of ``optcore.adafactor_step``: the same result, in plain NumPy.

    Written from torch.optim.Adafactor's rule, one NumPy operation per step,
    to hold ``optcore.adafactor_step`` to; it checks less of its input.

    Parameters
    ----------
    param : numpy.ndarray or list of numpy.ndarray
        The parameters, updated in place.
    grad : numpy.ndarray or list of numpy.ndarray
        The gradients.
    row_var : numpy.ndarray or list, optional
        Row factors ``(..., n, 1)`` of the 2+-D parameters, updated.
    col_var : numpy.ndarray or list, optional
        Column factors ``(..., 1, m)`` of the 2+-D parameters, updated.
    variance : numpy.ndarray or list, optional
        Second moments of the 0-D/1-D parameters, updated.
    step : int
        The 1-based count of this update.
    lr : float, optional
        The learning rate.
    beta2_decay : float, optional
        The second-moment weight is ``step ** beta2_decay``.
    eps1 : float or None, optional
        Denominator bound; None is the dtype's machine epsilon.
    eps2 : float, optional
        Lower bound of the parameter's RMS in the step size.
    d : float, optional
        Clipping threshold of the update's RMS.
    weight_decay : float, optional
        Decoupled weight decay.
    maximize : bool, optional
        Ascend instead of descend.
    master_param : numpy.ndarray or list, optional
        float32 master copies of bfloat16/float16 parameters.
    rounding : {"nearest", "stochastic", "kahan"}, optional
        How a bfloat16/float16 parameter without a master copy is rounded.
    compensation : numpy.ndarray or list, optional
        ``rounding="kahan"``: the compensation buffers.
    seed : int, optional
        ``rounding="stochastic"``: the random bits' seed.

    Returns
    -------
    None
        The parameters and their state are updated in place.

    Examples
    --------
    >>> import numpy as np
    >>> from optcore import reference
    >>> w, v = np.ones(3), np.zeros(3)
    >>> reference.adafactor_step(w, np.full(3, 0.5), variance=v, step=1)
    >>> w.round(4).tolist(), v.tolist()
    ([0.99, 0.99, 0.99], [0.25, 0.25, 0.25])
    """
    params = list(param) if isinstance(param, (list, tuple)) else [param]
    k = len(params)
    tensors = zip(params, _each(grad, k), _each(row_var, k), _each(col_var, k),
                  _each(variance, k), _each(master_param, k), _each(compensation, k))
    w = float(step) ** beta2_decay
    rho = min(lr, 1.0 / math.sqrt(step))
    key = pr.rounding_key(seed, step) if rounding == "stochastic" else None
    for t, (p, g, r, c, v, master, comp) in enumerate(tensors):
        if p.size == 0:
            continue
        e1 = pr.machine_eps(p.dtype) if eps1 is None else float(eps1)
        if p.dtype in (np.float32, np.float64) and g.dtype == p.dtype:
            _tensor(p, g, r, c, v, w, rho, lr, e1, eps2, d, weight_decay, maximize)
            continue
        if master is not None:
            p32 = master
        elif p.dtype == np.float32:
            p32 = p                     # a float32 param with a 16-bit grad: in place
        else:
            p32 = _widen(p).reshape(p.shape)
        before = p32.copy() if rounding == "kahan" else None
        _tensor(p32, _widen(g).reshape(p.shape), r, c, v, w, rho, lr, e1, eps2, d,
                weight_decay, maximize)
        store_param(p, p32, before, comp, key, t)


def _tensor(p: np.ndarray, g: np.ndarray, r: Any, c: Any, v: Any, w: float, rho: float,
            lr: float, e1: float, eps2: float, d: float, weight_decay: float,
            maximize: bool) -> None:
    """One tensor's step in its dtype (float32 or float64)."""
    dt = p.dtype.type
    g = -g if maximize else g
    sqrt_numel = math.sqrt(p.size)
    rms = _norm(_sum_squares_blocked(p), dt) / sqrt_numel
    alpha = max(eps2, rms) * rho
    if p.ndim >= 2:
        n, m = p.shape[-2], p.shape[-1]
        g3 = g.reshape(-1, n, m)
        r2, c2 = r.reshape(-1, n), c.reshape(-1, m)
        g64 = g3.astype(np.float64)
        row = np.sqrt(_lane_sums(g64 * g64)).astype(p.dtype)
        row = row * row
        row = row / dt(m)
        _lerp_(r2, row, w)
        col = np.sqrt(np.cumsum(g64 * g64, axis=1)[:, -1, :]).astype(p.dtype)
        col = col * col
        col = col / dt(n)
        _lerp_(c2, col, w)
        mean = (np.cumsum(r2.astype(np.float64), axis=1)[:, -1] / n).astype(p.dtype)
        mean = np.where(mean < dt(e1), dt(e1), mean)
        est = (r2[:, :, None] * c2[:, None, :]) / mean[:, None, None]
        est = est.reshape(p.shape)
    else:
        _lerp_(v, g * g, w)
        est = v.copy()
    est = np.where(est < dt(e1 * e1), dt(e1 * e1), est)
    u = (dt(1) / np.sqrt(est)) * g
    denom = max(1.0, _norm(_sum_squares_blocked(u), dt) / (sqrt_numel * d))
    if weight_decay != 0:
        p *= dt(1 - lr * weight_decay)
    p += dt(-alpha / denom) * u
