"""NAdam step (torch.optim.NAdam's update: momentum decay, L2 or decoupled
weight decay, maximize).

Per step (in double): mu_t = beta1 * (1 - 0.5 * 0.96**(step * momentum_decay)),
mu_{t+1} likewise with step + 1, and the running product
mu_product' = mu_product * mu_t, which the caller keeps between steps (torch's
state key ``mu_product``, 1.0 before the first step).
Element update, in torch's operation order:
    g = ±grad;  decoupled: param *= 1 - lr * weight_decay,  else g += weight_decay * param
    exp_avg = lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * g * g
    denom = sqrt(exp_avg_sq / (1 - beta2**step)) + eps
    param += (-lr * (1 - mu_t) / (1 - mu_product')) * g / denom
    param += (-lr * mu_{t+1} / (1 - mu_product' * mu_{t+1})) * exp_avg / denom
"""

from cython cimport floating
from libc.math cimport pow

from optcore.kernels._math cimport fsqrt, lerp
from optcore.kernels._runtime cimport run_segments, segment_fn
from optcore.kernels._buffers cimport BufferSet, bind, FLOAT32, WRITE, READ
from optcore.kernels._checks cimport (check_lr, check_eps, check_beta,
                                      check_weight_decay, check_nonneg, check_step)


cdef struct NAdamCall:
    void** param
    void** grad
    void** exp_avg
    void** exp_avg_sq
    # per-step scalars, computed once in double
    double grad_sign           # -1 when maximizing
    double l2                  # weight decay added to the gradient
    double decay               # 1 - lr * weight_decay when decoupled, else 1
    double w1                  # lerp weight 1 - beta1
    double beta2
    double one_minus_beta2
    double bias_correction2
    double eps
    double grad_coef           # -lr * (1 - mu_t) / (1 - mu_product')
    double avg_coef            # -lr * mu_{t+1} / (1 - mu_product' * mu_{t+1})
    bint use_l2


cdef double _prepare(NAdamCall* c, long long step, double mu_product, double lr,
                     double beta1, double beta2, double eps, double weight_decay,
                     double momentum_decay, bint decoupled,
                     bint maximize) noexcept nogil:
    """Fill the per-step scalars; return the new mu_product."""
    cdef double s = <double>step
    cdef double mu = beta1 * (1.0 - 0.5 * pow(0.96, s * momentum_decay))
    cdef double mu_next = beta1 * (1.0 - 0.5 * pow(0.96, (s + 1.0) * momentum_decay))
    cdef double mu_product_new = mu_product * mu
    c.grad_sign = -1.0 if maximize else 1.0
    c.use_l2 = weight_decay != 0.0 and not decoupled
    c.l2 = weight_decay if c.use_l2 else 0.0
    # torch skips the decay when weight_decay == 0 (1 - inf * 0 would be NaN)
    c.decay = 1.0 - lr * weight_decay if (decoupled and weight_decay != 0.0) else 1.0
    c.w1 = 1.0 - beta1
    c.beta2 = beta2
    c.one_minus_beta2 = 1.0 - beta2
    c.bias_correction2 = 1.0 - pow(beta2, s)
    c.eps = eps
    c.grad_coef = -lr * (1.0 - mu) / (1.0 - mu_product_new)
    c.avg_coef = -lr * mu_next / (1.0 - mu_product_new * mu_next)
    return mu_product_new


cdef void _nadam_segment(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                         Py_ssize_t stop, floating dtype_tag) noexcept nogil:
    cdef const NAdamCall* c = <const NAdamCall*>ctx
    cdef floating* p = <floating*>c.param[t] + start
    cdef const floating* g = <const floating*>c.grad[t] + start
    cdef floating* m = <floating*>c.exp_avg[t] + start
    cdef floating* v = <floating*>c.exp_avg_sq[t] + start
    cdef Py_ssize_t i, n = stop - start
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign = <floating>c.grad_sign
    cdef floating l2 = <floating>c.l2
    cdef bint use_l2 = c.use_l2
    cdef floating decay = <floating>c.decay
    cdef floating w1 = <floating>c.w1
    cdef floating one_minus_w1 = 1 - w1
    cdef bint low = w1 < 0.5
    cdef floating beta2 = <floating>c.beta2
    cdef floating omb2 = <floating>c.one_minus_beta2
    cdef floating bc2 = <floating>c.bias_correction2
    cdef floating eps = <floating>c.eps
    cdef floating cg = <floating>c.grad_coef
    cdef floating ca = <floating>c.avg_coef
    cdef floating gi, pi, mi, vi, denom
    for i in range(n):
        gi = g[i] * sign
        pi = p[i] * decay
        if use_l2:
            gi = gi + l2 * p[i]
        mi = lerp(m[i], gi, w1, one_minus_w1, low)
        vi = v[i] * beta2 + omb2 * gi * gi
        m[i] = mi
        v[i] = vi
        denom = fsqrt(vi / bc2) + eps
        pi = pi + cg * gi / denom
        p[i] = pi + ca * mi / denom


cdef void _segment_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _nadam_segment[float](ctx, t, start, stop, 0)


cdef void _segment_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _nadam_segment[double](ctx, t, start, stop, 0)


cdef inline double _run(void** param, void** grad, void** exp_avg, void** exp_avg_sq,
                        const Py_ssize_t* sizes, Py_ssize_t ntensors,
                        long long step, double mu_product, double lr, double beta1,
                        double beta2, double eps, double weight_decay,
                        double momentum_decay, bint decoupled, bint maximize,
                        int num_threads, segment_fn fn) noexcept nogil:
    cdef NAdamCall c
    cdef double mu_product_new
    c.param = param
    c.grad = grad
    c.exp_avg = exp_avg
    c.exp_avg_sq = exp_avg_sq
    mu_product_new = _prepare(&c, step, mu_product, lr, beta1, beta2, eps,
                              weight_decay, momentum_decay, decoupled, maximize)
    run_segments(fn, &c, sizes, ntensors, num_threads)
    return mu_product_new


# ---- C-level API (nadam.pxd) -----------------------------------------------

cdef double nadam_step_f32(float* param, const float* grad, float* exp_avg,
                           float* exp_avg_sq, Py_ssize_t n, long long step,
                           double mu_product, double lr, double beta1, double beta2,
                           double eps, double weight_decay, double momentum_decay,
                           bint decoupled_weight_decay, bint maximize,
                           int num_threads) noexcept nogil:
    return _run(<void**>&param, <void**>&grad, <void**>&exp_avg,
                <void**>&exp_avg_sq, &n, 1, step, mu_product, lr, beta1, beta2, eps,
                weight_decay, momentum_decay, decoupled_weight_decay, maximize,
                num_threads, _segment_f32)


cdef double nadam_step_f64(double* param, const double* grad, double* exp_avg,
                           double* exp_avg_sq, Py_ssize_t n, long long step,
                           double mu_product, double lr, double beta1, double beta2,
                           double eps, double weight_decay, double momentum_decay,
                           bint decoupled_weight_decay, bint maximize,
                           int num_threads) noexcept nogil:
    return _run(<void**>&param, <void**>&grad, <void**>&exp_avg,
                <void**>&exp_avg_sq, &n, 1, step, mu_product, lr, beta1, beta2, eps,
                weight_decay, momentum_decay, decoupled_weight_decay, maximize,
                num_threads, _segment_f64)


cdef double nadam_step_multi_f32(float** param, const float** grad, float** exp_avg,
                                 float** exp_avg_sq, const Py_ssize_t* sizes,
                                 Py_ssize_t ntensors, long long step,
                                 double mu_product, double lr, double beta1,
                                 double beta2, double eps, double weight_decay,
                                 double momentum_decay, bint decoupled_weight_decay,
                                 bint maximize, int num_threads) noexcept nogil:
    return _run(<void**>param, <void**>grad, <void**>exp_avg, <void**>exp_avg_sq,
                sizes, ntensors, step, mu_product, lr, beta1, beta2, eps,
                weight_decay, momentum_decay, decoupled_weight_decay, maximize,
                num_threads, _segment_f32)


cdef double nadam_step_multi_f64(double** param, const double** grad,
                                 double** exp_avg, double** exp_avg_sq,
                                 const Py_ssize_t* sizes, Py_ssize_t ntensors,
                                 long long step, double mu_product, double lr,
                                 double beta1, double beta2, double eps,
                                 double weight_decay, double momentum_decay,
                                 bint decoupled_weight_decay, bint maximize,
                                 int num_threads) noexcept nogil:
    return _run(<void**>param, <void**>grad, <void**>exp_avg, <void**>exp_avg_sq,
                sizes, ntensors, step, mu_product, lr, beta1, beta2, eps,
                weight_decay, momentum_decay, decoupled_weight_decay, maximize,
                num_threads, _segment_f64)


# ---- Python API ------------------------------------------------------------

cdef tuple _NAMES = ("param", "grad", "exp_avg", "exp_avg_sq")


def nadam_step(param, grad, exp_avg, exp_avg_sq, *, step,
               double mu_product, double lr=2e-3, double beta1=0.9,
               double beta2=0.999, double eps=1e-8, double weight_decay=0.0,
               double momentum_decay=4e-3, bint decoupled_weight_decay=False,
               bint maximize=False):
    """One NAdam step in place (torch.optim.NAdam's update); returns the new
    ``mu_product``.

    ``param``, ``exp_avg`` and ``exp_avg_sq`` are updated in place, ``grad`` is
    read. ``mu_product`` is NAdam's scalar state (torch's state key of that
    name): pass 1.0 at step 1, then the value the previous call returned. It is
    kept in double precision whatever the buffers' dtype. Each buffer argument
    is one array or a list of arrays (one native call for the list; they share
    one ``mu_product``). ``step`` is the 1-based count of this update. With
    ``decoupled_weight_decay`` the decay is ``param *= 1 - lr * weight_decay``
    (NAdamW), else L2 added to the gradient.
    """
    cdef long long c_step = check_step(step)
    check_lr(lr)
    check_eps(eps)
    check_beta(beta1, 0, "beta1")
    check_beta(beta2, 1, "beta2")
    check_weight_decay(weight_decay)
    check_nonneg(momentum_decay, "momentum_decay", "momentum_decay")
    cdef BufferSet b = bind(_NAMES, (param, grad, exp_avg, exp_avg_sq),
                            (WRITE, READ, WRITE, WRITE))
    cdef Py_ssize_t k = b.ntensors
    cdef segment_fn fn = _segment_f32 if b.dtype == FLOAT32 else _segment_f64
    cdef double result
    with nogil:
        result = _run(b.data, b.data + k, b.data + 2 * k, b.data + 3 * k, b.sizes,
                      k, c_step, mu_product, lr, beta1, beta2, eps, weight_decay,
                      momentum_decay, decoupled_weight_decay, maximize, 0, fn)
    return result
