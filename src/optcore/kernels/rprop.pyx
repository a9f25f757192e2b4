"""Rprop step (torch.optim.Rprop's update: step-size bounds, maximize).

Element update, in torch's operation order, with g = ±grad:
    s = g * prev
    factor = etaplus if s > 0, etaminus if s < 0, else 1   (NaN: 1)
    step_size = clamp(step_size * factor, step_size_min, step_size_max)
    g = 0 where s < 0
    param -= sign(g) * step_size          (sign(NaN) = 0, as torch.sign)
    prev = g
"""

include "_rprop_call.pxi"


cdef struct Call:
    Buffers bufs               # the call's tensors (_rprop_call.pxi)
    double grad_sign           # -1 when maximizing
    double etaminus
    double etaplus
    double step_size_min
    double step_size_max


cdef inline floating _torch_sign(floating x) noexcept nogil:
    # torch.sign: +-1, +0 for +-0 and for NaN (written as arithmetic on the
    # comparisons so that the loop can stay vectorized).
    return <floating>(x > 0) - <floating>(x < 0)


cdef inline void _rprop_segment(const Call* c, Py_ssize_t t, Py_ssize_t n, floating* p,
                                const floating* g, floating* prev,
                                floating* step_size) noexcept nogil:
    cdef Py_ssize_t i
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign = <floating>c.grad_sign
    cdef floating etaminus = <floating>c.etaminus
    cdef floating etaplus = <floating>c.etaplus
    cdef floating lo = <floating>c.step_size_min
    cdef floating hi = <floating>c.step_size_max
    cdef floating one = 1
    cdef floating zero = 0
    cdef floating gi, si, factor, ssi
    for i in range(n):
        gi = g[i] * sign
        si = gi * prev[i]
        factor = etaplus if si > 0 else (etaminus if si < 0 else one)
        # torch's clamp: max then min (the upper bound wins when lo > hi), NaN kept
        ssi = step_size[i] * factor
        ssi = lo if ssi < lo else ssi
        ssi = hi if hi < ssi else ssi
        gi = zero if si < 0 else gi
        step_size[i] = ssi
        prev[i] = gi
        p[i] = p[i] - _torch_sign(gi) * ssi


cdef inline void _prepare(Call* c, long long step, double etaminus, double etaplus,
                          double step_size_min, double step_size_max,
                          bint maximize) noexcept nogil:
    c.grad_sign = -1.0 if maximize else 1.0
    c.etaminus = etaminus
    c.etaplus = etaplus
    c.step_size_min = step_size_min
    c.step_size_max = step_size_max


include "_rprop_api.pxi"
