"""RMSprop step (torch.optim.RMSprop's update: weight decay, momentum,
centered variance, maximize).

Element update, in torch's operation order:
    g = ±grad (+ weight_decay * param)
    square_avg = square_avg * alpha + (1 - alpha) * g * g
    centered:  grad_avg = lerp(grad_avg, g, 1 - alpha)
               avg = sqrt(square_avg - grad_avg * grad_avg) + eps
    else:      avg = sqrt(square_avg) + eps
    momentum:  buf = buf * momentum + g / avg;  param += -lr * buf
    else:      param += (-lr * g) / avg
"""

from cython cimport floating

from optcore.kernels._math cimport centered_variance, fsqrt, lerp
from optcore.kernels._runtime cimport run_segments, segment_fn
from optcore.kernels._buffers cimport (BufferSet, bind, FLOAT32, WRITE, READ,
                                       ABSENT)
from optcore.kernels._checks cimport (check_lr, check_eps, check_weight_decay,
                                      check_nonneg, check_step)


cdef struct RMSpropCall:
    void** param
    void** grad
    void** square_avg
    void** momentum_buffer     # NULL unless momentum > 0
    void** grad_avg            # NULL unless centered
    double grad_sign           # -1 when maximizing
    double weight_decay
    double alpha
    double w                   # 1 - alpha: the new-gradient weight of both averages
    double eps
    double momentum
    double neg_lr


cdef void _rmsprop_segment(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                           Py_ssize_t stop, floating dtype_tag) noexcept nogil:
    cdef const RMSpropCall* c = <const RMSpropCall*>ctx
    cdef floating* p = <floating*>c.param[t] + start
    cdef const floating* g = <const floating*>c.grad[t] + start
    cdef floating* sq = <floating*>c.square_avg[t] + start
    cdef floating* buf = NULL
    cdef floating* ga = NULL
    cdef Py_ssize_t i, n = stop - start
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign = <floating>c.grad_sign
    cdef floating wd = <floating>c.weight_decay
    cdef bint use_wd = c.weight_decay != 0.0
    cdef floating alpha = <floating>c.alpha
    cdef floating w = <floating>c.w
    cdef floating one_minus_w = 1 - w
    cdef bint low = w < 0.5
    cdef floating eps = <floating>c.eps
    cdef floating mom = <floating>c.momentum
    cdef floating neg_lr = <floating>c.neg_lr
    cdef floating gi, si, ai, avg, bi
    if c.momentum_buffer != NULL:
        buf = <floating*>c.momentum_buffer[t] + start
    if c.grad_avg != NULL:
        ga = <floating*>c.grad_avg[t] + start
    # One loop per state layout, so that each vectorises without dead loads.
    if ga == NULL and buf == NULL:
        for i in range(n):
            gi = g[i] * sign
            if use_wd:
                gi = gi + wd * p[i]
            si = sq[i] * alpha + w * gi * gi
            sq[i] = si
            avg = fsqrt(si) + eps
            p[i] = p[i] + neg_lr * gi / avg
    elif buf == NULL:
        for i in range(n):
            gi = g[i] * sign
            if use_wd:
                gi = gi + wd * p[i]
            si = sq[i] * alpha + w * gi * gi
            ai = lerp(ga[i], gi, w, one_minus_w, low)
            sq[i] = si
            ga[i] = ai
            avg = fsqrt(centered_variance(si, ai)) + eps
            p[i] = p[i] + neg_lr * gi / avg
    elif ga == NULL:
        for i in range(n):
            gi = g[i] * sign
            if use_wd:
                gi = gi + wd * p[i]
            si = sq[i] * alpha + w * gi * gi
            sq[i] = si
            avg = fsqrt(si) + eps
            bi = buf[i] * mom + gi / avg
            buf[i] = bi
            p[i] = p[i] + neg_lr * bi
    else:
        for i in range(n):
            gi = g[i] * sign
            if use_wd:
                gi = gi + wd * p[i]
            si = sq[i] * alpha + w * gi * gi
            ai = lerp(ga[i], gi, w, one_minus_w, low)
            sq[i] = si
            ga[i] = ai
            avg = fsqrt(centered_variance(si, ai)) + eps
            bi = buf[i] * mom + gi / avg
            buf[i] = bi
            p[i] = p[i] + neg_lr * bi


cdef void _segment_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _rmsprop_segment[float](ctx, t, start, stop, 0)


cdef void _segment_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _rmsprop_segment[double](ctx, t, start, stop, 0)


cdef inline void _run(void** param, void** grad, void** square_avg,
                      void** momentum_buffer, void** grad_avg,
                      const Py_ssize_t* sizes, Py_ssize_t ntensors, double lr,
                      double alpha, double eps, double weight_decay, double momentum,
                      bint centered, bint maximize, int num_threads,
                      segment_fn fn) noexcept nogil:
    cdef RMSpropCall c
    c.param = param
    c.grad = grad
    c.square_avg = square_avg
    c.momentum_buffer = momentum_buffer if momentum > 0.0 else NULL
    c.grad_avg = grad_avg if centered else NULL
    c.grad_sign = -1.0 if maximize else 1.0
    c.weight_decay = weight_decay
    c.alpha = alpha
    c.w = 1.0 - alpha
    c.eps = eps
    c.momentum = momentum
    c.neg_lr = -lr
    run_segments(fn, &c, sizes, ntensors, num_threads)


# ---- C-level API (rmsprop.pxd) ---------------------------------------------

cdef void rmsprop_step_f32(float* param, const float* grad, float* square_avg,
                           float* momentum_buffer, float* grad_avg, Py_ssize_t n,
                           long long step, double lr, double alpha, double eps,
                           double weight_decay, double momentum, bint centered,
                           bint maximize, int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&square_avg,
         <void**>&momentum_buffer, <void**>&grad_avg, &n, 1, lr, alpha, eps,
         weight_decay, momentum, centered, maximize, num_threads, _segment_f32)


cdef void rmsprop_step_f64(double* param, const double* grad, double* square_avg,
                           double* momentum_buffer, double* grad_avg, Py_ssize_t n,
                           long long step, double lr, double alpha, double eps,
                           double weight_decay, double momentum, bint centered,
                           bint maximize, int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&square_avg,
         <void**>&momentum_buffer, <void**>&grad_avg, &n, 1, lr, alpha, eps,
         weight_decay, momentum, centered, maximize, num_threads, _segment_f64)


cdef void rmsprop_step_multi_f32(float** param, const float** grad,
                                 float** square_avg, float** momentum_buffer,
                                 float** grad_avg, const Py_ssize_t* sizes,
                                 Py_ssize_t ntensors, long long step, double lr,
                                 double alpha, double eps, double weight_decay,
                                 double momentum, bint centered, bint maximize,
                                 int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>square_avg, <void**>momentum_buffer,
         <void**>grad_avg, sizes, ntensors, lr, alpha, eps, weight_decay, momentum,
         centered, maximize, num_threads, _segment_f32)


cdef void rmsprop_step_multi_f64(double** param, const double** grad,
                                 double** square_avg, double** momentum_buffer,
                                 double** grad_avg, const Py_ssize_t* sizes,
                                 Py_ssize_t ntensors, long long step, double lr,
                                 double alpha, double eps, double weight_decay,
                                 double momentum, bint centered, bint maximize,
                                 int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>square_avg, <void**>momentum_buffer,
         <void**>grad_avg, sizes, ntensors, lr, alpha, eps, weight_decay, momentum,
         centered, maximize, num_threads, _segment_f64)


# ---- Python API ------------------------------------------------------------

cdef tuple _NAMES = ("param", "grad", "square_avg", "momentum_buffer", "grad_avg")


def rmsprop_step(param, grad, square_avg, momentum_buffer=None, grad_avg=None, *,
                 step, double lr=1e-2, double alpha=0.99, double eps=1e-8,
                 double weight_decay=0.0, double momentum=0.0, bint centered=False,
                 bint maximize=False):
    """One RMSprop step in place (torch.optim.RMSprop's update).

    ``param`` and ``square_avg`` are updated in place, ``grad`` is read.
    ``momentum_buffer`` is required (and updated) when ``momentum > 0``,
    ``grad_avg`` when ``centered``; otherwise they are ignored. Each buffer
    argument is one array or a list of arrays (one native call for the list).
    ``step`` is the 1-based count of this update (RMSprop's rule does not
    depend on it; it is checked for consistency with the other steps).
    """
    cdef long long c_step = check_step(step)
    check_lr(lr)
    check_eps(eps)
    check_nonneg(momentum, "momentum", "momentum")
    check_weight_decay(weight_decay)
    check_nonneg(alpha, "alpha", "alpha")
    cdef BufferSet b = bind(
        _NAMES, (param, grad, square_avg, momentum_buffer, grad_avg),
        (WRITE, READ, WRITE, WRITE if momentum > 0.0 else ABSENT,
         WRITE if centered else ABSENT))
    cdef Py_ssize_t k = b.ntensors
    cdef segment_fn fn = _segment_f32 if b.dtype == FLOAT32 else _segment_f64
    with nogil:
        _run(b.data, b.data + k, b.data + 2 * k, b.data + 3 * k, b.data + 4 * k,
             b.sizes, k, lr, alpha, eps, weight_decay, momentum, centered,
             maximize, 0, fn)
