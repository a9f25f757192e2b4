"""Gradient utilities: global norm, clipping by norm and by value, the
non-finite check and AMP unscaling, over one array or a list of arrays in one
native call.

Semantics are torch's (``torch.nn.utils.clip_grad_norm_`` /
``clip_grad_value_``, ``torch._amp_foreach_non_finite_check_and_unscale_``),
with the norm accumulated in double: it has the same bits for any thread count
(fixed blocks folded in a fixed order, see _runtime.reduce_blocks) and does not
overflow or underflow where the exact norm is representable (a sum of powers
that leaves the normal double range is redone scaled by the largest |x|).
"""

from cython cimport floating
from libc.math cimport pow, sqrt, fabs, INFINITY, NAN, HUGE_VAL
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy

from optcore._docstrings import assign as _assign_docs

from optcore.kernels._math cimport (fabs_, maximum, sum_squares, sum_abs, lanes_sum,
                                     SUM_LANES)
from optcore.kernels._runtime cimport (run_segments, segment_fn, reduce_blocks,
                                       block_fn)
from optcore.kernels._buffers cimport BufferSet, bind, FLOAT32, WRITE, READ
from optcore.kernels._checks cimport real

cdef extern from * nogil:
    """
    /* A flag raised by any thread of a parallel region and read by the others
       (relaxed atomics: only the final value matters). */
    #if defined(__GNUC__) || defined(__clang__)
    static inline void optcore_flag_raise(int* f) { __atomic_store_n(f, 1, __ATOMIC_RELAXED); }
    static inline int optcore_flag_get(const int* f) { return __atomic_load_n(f, __ATOMIC_RELAXED); }
    #else
    static inline void optcore_flag_raise(int* f) { *(volatile int*)f = 1; }
    static inline int optcore_flag_get(const int* f) { return *(const volatile int*)f; }
    #endif
    """
    void optcore_flag_raise(int* f)
    int optcore_flag_get(const int* f)

cdef enum:
    LANES = 8          # independent chains of the float64 max (int64 compare-and-select)
    MAX_LANES = 32     # the same for the float32 max (integer compare-and-select)
    CHECK_LANES = 32   # float32 accumulators of the non-finite checks (float64: 16)
    CHECK_EVERY = 2048 # all_finite looks at the other threads' result this often

cdef enum NormKind:
    NORM_1 = 0
    NORM_2 = 1
    NORM_INF = 2
    NORM_P = 3

cdef double DBL_MIN_NORMAL = 2.2250738585072014e-308


# ---- norms -------------------------------------------------------------------

cdef struct NormCall:
    void** data
    int kind
    double p
    double divisor         # |x| / divisor; 1 on the first pass
    bint scaled
    bint is_f32


ctypedef fused magnitude_bits:
    int32_t        # float32
    int64_t        # float64


cdef inline double _max_magnitude(const void* x, Py_ssize_t n,
                                  magnitude_bits magnitude) noexcept nogil:
    # max |x| over n floats as wide as magnitude_bits, NaN if any x is NaN.
    # For |x| the IEEE bit patterns order like integers, NaNs above +inf: an
    # integer max over the sign-cleared bits (``& magnitude``, non-negative)
    # is max |x|. Integer max vectorises; a float max with NaN rules does not
    # (without -ffast-math). Independent chains hide the latency of
    # compare-and-select: MAX_LANES for int32; LANES for int64, which
    # vectorises where the instruction set has 64-bit integer compares (the
    # x86-64-v3/v4 builds; on SSE2 the scalar chains still beat float
    # compares with NaN rules, 4x measured).
    cdef magnitude_bits acc[MAX_LANES]
    cdef magnitude_bits a, best
    cdef float best_f32
    cdef double best_f64
    cdef const char* raw = <const char*>x
    cdef Py_ssize_t i, j, r, lanes, nfull
    if magnitude_bits is int32_t:
        lanes = MAX_LANES
    else:
        lanes = LANES
    nfull = n - n % lanes
    for j in range(lanes):
        acc[j] = 0
    for r in range(nfull // lanes):
        i = r * lanes
        for j in range(lanes):
            memcpy(&a, raw + (i + j) * sizeof(magnitude_bits), sizeof(magnitude_bits))
            a = a & magnitude
            acc[j] = a if a > acc[j] else acc[j]
    for i in range(nfull, n):
        memcpy(&a, raw + i * sizeof(magnitude_bits), sizeof(magnitude_bits))
        a = a & magnitude
        j = i - nfull
        acc[j] = a if a > acc[j] else acc[j]
    best = acc[0]
    for j in range(1, lanes):
        best = acc[j] if acc[j] > best else best
    if magnitude_bits is int32_t:
        memcpy(&best_f32, &best, 4)
        return best_f32
    else:
        memcpy(&best_f64, &best, 8)
        return best_f64


cdef inline double _max_abs(const floating* x, Py_ssize_t n) noexcept nogil:
    # max |x|, NaN if any x is NaN (torch's inf-norm).
    cdef int32_t magnitude32 = 0x7fffffff
    cdef int64_t magnitude64 = 0x7fffffffffffffff
    if floating is float:
        return _max_magnitude(x, n, magnitude32)
    else:
        return _max_magnitude(x, n, magnitude64)


cdef double _sum_pow(const floating* x, Py_ssize_t n, int kind, double p,
                     double divisor) noexcept nogil:
    # sum (|x| / divisor)**p: any p (the general norm, and the rescaled pass).
    cdef double acc[SUM_LANES]
    cdef double d
    cdef Py_ssize_t i, j
    for j in range(SUM_LANES):
        acc[j] = 0.0
    for i in range(n):
        d = <double>fabs_(x[i]) / divisor
        if kind == NORM_1:
            acc[i % SUM_LANES] += d
        elif kind == NORM_2:
            acc[i % SUM_LANES] += d * d
        else:
            acc[i % SUM_LANES] += pow(d, p)
    return lanes_sum(acc)


cdef inline double _norm_of(const floating* x, Py_ssize_t n, const NormCall* c) noexcept nogil:
    if c.kind == NORM_INF:
        return _max_abs(x, n)
    if c.scaled or c.kind == NORM_P:
        return _sum_pow(x, n, c.kind, c.p, c.divisor)
    if c.kind == NORM_2:
        return sum_squares(x, n)
    return sum_abs(x, n)


cdef void _norm_block(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                      Py_ssize_t stop, double* out) noexcept nogil:
    # reduce_blocks' block function, both dtypes.
    cdef const NormCall* c = <const NormCall*>ctx
    if c.is_f32:
        out[0] = _norm_of(<const float*>c.data[t] + start, stop - start, c)
    else:
        out[0] = _norm_of(<const double*>c.data[t] + start, stop - start, c)


cdef void _fold_sum(void* acc, Py_ssize_t t, const double* out) noexcept nogil:
    (<double*>acc)[0] += out[0]


cdef void _fold_max(void* acc, Py_ssize_t t, const double* out) noexcept nogil:
    (<double*>acc)[0] = maximum((<double*>acc)[0], out[0])


cdef inline double _root(double s, int kind, double p) noexcept nogil:
    if kind == NORM_1:
        return s
    if kind == NORM_2:
        return sqrt(s)
    return pow(s, 1.0 / p)


cdef double _global_norm(void** data, const Py_ssize_t* sizes, Py_ssize_t ntensors,
                         double p, bint is_f32, int num_threads) noexcept nogil:
    cdef NormCall c
    cdef double s = 0.0, m = 0.0
    cdef block_fn fn = _norm_block
    if not (p > 0.0):
        return NAN
    c.data = data
    c.is_f32 = is_f32
    c.p = p
    c.divisor = 1.0
    c.scaled = False
    c.kind = NORM_INF if p == INFINITY else (
        NORM_1 if p == 1.0 else (NORM_2 if p == 2.0 else NORM_P))
    if c.kind == NORM_INF:
        reduce_blocks(fn, &c, _fold_max, &m, sizes, ntensors, 1, num_threads)
        return m
    # For p < 1 the root s**(1/p) magnifies the rounding of s by 1/p (all of
    # it for a tiny p): scale by the largest |x| first, as torch does.
    if not (c.kind == NORM_P and p < 1.0):
        reduce_blocks(fn, &c, _fold_sum, &s, sizes, ntensors, 1, num_threads)
        if s != s or (s >= DBL_MIN_NORMAL and s < HUGE_VAL):
            return _root(s, c.kind, p)
    # The sum left the normal range (overflow, underflow, or all zeros): redo
    # it scaled by the largest |x|. Never taken for the 2-norm of float32 data.
    c.kind, c.p = NORM_INF, INFINITY
    reduce_blocks(fn, &c, _fold_max, &m, sizes, ntensors, 1, num_threads)
    if m == 0.0 or m == INFINITY:
        return m
    c.kind = NORM_1 if p == 1.0 else (NORM_2 if p == 2.0 else NORM_P)
    c.p = p
    c.divisor = m
    c.scaled = True
    s = 0.0
    reduce_blocks(fn, &c, _fold_sum, &s, sizes, ntensors, 1, num_threads)
    return m * _root(s, c.kind, p)


# ---- elementwise passes --------------------------------------------------------

cdef enum ElementOp:
    SCALE = 0              # clip_grad_norm_'s scaling
    CLIP_VALUE = 1
    CHECK_FINITE = 2
    UNSCALE = 3


cdef struct ElementCall:
    void** data
    int op
    bint is_f32
    double factor          # clip_grad_norm_: coefficient; unscale_: inv_scale
    double clip            # clip_grad_value_
    bint scale             # unscale_: multiply (inv_scale != 1)
    int found              # any non-finite value seen (raised by any thread)


cdef inline void _scale(floating* g, Py_ssize_t n, floating f) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        g[i] = g[i] * f


cdef inline void _clip_values(floating* g, Py_ssize_t n, floating hi) noexcept nogil:
    # torch: clamp_min(-clip) then clamp_max(clip); NaN stays NaN. A NaN clip
    # value makes every element NaN (torch.clamp with a NaN bound).
    cdef floating lo = -hi
    cdef floating x
    cdef Py_ssize_t i
    if hi != hi:
        for i in range(n):
            g[i] = hi
        return
    for i in range(n):
        x = g[i]
        x = lo if x < lo else x
        g[i] = hi if x > hi else x


cdef inline Py_ssize_t _check_lanes(floating tag) noexcept nogil:
    # Accumulator lanes of the non-finite checks: four 256-bit (eight 128-bit)
    # vectors, enough independent add chains for every instruction set.
    if floating is float:
        return CHECK_LANES
    else:
        return CHECK_LANES // 2


cdef inline bint _has_nonfinite(const floating* x, Py_ssize_t n) noexcept nogil:
    # x - x is 0 for a finite x and NaN for +-inf and NaN.
    cdef floating acc[CHECK_LANES]
    cdef floating total = 0
    cdef Py_ssize_t i, j, r, lanes = _check_lanes(x[0] if n else 0)
    cdef Py_ssize_t nfull = n - n % lanes
    for j in range(lanes):
        acc[j] = 0
    for r in range(nfull // lanes):
        i = r * lanes
        for j in range(lanes):
            acc[j] += x[i + j] - x[i + j]
    for i in range(nfull, n):
        acc[i - nfull] += x[i] - x[i]
    for j in range(lanes):
        total += acc[j]
    return total != 0


cdef inline void _check_finite(const floating* x, Py_ssize_t n, ElementCall* c) noexcept nogil:
    # Stops early once any thread has found a non-finite value.
    cdef Py_ssize_t lo = 0, hi
    while lo < n:
        if optcore_flag_get(&c.found):
            return
        hi = lo + CHECK_EVERY
        if hi > n:
            hi = n
        if _has_nonfinite(x + lo, hi - lo):
            optcore_flag_raise(&c.found)
            return
        lo = hi


cdef inline void _unscale_checked(floating* g, Py_ssize_t n, ElementCall* c) noexcept nogil:
    # torch's CPU kernel: the check is on the values before scaling.
    cdef floating f = <floating>c.factor
    cdef floating acc[CHECK_LANES]
    cdef floating x, total = 0
    cdef Py_ssize_t i, j, r, lanes = _check_lanes(f)
    cdef Py_ssize_t nfull = n - n % lanes
    if not c.scale:
        if _has_nonfinite(g, n):
            optcore_flag_raise(&c.found)
        return
    for j in range(lanes):
        acc[j] = 0
    for r in range(nfull // lanes):
        i = r * lanes
        for j in range(lanes):
            x = g[i + j]
            acc[j] += x - x
            g[i + j] = x * f
    for i in range(nfull, n):
        x = g[i]
        acc[i - nfull] += x - x
        g[i] = x * f
    for j in range(lanes):
        total += acc[j]
    if total != 0:
        optcore_flag_raise(&c.found)


cdef inline void _apply(floating* x, Py_ssize_t n, ElementCall* c) noexcept nogil:
    if c.op == SCALE:
        _scale(x, n, <floating>c.factor)
    elif c.op == CLIP_VALUE:
        _clip_values(x, n, <floating>c.clip)
    elif c.op == CHECK_FINITE:
        _check_finite(x, n, c)
    else:
        _unscale_checked(x, n, c)


cdef void _element_segment(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                           Py_ssize_t stop) noexcept nogil:
    # run_segments' segment function: every elementwise pass, both dtypes.
    cdef ElementCall* c = <ElementCall*>ctx
    if c.is_f32:
        _apply(<float*>c.data[t] + start, stop - start, c)
    else:
        _apply(<double*>c.data[t] + start, stop - start, c)


cdef inline void _run_elementwise(ElementCall* c, int op, void** data, bint is_f32,
                                  const Py_ssize_t* sizes, Py_ssize_t ntensors,
                                  int num_threads) noexcept nogil:
    c.op = op
    c.data = data
    c.is_f32 = is_f32
    c.found = 0
    run_segments(_element_segment, c, sizes, ntensors, num_threads)


cdef inline double _clip_coef(double max_norm, double total_norm) noexcept nogil:
    # torch: clamp(max_norm / (total_norm + 1e-6), max=1.0); NaN stays NaN.
    cdef double coef = max_norm / (total_norm + 1e-6)
    return 1.0 if coef > 1.0 else coef


cdef void _clip_by_norm(void** grads, const Py_ssize_t* sizes, Py_ssize_t ntensors,
                        double max_norm, double total_norm, bint is_f32,
                        int num_threads) noexcept nogil:
    cdef ElementCall c
    c.factor = _clip_coef(max_norm, total_norm)
    if c.factor == 1.0:
        return             # multiplying by 1 changes nothing
    _run_elementwise(&c, SCALE, grads, is_f32, sizes, ntensors, num_threads)


cdef double _clip_grad_norm(void** grads, const Py_ssize_t* sizes, Py_ssize_t ntensors,
                            double max_norm, double norm_type, bint is_f32,
                            int num_threads) noexcept nogil:
    cdef double total = _global_norm(grads, sizes, ntensors, norm_type, is_f32, num_threads)
    if norm_type != norm_type or norm_type <= 0.0:
        return total        # NaN: no such norm, and the grads are left as they are
    _clip_by_norm(grads, sizes, ntensors, max_norm, total, is_f32, num_threads)
    return total


cdef void _clip_value(void** grads, const Py_ssize_t* sizes, Py_ssize_t ntensors,
                      double clip_value, bint is_f32, int num_threads) noexcept nogil:
    cdef ElementCall c
    c.clip = clip_value
    _run_elementwise(&c, CLIP_VALUE, grads, is_f32, sizes, ntensors, num_threads)


cdef bint _all_finite(void** data, const Py_ssize_t* sizes, Py_ssize_t ntensors,
                      bint is_f32, int num_threads) noexcept nogil:
    cdef ElementCall c
    _run_elementwise(&c, CHECK_FINITE, data, is_f32, sizes, ntensors, num_threads)
    return not c.found


cdef bint _unscale(void** grads, const Py_ssize_t* sizes, Py_ssize_t ntensors,
                   double inv_scale, bint is_f32, int num_threads) noexcept nogil:
    cdef ElementCall c
    c.factor = inv_scale
    c.scale = inv_scale != 1.0
    _run_elementwise(&c, UNSCALE, grads, is_f32, sizes, ntensors, num_threads)
    return c.found != 0


# ---- C-level API (grad_utils.pxd) ----------------------------------------------

cdef double global_norm_f32(const float** arrays, const Py_ssize_t* sizes,
                            Py_ssize_t ntensors, double norm_type,
                            int num_threads) noexcept nogil:
    return _global_norm(<void**>arrays, sizes, ntensors, norm_type, True, num_threads)


cdef double global_norm_f64(const double** arrays, const Py_ssize_t* sizes,
                            Py_ssize_t ntensors, double norm_type,
                            int num_threads) noexcept nogil:
    return _global_norm(<void**>arrays, sizes, ntensors, norm_type, False, num_threads)


cdef double clip_grad_norm_f32(float** grads, const Py_ssize_t* sizes,
                               Py_ssize_t ntensors, double max_norm, double norm_type,
                               int num_threads) noexcept nogil:
    return _clip_grad_norm(<void**>grads, sizes, ntensors, max_norm, norm_type, True,
                           num_threads)


cdef double clip_grad_norm_f64(double** grads, const Py_ssize_t* sizes,
                               Py_ssize_t ntensors, double max_norm, double norm_type,
                               int num_threads) noexcept nogil:
    return _clip_grad_norm(<void**>grads, sizes, ntensors, max_norm, norm_type, False,
                           num_threads)


cdef void clip_grad_value_f32(float** grads, const Py_ssize_t* sizes,
                              Py_ssize_t ntensors, double clip_value,
                              int num_threads) noexcept nogil:
    _clip_value(<void**>grads, sizes, ntensors, clip_value, True, num_threads)


cdef void clip_grad_value_f64(double** grads, const Py_ssize_t* sizes,
                              Py_ssize_t ntensors, double clip_value,
                              int num_threads) noexcept nogil:
    _clip_value(<void**>grads, sizes, ntensors, clip_value, False, num_threads)


cdef bint all_finite_f32(const float** arrays, const Py_ssize_t* sizes,
                         Py_ssize_t ntensors, int num_threads) noexcept nogil:
    return _all_finite(<void**>arrays, sizes, ntensors, True, num_threads)


cdef bint all_finite_f64(const double** arrays, const Py_ssize_t* sizes,
                         Py_ssize_t ntensors, int num_threads) noexcept nogil:
    return _all_finite(<void**>arrays, sizes, ntensors, False, num_threads)


cdef bint unscale_f32(float** grads, const Py_ssize_t* sizes, Py_ssize_t ntensors,
                      double inv_scale, int num_threads) noexcept nogil:
    return _unscale(<void**>grads, sizes, ntensors, inv_scale, True, num_threads)


cdef bint unscale_f64(double** grads, const Py_ssize_t* sizes, Py_ssize_t ntensors,
                      double inv_scale, int num_threads) noexcept nogil:
    return _unscale(<void**>grads, sizes, ntensors, inv_scale, False, num_threads)


# ---- Python API ------------------------------------------------------------------

cdef double _norm_type(norm_type) except? -1.0:
    # torch also takes the string 'inf' (and other float strings).
    cdef double p = float(norm_type) if isinstance(norm_type, str) else \
        real(norm_type, "norm_type")
    if not (p > 0.0):
        raise ValueError(
            f"norm_type must be a positive number or inf, got {norm_type!r}")
    return p


cdef BufferSet _bind(str name, arrays, int role):
    # A generator or other iterator of arrays (as torch takes) becomes a list.
    if hasattr(arrays, "__next__"):
        arrays = list(arrays)
    return bind((name,), (arrays,), (role,))


def global_norm(arrays, norm_type=2.0):
    cdef double p = _norm_type(norm_type)
    cdef BufferSet b = _bind("arrays", arrays, READ)
    with nogil:
        p = _global_norm(b.data, b.sizes, b.ntensors, p, b.dtype == FLOAT32, 0)
    return p


def clip_grad_norm_(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    cdef double p = _norm_type(norm_type)
    cdef double mx = real(max_norm, "max_norm")
    cdef BufferSet b = _bind("grads", grads, WRITE)
    cdef bint is_f32 = b.dtype == FLOAT32
    cdef double total
    with nogil:
        total = _global_norm(b.data, b.sizes, b.ntensors, p, is_f32, 0)
    if error_if_nonfinite and not (-HUGE_VAL < total < HUGE_VAL):
        raise RuntimeError(
            f"The total norm of order {p} for gradients from `parameters` is "
            f"non-finite, so it cannot be clipped. To disable this error and scale "
            f"the gradients by the non-finite norm anyway, set "
            f"`error_if_nonfinite=False`")
    with nogil:
        _clip_by_norm(b.data, b.sizes, b.ntensors, mx, total, is_f32, 0)
    return total


def clip_grad_value_(grads, clip_value):
    cdef double c = real(clip_value, "clip_value")
    cdef BufferSet b = _bind("grads", grads, WRITE)
    with nogil:
        _clip_value(b.data, b.sizes, b.ntensors, c, b.dtype == FLOAT32, 0)


def all_finite(arrays):
    cdef BufferSet b = _bind("arrays", arrays, READ)
    cdef bint ok
    with nogil:
        ok = _all_finite(b.data, b.sizes, b.ntensors, b.dtype == FLOAT32, 0)
    return ok


def unscale_(grads, inv_scale):
    cdef double inv = real(inv_scale, "inv_scale")
    cdef BufferSet b = _bind("grads", grads, WRITE)
    cdef bint found
    with nogil:
        found = _unscale(b.data, b.sizes, b.ntensors, inv, b.dtype == FLOAT32, 0)
    return found


# The docstrings are in optcore/_docstrings.py (shared with optcore.reference).
_assign_docs(globals(), ("global_norm", "clip_grad_norm_", "clip_grad_value_", "all_finite",
                        "unscale_"))
