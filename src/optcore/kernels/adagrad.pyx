"""Adagrad step (torch.optim.Adagrad's dense update: lr decay, weight decay,
maximize).

Element update, in torch's operation order:
    g = ±grad (+ weight_decay * param)
    state_sum = state_sum + g * g
    param += (-clr * g) / (sqrt(state_sum) + eps),  clr = lr / (1 + (step - 1) * lr_decay)
torch's ``initial_accumulator_value`` is the value the caller fills
``state_sum`` with before the first step.
"""

include "_adagrad_call.pxi"

from optcore.kernels._math cimport (GradTerm, set_grad_term, load_grad_term, signed_grad,
                                     fsqrt)


cdef struct Call:
    Buffers bufs               # the call's tensors (_adagrad_call.pxi)
    GradTerm grad              # ±grad + weight_decay * param
    double eps
    double neg_clr             # -lr / (1 + (step - 1) * lr_decay)


cdef inline void _adagrad_segment(const Call* c, Py_ssize_t t, Py_ssize_t n,
                                  floating* p, const floating* g,
                                  floating* s) noexcept nogil:
    cdef Py_ssize_t i
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign, wd
    cdef bint use_wd = load_grad_term(&c.grad, &sign, &wd)
    cdef floating eps = <floating>c.eps
    cdef floating neg_clr = <floating>c.neg_clr
    cdef floating gi, si
    for i in range(n):
        gi = signed_grad(g[i], p[i], sign, wd, use_wd)
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] + neg_clr * gi / (fsqrt(si) + eps)


cdef inline void _prepare(Call* c, long long step, double lr, double lr_decay,
                          double weight_decay, double eps,
                          bint maximize) noexcept nogil:
    set_grad_term(&c.grad, weight_decay, maximize)
    c.eps = eps
    c.neg_clr = -(lr / (1.0 + <double>(step - 1) * lr_decay))


include "_adagrad_api.pxi"
