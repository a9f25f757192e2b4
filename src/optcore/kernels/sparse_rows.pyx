"""Row-sparse optimizer steps for embedding tables (SparseAdam, SGD, Adagrad).

A row-sparse gradient is ``indices`` (k row numbers of the parameter's first
axis) and ``rows`` (k gradient rows). Only the touched rows of the parameter
and its state are read and written. Duplicate indices are summed first, as
torch's ``Tensor.coalesce()`` does: in order of appearance (a stable sort by
row), then each distinct row is updated once. ``sgd_rows`` instead applies the
duplicates one after the other, as torch adds an uncoalesced sparse gradient
into a dense parameter. Every argument is checked before the first write; the
rows are spread over the threads when there are many (each distinct row is
written by one thread, so the bits do not depend on the thread count).
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

import numpy as np

from optcore.kernels._runtime cimport threads_for

__all__ = ["sparse_adam_rows", "sgd_rows", "adagrad_rows"]


cdef struct Groups:
    const Py_ssize_t* order     # the gradient rows in stable row order
    const Py_ssize_t* starts    # group g is order[starts[g]:starts[g + 1]]
    const Py_ssize_t* targets   # the parameter row of group g
    Py_ssize_t ngroups
    Py_ssize_t width           # elements per row


cdef inline floating _summed(const floating* rows, const Groups* gr, Py_ssize_t g,
                             Py_ssize_t j) noexcept nogil:
    # The duplicates of one row summed in order of appearance (torch's coalesce).
    cdef Py_ssize_t k
    cdef floating acc = rows[gr.order[gr.starts[g]] * gr.width + j]
    for k in range(gr.starts[g] + 1, gr.starts[g + 1]):
        acc = acc + rows[gr.order[k] * gr.width + j]
    return acc


cdef void _adam(floating* param, const floating* rows, floating* exp_avg,
                floating* exp_avg_sq, const Groups* gr, double step_size,
                double beta1, double beta2, double eps, bint maximize,
                int nthreads) noexcept nogil:
    cdef Py_ssize_t g, j, i
    cdef floating grad, old_m, old_v, upd_m, upd_v
    cdef floating one_minus_b1 = <floating>(1.0 - beta1)
    cdef floating one_minus_b2 = <floating>(1.0 - beta2)
    cdef floating eps_ = <floating>eps
    cdef floating neg_step = <floating>(-step_size)
    for g in prange(gr.ngroups, num_threads=nthreads, schedule="static"):
        for j in range(gr.width):
            i = gr.targets[g] * gr.width + j
            grad = _summed(rows, gr, g, j)
            if maximize:
                grad = -grad
            old_m = exp_avg[i]
            old_v = exp_avg_sq[i]
            upd_m = (grad - old_m) * one_minus_b1
            upd_v = (grad * grad - old_v) * one_minus_b2
            exp_avg[i] = old_m + upd_m
            exp_avg_sq[i] = old_v + upd_v
            param[i] = param[i] + neg_step * (
                (upd_m + old_m) / (<floating>sqrt(upd_v + old_v) + eps_))


cdef void _adagrad(floating* param, const floating* rows, floating* state_sum,
                   const Groups* gr, double clr, double eps, bint maximize,
                   int nthreads) noexcept nogil:
    cdef Py_ssize_t g, j, i
    cdef floating grad, total
    cdef floating eps_ = <floating>eps
    cdef floating neg_clr = <floating>(-clr)
    for g in prange(gr.ngroups, num_threads=nthreads, schedule="static"):
        for j in range(gr.width):
            i = gr.targets[g] * gr.width + j
            grad = _summed(rows, gr, g, j)
            if maximize:
                grad = -grad
            total = state_sum[i] + grad * grad
            state_sum[i] = total
            param[i] = param[i] + neg_clr * (grad / (<floating>sqrt(total) + eps_))


cdef void _sgd(floating* param, const floating* rows, const Groups* gr, double lr,
               bint maximize, int nthreads) noexcept nogil:
    # Each duplicate is its own scaled addition, in order of appearance.
    cdef Py_ssize_t g, j, i, k
    cdef floating alpha = <floating>(lr if maximize else -lr)
    for g in prange(gr.ngroups, num_threads=nthreads, schedule="static"):
        for j in range(gr.width):
            i = gr.targets[g] * gr.width + j
            for k in range(gr.starts[g], gr.starts[g + 1]):
                param[i] = param[i] + alpha * rows[gr.order[k] * gr.width + j]


# ---- checks (all before the first write) -----------------------------------

def _dense(a, name, like=None):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if a.ndim < 1:
        raise ValueError(f"{name} must have at least one dimension (rows)")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not a.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    if like is not None:
        if a.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {a.dtype}, the parameter {like.dtype}")
        if a.shape != like.shape:
            raise ValueError(f"{name} has shape {a.shape}, the parameter {like.shape}")
        if np.shares_memory(a, like):
            raise ValueError(f"{name} overlaps the parameter")
    return a


def _rows(param, indices, rows):
    """The checked (indices, rows) of one row-sparse gradient and its groups."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (idx.dtype.kind in "iu" or idx.size == 0):
        raise TypeError("indices must be a 1-D integer array")
    idx = idx.astype(np.intp, copy=False)
    if not isinstance(rows, np.ndarray) or rows.dtype != param.dtype:
        raise TypeError(f"rows must be a numpy.ndarray of the parameter's dtype "
                        f"({param.dtype})")
    expect = (idx.shape[0], *param.shape[1:])
    if rows.shape != expect:
        raise ValueError(f"rows has shape {rows.shape}, expected {expect} "
                         f"(one row per index)")
    if idx.size and (idx.min() < 0 or idx.max() >= param.shape[0]):
        raise IndexError(f"indices must lie in [0, {param.shape[0]})")
    rows = np.ascontiguousarray(rows)
    order = np.argsort(idx, kind="stable")
    ordered = idx[order]
    if idx.size:
        starts = np.concatenate(([0], np.flatnonzero(np.diff(ordered)) + 1, [idx.size]))
    else:
        starts = np.zeros(1)
    starts = starts.astype(np.intp)
    targets = np.ascontiguousarray(ordered[starts[:len(starts) - 1]])
    return rows, np.ascontiguousarray(order, dtype=np.intp), starts, targets


cdef Groups _groups(const Py_ssize_t[::1] order, const Py_ssize_t[::1] starts,
                    const Py_ssize_t[::1] targets, Py_ssize_t width):
    cdef Groups gr
    gr.order = &order[0] if order.shape[0] else NULL
    gr.starts = &starts[0]
    gr.targets = &targets[0] if targets.shape[0] else NULL
    gr.ngroups = targets.shape[0]
    gr.width = width
    return gr


def _positive_step(step):
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    return int(step)


# ---- Python API ------------------------------------------------------------

def sparse_adam_rows(param, indices, rows, exp_avg, exp_avg_sq, *, step, lr=1e-3,
                     beta1=0.9, beta2=0.999, eps=1e-8, maximize=False):
    """One SparseAdam step on the rows a row-sparse gradient touches.

    torch.optim.SparseAdam's update, for a gradient given as row indices and
    rows: the duplicates of a row are summed (torch's coalesce), then only the
    touched rows of `param`, `exp_avg` and `exp_avg_sq` are updated, in place.

    Parameters
    ----------
    param : numpy.ndarray
        The parameter, float32 or float64, C-contiguous, at least 1-D; its
        first axis is the row axis (e.g. an embedding table).
    indices : array_like of int
        The k row numbers of the gradient, in ``[0, param.shape[0])``, in any
        order, duplicates allowed.
    rows : numpy.ndarray
        The k gradient rows, shape ``(k, *param.shape[1:])``, `param`'s dtype.
    exp_avg : numpy.ndarray
        The first moment, `param`'s shape and dtype.
    exp_avg_sq : numpy.ndarray
        The second moment, `param`'s shape and dtype.
    step : int
        The step number, counted from 1 (torch's ``state["step"]`` after its
        increment).
    lr : float, optional
        Learning rate.
    beta1 : float, optional
        First-moment decay.
    beta2 : float, optional
        Second-moment decay.
    eps : float, optional
        Added to the square root of the second moment.
    maximize : bool, optional
        Ascend instead of descend.

    Returns
    -------
    None
        `param`, `exp_avg` and `exp_avg_sq` are updated in place.

    Raises
    ------
    TypeError
        A wrong array type or dtype.
    ValueError
        A wrong shape, a non-contiguous or read-only array, overlapping
        buffers, or a step below 1.
    IndexError
        An index outside the parameter's rows.

    See Also
    --------
    optcore.SparseAdam : The optimizer class over this function.
    optcore.reference.sparse_adam_rows : Its NumPy twin.

    Examples
    --------
    >>> import numpy as np, optcore
    >>> table = np.ones((4, 2))
    >>> m, v = np.zeros_like(table), np.zeros_like(table)
    >>> optcore.sparse_adam_rows(table, [2, 0, 2], np.ones((3, 2)), m, v, step=1, lr=0.1)
    >>> table[:, 0].round(4).tolist()
    [0.9, 1.0, 0.9, 1.0]
    >>> m[2].round(4).tolist()
    [0.2, 0.2]
    """
    step = _positive_step(step)
    step_size = lr * (1 - beta2 ** step) ** 0.5 / (1 - beta1 ** step)
    adam_rows_at(param, indices, rows, exp_avg, exp_avg_sq, step_size, beta1, beta2, eps,
                 maximize)


def adam_rows_at(param, indices, rows, exp_avg, exp_avg_sq, double step_size, beta1,
                 beta2, eps, maximize):
    # sparse_adam_rows with its step size given (optcore.torch: torch computes
    # it in a tensor lr's dtype)
    _dense(param, "param")
    _dense(exp_avg, "exp_avg", param)
    _dense(exp_avg_sq, "exp_avg_sq", param)
    if np.shares_memory(exp_avg, exp_avg_sq):
        raise ValueError("exp_avg overlaps exp_avg_sq")
    rows, order, starts, targets = _rows(param, indices, rows)
    width = param.size // param.shape[0] if param.shape[0] else 0
    cdef Groups gr = _groups(order, starts, targets, width)
    cdef int nthreads = threads_for(gr.ngroups * gr.width, 0)
    cdef double c_step = step_size, b1 = beta1, b2 = beta2, c_eps = eps
    cdef bint c_max = bool(maximize)
    cdef float[::1] p32, r32, m32, v32
    cdef double[::1] p64, r64, m64, v64
    if gr.ngroups == 0 or gr.width == 0:
        return
    if param.dtype == np.float32:
        p32, r32 = param.reshape(-1), rows.reshape(-1)
        m32, v32 = exp_avg.reshape(-1), exp_avg_sq.reshape(-1)
        with nogil:
            _adam(&p32[0], &r32[0], &m32[0], &v32[0], &gr, c_step, b1, b2, c_eps,
                  c_max, nthreads)
    else:
        p64, r64 = param.reshape(-1), rows.reshape(-1)
        m64, v64 = exp_avg.reshape(-1), exp_avg_sq.reshape(-1)
        with nogil:
            _adam(&p64[0], &r64[0], &m64[0], &v64[0], &gr, c_step, b1, b2, c_eps,
                  c_max, nthreads)


def adagrad_rows(param, indices, rows, state_sum, *, step, lr=1e-2, lr_decay=0.0,
                 eps=1e-10, maximize=False):
    """One Adagrad step on the rows a row-sparse gradient touches.

    torch.optim.Adagrad's sparse-gradient update: the duplicates of a row are
    summed (torch's coalesce), then only the touched rows of `param` and
    `state_sum` are updated, in place. (torch refuses ``weight_decay`` with
    sparse gradients, so there is none here.)

    Parameters
    ----------
    param : numpy.ndarray
        The parameter, float32 or float64, C-contiguous, at least 1-D.
    indices : array_like of int
        The k row numbers of the gradient, duplicates allowed.
    rows : numpy.ndarray
        The k gradient rows, shape ``(k, *param.shape[1:])``.
    state_sum : numpy.ndarray
        The running sum of squared gradients, `param`'s shape and dtype.
    step : int
        The step number, counted from 1.
    lr : float, optional
        Learning rate.
    lr_decay : float, optional
        Learning-rate decay: the step uses ``lr / (1 + (step - 1) * lr_decay)``.
    eps : float, optional
        Added to the square root of `state_sum`.
    maximize : bool, optional
        Ascend instead of descend.

    Returns
    -------
    None
        `param` and `state_sum` are updated in place.

    Raises
    ------
    TypeError
        A wrong array type or dtype.
    ValueError
        A wrong shape, a non-contiguous or read-only array, overlapping
        buffers, or a step below 1.
    IndexError
        An index outside the parameter's rows.

    See Also
    --------
    optcore.adagrad_step : The dense step.
    optcore.reference.adagrad_rows : Its NumPy twin.

    Examples
    --------
    >>> import numpy as np, optcore
    >>> table, total = np.ones((3, 2)), np.zeros((3, 2))
    >>> optcore.adagrad_rows(table, [1], np.full((1, 2), 2.0), total, step=1, lr=0.5)
    >>> table[:, 0].round(4).tolist(), total[1].tolist()
    ([1.0, 0.5, 1.0], [4.0, 4.0])
    """
    _dense(param, "param")
    _dense(state_sum, "state_sum", param)
    step = _positive_step(step)
    rows, order, starts, targets = _rows(param, indices, rows)
    clr = lr / (1 + (step - 1) * lr_decay)
    width = param.size // param.shape[0] if param.shape[0] else 0
    cdef Groups gr = _groups(order, starts, targets, width)
    cdef int nthreads = threads_for(gr.ngroups * gr.width, 0)
    cdef double c_clr = clr, c_eps = eps
    cdef bint c_max = bool(maximize)
    cdef float[::1] p32, r32, s32
    cdef double[::1] p64, r64, s64
    if gr.ngroups == 0 or gr.width == 0:
        return
    if param.dtype == np.float32:
        p32, r32, s32 = param.reshape(-1), rows.reshape(-1), state_sum.reshape(-1)
        with nogil:
            _adagrad(&p32[0], &r32[0], &s32[0], &gr, c_clr, c_eps, c_max, nthreads)
    else:
        p64, r64, s64 = param.reshape(-1), rows.reshape(-1), state_sum.reshape(-1)
        with nogil:
            _adagrad(&p64[0], &r64[0], &s64[0], &gr, c_clr, c_eps, c_max, nthreads)


def sgd_rows(param, indices, rows, *, lr=1e-3, maximize=False):
    """One plain SGD step (no momentum, no weight decay) on the touched rows.

    torch.optim.SGD's update for a sparse gradient without momentum or weight
    decay: each gradient row is added to its parameter row, scaled by ``-lr``,
    duplicates one after the other in order of appearance (as torch adds an
    uncoalesced sparse tensor into a dense one).

    Parameters
    ----------
    param : numpy.ndarray
        The parameter, float32 or float64, C-contiguous, at least 1-D.
    indices : array_like of int
        The k row numbers of the gradient, duplicates allowed.
    rows : numpy.ndarray
        The k gradient rows, shape ``(k, *param.shape[1:])``.
    lr : float, optional
        Learning rate.
    maximize : bool, optional
        Ascend instead of descend.

    Returns
    -------
    None
        `param` is updated in place.

    Raises
    ------
    TypeError
        A wrong array type or dtype.
    ValueError
        A wrong shape, or a non-contiguous or read-only parameter.
    IndexError
        An index outside the parameter's rows.

    See Also
    --------
    optcore.sgd_step : The dense step.
    optcore.reference.sgd_rows : Its NumPy twin.

    Examples
    --------
    >>> import numpy as np, optcore
    >>> table = np.zeros((3, 2))
    >>> optcore.sgd_rows(table, [0, 0], np.ones((2, 2)), lr=0.5)
    >>> table[:, 1].tolist()
    [-1.0, 0.0, 0.0]
    """
    _dense(param, "param")
    rows, order, starts, targets = _rows(param, indices, rows)
    width = param.size // param.shape[0] if param.shape[0] else 0
    cdef Groups gr = _groups(order, starts, targets, width)
    cdef int nthreads = threads_for(gr.ngroups * gr.width, 0)
    cdef double c_lr = lr
    cdef bint c_max = bool(maximize)
    cdef float[::1] p32, r32
    cdef double[::1] p64, r64
    if gr.ngroups == 0 or gr.width == 0:
        return
    if param.dtype == np.float32:
        p32, r32 = param.reshape(-1), rows.reshape(-1)
        with nogil:
            _sgd(&p32[0], &r32[0], &gr, c_lr, c_max, nthreads)
    else:
        p64, r64 = param.reshape(-1), rows.reshape(-1)
        with nogil:
            _sgd(&p64[0], &r64[0], &gr, c_lr, c_max, nthreads)
