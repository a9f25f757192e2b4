"""NAdam step (torch.optim.NAdam's update: momentum decay, L2 or decoupled
weight decay, maximize).

Per step (in double): mu_t = beta1 * (1 - 0.5 * 0.96**(step * momentum_decay)),
mu_{t+1} likewise with step + 1, and the running product
mu_product' = mu_product * mu_t, which the caller keeps between steps (torch's
state key ``mu_product``, 1.0 before the first step).
Element update, in torch's operation order:
    g = ±grad;  decoupled: param *= 1 - lr * weight_decay,  else g += weight_decay * param
    exp_avg = lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * g * g
    denom = sqrt(exp_avg_sq / (1 - beta2**step)) + eps
    param += (-lr * (1 - mu_t) / (1 - mu_product')) * g / denom
    param += (-lr * mu_{t+1} / (1 - mu_product' * mu_{t+1})) * exp_avg / denom
"""

include "_nadam_call.pxi"

from libc.math cimport pow

from optcore.kernels._math cimport fsqrt, lerp, signed_grad
from optcore.kernels._adam_common cimport (Moments, set_moments, load_moments,
                                           bias_correction, second_moment)


cdef struct Call:
    Buffers bufs               # the call's tensors (_nadam_call.pxi)
    Moments moments            # the Adam family's shared scalars
    # per-step scalars of this kernel, computed once in double
    double bias_correction2
    double eps
    double grad_coef           # -lr * (1 - mu_t) / (1 - mu_product')
    double avg_coef            # -lr * mu_{t+1} / (1 - mu_product' * mu_{t+1})


cdef double _prepare(Call* c, long long step, double mu_product, double lr,
                     double beta1, double beta2, double eps, double weight_decay,
                     double momentum_decay, bint decoupled,
                     bint maximize) noexcept nogil:
    """Fill the per-step scalars; return the new mu_product."""
    cdef double s = <double>step
    cdef double mu = beta1 * (1.0 - 0.5 * pow(0.96, s * momentum_decay))
    cdef double mu_next = beta1 * (1.0 - 0.5 * pow(0.96, (s + 1.0) * momentum_decay))
    cdef double mu_product_new = mu_product * mu
    set_moments(&c.moments, lr, beta1, beta2, weight_decay, decoupled, maximize)
    c.bias_correction2 = bias_correction(beta2, step)
    c.eps = eps
    c.grad_coef = -lr * (1.0 - mu) / (1.0 - mu_product_new)
    c.avg_coef = -lr * mu_next / (1.0 - mu_product_new * mu_next)
    return mu_product_new


cdef inline void _nadam_segment(const Call* c, Py_ssize_t t, Py_ssize_t n, floating* p,
                                const floating* g, floating* m,
                                floating* v) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating sign, l2, decay, w1, one_minus_w1, beta2, omb2
    cdef bint low
    cdef bint use_l2 = load_moments(&c.moments, &sign, &l2, &decay, &w1, &one_minus_w1,
                                    &low, &beta2, &omb2)
    cdef floating bc2 = <floating>c.bias_correction2
    cdef floating eps = <floating>c.eps
    cdef floating cg = <floating>c.grad_coef
    cdef floating ca = <floating>c.avg_coef
    cdef floating gi, pi, mi, vi, denom
    for i in range(n):
        gi = signed_grad(g[i], p[i], sign, l2, use_l2)
        pi = p[i] * decay
        mi = lerp(m[i], gi, w1, one_minus_w1, low)
        vi = second_moment(v[i], gi, beta2, omb2)
        m[i] = mi
        v[i] = vi
        denom = fsqrt(vi / bc2) + eps
        pi = pi + cg * gi / denom
        p[i] = pi + ca * mi / denom


include "_nadam_api.pxi"
