"""Adamax step (torch.optim.Adamax's update: weight decay, maximize).

Element update, in torch's operation order:
    g = ±grad (+ weight_decay * param)
    exp_avg = lerp(exp_avg, g, 1 - beta1)
    exp_inf = maximum(exp_inf * beta2, |g| + eps)      (NaN propagates)
    param += (-clr * exp_avg) / exp_inf,   clr = lr / (1 - beta1**step)
"""

from cython cimport floating
from libc.math cimport pow

from optcore.kernels._math cimport fabs_, maximum, lerp
from optcore.kernels._runtime cimport run_segments, segment_fn
from optcore.kernels._buffers cimport BufferSet, bind, FLOAT32, WRITE, READ
from optcore.kernels._checks cimport (check_lr, check_eps, check_beta,
                                      check_weight_decay, check_step)


cdef struct AdamaxCall:
    void** param
    void** grad
    void** exp_avg
    void** exp_inf
    double grad_sign           # -1 when maximizing
    double weight_decay
    double w1                  # lerp weight 1 - beta1
    double beta2
    double eps
    double neg_clr             # -lr / (1 - beta1**step)


cdef void _adamax_segment(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                          Py_ssize_t stop, floating dtype_tag) noexcept nogil:
    cdef const AdamaxCall* c = <const AdamaxCall*>ctx
    cdef floating* p = <floating*>c.param[t] + start
    cdef const floating* g = <const floating*>c.grad[t] + start
    cdef floating* m = <floating*>c.exp_avg[t] + start
    cdef floating* u = <floating*>c.exp_inf[t] + start
    cdef Py_ssize_t i, n = stop - start
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign = <floating>c.grad_sign
    cdef floating wd = <floating>c.weight_decay
    cdef bint use_wd = c.weight_decay != 0.0
    cdef floating w1 = <floating>c.w1
    cdef floating one_minus_w1 = 1 - w1
    cdef bint low = w1 < 0.5
    cdef floating beta2 = <floating>c.beta2
    cdef floating eps = <floating>c.eps
    cdef floating neg_clr = <floating>c.neg_clr
    cdef floating gi, mi, ui
    for i in range(n):
        gi = g[i] * sign
        if use_wd:
            gi = gi + wd * p[i]
        mi = lerp(m[i], gi, w1, one_minus_w1, low)
        ui = maximum(u[i] * beta2, fabs_(gi) + eps)
        m[i] = mi
        u[i] = ui
        p[i] = p[i] + neg_clr * mi / ui


cdef void _segment_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _adamax_segment[float](ctx, t, start, stop, 0)


cdef void _segment_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _adamax_segment[double](ctx, t, start, stop, 0)


cdef inline void _run(void** param, void** grad, void** exp_avg, void** exp_inf,
                      const Py_ssize_t* sizes, Py_ssize_t ntensors, long long step,
                      double lr, double beta1, double beta2, double eps,
                      double weight_decay, bint maximize, int num_threads,
                      segment_fn fn) noexcept nogil:
    cdef AdamaxCall c
    c.param = param
    c.grad = grad
    c.exp_avg = exp_avg
    c.exp_inf = exp_inf
    c.grad_sign = -1.0 if maximize else 1.0
    c.weight_decay = weight_decay
    c.w1 = 1.0 - beta1
    c.beta2 = beta2
    c.eps = eps
    c.neg_clr = -(lr / (1.0 - pow(beta1, <double>step)))
    run_segments(fn, &c, sizes, ntensors, num_threads)


# ---- C-level API (adamax.pxd) ----------------------------------------------

cdef void adamax_step_f32(float* param, const float* grad, float* exp_avg,
                          float* exp_inf, Py_ssize_t n, long long step, double lr,
                          double beta1, double beta2, double eps,
                          double weight_decay, bint maximize,
                          int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&exp_avg, <void**>&exp_inf, &n, 1,
         step, lr, beta1, beta2, eps, weight_decay, maximize, num_threads,
         _segment_f32)


cdef void adamax_step_f64(double* param, const double* grad, double* exp_avg,
                          double* exp_inf, Py_ssize_t n, long long step, double lr,
                          double beta1, double beta2, double eps,
                          double weight_decay, bint maximize,
                          int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&exp_avg, <void**>&exp_inf, &n, 1,
         step, lr, beta1, beta2, eps, weight_decay, maximize, num_threads,
         _segment_f64)


cdef void adamax_step_multi_f32(float** param, const float** grad, float** exp_avg,
                                float** exp_inf, const Py_ssize_t* sizes,
                                Py_ssize_t ntensors, long long step, double lr,
                                double beta1, double beta2, double eps,
                                double weight_decay, bint maximize,
                                int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>exp_avg, <void**>exp_inf, sizes,
         ntensors, step, lr, beta1, beta2, eps, weight_decay, maximize, num_threads,
         _segment_f32)


cdef void adamax_step_multi_f64(double** param, const double** grad,
                                double** exp_avg, double** exp_inf,
                                const Py_ssize_t* sizes, Py_ssize_t ntensors,
                                long long step, double lr, double beta1,
                                double beta2, double eps, double weight_decay,
                                bint maximize, int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>exp_avg, <void**>exp_inf, sizes,
         ntensors, step, lr, beta1, beta2, eps, weight_decay, maximize, num_threads,
         _segment_f64)


# ---- Python API ------------------------------------------------------------

cdef tuple _NAMES = ("param", "grad", "exp_avg", "exp_inf")


def adamax_step(param, grad, exp_avg, exp_inf, *, step, double lr=2e-3,
                double beta1=0.9, double beta2=0.999, double eps=1e-8,
                double weight_decay=0.0, bint maximize=False):
    """One Adamax step in place (torch.optim.Adamax's update).

    ``param``, ``exp_avg`` and ``exp_inf`` are updated in place, ``grad`` is
    read. Each buffer argument is one array or a list of arrays (one native
    call for the list). ``step`` is the 1-based count of this update (it sets
    the bias correction ``1 - beta1**step``).
    """
    cdef long long c_step = check_step(step)
    check_lr(lr)
    check_eps(eps)
    check_beta(beta1, 0, "beta1")
    check_beta(beta2, 1, "beta2")
    check_weight_decay(weight_decay)
    cdef BufferSet b = bind(_NAMES, (param, grad, exp_avg, exp_inf),
                            (WRITE, READ, WRITE, WRITE))
    cdef Py_ssize_t k = b.ntensors
    cdef segment_fn fn = _segment_f32 if b.dtype == FLOAT32 else _segment_f64
    with nogil:
        _run(b.data, b.data + k, b.data + 2 * k, b.data + 3 * k, b.sizes, k, c_step,
             lr, beta1, beta2, eps, weight_decay, maximize, 0, fn)
