"""Adadelta step (torch.optim.Adadelta's update: weight decay, maximize).

Element update, in torch's operation order:
    g = ±grad (+ weight_decay * param)
    square_avg = square_avg * rho + (1 - rho) * g * g
    delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
    acc_delta = acc_delta * rho + (1 - rho) * delta * delta
    param += -lr * delta
"""

include "_adadelta_call.pxi"

from optcore.kernels._math cimport (GradTerm, set_grad_term, load_grad_term, signed_grad,
                                     fsqrt)


cdef struct Call:
    Buffers bufs               # the call's tensors (_adadelta_call.pxi)
    GradTerm grad              # ±grad + weight_decay * param
    double rho
    double one_minus_rho
    double eps
    double neg_lr


cdef inline void _adadelta_segment(const Call* c, Py_ssize_t t, Py_ssize_t n,
                                   floating* p, const floating* g, floating* sq,
                                   floating* acc) noexcept nogil:
    cdef Py_ssize_t i
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign, wd
    cdef bint use_wd = load_grad_term(&c.grad, &sign, &wd)
    cdef floating rho = <floating>c.rho
    cdef floating omr = <floating>c.one_minus_rho
    cdef floating eps = <floating>c.eps
    cdef floating neg_lr = <floating>c.neg_lr
    cdef floating gi, si, di
    for i in range(n):
        gi = signed_grad(g[i], p[i], sign, wd, use_wd)
        si = sq[i] * rho + omr * gi * gi
        sq[i] = si
        di = fsqrt(acc[i] + eps) / fsqrt(si + eps) * gi
        acc[i] = acc[i] * rho + omr * di * di
        p[i] = p[i] + neg_lr * di


cdef inline void _prepare(Call* c, long long step, double lr, double rho, double eps,
                          double weight_decay, bint maximize) noexcept nogil:
    set_grad_term(&c.grad, weight_decay, maximize)
    c.rho = rho
    c.one_minus_rho = 1.0 - rho
    c.eps = eps
    c.neg_lr = -lr


include "_adadelta_api.pxi"
