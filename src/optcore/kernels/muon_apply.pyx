"""Muon's parameter update (torch.optim.Muon's elementwise part after the
Newton–Schulz iteration): the decoupled weight decay and the step in one
pass::

    param = fma(update, -lr, param * decay)

in torch's order: ``param.mul_(decay)`` rounds the product, then
``param.add_(update, alpha=-lr)`` is one fused multiply-add in torch's CPU
kernel (C's ``fma``/``fmaf`` here: exactly rounded whatever the instruction
set). ``lr`` is the adjusted learning rate, ``decay`` = ``1 - lr *
weight_decay`` with the unadjusted one; the caller computes both, as torch
does (a tensor ``lr`` included). The twin is ``optcore.reference.muon_apply``.
"""

include "_muon_apply_call.pxi"

from optcore.kernels._math cimport ffma


cdef struct Call:
    Buffers bufs               # the call's tensors (_muon_apply_call.pxi)
    double neg_lr
    double decay


cdef inline void _muon_apply_segment(const Call* c, Py_ssize_t t, Py_ssize_t n,
                                     floating* p, const floating* u) noexcept nogil:
    cdef Py_ssize_t i
    # Scalars in the buffer's type, as torch converts its Scalars.
    cdef floating neg_lr = <floating>c.neg_lr
    cdef floating decay = <floating>c.decay
    for i in range(n):
        p[i] = ffma(u[i], neg_lr, p[i] * decay)


cdef inline void _prepare(Call* c, double lr, double decay) noexcept nogil:
    c.neg_lr = -lr
    c.decay = decay


include "_muon_apply_api.pxi"
