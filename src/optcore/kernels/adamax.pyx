"""Adamax step (torch.optim.Adamax's update: weight decay, maximize).

Element update, in torch's operation order:
    g = ±grad (+ weight_decay * param)
    exp_avg = lerp(exp_avg, g, 1 - beta1)
    exp_inf = maximum(exp_inf * beta2, |g| + eps)      (NaN propagates)
    param += (-clr * exp_avg) / exp_inf,   clr = lr / (1 - beta1**step)
"""

include "_adamax_call.pxi"

from optcore.kernels._math cimport fabs_, maximum, lerp, signed_grad
from optcore.kernels._adam_common cimport (Moments, set_moments, load_moments,
                                           bias_correction)


cdef struct Call:
    Buffers bufs               # the call's tensors (_adamax_call.pxi)
    Moments moments            # the Adam family's shared scalars (L2 decay only)
    double eps
    double neg_clr             # -lr / (1 - beta1**step)


cdef inline void _adamax_segment(const Call* c, Py_ssize_t t, Py_ssize_t n, floating* p,
                                 const floating* g, floating* m,
                                 floating* u) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating sign, l2, decay, w1, one_minus_w1, beta2, omb2
    cdef bint low
    cdef bint use_l2 = load_moments(&c.moments, &sign, &l2, &decay, &w1, &one_minus_w1,
                                    &low, &beta2, &omb2)
    cdef floating eps = <floating>c.eps
    cdef floating neg_clr = <floating>c.neg_clr
    cdef floating gi, mi, ui
    for i in range(n):
        gi = signed_grad(g[i], p[i], sign, l2, use_l2)
        mi = lerp(m[i], gi, w1, one_minus_w1, low)
        ui = maximum(u[i] * beta2, fabs_(gi) + eps)
        m[i] = mi
        u[i] = ui
        p[i] = p[i] + neg_clr * mi / ui


cdef inline void _prepare(Call* c, long long step, double lr, double beta1,
                          double beta2, double eps, double weight_decay,
                          bint maximize) noexcept nogil:
    set_moments(&c.moments, lr, beta1, beta2, weight_decay, False, maximize)
    c.eps = eps
    c.neg_clr = -(lr / bias_correction(beta1, step))


include "_adamax_api.pxi"
