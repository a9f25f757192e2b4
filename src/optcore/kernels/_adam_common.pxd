# The Adam family's shared set-up (adam, nadam, radam, adamax; lamb uses the
# bias correction): per-step scalars computed once in double, their copies in
# the buffer's type for the segment loop, and the per-element prologue.
from cython cimport floating
from libc.math cimport pow

from optcore.kernels._math cimport (GradTerm, set_grad_term, load_grad_term,
                                     load_lerp_weight)


cdef struct Moments:
    GradTerm grad              # ±grad, + weight_decay * param unless decoupled
    double decay               # 1 - lr * weight_decay when decoupled, else 1
    double w1                  # lerp weight 1 - beta1 of the first moment
    double beta2
    double one_minus_beta2


cdef inline double bias_correction(double beta, long long step) noexcept nogil:
    # 1 - beta**step
    return 1.0 - pow(beta, <double>step)


cdef inline void set_moments(Moments* s, double lr, double beta1, double beta2,
                             double weight_decay, bint decoupled,
                             bint maximize) noexcept nogil:
    set_grad_term(&s.grad, weight_decay if (weight_decay != 0.0 and not decoupled) else 0.0,
                  maximize)
    # torch skips the decay when weight_decay == 0 (1 - inf * 0 would be NaN)
    s.decay = 1.0 - lr * weight_decay if (decoupled and weight_decay != 0.0) else 1.0
    s.w1 = 1.0 - beta1
    s.beta2 = beta2
    s.one_minus_beta2 = 1.0 - beta2


cdef inline bint load_moments(const Moments* s, floating* sign, floating* l2,
                              floating* decay, floating* w1, floating* one_minus_w1,
                              bint* low, floating* beta2, floating* omb2) noexcept nogil:
    # The scalars in the buffer's type (float32 math stays float32), into the
    # segment's locals (inlined: they stay registers and the loop vectorises);
    # `low`: the side of the first moment's lerp. Returns whether the L2 term
    # applies.
    cdef bint use_l2 = load_grad_term(&s.grad, sign, l2)
    decay[0] = <floating>s.decay
    low[0] = load_lerp_weight(s.w1, w1, one_minus_w1)
    beta2[0] = <floating>s.beta2
    omb2[0] = <floating>s.one_minus_beta2
    return use_l2


cdef inline floating second_moment(floating v, floating g, floating beta2,
                                   floating omb2) noexcept nogil:
    # exp_avg_sq * beta2 + (1 - beta2) * g * g
    return v * beta2 + omb2 * g * g
