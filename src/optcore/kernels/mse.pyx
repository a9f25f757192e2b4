"""Mean-squared-error loss and gradient, fused in one pass.

The sum of squares is accumulated in double, per block of REDUCE_BLOCK elements
with LANES independent accumulators (a fixed order the compiler can vectorise),
and the block sums are added in block order (_runtime.reduce_blocks): the
result has the same bits for any thread count.
"""

from cython cimport floating
import math

import numpy as np

from optcore._docstrings import assign as _assign_docs

from optcore.kernels._runtime cimport reduce_blocks
from optcore.kernels._buffers cimport BufferSet, bind, FLOAT32, WRITE, READ

cdef enum:
    LANES = 8         # independent accumulators inside a block


cdef inline double _block(const floating* p, const floating* q, floating* g,
                          Py_ssize_t n, floating scale) noexcept nogil:
    # Sum of squared differences over one block; writes the gradient if g.
    cdef double acc[LANES]
    cdef Py_ssize_t i, j, r, nfull = n - n % LANES
    cdef floating d
    cdef double total = 0.0
    for j in range(LANES):
        acc[j] = 0.0
    if g != NULL:
        for r in range(nfull // LANES):
            i = r * LANES
            for j in range(LANES):
                d = p[i + j] - q[i + j]
                g[i + j] = scale * d
                acc[j] += <double>d * <double>d
        for i in range(nfull, n):
            d = p[i] - q[i]
            g[i] = scale * d
            acc[i - nfull] += <double>d * <double>d
    else:
        for r in range(nfull // LANES):
            i = r * LANES
            for j in range(LANES):
                d = p[i + j] - q[i + j]
                acc[j] += <double>d * <double>d
        for i in range(nfull, n):
            d = p[i] - q[i]
            acc[i - nfull] += <double>d * <double>d
    # Pairwise over the lanes, in a fixed order.
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef struct LossCall:
    const void* pred
    const void* target
    void* grad             # NULL: the loss only
    double grad_scale
    bint is_f32


cdef inline double _block_at(const floating* pred, const floating* target, floating* grad,
                             Py_ssize_t start, Py_ssize_t stop,
                             double grad_scale) noexcept nogil:
    return _block(pred + start, target + start, NULL if grad == NULL else grad + start,
                  stop - start, <floating>grad_scale)


cdef void _loss_block(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                      double* out) noexcept nogil:
    # reduce_blocks' block function: one block's sum of squares (and gradient).
    cdef const LossCall* c = <const LossCall*>ctx
    if c.is_f32:
        out[0] = _block_at(<const float*>c.pred, <const float*>c.target, <float*>c.grad,
                           start, stop, c.grad_scale)
    else:
        out[0] = _block_at(<const double*>c.pred, <const double*>c.target, <double*>c.grad,
                           start, stop, c.grad_scale)


cdef void _fold_sum(void* acc, Py_ssize_t t, const double* out) noexcept nogil:
    (<double*>acc)[0] += out[0]


cdef double _loss_grad(const void* pred, const void* target, void* grad, Py_ssize_t n,
                       double grad_scale, bint is_f32, int num_threads) noexcept nogil:
    # The block sums added in block order from 0.0 (reduce_blocks' blocks of
    # REDUCE_BLOCK elements, in call order, for any thread count).
    cdef LossCall c
    cdef double total = 0.0
    if n <= 0:
        return 0.0
    c.pred = pred
    c.target = target
    c.grad = grad
    c.grad_scale = grad_scale
    c.is_f32 = is_f32
    reduce_blocks(_loss_block, &c, _fold_sum, &total, &n, 1, 1, num_threads)
    return total


# ---- C-level API (mse.pxd) -------------------------------------------------

cdef double mse_loss_grad_f32(const float* pred, const float* target, float* grad,
                              Py_ssize_t n, double grad_scale,
                              int num_threads) noexcept nogil:
    return _loss_grad(pred, target, grad, n, grad_scale, True, num_threads)


cdef double mse_loss_grad_f64(const double* pred, const double* target, double* grad,
                              Py_ssize_t n, double grad_scale,
                              int num_threads) noexcept nogil:
    return _loss_grad(pred, target, grad, n, grad_scale, False, num_threads)


# ---- Python API ------------------------------------------------------------

cdef tuple _NAMES = ("pred", "target", "out")


cdef int _reduction_code(str reduction) except -1:
    if reduction == "mean":
        return 0
    if reduction == "sum":
        return 1
    if reduction == "none":
        return 2
    raise ValueError(
        f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


cdef _check_shapes(pred, target):
    # Equal sizes in shapes that broadcast to something larger ((n, 1) against
    # (n,)) would pair the elements in flat order where NumPy and torch
    # broadcast: refuse them. Shapes that differ only by leading ones pair the
    # same elements either way. Differing sizes are bind()'s to report.
    ps = getattr(pred, "shape", None)
    ts = getattr(target, "shape", None)
    if ps is None or ts is None or tuple(ps) == tuple(ts):
        return
    n = math.prod(ps)
    if n != math.prod(ts):
        return
    try:
        paired = math.prod(np.broadcast_shapes(tuple(ps), tuple(ts))) == n
    except ValueError:
        paired = False
    if not paired:
        raise ValueError(
            f"target has shape {tuple(ts)} but pred has shape {tuple(ps)}; they "
            f"would broadcast to a larger shape (pass arrays of the same shape)")


cdef _new_like(pred, int dtype, Py_ssize_t n):
    shape = getattr(pred, "shape", (n,))
    return np.empty(shape, dtype=np.float32 if dtype == FLOAT32 else np.float64)


cdef void _squared_diff(const floating* p, const floating* q, floating* out,
                        Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating d
    for i in range(n):
        d = p[i] - q[i]
        out[i] = d * d


cdef tuple _run(pred, target, out, str reduction, bint want_grad, bint want_loss):
    """(loss, grad): loss is a float (mean/sum) or an array (none), grad an
    array or None."""
    cdef int red = _reduction_code(reduction)
    _check_shapes(pred, target)
    cdef BufferSet b
    # One array per argument: bind() would read a list as a multi-tensor call,
    # which these single-tensor loops do not handle.
    for name, obj in (("pred", pred), ("target", target), ("out", out)):
        if isinstance(obj, (list, tuple)):
            raise TypeError(f"{name} must be one array, not a {type(obj).__name__}")
    if want_grad:
        if out is None:
            b = bind(_NAMES[:2], (pred, target), (READ, READ))
            out = _new_like(pred, b.dtype, b.sizes[0])
        b = bind(_NAMES, (pred, target, out), (READ, READ, WRITE))
    else:
        b = bind(_NAMES[:2], (pred, target), (READ, READ))
    cdef Py_ssize_t n = b.sizes[0]
    cdef const void* p = b.data[0]
    cdef const void* q = b.data[1]
    cdef void* g = b.data[2] if want_grad else NULL
    cdef double total = 0.0
    cdef double scale = 2.0 / n if (red == 0 and n > 0) else 2.0
    cdef void* e
    cdef BufferSet bl
    loss = None
    if red == 2:
        if want_loss:
            loss = _new_like(pred, b.dtype, n)
            bl = bind(("loss",), (loss,), (WRITE,))
            e = bl.data[0]
            with nogil:
                if b.dtype == FLOAT32:
                    _squared_diff(<const float*>p, <const float*>q, <float*>e, n)
                else:
                    _squared_diff(<const double*>p, <const double*>q, <double*>e, n)
        if not want_grad:
            return loss, None
    with nogil:
        total = _loss_grad(p, q, g, n, scale, b.dtype == FLOAT32, 0)
    if red == 0:
        loss = total / n if n > 0 else float("nan")
    elif red == 1:
        loss = total
    return loss, out


def mse_loss(pred, target, reduction="mean"):
    loss, _ = _run(pred, target, None, reduction, False, True)
    return loss


def mse_grad(pred, target, *, reduction="mean", out=None):
    _, grad = _run(pred, target, out, reduction, True, False)
    return grad


def mse_loss_grad(pred, target, *, reduction="mean", out=None):
    return _run(pred, target, out, reduction, True, True)


# The docstrings are in optcore/_docstrings.py (shared with optcore.reference).
_assign_docs(globals(), ("mse_loss", "mse_grad", "mse_loss_grad"))
