"""LAMB step (You et al. 2019, "Large Batch Optimization for Deep Learning:
Training BERT in 76 minutes", Algorithm 2; optax.lamb).

With ``g`` the gradient (negated when maximizing), per tensor::

    m = beta1 * m + (1 - beta1) * g                 # exp_avg
    v = beta2 * v + (1 - beta2) * g * g             # exp_avg_sq
    u = (m * c1) / (sqrt(v * c2) + eps) + weight_decay * p
          with c1 = 1 / (1 - beta1**step), c2 = 1 / (1 - beta2**step)
    r = ||p|| / ||u||     (r = 1 when either norm is 0, as optax does)
    p = p - (lr * r) * u

The norms are those of each tensor (layer-wise trust ratio), accumulated in
double over fixed blocks added in a fixed order, so the update has the same
bits for any thread count. The bias corrections are applied as products with
their reciprocals (computed once in double): optax divides, which differs by
an ulp at most and costs two more divisions per element and pass (the kernel
is bound by its divisions and square root, not by memory, in float32).

Passes: (1) one blocked reduction over the whole call updates m and v and
produces the block sums of p*p and u*u (reduce_blocks); the sums are folded per
tensor into r, and (2) one elementwise pass recomputes u from the new m, v and
the untouched p (the same operations, so the same bits as in pass 1) and
applies it. Recomputing u costs less than writing and re-reading a scratch
copy of it. Two parallel regions per call, whatever the number of tensors.
"""

from cython cimport floating
from libc.math cimport pow, sqrt
from libc.string cimport memset
from libc.stdlib cimport malloc, free

from optcore.kernels._math cimport fsqrt, sum_squares
from optcore.kernels._runtime cimport (run_segments, segment_fn, reduce_blocks,
                                       block_fn, REDUCE_BLOCK)
from optcore.kernels._buffers cimport BufferSet, bind, FLOAT32, WRITE, READ
from optcore.kernels._checks cimport (check_lr, check_eps, check_beta,
                                      check_weight_decay, check_step)

cdef enum:
    STACK_TENSORS = 8  # per-tensor sums kept on the stack up to this many tensors


cdef struct LambCall:
    void** param
    void** grad
    void** exp_avg
    void** exp_avg_sq
    # per-step scalars, computed once in double
    double grad_sign           # -1 when maximizing
    double beta1
    double one_minus_beta1
    double beta2
    double one_minus_beta2
    double inv_bias_correction1    # 1 / (1 - beta1**step)
    double inv_bias_correction2    # 1 / (1 - beta2**step)
    double eps
    double weight_decay
    # per tensor: sums of p*p and u*u (pass 1), then -lr * r (pass 2)
    double* sums               # sums[2 * t], sums[2 * t + 1]
    double* neg_step


cdef inline floating _update(floating mi, floating vi, floating pi, floating c1,
                             floating c2, floating eps, floating wd,
                             bint use_wd) noexcept nogil:
    # u = m_hat / (sqrt(v_hat) + eps) + wd * p, in the buffer's type;
    # c1, c2: reciprocals of the bias corrections.
    cdef floating u = (mi * c1) / (fsqrt(vi * c2) + eps)
    if use_wd:
        u = u + wd * pi
    return u


cdef void _moments_block(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                         Py_ssize_t stop, double* out, floating dtype_tag) noexcept nogil:
    # Pass 1 over one block: update m and v; out = (sum p*p, sum u*u). u goes
    # through a block-sized buffer on the stack (it stays in L1): two simple
    # loops vectorise better than one that also carries 16 accumulators.
    cdef const LambCall* c = <const LambCall*>ctx
    cdef const floating* p = <const floating*>c.param[t] + start
    cdef const floating* g = <const floating*>c.grad[t] + start
    cdef floating* m = <floating*>c.exp_avg[t] + start
    cdef floating* v = <floating*>c.exp_avg_sq[t] + start
    cdef Py_ssize_t i, n = stop - start
    cdef floating sign = <floating>c.grad_sign
    cdef floating b1 = <floating>c.beta1
    cdef floating omb1 = <floating>c.one_minus_beta1
    cdef floating b2 = <floating>c.beta2
    cdef floating omb2 = <floating>c.one_minus_beta2
    cdef floating c1 = <floating>c.inv_bias_correction1
    cdef floating c2 = <floating>c.inv_bias_correction2
    cdef floating eps = <floating>c.eps
    cdef floating wd = <floating>c.weight_decay
    cdef bint use_wd = c.weight_decay != 0.0
    cdef floating gi, mi, vi
    cdef floating u[REDUCE_BLOCK]
    for i in range(n):
        gi = g[i] * sign
        mi = b1 * m[i] + omb1 * gi
        vi = b2 * v[i] + omb2 * gi * gi
        m[i] = mi
        v[i] = vi
        u[i] = _update(mi, vi, p[i], c1, c2, eps, wd, use_wd)
    out[0] = sum_squares(p, n)
    out[1] = sum_squares(<const floating*>u, n)


cdef void _apply_segment(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                         Py_ssize_t stop, floating dtype_tag) noexcept nogil:
    # Pass 2: p = p - lr * r * u, with u recomputed from the new m and v.
    cdef const LambCall* c = <const LambCall*>ctx
    cdef floating* p = <floating*>c.param[t] + start
    cdef const floating* m = <const floating*>c.exp_avg[t] + start
    cdef const floating* v = <const floating*>c.exp_avg_sq[t] + start
    cdef Py_ssize_t i, n = stop - start
    cdef floating c1 = <floating>c.inv_bias_correction1
    cdef floating c2 = <floating>c.inv_bias_correction2
    cdef floating eps = <floating>c.eps
    cdef floating wd = <floating>c.weight_decay
    cdef bint use_wd = c.weight_decay != 0.0
    cdef floating neg_step = <floating>c.neg_step[t]
    for i in range(n):
        p[i] = p[i] + neg_step * _update(m[i], v[i], p[i], c1, c2, eps, wd, use_wd)


cdef void _block_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                     double* out) noexcept nogil:
    _moments_block[float](ctx, t, start, stop, out, 0)


cdef void _block_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                     double* out) noexcept nogil:
    _moments_block[double](ctx, t, start, stop, out, 0)


cdef void _apply_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                     Py_ssize_t stop) noexcept nogil:
    _apply_segment[float](ctx, t, start, stop, 0)


cdef void _apply_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                     Py_ssize_t stop) noexcept nogil:
    _apply_segment[double](ctx, t, start, stop, 0)


cdef void _fold(void* acc, Py_ssize_t t, const double* out) noexcept nogil:
    cdef double* sums = <double*>acc
    sums[2 * t] += out[0]
    sums[2 * t + 1] += out[1]


cdef inline void _run(void** param, void** grad, void** exp_avg, void** exp_avg_sq,
                      const Py_ssize_t* sizes, Py_ssize_t ntensors, long long step,
                      double lr, double beta1, double beta2, double eps,
                      double weight_decay, bint maximize, int num_threads,
                      bint is_f32, double* scratch) noexcept nogil:
    # scratch: 3 * ntensors doubles (two sums and the step of each tensor).
    cdef LambCall c
    cdef Py_ssize_t t
    cdef double pn, un, ratio
    c.param = param
    c.grad = grad
    c.exp_avg = exp_avg
    c.exp_avg_sq = exp_avg_sq
    c.grad_sign = -1.0 if maximize else 1.0
    c.beta1 = beta1
    c.one_minus_beta1 = 1.0 - beta1
    c.beta2 = beta2
    c.one_minus_beta2 = 1.0 - beta2
    c.inv_bias_correction1 = 1.0 / (1.0 - pow(beta1, <double>step))
    c.inv_bias_correction2 = 1.0 / (1.0 - pow(beta2, <double>step))
    c.eps = eps
    c.weight_decay = weight_decay
    c.sums = scratch
    c.neg_step = scratch + 2 * ntensors
    memset(scratch, 0, 2 * ntensors * sizeof(double))
    reduce_blocks(_block_f32 if is_f32 else _block_f64, &c, _fold, c.sums, sizes,
                  ntensors, 2, num_threads)
    for t in range(ntensors):
        pn = sqrt(c.sums[2 * t])
        un = sqrt(c.sums[2 * t + 1])
        ratio = 1.0 if (pn == 0.0 or un == 0.0) else pn / un
        c.neg_step[t] = -(lr * ratio)
    run_segments(_apply_f32 if is_f32 else _apply_f64, &c, sizes, ntensors,
                 num_threads)


cdef inline int _run_alloc(void** param, void** grad, void** exp_avg,
                           void** exp_avg_sq, const Py_ssize_t* sizes,
                           Py_ssize_t ntensors, long long step, double lr,
                           double beta1, double beta2, double eps,
                           double weight_decay, bint maximize, int num_threads,
                           bint is_f32) noexcept nogil:
    cdef double local[3 * STACK_TENSORS]
    cdef double* scratch = local
    if ntensors > STACK_TENSORS:
        scratch = <double*>malloc(3 * ntensors * sizeof(double))
        if scratch == NULL:
            return -1
    _run(param, grad, exp_avg, exp_avg_sq, sizes, ntensors, step, lr, beta1, beta2,
         eps, weight_decay, maximize, num_threads, is_f32, scratch)
    if scratch != local:
        free(scratch)
    return 0


# ---- C-level API (lamb.pxd) ------------------------------------------------

cdef void lamb_step_f32(float* param, const float* grad, float* exp_avg,
                        float* exp_avg_sq, Py_ssize_t n, long long step, double lr,
                        double beta1, double beta2, double eps, double weight_decay,
                        bint maximize, int num_threads) noexcept nogil:
    _run_alloc(<void**>&param, <void**>&grad, <void**>&exp_avg, <void**>&exp_avg_sq,
               &n, 1, step, lr, beta1, beta2, eps, weight_decay, maximize,
               num_threads, True)


cdef void lamb_step_f64(double* param, const double* grad, double* exp_avg,
                        double* exp_avg_sq, Py_ssize_t n, long long step, double lr,
                        double beta1, double beta2, double eps, double weight_decay,
                        bint maximize, int num_threads) noexcept nogil:
    _run_alloc(<void**>&param, <void**>&grad, <void**>&exp_avg, <void**>&exp_avg_sq,
               &n, 1, step, lr, beta1, beta2, eps, weight_decay, maximize,
               num_threads, False)


cdef int lamb_step_multi_f32(float** param, const float** grad, float** exp_avg,
                             float** exp_avg_sq, const Py_ssize_t* sizes,
                             Py_ssize_t ntensors, long long step, double lr,
                             double beta1, double beta2, double eps,
                             double weight_decay, bint maximize,
                             int num_threads) noexcept nogil:
    return _run_alloc(<void**>param, <void**>grad, <void**>exp_avg,
                      <void**>exp_avg_sq, sizes, ntensors, step, lr, beta1, beta2,
                      eps, weight_decay, maximize, num_threads, True)


cdef int lamb_step_multi_f64(double** param, const double** grad, double** exp_avg,
                             double** exp_avg_sq, const Py_ssize_t* sizes,
                             Py_ssize_t ntensors, long long step, double lr,
                             double beta1, double beta2, double eps,
                             double weight_decay, bint maximize,
                             int num_threads) noexcept nogil:
    return _run_alloc(<void**>param, <void**>grad, <void**>exp_avg,
                      <void**>exp_avg_sq, sizes, ntensors, step, lr, beta1, beta2,
                      eps, weight_decay, maximize, num_threads, False)


# ---- Python API ------------------------------------------------------------

cdef tuple _NAMES = ("param", "grad", "exp_avg", "exp_avg_sq")


def lamb_step(param, grad, exp_avg, exp_avg_sq, *, step, double lr=1e-3,
              double beta1=0.9, double beta2=0.999, double eps=1e-6,
              double weight_decay=0.0, bint maximize=False):
    """One LAMB step in place (You et al. 2019, Algorithm 2; optax.lamb).

    Adam moments with bias correction,
    ``u = exp_avg_hat / (sqrt(exp_avg_sq_hat) + eps) + weight_decay * param``
    (``x_hat = x * (1 / (1 - beta**step))``), then ``param -= lr * r * u`` with the trust ratio
    ``r = ||param|| / ||u||`` of each tensor (1 when either norm is 0). The
    moments are ``exp_avg = beta1 * exp_avg + (1 - beta1) * grad`` and
    ``exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad**2`` (``grad``
    negated when ``maximize``). Each buffer argument is one array or a list of
    arrays (one native call; one trust ratio per tensor of the list). The
    norms are accumulated in double and have the same bits for any thread count.
    """
    cdef long long c_step = check_step(step)
    check_lr(lr)
    check_eps(eps)
    check_beta(beta1, 0, "beta1")
    check_beta(beta2, 1, "beta2")
    check_weight_decay(weight_decay)
    cdef BufferSet b = bind(_NAMES, (param, grad, exp_avg, exp_avg_sq),
                            (WRITE, READ, WRITE, WRITE))
    cdef Py_ssize_t k = b.ntensors
    cdef bint is_f32 = b.dtype == FLOAT32
    cdef double* scratch = <double*>malloc(max(1, 3 * k) * sizeof(double))
    if scratch == NULL:
        raise MemoryError()
    with nogil:
        _run(b.data, b.data + k, b.data + 2 * k, b.data + 3 * k, b.sizes, k, c_step,
             lr, beta1, beta2, eps, weight_decay, maximize, 0, is_f32, scratch)
    free(scratch)
