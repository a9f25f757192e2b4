"""RAdam step (torch.optim.RAdam's update: L2 or decoupled weight decay,
maximize, variance rectification).

Per step (in double): rho_inf = 2 / (1 - beta2) - 1 and
rho_t = rho_inf - 2 * step * beta2**step / (1 - beta2**step). As in torch, the
adaptive (rectified) update is used when rho_t > 5, with
rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))**0.5;
otherwise the step is plain bias-corrected momentum.
Element update, in torch's operation order:
    g = ±grad;  decoupled: param *= 1 - lr * weight_decay,  else g += weight_decay * param
    exp_avg = lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * g * g
    u = exp_avg / (1 - beta1**step) * lr
    rho_t > 5:  u = u * ((1 / (sqrt(exp_avg_sq) + eps)) * sqrt(1 - beta2**step)) * rect
    param -= u
"""

from cython cimport floating
from libc.math cimport pow

from optcore.kernels._math cimport fsqrt, lerp
from optcore.kernels._runtime cimport run_segments, segment_fn
from optcore.kernels._buffers cimport BufferSet, bind, FLOAT32, WRITE, READ
from optcore.kernels._checks cimport (check_lr, check_eps, check_beta,
                                      check_weight_decay, check_step)


cdef struct RAdamCall:
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
    double bias_correction1
    double bias_correction2_sqrt
    double eps
    double lr
    double rect                # variance rectification term (when rectified)
    bint use_l2
    bint rectified             # rho_t > 5


cdef void _prepare(RAdamCall* c, long long step, double lr, double beta1,
                   double beta2, double eps, double weight_decay, bint decoupled,
                   bint maximize) noexcept nogil:
    cdef double s = <double>step
    cdef double bias_correction2 = 1.0 - pow(beta2, s)
    cdef double rho_inf = 2.0 / (1.0 - beta2) - 1.0
    cdef double rho_t = rho_inf - 2.0 * s * pow(beta2, s) / bias_correction2
    c.grad_sign = -1.0 if maximize else 1.0
    c.use_l2 = weight_decay != 0.0 and not decoupled
    c.l2 = weight_decay if c.use_l2 else 0.0
    # torch skips the decay when weight_decay == 0 (1 - inf * 0 would be NaN)
    c.decay = 1.0 - lr * weight_decay if (decoupled and weight_decay != 0.0) else 1.0
    c.w1 = 1.0 - beta1
    c.beta2 = beta2
    c.one_minus_beta2 = 1.0 - beta2
    c.bias_correction1 = 1.0 - pow(beta1, s)
    c.bias_correction2_sqrt = pow(bias_correction2, 0.5)
    c.eps = eps
    c.lr = lr
    c.rectified = rho_t > 5.0
    if c.rectified:
        c.rect = pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                     / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.5)
    else:
        c.rect = 1.0


cdef void _radam_segment(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                         Py_ssize_t stop, floating dtype_tag) noexcept nogil:
    cdef const RAdamCall* c = <const RAdamCall*>ctx
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
    cdef floating bc1 = <floating>c.bias_correction1
    cdef floating bc2s = <floating>c.bias_correction2_sqrt
    cdef floating eps = <floating>c.eps
    cdef floating lr = <floating>c.lr
    cdef floating rect = <floating>c.rect
    cdef floating one = 1
    cdef floating gi, pi, mi, vi, ui
    if c.rectified:
        for i in range(n):
            gi = g[i] * sign
            pi = p[i] * decay
            if use_l2:
                gi = gi + l2 * p[i]
            mi = lerp(m[i], gi, w1, one_minus_w1, low)
            vi = v[i] * beta2 + omb2 * gi * gi
            m[i] = mi
            v[i] = vi
            # torch evaluates bc2s / (sqrt(v) + eps) as a reciprocal times bc2s
            ui = mi / bc1 * lr * (one / (fsqrt(vi) + eps) * bc2s) * rect
            p[i] = pi - ui
    else:
        for i in range(n):
            gi = g[i] * sign
            pi = p[i] * decay
            if use_l2:
                gi = gi + l2 * p[i]
            mi = lerp(m[i], gi, w1, one_minus_w1, low)
            vi = v[i] * beta2 + omb2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = pi - mi / bc1 * lr


cdef void _segment_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _radam_segment[float](ctx, t, start, stop, 0)


cdef void _segment_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _radam_segment[double](ctx, t, start, stop, 0)


cdef inline void _run(void** param, void** grad, void** exp_avg, void** exp_avg_sq,
                      const Py_ssize_t* sizes, Py_ssize_t ntensors, long long step,
                      double lr, double beta1, double beta2, double eps,
                      double weight_decay, bint decoupled, bint maximize,
                      int num_threads, segment_fn fn) noexcept nogil:
    cdef RAdamCall c
    c.param = param
    c.grad = grad
    c.exp_avg = exp_avg
    c.exp_avg_sq = exp_avg_sq
    _prepare(&c, step, lr, beta1, beta2, eps, weight_decay, decoupled, maximize)
    run_segments(fn, &c, sizes, ntensors, num_threads)


# ---- C-level API (radam.pxd) -----------------------------------------------

cdef void radam_step_f32(float* param, const float* grad, float* exp_avg,
                         float* exp_avg_sq, Py_ssize_t n, long long step, double lr,
                         double beta1, double beta2, double eps, double weight_decay,
                         bint decoupled_weight_decay, bint maximize,
                         int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&exp_avg, <void**>&exp_avg_sq, &n,
         1, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay,
         maximize, num_threads, _segment_f32)


cdef void radam_step_f64(double* param, const double* grad, double* exp_avg,
                         double* exp_avg_sq, Py_ssize_t n, long long step, double lr,
                         double beta1, double beta2, double eps, double weight_decay,
                         bint decoupled_weight_decay, bint maximize,
                         int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&exp_avg, <void**>&exp_avg_sq, &n,
         1, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay,
         maximize, num_threads, _segment_f64)


cdef void radam_step_multi_f32(float** param, const float** grad, float** exp_avg,
                               float** exp_avg_sq, const Py_ssize_t* sizes,
                               Py_ssize_t ntensors, long long step, double lr,
                               double beta1, double beta2, double eps,
                               double weight_decay, bint decoupled_weight_decay,
                               bint maximize, int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>exp_avg, <void**>exp_avg_sq, sizes,
         ntensors, step, lr, beta1, beta2, eps, weight_decay,
         decoupled_weight_decay, maximize, num_threads, _segment_f32)


cdef void radam_step_multi_f64(double** param, const double** grad,
                               double** exp_avg, double** exp_avg_sq,
                               const Py_ssize_t* sizes, Py_ssize_t ntensors,
                               long long step, double lr, double beta1,
                               double beta2, double eps, double weight_decay,
                               bint decoupled_weight_decay, bint maximize,
                               int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>exp_avg, <void**>exp_avg_sq, sizes,
         ntensors, step, lr, beta1, beta2, eps, weight_decay,
         decoupled_weight_decay, maximize, num_threads, _segment_f64)


# ---- Python API ------------------------------------------------------------

cdef tuple _NAMES = ("param", "grad", "exp_avg", "exp_avg_sq")


def radam_step(param, grad, exp_avg, exp_avg_sq, *, step, double lr=1e-3,
               double beta1=0.9, double beta2=0.999, double eps=1e-8,
               double weight_decay=0.0, bint decoupled_weight_decay=False,
               bint maximize=False):
    """One RAdam step in place (torch.optim.RAdam's update).

    ``param``, ``exp_avg`` and ``exp_avg_sq`` are updated in place, ``grad`` is
    read. Each buffer argument is one array or a list of arrays (one native
    call for the list). ``step`` is the 1-based count of this update: it sets
    the bias corrections and the length of the approximated SMA, ``rho_t``;
    the rectified adaptive step applies when ``rho_t > 5`` (from step 6 with
    the default betas), plain bias-corrected momentum before. With
    ``decoupled_weight_decay`` the decay is ``param *= 1 - lr * weight_decay``,
    else L2 added to the gradient.
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
    cdef segment_fn fn = _segment_f32 if b.dtype == FLOAT32 else _segment_f64
    with nogil:
        _run(b.data, b.data + k, b.data + 2 * k, b.data + 3 * k, b.sizes, k, c_step,
             lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize,
             0, fn)
