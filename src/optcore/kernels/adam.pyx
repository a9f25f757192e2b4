"""Adam and AdamW steps (torch.optim.Adam / AdamW update rules).

Three layers: the element update (inline), a loop over one contiguous slice
(`_adam_segment`, vectorised by the compiler), and the Python wrappers that
check every argument before the first write.
"""

from cython cimport floating
from libc.math cimport pow

from optcore.kernels._math cimport fsqrt, maximum, lerp
from optcore.kernels._runtime cimport run_segments, segment_fn
from optcore.kernels._buffers cimport (BufferSet, bind, FLOAT32, WRITE, READ,
                                       ABSENT)
from optcore.kernels._checks cimport (check_lr, check_eps, check_beta,
                                      check_weight_decay, check_step)


cdef struct AdamCall:
    void** param
    void** grad
    void** exp_avg
    void** exp_avg_sq
    void** max_exp_avg_sq
    # per-step scalars, computed once in double
    double grad_sign           # -1 when maximizing
    double l2                  # weight decay added to the gradient (Adam)
    double decay               # 1 - lr * weight_decay (AdamW), else 1
    double w1                  # lerp weight 1 - beta1
    double beta2
    double one_minus_beta2
    double bias_correction2_sqrt
    double eps
    double neg_step_size       # -lr / (1 - beta1**step)
    bint use_l2


cdef void _prepare(AdamCall* c, long long step, double lr, double beta1,
                   double beta2, double eps, double weight_decay, bint decoupled,
                   bint maximize) noexcept nogil:
    c.grad_sign = -1.0 if maximize else 1.0
    c.use_l2 = weight_decay != 0.0 and not decoupled
    c.l2 = weight_decay if c.use_l2 else 0.0
    # torch skips the decay when weight_decay == 0 (1 - inf * 0 would be NaN)
    c.decay = 1.0 - lr * weight_decay if (decoupled and weight_decay != 0.0) else 1.0
    c.w1 = 1.0 - beta1
    c.beta2 = beta2
    c.one_minus_beta2 = 1.0 - beta2
    c.bias_correction2_sqrt = pow(1.0 - pow(beta2, <double>step), 0.5)
    c.eps = eps
    c.neg_step_size = -(lr / (1.0 - pow(beta1, <double>step)))


cdef void _adam_segment(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                        Py_ssize_t stop, floating dtype_tag) noexcept nogil:
    cdef const AdamCall* c = <const AdamCall*>ctx
    cdef floating* p = <floating*>c.param[t] + start
    cdef const floating* g = <const floating*>c.grad[t] + start
    cdef floating* m = <floating*>c.exp_avg[t] + start
    cdef floating* v = <floating*>c.exp_avg_sq[t] + start
    cdef floating* vmax = NULL
    cdef Py_ssize_t i, n = stop - start
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign = <floating>c.grad_sign
    cdef floating l2 = <floating>c.l2
    cdef floating decay = <floating>c.decay
    cdef floating w1 = <floating>c.w1
    cdef floating one_minus_w1 = 1 - w1
    cdef bint low = w1 < 0.5
    cdef floating beta2 = <floating>c.beta2
    cdef floating omb2 = <floating>c.one_minus_beta2
    cdef floating bc2s = <floating>c.bias_correction2_sqrt
    cdef floating eps = <floating>c.eps
    cdef floating nss = <floating>c.neg_step_size
    cdef bint use_l2 = c.use_l2
    cdef floating gi, pi, mi, vi, vm
    if c.max_exp_avg_sq == NULL:
        for i in range(n):
            gi = g[i] * sign
            pi = p[i] * decay
            if use_l2:
                gi = gi + l2 * p[i]
            mi = lerp(m[i], gi, w1, one_minus_w1, low)
            vi = v[i] * beta2 + omb2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = pi + nss * mi / (fsqrt(vi) / bc2s + eps)
    else:
        vmax = <floating*>c.max_exp_avg_sq[t] + start
        for i in range(n):
            gi = g[i] * sign
            pi = p[i] * decay
            if use_l2:
                gi = gi + l2 * p[i]
            mi = lerp(m[i], gi, w1, one_minus_w1, low)
            vi = v[i] * beta2 + omb2 * gi * gi
            vm = maximum(vmax[i], vi)
            m[i] = mi
            v[i] = vi
            vmax[i] = vm
            p[i] = pi + nss * mi / (fsqrt(vm) / bc2s + eps)


cdef void _segment_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _adam_segment[float](ctx, t, start, stop, 0)


cdef void _segment_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _adam_segment[double](ctx, t, start, stop, 0)


cdef inline void _run(void** param, void** grad, void** exp_avg, void** exp_avg_sq,
                      void** max_exp_avg_sq, const Py_ssize_t* sizes,
                      Py_ssize_t ntensors, long long step, double lr, double beta1,
                      double beta2, double eps, double weight_decay, bint decoupled,
                      bint amsgrad, bint maximize, int num_threads,
                      segment_fn fn) noexcept nogil:
    cdef AdamCall c
    c.param = param
    c.grad = grad
    c.exp_avg = exp_avg
    c.exp_avg_sq = exp_avg_sq
    c.max_exp_avg_sq = max_exp_avg_sq if amsgrad else NULL
    _prepare(&c, step, lr, beta1, beta2, eps, weight_decay, decoupled, maximize)
    run_segments(fn, &c, sizes, ntensors, num_threads)


# ---- C-level API (adam.pxd) ----------------------------------------------

cdef void adam_step_f32(float* param, const float* grad, float* exp_avg,
                        float* exp_avg_sq, float* max_exp_avg_sq, Py_ssize_t n,
                        long long step, double lr, double beta1, double beta2,
                        double eps, double weight_decay, bint decoupled_weight_decay,
                        bint amsgrad, bint maximize, int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&exp_avg, <void**>&exp_avg_sq,
         <void**>&max_exp_avg_sq, &n, 1, step, lr, beta1, beta2, eps, weight_decay,
         decoupled_weight_decay, amsgrad, maximize, num_threads, _segment_f32)


cdef void adam_step_f64(double* param, const double* grad, double* exp_avg,
                        double* exp_avg_sq, double* max_exp_avg_sq, Py_ssize_t n,
                        long long step, double lr, double beta1, double beta2,
                        double eps, double weight_decay, bint decoupled_weight_decay,
                        bint amsgrad, bint maximize, int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&exp_avg, <void**>&exp_avg_sq,
         <void**>&max_exp_avg_sq, &n, 1, step, lr, beta1, beta2, eps, weight_decay,
         decoupled_weight_decay, amsgrad, maximize, num_threads, _segment_f64)


cdef void adam_step_multi_f32(float** param, const float** grad, float** exp_avg,
                              float** exp_avg_sq, float** max_exp_avg_sq,
                              const Py_ssize_t* sizes, Py_ssize_t ntensors,
                              long long step, double lr, double beta1, double beta2,
                              double eps, double weight_decay,
                              bint decoupled_weight_decay, bint amsgrad, bint maximize,
                              int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>exp_avg, <void**>exp_avg_sq,
         <void**>max_exp_avg_sq, sizes, ntensors, step, lr, beta1, beta2, eps,
         weight_decay, decoupled_weight_decay, amsgrad, maximize, num_threads,
         _segment_f32)


cdef void adam_step_multi_f64(double** param, const double** grad, double** exp_avg,
                              double** exp_avg_sq, double** max_exp_avg_sq,
                              const Py_ssize_t* sizes, Py_ssize_t ntensors,
                              long long step, double lr, double beta1, double beta2,
                              double eps, double weight_decay,
                              bint decoupled_weight_decay, bint amsgrad, bint maximize,
                              int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>exp_avg, <void**>exp_avg_sq,
         <void**>max_exp_avg_sq, sizes, ntensors, step, lr, beta1, beta2, eps,
         weight_decay, decoupled_weight_decay, amsgrad, maximize, num_threads,
         _segment_f64)


# ---- Python API ------------------------------------------------------------

cdef tuple _NAMES = ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


cdef _adam(param, grad, exp_avg, exp_avg_sq, step, double lr,
           double beta1, double beta2, double eps, double weight_decay,
           bint decoupled, bint amsgrad, max_exp_avg_sq, bint maximize):
    cdef long long c_step = check_step(step)
    check_lr(lr)
    check_eps(eps)
    check_beta(beta1, 0, "beta1")
    check_beta(beta2, 1, "beta2")
    check_weight_decay(weight_decay)
    cdef BufferSet b = bind(
        _NAMES, (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq),
        (WRITE, READ, WRITE, WRITE, WRITE if amsgrad else ABSENT))
    cdef Py_ssize_t k = b.ntensors
    cdef segment_fn fn = _segment_f32 if b.dtype == FLOAT32 else _segment_f64
    with nogil:
        _run(b.data, b.data + k, b.data + 2 * k, b.data + 3 * k, b.data + 4 * k,
             b.sizes, k, c_step, lr, beta1, beta2, eps, weight_decay, decoupled,
             amsgrad, maximize, 0, fn)


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, double lr=1e-3,
              double beta1=0.9, double beta2=0.999, double eps=1e-8,
              double weight_decay=0.0, bint decoupled_weight_decay=False,
              bint amsgrad=False, max_exp_avg_sq=None, bint maximize=False):
    """One Adam step in place (torch.optim.Adam's update).

    ``param``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with
    ``amsgrad``) are updated in place; ``grad`` is read. Each buffer argument is
    one array or a list of arrays (one native call for the whole list). ``step``
    is the 1-based count of this update. With ``decoupled_weight_decay`` the
    decay is AdamW's (``param *= 1 - lr * weight_decay``), else L2 added to the
    gradient.
    """
    _adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, decoupled_weight_decay, amsgrad, max_exp_avg_sq, maximize)


def adamw_step(param, grad, exp_avg, exp_avg_sq, *, step, double lr=1e-3,
               double beta1=0.9, double beta2=0.999, double eps=1e-8,
               double weight_decay=1e-2, bint amsgrad=False, max_exp_avg_sq=None,
               bint maximize=False):
    """One AdamW step in place: ``adam_step`` with decoupled weight decay
    (torch.optim.AdamW's update and defaults)."""
    _adam(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, True, amsgrad, max_exp_avg_sq, maximize)
