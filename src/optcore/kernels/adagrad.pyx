"""Adagrad step (torch.optim.Adagrad's dense update: lr decay, weight decay,
maximize).

Element update, in torch's operation order:
    g = ±grad (+ weight_decay * param)
    state_sum = state_sum + g * g
    param += (-clr * g) / (sqrt(state_sum) + eps),  clr = lr / (1 + (step - 1) * lr_decay)
torch's ``initial_accumulator_value`` is the value the caller fills
``state_sum`` with before the first step.
"""

from cython cimport floating

from optcore.kernels._math cimport fsqrt
from optcore.kernels._runtime cimport run_segments, segment_fn
from optcore.kernels._buffers cimport BufferSet, bind, FLOAT32, WRITE, READ
from optcore.kernels._checks cimport (check_lr, check_eps, check_weight_decay,
                                      check_nonneg, check_step)


cdef struct AdagradCall:
    void** param
    void** grad
    void** state_sum
    double grad_sign           # -1 when maximizing
    double weight_decay
    double eps
    double neg_clr             # -lr / (1 + (step - 1) * lr_decay)


cdef void _adagrad_segment(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                           Py_ssize_t stop, floating dtype_tag) noexcept nogil:
    cdef const AdagradCall* c = <const AdagradCall*>ctx
    cdef floating* p = <floating*>c.param[t] + start
    cdef const floating* g = <const floating*>c.grad[t] + start
    cdef floating* s = <floating*>c.state_sum[t] + start
    cdef Py_ssize_t i, n = stop - start
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign = <floating>c.grad_sign
    cdef floating wd = <floating>c.weight_decay
    cdef bint use_wd = c.weight_decay != 0.0
    cdef floating eps = <floating>c.eps
    cdef floating neg_clr = <floating>c.neg_clr
    cdef floating gi, si
    for i in range(n):
        gi = g[i] * sign
        if use_wd:
            gi = gi + wd * p[i]
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] + neg_clr * gi / (fsqrt(si) + eps)


cdef void _segment_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _adagrad_segment[float](ctx, t, start, stop, 0)


cdef void _segment_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                       Py_ssize_t stop) noexcept nogil:
    _adagrad_segment[double](ctx, t, start, stop, 0)


cdef inline void _run(void** param, void** grad, void** state_sum,
                      const Py_ssize_t* sizes, Py_ssize_t ntensors, long long step,
                      double lr, double lr_decay, double weight_decay, double eps,
                      bint maximize, int num_threads, segment_fn fn) noexcept nogil:
    cdef AdagradCall c
    c.param = param
    c.grad = grad
    c.state_sum = state_sum
    c.grad_sign = -1.0 if maximize else 1.0
    c.weight_decay = weight_decay
    c.eps = eps
    c.neg_clr = -(lr / (1.0 + <double>(step - 1) * lr_decay))
    run_segments(fn, &c, sizes, ntensors, num_threads)


# ---- C-level API (adagrad.pxd) ---------------------------------------------

cdef void adagrad_step_f32(float* param, const float* grad, float* state_sum,
                           Py_ssize_t n, long long step, double lr, double lr_decay,
                           double weight_decay, double eps, bint maximize,
                           int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&state_sum, &n, 1, step, lr,
         lr_decay, weight_decay, eps, maximize, num_threads, _segment_f32)


cdef void adagrad_step_f64(double* param, const double* grad, double* state_sum,
                           Py_ssize_t n, long long step, double lr, double lr_decay,
                           double weight_decay, double eps, bint maximize,
                           int num_threads) noexcept nogil:
    _run(<void**>&param, <void**>&grad, <void**>&state_sum, &n, 1, step, lr,
         lr_decay, weight_decay, eps, maximize, num_threads, _segment_f64)


cdef void adagrad_step_multi_f32(float** param, const float** grad,
                                 float** state_sum, const Py_ssize_t* sizes,
                                 Py_ssize_t ntensors, long long step, double lr,
                                 double lr_decay, double weight_decay, double eps,
                                 bint maximize, int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>state_sum, sizes, ntensors, step, lr,
         lr_decay, weight_decay, eps, maximize, num_threads, _segment_f32)


cdef void adagrad_step_multi_f64(double** param, const double** grad,
                                 double** state_sum, const Py_ssize_t* sizes,
                                 Py_ssize_t ntensors, long long step, double lr,
                                 double lr_decay, double weight_decay, double eps,
                                 bint maximize, int num_threads) noexcept nogil:
    _run(<void**>param, <void**>grad, <void**>state_sum, sizes, ntensors, step, lr,
         lr_decay, weight_decay, eps, maximize, num_threads, _segment_f64)


# ---- Python API ------------------------------------------------------------

cdef tuple _NAMES = ("param", "grad", "state_sum")


def adagrad_step(param, grad, state_sum, *, step, double lr=1e-2,
                 double lr_decay=0.0, double weight_decay=0.0, double eps=1e-10,
                 bint maximize=False):
    """One Adagrad step in place (torch.optim.Adagrad's dense update).

    ``param`` and ``state_sum`` (torch's state key ``sum``) are updated in
    place, ``grad`` is read. torch's ``initial_accumulator_value`` is the
    caller's: fill ``state_sum`` with it before the first step. The step size
    is ``lr / (1 + (step - 1) * lr_decay)``. Each buffer argument is one array
    or a list of arrays (one native call for the list).
    """
    cdef long long c_step = check_step(step)
    check_lr(lr)
    check_nonneg(lr_decay, "lr_decay", "lr_decay")
    check_weight_decay(weight_decay)
    check_eps(eps)
    cdef BufferSet b = bind(_NAMES, (param, grad, state_sum), (WRITE, READ, WRITE))
    cdef Py_ssize_t k = b.ntensors
    cdef segment_fn fn = _segment_f32 if b.dtype == FLOAT32 else _segment_f64
    with nogil:
        _run(b.data, b.data + k, b.data + 2 * k, b.sizes, k, c_step, lr, lr_decay,
             weight_decay, eps, maximize, 0, fn)
