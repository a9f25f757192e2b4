"""Adadelta step (torch.optim.Adadelta's update: weight decay, maximize).

Element update, in torch's operation order:
    g = ±grad (+ weight_decay * param)
    square_avg = square_avg * rho + (1 - rho) * g * g
    delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
    acc_delta = acc_delta * rho + (1 - rho) * delta * delta
    param += -lr * delta
"""

from cython cimport floating

from optcore.kernels._math cimport fsqrt
from optcore.kernels._runtime cimport run_segments, segment_fn
from optcore.kernels._buffers cimport BufferSet, bind, FLOAT32, WRITE, READ
from optcore.kernels._checks cimport (check_lr, check_eps, check_weight_decay,
                                      check_unit_interval, check_step)


cdef struct AdadeltaCall:
    void** param
    void** grad
    void** square_avg
    void** acc_delta
    double grad_sign           # -1 when maximizing
    double weight_decay
    double rho
    double one_minus_rho
    double eps
    double neg_lr


cdef void _adadelta_segment(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                            Py_ssize_t stop, floating dtype_tag) noexcept nogil:
    cdef const AdadeltaCall* c = <const AdadeltaCall*>ctx
    cdef floating* p = <floating*>c.param[t] + start
    cdef const floating* g = <const floating*>c.grad[t] + start
    cdef floating* sq = <floating*>c.square_avg[t] + start
    cdef floating* acc = <floating*>c.acc_delta[t] + start
    cdef Py_ssize_t i, n = stop - start
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign = <floating>c.grad_sign
    cdef floating wd = <floating>c.weight_decay
    cdef bint use_wd = c.weight_decay != 0.0
    cdef floating rho = <floating>c.rho
    cdef floating omr = <floating>c.one_minus_rho
    cdef floating eps = <floating>c.eps
    cdef floating neg_lr = <floating>c.neg_lr
    cdef floating gi, si, di
    for i in range(n):
        gi = g[i] * sign
        if use_wd:
            gi = gi + wd * p[i]
        si = sq[i] * rho + omr * gi * gi
        sq[i] = si
        di = fsqrt(acc[i] + eps) / fsqrt(si + eps) * gi
        acc[i] = acc[i] * rho + omr * di * di
        p[i] = p[i] + neg_lr * di


cdef void _segment_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _adadelta_segment[float](ctx, t, start, stop, 0)


cdef void _segment_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _adadelta_segment[double](ctx, t, start, stop, 0)


cdef inline void _run(void** param, void** grad, void** square_avg, void** acc_delta,
                      const Py_ssize_t* sizes, Py_ssize_t ntensors, double lr,
                      double rho, double eps, double weight_decay, bint maximize,
                      int num_threads, segment_fn fn) noexcept nogil:
    cdef AdadeltaCall c
    c.param = param
    c.grad = grad
    c.square_avg = square_avg
    c.acc_delta = acc_delta
    c.grad_sign = -1.0 if maximize else 1.0
    c.weight_decay = weight_decay
    c.rho = rho
    c.one_minus_rho = 1.0 - rho
    c.eps = eps
    c.neg_lr = -lr
    run_segments(fn, &c, sizes, ntensors, num_threads)


# ---- C-level API (adadelta.pxd) --------------------------------------------

cdef void adadelta_step_f32(float* param, const float* grad, float* square_avg,
                            float* acc_delta, Py_ssize_t n, long long step,
                            double lr, double rho, double eps, double weight_decay,
                            bint maximize, int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&square_avg, <void**>&acc_delta,
         &n, 1, lr, rho, eps, weight_decay, maximize, num_threads, _segment_f32)


cdef void adadelta_step_f64(double* param, const double* grad, double* square_avg,
                            double* acc_delta, Py_ssize_t n, long long step,
                            double lr, double rho, double eps, double weight_decay,
                            bint maximize, int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&square_avg, <void**>&acc_delta,
         &n, 1, lr, rho, eps, weight_decay, maximize, num_threads, _segment_f64)


cdef void adadelta_step_multi_f32(float** param, const float** grad,
                                  float** square_avg, float** acc_delta,
                                  const Py_ssize_t* sizes, Py_ssize_t ntensors,
                                  long long step, double lr, double rho, double eps,
                                  double weight_decay, bint maximize,
                                  int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>square_avg, <void**>acc_delta, sizes,
         ntensors, lr, rho, eps, weight_decay, maximize, num_threads, _segment_f32)


cdef void adadelta_step_multi_f64(double** param, const double** grad,
                                  double** square_avg, double** acc_delta,
                                  const Py_ssize_t* sizes, Py_ssize_t ntensors,
                                  long long step, double lr, double rho, double eps,
                                  double weight_decay, bint maximize,
                                  int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>square_avg, <void**>acc_delta, sizes,
         ntensors, lr, rho, eps, weight_decay, maximize, num_threads, _segment_f64)


# ---- Python API ------------------------------------------------------------

cdef tuple _NAMES = ("param", "grad", "square_avg", "acc_delta")


def adadelta_step(param, grad, square_avg, acc_delta, *, step,
                  double lr=1.0, double rho=0.9, double eps=1e-6,
                  double weight_decay=0.0, bint maximize=False):
    """One Adadelta step in place (torch.optim.Adadelta's update).

    ``param``, ``square_avg`` and ``acc_delta`` are updated in place, ``grad``
    is read. Each buffer argument is one array or a list of arrays (one native
    call for the list). ``step`` is the 1-based count of this update
    (Adadelta's rule does not depend on it; it is checked for consistency with
    the other steps).
    """
    cdef long long c_step = check_step(step)
    check_lr(lr)
    check_unit_interval(rho, "rho", "rho")
    check_eps(eps)
    check_weight_decay(weight_decay)
    cdef BufferSet b = bind(_NAMES, (param, grad, square_avg, acc_delta),
                            (WRITE, READ, WRITE, WRITE))
    cdef Py_ssize_t k = b.ntensors
    cdef segment_fn fn = _segment_f32 if b.dtype == FLOAT32 else _segment_f64
    with nogil:
        _run(b.data, b.data + k, b.data + 2 * k, b.data + 3 * k, b.sizes, k, lr,
             rho, eps, weight_decay, maximize, 0, fn)
