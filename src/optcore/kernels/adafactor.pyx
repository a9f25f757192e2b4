# cython: wraparound=True
# (shape[-1] etc. in the Python-level checks; the loops use raw pointers)
"""Adafactor step (torch.optim.Adafactor's update rule; Shazeer & Stern 2018).

Per tensor, with ``g`` the gradient (negated when maximizing), ``T`` the
param's type (float32 for bfloat16/float16 params), ``w = step ** beta2_decay``, ``rho = min(lr, 1 / sqrt(step))``::

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
param's dtype. An empty tensor is left as it is.

Low precision: bfloat16/float16 params, or grads of either with float32
params, compute with T = float32 and float32 states: each 16-bit element is
widened where it is read (the sums in the same lane order as a float32
buffer's) and the param rounded once on store (optcore.kernels._storage: to
nearest, stochastically or Kahan-compensated), or read and updated in its
float32 ``master_param`` and written from it.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdint cimport uint16_t
cimport numpy as cnp

import numpy as np

from optcore.kernels._buffers import check_calls
from optcore.precision import machine_eps
from optcore.kernels._math cimport (fsqrt, sum_squares, load_lerp_weight, lerp, lanes_sum,
                                    SUM_LANES)
from optcore.kernels._runtime cimport (reduce_blocks, run_segments, threads_for,
                                       REDUCE_BLOCK)
from optcore.kernels._checks cimport real, flag, step as _step
from optcore.kernels._precision cimport rounding_mode, seed_value
from optcore.kernels._storage cimport (Storage, K_F32, K_F64, K_BF16, K_F16, NEAREST,
                                       STOCHASTIC, KAHAN, TILE, bf16_load, f16_load_n,
                                       param_load, param_store, rounding_key)

cnp.import_array()

__all__ = ["adafactor_step", "adafactor_step_at"]

cdef enum:
    COL_CHUNK = 256     # columns per task of the column sums


cdef struct Ctx:
    void* p             # the param's data (any kind)
    const void* g
    void* r             # row_var (B * n) or variance (numel)
    void* c             # col_var (B * m), NULL when not factored
    const double* rmean # per batch: max(mean_i row_var, eps1), a T value
    int gkind           # how g is stored (K_*)
    int pkind           # how psrc is stored (K_*)
    const void* psrc    # what the param's norm reads: the master copy, else p
    Storage* st         # low precision: the param's storage (else NULL)
    Py_ssize_t n, m     # rows and columns of each batch (factored)
    bint factored
    double sign
    double w
    double eps1sq
    double decay
    bint use_decay
    double scale        # -alpha / denom
    bint update_v       # pass 1 of an unfactored tensor: update the variance


cdef inline const float* _widened(int kind, const void* x, Py_ssize_t off, Py_ssize_t n,
                                  float* out) noexcept nogil:
    # elements [off, off + n) of a float32/bfloat16/float16 buffer as float32:
    # float32 in place, the others widened into out
    cdef Py_ssize_t i
    cdef const uint16_t* h
    if kind == K_F32:
        return <const float*>x + off
    if kind == K_BF16:
        h = <const uint16_t*>x + off
        for i in range(n):
            out[i] = bf16_load(h[i])
    else:
        f16_load_n(<const uint16_t*>x + off, out, n)
    return out


cdef double _sumsq_widened(int kind, const void* x, Py_ssize_t off,
                           Py_ssize_t n) noexcept nogil:
    # sum_squares of the widened elements, in sum_squares' lane order (the
    # tiles hold whole groups of SUM_LANES; only the last has a tail)
    cdef float tile[TILE]
    cdef double acc[SUM_LANES]
    cdef const float* v
    cdef Py_ssize_t lo = 0, cnt, nfull, i, j, r
    for j in range(SUM_LANES):
        acc[j] = 0.0
    while lo < n:
        cnt = min(<Py_ssize_t>TILE, n - lo)
        v = _widened(kind, x, off + lo, cnt, tile)
        nfull = cnt - cnt % SUM_LANES
        for r in range(nfull // SUM_LANES):
            i = r * SUM_LANES
            for j in range(SUM_LANES):
                acc[j] += <double>v[i + j] * <double>v[i + j]
        for i in range(nfull, cnt):
            acc[i - nfull] += <double>v[i] * <double>v[i]
        lo += cnt
    return lanes_sum(acc)


cdef inline double _sumsq(int kind, const void* x, Py_ssize_t off, Py_ssize_t n) noexcept nogil:
    if kind == K_F64:
        return sum_squares(<const double*>x + off, n)
    if kind == K_F32:
        return sum_squares(<const float*>x + off, n)
    return _sumsq_widened(kind, x, off, n)


cdef inline void _u_range(const Ctx* c, Py_ssize_t start, Py_ssize_t stop,
                          floating* out) noexcept nogil:
    # u of elements [start, stop) (at most REDUCE_BLOCK) into out[0:stop-start]
    cdef float gbuf[REDUCE_BLOCK]
    cdef const floating* g
    cdef floating* r = <floating*>c.r
    cdef const floating* cv = <const floating*>c.c
    cdef floating sign = <floating>c.sign
    cdef floating e2 = <floating>c.eps1sq
    cdef floating one = 1
    cdef floating v, gi, wt, omw, rm, ri
    cdef bint low
    cdef Py_ssize_t k, row, j, j0, j1, b, base, m = c.m
    cdef const floating* cb
    if floating is float:
        g = _widened(c.gkind, c.g, start, stop - start, gbuf)
    else:
        g = <const double*>c.g + start
    if c.factored:
        # row by row: within a row the row factor and mean are constants and
        # the loop over its columns vectorises
        k = start
        while k < stop:
            row = k // m
            j0 = k - row * m
            j1 = min(m, j0 + (stop - k))
            b = row // c.n
            rm = <floating>c.rmean[b]
            ri = r[row]
            cb = cv + b * m
            base = (k - start) - j0        # column j of this row: out[base + j]
            for j in range(j0, j1):
                v = (ri * cb[j]) / rm
                if v < e2:
                    v = e2
                out[base + j] = (one / fsqrt(v)) * (g[base + j] * sign)
            k += j1 - j0
    else:
        low = load_lerp_weight(c.w, &wt, &omw)
        for k in range(start, stop):
            gi = g[k - start] * sign
            if c.update_v:
                r[k] = lerp(r[k], gi * gi, wt, omw, low)
            v = r[k]
            if v < e2:
                v = e2
            out[k - start] = (one / fsqrt(v)) * gi


cdef void _p_block(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                   double* out) noexcept nogil:
    cdef const Ctx* c = <const Ctx*>ctx
    out[0] = _sumsq(c.pkind, c.psrc, start, stop - start)


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


cdef void _seg_low(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                   Py_ssize_t stop) noexcept nogil:
    # _apply in float32 over the param's storage: loaded (or its master read),
    # updated and stored rounded, REDUCE_BLOCK elements at a time
    cdef const Ctx* c = <const Ctx*>ctx
    cdef float u[REDUCE_BLOCK]
    cdef float tile[REDUCE_BLOCK]
    cdef float before[REDUCE_BLOCK]
    cdef float scale = <float>c.scale
    cdef float decay = <float>c.decay
    cdef void** pbuf = <void**>&c.p
    cdef float* p
    cdef Py_ssize_t k, lo, hi, n
    lo = start
    while lo < stop:
        hi = min(lo + <Py_ssize_t>REDUCE_BLOCK, stop)
        n = hi - lo
        _u_range(c, lo, hi, u)
        p = param_load(c.st, pbuf, 0, lo, n, tile, before)
        if c.use_decay:
            for k in range(n):
                p[k] = p[k] * decay + scale * u[k]
        else:
            for k in range(n):
                p[k] = p[k] + scale * u[k]
        param_store(c.st, pbuf, 0, lo, n, p, before)
        lo = hi


cdef inline void _col_sums(int kind, const void* g, double* colacc, Py_ssize_t base,
                           Py_ssize_t n, Py_ssize_t m, Py_ssize_t j0,
                           Py_ssize_t j1) noexcept nogil:
    # colacc[j0:j1] = sum over the n rows from element `base` of g[i, j] ** 2,
    # row after row
    cdef float tile[COL_CHUNK]
    cdef const float* v
    cdef const double* d
    cdef Py_ssize_t i, j
    for j in range(j0, j1):
        colacc[j] = 0.0
    for i in range(n):
        if kind == K_F64:
            d = <const double*>g + base + i * m
            for j in range(j0, j1):
                colacc[j] += d[j] * d[j]
        else:
            v = _widened(kind, g, base + i * m + j0, j1 - j0, tile)
            for j in range(j0, j1):
                colacc[j] += <double>v[j - j0] * <double>v[j - j0]


cdef void _factors(const Ctx* c, floating* r, floating* cv, double* colacc,
                   double* rmean, Py_ssize_t B, Py_ssize_t n, Py_ssize_t m,
                   double w, double eps1, int nt) noexcept nogil:
    # The row and column factors and the clamped row-factor means.
    cdef floating wt, omw, x, fn = <floating>n, fm = <floating>m
    cdef floating e1 = <floating>eps1
    cdef bint low = load_lerp_weight(w, &wt, &omw)
    cdef Py_ssize_t row, b, i, j, ch, j0, j1, nchunks = (m + COL_CHUNK - 1) // COL_CHUNK
    cdef double s
    for row in prange(B * n, num_threads=nt, schedule="static"):
        x = <floating>sqrt(_sumsq(c.gkind, c.g, row * m, m))
        x = x * x
        x = x / fm
        r[row] = lerp(r[row], x, wt, omw, low)
    for b in range(B):
        for ch in prange(nchunks, num_threads=nt, schedule="static"):
            j0 = ch * COL_CHUNK
            j1 = min(j0 + <Py_ssize_t>COL_CHUNK, m)
            _col_sums(c.gkind, c.g, colacc, b * n * m, n, m, j0, j1)
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


cdef int _kind(a):
    # the storage kind of a float array, -1 for any other dtype
    dt = a.dtype
    if dt == np.float32:
        return K_F32
    if dt == np.float64:
        return K_F64
    if dt == np.float16:
        return K_F16
    if dt.name == "bfloat16" and dt.itemsize == 2:   # ml_dtypes', never imported here
        return K_BF16
    return -1


cdef dict _TAKES = {"float32 or float64": (K_F32, K_F64),
                    "float32, bfloat16 or float16": (K_F32, K_BF16, K_F16),
                    "float32, float64, bfloat16 or float16": (K_F32, K_F64, K_BF16, K_F16)}


def _array(a, name, takes="float32 or float64"):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if _kind(a) not in _TAKES[takes]:
        raise TypeError(f"{name} must be {takes}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not a.flags.aligned:
        raise ValueError(f"{name} is not aligned to its {a.itemsize}-byte elements")
    return a


def _disjoint(buffers):
    # The bindings' overlap rule over every buffer of the call (in any tensor:
    # an update through one would change the other), each buffer a call of
    # its own since their sizes differ
    check_calls([((name,), (a,), ("write" if written else "read",), (name,))
                 for a, name, written in buffers], mixed=True)


def _state(a, name, p):
    # a state buffer: the param's dtype, float32 for bfloat16/float16 params
    _array(a, name)
    if _kind(p) > K_F64:
        if a.dtype != np.float32:
            raise TypeError(f"{name} has dtype {a.dtype}; adafactor_step keeps its states "
                            f"in float32 (with param of dtype {p.dtype})")
    elif a.dtype != p.dtype:
        raise TypeError(f"{name} has dtype {a.dtype}, the parameter {p.dtype}")
    _writable(a, name)


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
                   weight_decay=0.0, maximize=False, master_param=None, rounding="nearest",
                   compensation=None, seed=0):
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

    bfloat16 (``ml_dtypes.bfloat16``) and float16 params, and bfloat16 or
    float16 grads with float32 params, are computed in float32 with float32
    states, the param rounded once on store (``rounding``) or written from its
    float32 ``master_param``, as in the other step kernels.

    Parameters
    ----------
    param : numpy.ndarray or list of numpy.ndarray
        The parameters (float32, float64, bfloat16 or float16, C-contiguous,
        writeable), updated in place.
    grad : numpy.ndarray or list of numpy.ndarray
        The gradients, each its parameter's shape; read. The parameter's
        dtype, or float32, bfloat16 or float16 for a float32/bfloat16/float16
        parameter.
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
    master_param : numpy.ndarray or list, optional
        float32 master copies of bfloat16/float16 parameters: read and
        updated, and the parameter written from it (rounded to nearest).
    rounding : {"nearest", "stochastic", "kahan"}, optional
        How a bfloat16/float16 parameter without a master copy is rounded.
    compensation : numpy.ndarray or list, optional
        ``rounding="kahan"``: per parameter, a buffer of its dtype and shape
        (zeros before the first step) that keeps what rounding lost.
    seed : int, optional
        ``rounding="stochastic"``: the random bits' seed, in [0, 2**64).

    Returns
    -------
    None
        The parameters and their state are updated in place.

    Raises
    ------
    TypeError
        A buffer of a dtype the parameter does not take (a state that is not
        the parameter's dtype, or not float32 for a bfloat16/float16
        parameter), or a wrongly typed option.
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
                      eps2, d, weight_decay, maximize, False, master_param, rounding,
                      compensation, seed)


def _extra(a, name, p, dtype, what):
    # a master_param / compensation buffer of tensor p
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype}; {what}")
    _array(a, name, "float32, bfloat16 or float16")
    _writable(a, name)
    if a.shape != p.shape:
        raise ValueError(f"{name} has shape {a.shape}, the parameter {p.shape}")


def adafactor_step_at(param, grad, row_var, col_var, variance, step, lr, beta2_decay, eps1,
                      eps2, d, weight_decay, maximize, bint lr_float32, master_param=None,
                      rounding="nearest", compensation=None, seed=0):
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
    cdef int mode = rounding_mode(rounding)
    cdef unsigned int key = 0
    e1_given = eps1 is not None
    cdef double c_e1 = (_scalar(eps1, "eps1", "nonneg", "epsilon1 should be >= 0 but is: {}")
                        if e1_given else 0.0)
    if mode == STOCHASTIC:
        key = rounding_key(seed_value(seed), c_step)
    params = list(param) if isinstance(param, (list, tuple)) else [param]
    k = len(params)
    if grad is None:
        raise TypeError("grad must be a numpy.ndarray, got NoneType")
    grads = _listed(grad, k, "grad")
    rows, cols, vars_ = (_listed(row_var, k, "row_var"), _listed(col_var, k, "col_var"),
                         _listed(variance, k, "variance"))
    masters = _listed(master_param, k, "master_param")
    comps = _listed(compensation, k, "compensation")
    # every argument checked before the first write
    work = []
    buffers = []
    for t in range(k):
        sfx = "" if k == 1 else f"[{t}]"
        p = _array(params[t], "param" + sfx, "float32, float64, bfloat16 or float16")
        _writable(p, "param" + sfx)
        low = _kind(p) > K_F64
        if p.dtype == np.float64:
            g = _array(grads[t], "grad" + sfx)
            if g.dtype != p.dtype:
                raise TypeError(f"grad{sfx} has dtype {g.dtype}, the parameter float64")
        else:
            g = _array(grads[t], "grad" + sfx, "float32, bfloat16 or float16")
        if g.shape != p.shape:
            raise ValueError(f"grad{sfx} has shape {g.shape}, the parameter {p.shape}")
        if p.ndim >= 2:
            rshape = p.shape[:-1] + (1,)
            cshape = p.shape[:-2] + (1, p.shape[-1])
            for a, name, shape in ((rows[t], "row_var", rshape), (cols[t], "col_var", cshape)):
                if a is None:
                    raise ValueError(f"{name}{sfx} is required for a parameter of "
                                     f"{p.ndim} dimensions")
                _state(a, name + sfx, p)
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
            _state(a, "variance" + sfx, p)
            if a.shape != p.shape:
                raise ValueError(f"variance{sfx} has shape {a.shape}, the parameter "
                                 f"{p.shape}")
            for a2, name in ((rows[t], "row_var"), (cols[t], "col_var")):
                if a2 is not None:
                    raise ValueError(f"{name}{sfx} must be None for a {p.ndim}-D parameter")
            bufs = (a,)
        master, comp = masters[t], comps[t]
        if master is not None:
            if not low:
                raise TypeError(f"master_param{sfx} is the float32 copy of a bfloat16 or "
                                f"float16 param; param{sfx} has dtype {p.dtype}")
            _extra(master, "master_param" + sfx, p, np.float32, "it must be float32")
            if mode != NEAREST:
                raise ValueError(f"rounding={rounding!r} rounds a param that has no master "
                                 f"copy; with master_param the param is rounded to nearest")
        if mode != NEAREST and not low:
            raise TypeError(f"rounding={rounding!r} takes bfloat16 or float16 params; "
                            f"param{sfx} has dtype {p.dtype}")
        if mode == KAHAN:
            if comp is None:
                raise ValueError(f"rounding='kahan' needs a compensation buffer "
                                 f"(compensation{sfx}: zeros of the param's dtype and shape "
                                 f"before the first step)")
            _extra(comp, "compensation" + sfx, p, p.dtype,
                   f"param{sfx} has {p.dtype}")
        elif comp is not None:
            raise ValueError("compensation is used with rounding='kahan' only")
        # every buffer of the call, for the overlap rule over all of them
        extent = [(p, "param" + sfx, True), (g, "grad" + sfx, False)]
        extent += [(x, n + sfx, True) for x, n in
                   zip(bufs, ("row_var", "col_var") if len(bufs) == 2 else ("variance",))]
        extent += [(x, n + sfx, True) for x, n in
                   ((master, "master_param"), (comp, "compensation")) if x is not None]
        buffers += extent
        work.append((p, g, bufs, master, comp))
    _disjoint(buffers)
    for t, (p, g, bufs, master, comp) in enumerate(work):
        if p.size:
            _tensor(p, g, bufs, c_step, c_lr, c_b2,
                    c_e1 if e1_given else machine_eps(p.dtype),
                    c_e2, c_d, c_wd, c_max, lr_float32, master, comp, mode, key, t)


cdef inline void* _data(a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def _tensor(p, g, bufs, long long step, double lr, double beta2_decay, double eps1,
            double eps2, double d, double weight_decay, bint maximize, bint lr_float32,
            master, comp, int mode, unsigned int key, Py_ssize_t index):
    cdef Ctx c
    cdef Storage st
    cdef void* master_ptr = NULL
    cdef void* comp_ptr = NULL
    cdef Py_ssize_t size = p.size, B = 1, n = 1, m = 1
    cdef double ss = 0.0, rms, rho, alpha, denom, unorm
    cdef double sqrt_numel = sqrt(<double>size)
    cdef int nt = threads_for(size, 0)
    cdef double[::1] colacc, rmean
    cdef int pk = _kind(p)
    cdef bint low = pk > K_F64 or _kind(g) != pk
    cdef bint f32 = pk != K_F64          # the compute type T
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
    c.p, c.g, c.r = _data(p), _data(g), _data(bufs[0])
    c.gkind = _kind(g)
    c.pkind, c.psrc = pk, c.p
    c.st = NULL
    if low:
        st.kind[0] = pk
        st.rounding = mode
        st.key = key
        st.first = index
        st.sizes = &size
        st.master = NULL
        st.compensation = NULL
        if master is not None:
            master_ptr = _data(master)
            st.master = &master_ptr
            c.pkind, c.psrc = K_F32, master_ptr
        if comp is not None:
            comp_ptr = _data(comp)
            st.compensation = &comp_ptr
        c.st = &st
    c.c = NULL
    c.rmean = NULL
    c.n = 1
    c.m = 1
    with nogil:
        reduce_blocks(_p_block, &c, _fold, &ss, &size, 1, 1, 0)
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
        c.c = _data(bufs[1])
        with nogil:
            if f32:
                _factors(&c, <float*>c.r, <float*>c.c, &colacc[0], &rmean[0], B, n, m, c.w,
                         eps1, nt)
            else:
                _factors(&c, <double*>c.r, <double*>c.c, &colacc[0], &rmean[0], B, n, m, c.w,
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
        run_segments(_seg_low if low else (_seg_f32 if f32 else _seg_f64), &c, &size, 1, 0)
