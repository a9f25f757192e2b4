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


cdef struct Call:
    void** param
    void** grad
    void** state_sum
    double grad_sign           # -1 when maximizing
    double weight_decay
    double eps
    double neg_clr             # -lr / (1 + (step - 1) * lr_decay)


cdef inline void _adagrad_segment(const Call* c, Py_ssize_t t, Py_ssize_t start,
                                  Py_ssize_t stop, floating* p) noexcept nogil:
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


cdef inline void _run(void** param, void** grad, void** state_sum,
                      const Py_ssize_t* sizes, Py_ssize_t ntensors, long long step,
                      double lr, double lr_decay, double weight_decay, double eps,
                      bint maximize, int num_threads, segment_fn fn) noexcept nogil:
    cdef Call c
    c.param = param
    c.grad = grad
    c.state_sum = state_sum
    c.grad_sign = -1.0 if maximize else 1.0
    c.weight_decay = weight_decay
    c.eps = eps
    c.neg_clr = -(lr / (1.0 + <double>(step - 1) * lr_decay))
    run_segments(fn, &c, sizes, ntensors, num_threads)


include "_adagrad_api.pxi"
