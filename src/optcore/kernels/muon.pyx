"""Muon's momentum step (torch.optim.Muon's elementwise part before the
Newton–Schulz iteration), one pass over the buffers.

With ``g`` the gradient and ``b`` = ``momentum_buffer``::

    b = lerp(b, g, 1 - momentum)               # buf.lerp_(grad, 1 - momentum)
    out = lerp(g, b, momentum)                 # nesterov: grad.lerp(buf, momentum)

torch.lerp's two-sided formula as torch's CPU kernel evaluates it, with one
fused multiply-add: ``fma(w, end - start, start)`` when ``|w| < 0.5``, else
``fma(w - 1, end - start, end)``, the weight in the buffers' dtype. The fma
is C's (``fma``/``fmaf``: exactly rounded whatever the instruction set), so
the bits are torch's; the build's ``-ffp-contract=off`` leaves every other
operation unfused. The twin is ``optcore.reference.muon_momentum``.
"""

include "_muon_call.pxi"

from optcore.kernels._math cimport fabs_, ffma


cdef struct Call:
    Buffers bufs               # the call's tensors (_muon_call.pxi)
    double w                   # lerp weight of the buffer update, 1 - momentum
    double momentum            # lerp weight of the Nesterov update


cdef inline void _lerp_weight(double weight, floating* coeff, bint* low) noexcept nogil:
    # torch's scalar weight in the buffer's type; the fma's coefficient: w on
    # the small-weight side, w - 1 on the other (torch's lerp_vec).
    cdef floating w = <floating>weight
    low[0] = fabs_(w) < 0.5
    coeff[0] = w if low[0] else w - 1


cdef inline void _muon_segment(const Call* c, Py_ssize_t t, Py_ssize_t n,
                               const floating* g, floating* b, floating* out) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating cb, cn, gi, bi
    cdef bint low_b, low_n
    _lerp_weight(c.w, &cb, &low_b)
    _lerp_weight(c.momentum, &cn, &low_n)
    if out == NULL:
        for i in range(n):
            gi = g[i]
            bi = b[i]
            b[i] = ffma(cb, gi - bi, bi if low_b else gi)
        return
    for i in range(n):
        gi = g[i]
        bi = b[i]
        bi = ffma(cb, gi - bi, bi if low_b else gi)
        b[i] = bi
        out[i] = ffma(cn, bi - gi, gi if low_n else bi)


cdef inline void _prepare(Call* c, double momentum, bint nesterov) noexcept nogil:
    c.w = 1.0 - momentum
    c.momentum = momentum


include "_muon_api.pxi"
