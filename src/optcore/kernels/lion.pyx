"""Lion step (Chen et al. 2023, "Symbolic Discovery of Optimization
Algorithms", Algorithm 2; optax.lion).

With ``g`` the gradient (negated when maximizing) and ``m`` = ``exp_avg``::

    c = beta1 * m + (1 - beta1) * g         # interpolation used for the sign
    p = p * (1 - lr * weight_decay)         # decoupled weight decay
    p = p - lr * sign(c)
    m = beta2 * m + (1 - beta2) * g         # the state tracks a slower average

sign(0) = 0 and NaN propagates (numpy.sign). torch has no Lion; the update is
checked against optcore.reference and hand-computed values.
"""

include "_lion_call.pxi"

from optcore.kernels._math cimport Betas, set_betas, load_betas


cdef struct Call:
    Buffers bufs               # the call's tensors (_lion_call.pxi)
    # per-step scalars, computed once in double
    double grad_sign           # -1 when maximizing
    Betas betas
    double decay               # 1 - lr * weight_decay
    double neg_lr


cdef inline floating _sign(floating x) noexcept nogil:
    # numpy.sign: +-1, +0 for +-0, NaN for NaN. Written as arithmetic on the
    # comparisons and one select: a branchy form keeps the loop scalar (the
    # compiler may not speculate comparisons, they can raise FP flags).
    cdef floating s = <floating>(x > 0) - <floating>(x < 0)
    return x if x != x else s


cdef inline void _lion_segment(const Call* c, Py_ssize_t t, Py_ssize_t n, floating* p,
                               const floating* g, floating* m) noexcept nogil:
    cdef Py_ssize_t i
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign = <floating>c.grad_sign
    cdef floating b1, omb1, b2, omb2
    load_betas(&c.betas, &b1, &omb1, &b2, &omb2)
    cdef floating decay = <floating>c.decay
    cdef floating neg_lr = <floating>c.neg_lr
    cdef floating gi, mi
    for i in range(n):
        gi = g[i] * sign
        mi = m[i]
        p[i] = p[i] * decay + neg_lr * _sign(b1 * mi + omb1 * gi)
        m[i] = b2 * mi + omb2 * gi


cdef inline void _prepare(Call* c, long long step, double lr, double beta1,
                          double beta2, double weight_decay,
                          bint maximize) noexcept nogil:
    c.grad_sign = -1.0 if maximize else 1.0
    set_betas(&c.betas, beta1, beta2)
    # No decay term at all without weight decay (lr = inf must not give 0 * inf).
    c.decay = 1.0 - lr * weight_decay if weight_decay != 0.0 else 1.0
    c.neg_lr = -lr


include "_lion_api.pxi"
