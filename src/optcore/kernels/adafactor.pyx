# cython: wraparound=True
# (shape[-1] etc. in the Python-level checks; the loops use raw pointers)
"""Adafactor step (torch.optim.Adafactor's update rule; Shazeer & Stern 2018).

Per tensor, with ``g`` the gradient (negated when maximizing), ``T`` the
buffer's type, ``w = step ** beta2_decay``, ``rho = min(lr, 1 / sqrt(step))``::

    alpha = max(eps2, T(||p||) / sqrt(numel)) * rho          (before the decay)
    p = p * T(1 - lr * weight_decay)                          (weight_decay != 0)
    2+ dims, viewed as (B, n, m) (leading dims folded into B):
        row_var = lerp(row_var, T(sqrt(sum_j g**2))**2 / n_cols, w)   (B, n)
        col_var = lerp(col_var, T(sqrt(sum_i g**2))**2 / n_rows, w)   (B, m)
        v = (row_var[b, i] * col_var[b, j]) / max(T(mean_i row_var[b, i]), eps1)
    0-D / 1-D:
        variance = lerp(variance, g * g, w);  v = variance
    u = (1 / sqrt(max(v, eps1 * eps1))) * g
    p = p + T(-alpha / max(1, T(||u||) / (sqrt(numel) * d))) * u

``lerp`` is torch's two-sided formula. The sums are in double: the row sums
over 8 lanes (one row per thread), the column sums and the row-factor mean
sequentially over the rows, the two norms over REDUCE_BLOCK blocks folded in
order (reduce_blocks); every sum has the same bits for any thread count.
``u`` is computed twice (for its norm, then for the update) with the same
operations, so the same bits. ``eps1=None`` is the machine epsilon of the
buffer's type. An empty tensor is left as it is.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

import numpy as np

from optcore.kernels._math cimport fsqrt, sum_squares, load_lerp_weight, lerp
from optcore.kernels._runtime cimport (reduce_blocks, run_segments, threads_for,
                                       REDUCE_BLOCK)
from optcore.kernels._checks cimport real, flag, step as _step

__all__ = ["adafactor_step", "adafactor_step_at"]

cdef enum:
    COL_CHUNK = 256     # columns per task of the column sums


cdef struct Ctx:
    void* p
    const void* g
    void* r             # row_var (B * n) or variance (numel)
    void* c             # col_var (B * m), NULL when not factored
    const double* rmean # per batch: max(mean_i row_var, eps1), a T value
    Py_ssize_t n, m     # rows and columns of each batch (factored)
    bint factored
    double sign
    double w
    double eps1sq
    double decay
    bint use_decay
    double scale        # -alpha / denom
    bint update_v       # pass 1 of an unfactored tensor: update the variance


cdef inline void _u_range(const Ctx* c, Py_ssize_t start, Py_ssize_t stop,
                          floating* out) noexcept nogil:
    # u of elements [start, stop) into out[0:stop-start]
    cdef const floating* g = <const floating*>c.g
    cdef floating* r = <floating*>c.r
    cdef const floating* cv = <const floating*>c.c
    cdef floating sign = <floating>c.sign
    cdef floating e2 = <floating>c.eps1sq
    cdef floating one = 1
    cdef floating v, gi, wt, omw, rm = 0, ri = 0
    cdef bint low
    cdef Py_ssize_t k, row, j, b, m = c.m
    if c.factored:
        row = start // m
        j = start - row * m
        b = row // c.n
        rm = <floating>c.rmean[b]
        ri = r[row]
        for k in range(start, stop):
            if j == m:
                j = 0
                row += 1
                ri = r[row]
                if row // c.n != b:
                    b = row // c.n
                    rm = <floating>c.rmean[b]
            v = (ri * cv[b * m + j]) / rm
            if v < e2:
                v = e2
            out[k - start] = (one / fsqrt(v)) * (g[k] * sign)
            j += 1
    else:
        low = load_lerp_weight(c.w, &wt, &omw)
        for k in range(start, stop):
            gi = g[k] * sign
            if c.update_v:
                r[k] = lerp(r[k], gi * gi, wt, omw, low)
            v = r[k]
            if v < e2:
                v = e2
            out[k - start] = (one / fsqrt(v)) * gi


cdef void _p_block_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                       double* out) noexcept nogil:
    out[0] = sum_squares(<const float*>(<const Ctx*>ctx).p + start, stop - start)


cdef void _p_block_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                       double* out) noexcept nogil:
    out[0] = sum_squares(<const double*>(<const Ctx*>ctx).p + start, stop - start)


cdef void _u_block_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                       double* out) noexcept nogil:
    cdef float u[REDUCE_BLOCK]
    _u_range(<const Ctx*>ctx, start, stop, u)
    out[0] = sum_squares(<const float*>u, stop - start)


cdef void _u_block_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                       double* out) noexcept nogil:
    cdef double u[REDUCE_BLOCK]
    _u_range(<const Ctx*>ctx, start, stop, u)
    out[0] = sum_squares(<const double*>u, stop - start)


cdef void _fold(void* acc, Py_ssize_t t, const double* out) noexcept nogil:
    (<double*>acc)[0] += out[0]


cdef inline void _apply(const Ctx* c, Py_ssize_t start, Py_ssize_t stop,
                        floating* u) noexcept nogil:
    cdef floating* p = <floating*>c.p
    cdef floating scale = <floating>c.scale
    cdef floating decay = <floating>c.decay
    cdef Py_ssize_t k, lo, hi
    lo = start
    while lo < stop:
        hi = min(lo + <Py_ssize_t>REDUCE_BLOCK, stop)
        _u_range(c, lo, hi, u)
        if c.use_decay:
            for k in range(lo, hi):
                p[k] = p[k] * decay + scale * u[k - lo]
        else:
            for k in range(lo, hi):
                p[k] = p[k] + scale * u[k - lo]
        lo = hi


cdef void _seg_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                   Py_ssize_t stop) noexcept nogil:
    cdef float u[REDUCE_BLOCK]
    _apply(<const Ctx*>ctx, start, stop, u)


cdef void _seg_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                   Py_ssize_t stop) noexcept nogil:
    cdef double u[REDUCE_BLOCK]
    _apply(<const Ctx*>ctx, start, stop, u)


cdef void _factors(floating* g, floating* r, floating* cv, double* colacc,
                   double* rmean, Py_ssize_t B, Py_ssize_t n, Py_ssize_t m,
                   double w, double eps1, int nt) noexcept nogil:
    # The row and column factors and the clamped row-factor means.
    cdef floating wt, omw, x, fn = <floating>n, fm = <floating>m
    cdef floating e1 = <floating>eps1
    cdef bint low = load_lerp_weight(w, &wt, &omw)
    cdef Py_ssize_t row, b, i, j, ch, j0, j1, nchunks = (m + COL_CHUNK - 1) // COL_CHUNK
    cdef double s
    cdef const floating* gi
    for row in prange(B * n, num_threads=nt, schedule="static"):
        x = <floating>sqrt(sum_squares(<const floating*>g + row * m, m))
        x = x * x
        x = x / fm
        r[row] = lerp(r[row], x, wt, omw, low)
    for b in range(B):
        for ch in prange(nchunks, num_threads=nt, schedule="static"):
            j0 = ch * COL_CHUNK
            j1 = min(j0 + <Py_ssize_t>COL_CHUNK, m)
            for j in range(j0, j1):
                colacc[j] = 0.0
            for i in range(n):
                gi = g + (b * n + i) * m
                for j in range(j0, j1):
                    colacc[j] += <double>gi[j] * <double>gi[j]
            for j in range(j0, j1):
                x = <floating>sqrt(colacc[j])
                x = x * x
                x = x / fn
                cv[b * m + j] = lerp(cv[b * m + j], x, wt, omw, low)
        s = 0.0
        for i in range(n):
            s += <double>r[b * n + i]
        x = <floating>(s / <double>n)
        if x < e1:
            x = e1
        rmean[b] = <double>x


cdef double _scalar(object value, str name, str test, str message) except? -1.0:
    cdef double x = real(value, name)
    if not ((test == "nonneg" and 0.0 <= x) or (test == "nonpos" and x <= 0.0)
            or (test == "atleast1" and 1.0 <= x)):
        raise ValueError(message.format(value))
    return x


def _array(a, name, dtype=None):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype}, the parameter {dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return a


def _writable(a, name):
    if not a.flags.writeable:
        raise ValueError(f"{name} must be writeable")


def _listed(x, k, name):
    # one entry per tensor: a list of k, or one value for a single tensor
    # (None for every tensor)
    if isinstance(x, (list, tuple)):
        if len(x) != k:
            raise ValueError(f"{name} has {len(x)} entries, param {k}")
        return list(x)
    if k != 1 and x is not None:
        raise ValueError(f"{name} must be a list of {k} entries (one per param)")
    return [x] * k


def adafactor_step(param, grad, row_var=None, col_var=None, variance=None, *, step,
                   lr=1e-2, beta2_decay=-0.8, eps1=None, eps2=1e-3, d=1.0,
                   weight_decay=0.0, maximize=False):
    """One Adafactor step in place (torch.optim.Adafactor's update).

    A parameter of 2 or more dimensions, shape ``(..., n, m)``, has factored
    second moments: ``row_var`` of shape ``(..., n, 1)`` and ``col_var`` of
    shape ``(..., 1, m)`` (torch's state shapes; its leading dimensions are
    batches, each an ``n x m`` matrix), and ``variance`` is None. A 0-D or
    1-D parameter has ``variance`` of its own shape and no factors. The step
    size is ``min(lr, 1 / sqrt(step))`` times ``max(eps2, RMS(param))``
    (relative step), the update ``grad / sqrt(V)`` is scaled down to an RMS
    of at most ``d``, and the decay ``param *= 1 - lr * weight_decay`` is
    decoupled. The sums are in double and have the same bits for any thread
    count. Every argument is checked before the first write.

    Parameters
    ----------
    param : numpy.ndarray or list of numpy.ndarray
        The parameters (float32 or float64, C-contiguous, writeable), updated
        in place.
    grad : numpy.ndarray or list of numpy.ndarray
        The gradients, each its parameter's shape and dtype; read.
    row_var : numpy.ndarray or list, optional
        Row factors of the 2+-D parameters (None for 0-D/1-D), updated.
    col_var : numpy.ndarray or list, optional
        Column factors of the 2+-D parameters (None for 0-D/1-D), updated.
    variance : numpy.ndarray or list, optional
        Second moments of the 0-D/1-D parameters (None for 2+-D), updated.
    step : int
        The 1-based count of this update.
    lr : float, optional
        The learning rate (caps the relative step size).
    beta2_decay : float, optional
        The second-moment weight is ``step ** beta2_decay`` (<= 0).
    eps1 : float or None, optional
        Lower bound of the variance estimate's denominator (its square bounds
        the estimate); None is the machine epsilon of each parameter's dtype.
    eps2 : float, optional
        Lower bound of the parameter's RMS in the step size.
    d : float, optional
        Clipping threshold of the update's RMS (>= 1).
    weight_decay : float, optional
        Decoupled weight decay.
    maximize : bool, optional
        Ascend instead of descend.

    Returns
    -------
    None
        The parameters and their state are updated in place.

    Raises
    ------
    TypeError
        A buffer that is not a float32/float64 array of the parameter's dtype,
        or a wrongly typed option.
    ValueError
        A wrong shape, a missing or superfluous state buffer, a non-contiguous
        or read-only buffer, a step below 1 or an option out of range.

    See Also
    --------
    optcore.Adafactor : The optimizer class over this function.
    optcore.reference.adafactor_step : Its NumPy twin.

    Examples
    --------
    >>> import numpy as np, optcore
    >>> w = np.ones((2, 3))
    >>> r, c = np.zeros((2, 1)), np.zeros((1, 3))
    >>> optcore.adafactor_step(w, np.full((2, 3), 0.5), r, c, step=1)
    >>> w.round(4).tolist()
    [[0.99, 0.99, 0.99], [0.99, 0.99, 0.99]]
    >>> r.ravel().round(4).tolist(), c.ravel().round(4).tolist()
    ([0.25, 0.25], [0.25, 0.25, 0.25])
    """
    adafactor_step_at(param, grad, row_var, col_var, variance, step, lr, beta2_decay, eps1,
                      eps2, d, weight_decay, maximize, False)


def adafactor_step_at(param, grad, row_var, col_var, variance, step, lr, beta2_decay, eps1,
                      eps2, d, weight_decay, maximize, bint lr_float32):
    # adafactor_step; lr_float32: the step's scalars as torch computes them from
    # a float32 tensor lr (optcore.torch): alpha, the decay factor and the
    # update's scale rounded to float32 where torch's tensor arithmetic does
    cdef long long c_step = _step(step)
    cdef double c_lr = _scalar(lr, "lr", "nonneg", "Learning rate should be >= 0 but is: {}")
    cdef double c_b2 = _scalar(beta2_decay, "beta2_decay", "nonpos",
                               "beta2_decay should be <= 0 but is: {}")
    cdef double c_e2 = _scalar(eps2, "eps2", "nonneg", "epsilon2 should be >= 0 but is: {}")
    cdef double c_d = _scalar(d, "d", "atleast1",
                              "Clipping threshold d should be >= 1 but is: {}")
    cdef double c_wd = _scalar(weight_decay, "weight_decay", "nonneg",
                               "weight_decay should be >= 0 but is: {}")
    cdef bint c_max = flag(maximize, "maximize")
    e1_given = eps1 is not None
    cdef double c_e1 = (_scalar(eps1, "eps1", "nonneg", "epsilon1 should be >= 0 but is: {}")
                        if e1_given else 0.0)
    params = list(param) if isinstance(param, (list, tuple)) else [param]
    k = len(params)
    if grad is None:
        raise TypeError("grad must be a numpy.ndarray, got NoneType")
    grads = _listed(grad, k, "grad")
    rows, cols, vars_ = (_listed(row_var, k, "row_var"), _listed(col_var, k, "col_var"),
                         _listed(variance, k, "variance"))
    # every argument checked before the first write
    work = []
    for t in range(k):
        sfx = "" if k == 1 else f"[{t}]"
        p = _array(params[t], "param" + sfx)
        _writable(p, "param" + sfx)
        g = _array(grads[t], "grad" + sfx, p.dtype)
        if g.shape != p.shape:
            raise ValueError(f"grad{sfx} has shape {g.shape}, the parameter {p.shape}")
        if p.ndim >= 2:
            rshape = p.shape[:-1] + (1,)
            cshape = p.shape[:-2] + (1, p.shape[-1])
            for a, name, shape in ((rows[t], "row_var", rshape), (cols[t], "col_var", cshape)):
                if a is None:
                    raise ValueError(f"{name}{sfx} is required for a parameter of "
                                     f"{p.ndim} dimensions")
                _array(a, name + sfx, p.dtype)
                _writable(a, name + sfx)
                if a.shape != shape:
                    raise ValueError(f"{name}{sfx} has shape {a.shape}, expected {shape}")
            if vars_[t] is not None:
                raise ValueError(f"variance{sfx} must be None for a parameter of "
                                 f"{p.ndim} dimensions (it has row_var and col_var)")
            bufs = (rows[t], cols[t])
        else:
            a = vars_[t]
            if a is None:
                raise ValueError(f"variance{sfx} is required for a {p.ndim}-D parameter")
            _array(a, "variance" + sfx, p.dtype)
            _writable(a, "variance" + sfx)
            if a.shape != p.shape:
                raise ValueError(f"variance{sfx} has shape {a.shape}, the parameter "
                                 f"{p.shape}")
            for a2, name in ((rows[t], "row_var"), (cols[t], "col_var")):
                if a2 is not None:
                    raise ValueError(f"{name}{sfx} must be None for a {p.ndim}-D parameter")
            bufs = (a,)
        for a in bufs + (g,):
            if np.shares_memory(a, p):
                raise ValueError(f"a buffer of param{sfx} overlaps it")
        if len(bufs) == 2 and np.shares_memory(bufs[0], bufs[1]):
            raise ValueError(f"row_var{sfx} overlaps col_var{sfx}")
        for a in bufs:
            if np.shares_memory(a, g):
                raise ValueError(f"a state buffer of param{sfx} overlaps its gradient")
        work.append((p, g, bufs))
    for p, g, bufs in work:
        if p.size:
            _tensor(p, g, bufs, c_step, c_lr, c_b2,
                    c_e1 if e1_given else float(np.finfo(p.dtype).eps), c_e2, c_d, c_wd,
                    c_max, lr_float32)


def _tensor(p, g, bufs, long long step, double lr, double beta2_decay, double eps1,
            double eps2, double d, double weight_decay, bint maximize, bint lr_float32):
    cdef Ctx c
    cdef Py_ssize_t size = p.size, B = 1, n = 1, m = 1
    cdef double ss = 0.0, rms, rho, alpha, denom, unorm
    cdef double sqrt_numel = sqrt(<double>size)
    cdef int nt = threads_for(size, 0)
    cdef double[::1] colacc, rmean
    cdef float[::1] p32, g32, r32, c32
    cdef double[::1] p64, g64, r64, c64
    cdef bint f32 = p.dtype == np.float32
    cdef bint rho_is_lr
    c.factored = p.ndim >= 2
    c.sign = -1.0 if maximize else 1.0
    c.w = (<double>step) ** beta2_decay
    c.eps1sq = eps1 * eps1
    c.use_decay = weight_decay != 0.0
    c.decay = 1.0 - lr * weight_decay
    c.update_v = 1
    rho = 1.0 / sqrt(<double>step)
    rho_is_lr = not rho < lr       # Python's min(lr, rho)
    if rho_is_lr:
        rho = lr
    if lr_float32:
        c.decay = <float>(<float>1.0 - <float>(<float>lr * <float>weight_decay))
    if f32:
        p32, g32, r32 = p.reshape(-1), g.reshape(-1), bufs[0].reshape(-1)
        c.p, c.g, c.r = &p32[0], &g32[0], &r32[0]
    else:
        p64, g64, r64 = p.reshape(-1), g.reshape(-1), bufs[0].reshape(-1)
        c.p, c.g, c.r = &p64[0], &g64[0], &r64[0]
    c.c = NULL
    c.rmean = NULL
    c.n = 1
    c.m = 1
    with nogil:
        reduce_blocks(_p_block_f32 if f32 else _p_block_f64, &c, _fold, &ss, &size, 1, 1, 0)
    # torch: param.norm(2) in the param's dtype, then .item()
    rms = (<double><float>sqrt(ss) if f32 else sqrt(ss)) / sqrt_numel
    alpha = (rms if rms > eps2 else eps2) * rho
    if lr_float32 and rho_is_lr:
        alpha = <float>(<float>(rms if rms > eps2 else eps2) * <float>rho)
    if c.factored:
        m = p.shape[-1]
        n = p.shape[-2]
        B = size // (n * m)
        colacc = np.empty(m, dtype=np.float64)
        rmean = np.empty(B, dtype=np.float64)
        c.n, c.m, c.rmean = n, m, &rmean[0]
        if f32:
            c32 = bufs[1].reshape(-1)
            c.c = &c32[0]
            with nogil:
                _factors(&g32[0], &r32[0], &c32[0], &colacc[0], &rmean[0], B, n, m, c.w,
                         eps1, nt)
        else:
            c64 = bufs[1].reshape(-1)
            c.c = &c64[0]
            with nogil:
                _factors(&g64[0], &r64[0], &c64[0], &colacc[0], &rmean[0], B, n, m, c.w,
                         eps1, nt)
    ss = 0.0
    with nogil:
        reduce_blocks(_u_block_f32 if f32 else _u_block_f64, &c, _fold, &ss, &size, 1, 1, 0)
    c.update_v = 0
    unorm = <double><float>sqrt(ss) if f32 else sqrt(ss)
    denom = unorm / (sqrt_numel * d)
    if not denom > 1.0:
        denom = 1.0
    c.scale = -alpha / denom
    if lr_float32 and rho_is_lr:
        c.scale = <float>(<float>(-alpha) / <float>denom)
    with nogil:
        run_segments(_seg_f32 if f32 else _seg_f64, &c, &size, 1, 0)
