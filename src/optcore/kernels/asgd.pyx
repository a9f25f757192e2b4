"""ASGD step (torch.optim.ASGD's update: weight decay, maximize).

Element update, in torch's operation order, with the step's ``eta`` and
``mu`` (ASGD's scalar state, passed in):
    g = ±grad (+ weight_decay * param)
    param *= 1 - lambd * eta
    param += -eta * g
    ax = param                      if mu == 1
    ax += (param - ax) * mu         otherwise
"""

include "_asgd_call.pxi"

from optcore.kernels._math cimport GradTerm, set_grad_term, load_grad_term, signed_grad


cdef struct Call:
    Buffers bufs               # the call's tensors (_asgd_call.pxi)
    GradTerm grad              # ±grad + weight_decay * param
    double decay               # 1 - lambd * eta
    double neg_eta
    double mu
    bint copy_average          # mu == 1: ax takes the parameter


cdef inline void _asgd_segment(const Call* c, Py_ssize_t t, Py_ssize_t n, floating* p,
                               const floating* g, floating* ax) noexcept nogil:
    cdef Py_ssize_t i
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign, wd
    cdef bint use_wd = load_grad_term(&c.grad, &sign, &wd)
    cdef floating decay = <floating>c.decay
    cdef floating neg_eta = <floating>c.neg_eta
    cdef floating mu = <floating>c.mu
    cdef floating gi, pi
    if c.copy_average:
        for i in range(n):
            gi = signed_grad(g[i], p[i], sign, wd, use_wd)
            pi = p[i] * decay
            pi = pi + neg_eta * gi
            p[i] = pi
            ax[i] = pi
    else:
        for i in range(n):
            gi = signed_grad(g[i], p[i], sign, wd, use_wd)
            pi = p[i] * decay
            pi = pi + neg_eta * gi
            p[i] = pi
            ax[i] = ax[i] + (pi - ax[i]) * mu


cdef inline void _prepare(Call* c, long long step, double eta, double mu, double lambd,
                          double weight_decay, bint maximize) noexcept nogil:
    set_grad_term(&c.grad, weight_decay, maximize)
    c.decay = 1.0 - lambd * eta
    c.neg_eta = -eta
    c.mu = mu
    c.copy_average = mu == 1.0


include "_asgd_api.pxi"
