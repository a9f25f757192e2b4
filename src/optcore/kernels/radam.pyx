"""RAdam step (torch.optim.RAdam's update: L2 or decoupled weight decay,
maximize, variance rectification).

Per step (in double): rho_inf = 2 / (1 - beta2) - 1 and
rho_t = rho_inf - 2 * step * beta2**step / (1 - beta2**step). As in torch, the
adaptive (rectified) update is used when rho_t > 5, with
rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))**0.5;
otherwise the step is plain bias-corrected momentum.
Element update, in torch's operation order:
    g = ±grad;  decoupled: param *= 1 - lr * weight_decay,  else g += weight_decay * param
    exp_avg = lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * g * g
    u = exp_avg / (1 - beta1**step) * lr
    rho_t > 5:  u = u * ((1 / (sqrt(exp_avg_sq) + eps)) * sqrt(1 - beta2**step)) * rect
    param -= u
"""

include "_radam_call.pxi"

from libc.math cimport pow

from optcore.kernels._math cimport fsqrt, lerp, signed_grad
from optcore.kernels._adam_common cimport (Moments, set_moments, load_moments,
                                           bias_correction, second_moment)


cdef struct Call:
    Buffers bufs               # the call's tensors (_radam_call.pxi)
    Moments moments            # the Adam family's shared scalars
    # per-step scalars of this kernel, computed once in double
    double bias_correction1
    double bias_correction2_sqrt
    double eps
    double lr
    double rect                # variance rectification term (when rectified)
    bint rectified             # rho_t > 5


cdef void _prepare(Call* c, long long step, double lr, double beta1,
                   double beta2, double eps, double weight_decay, bint decoupled,
                   bint maximize) noexcept nogil:
    cdef double s = <double>step
    cdef double bias_correction2 = bias_correction(beta2, step)
    cdef double rho_inf = 2.0 / (1.0 - beta2) - 1.0
    cdef double rho_t = rho_inf - 2.0 * s * pow(beta2, s) / bias_correction2
    set_moments(&c.moments, lr, beta1, beta2, weight_decay, decoupled, maximize)
    c.bias_correction1 = bias_correction(beta1, step)
    c.bias_correction2_sqrt = pow(bias_correction2, 0.5)
    c.eps = eps
    c.lr = lr
    c.rectified = rho_t > 5.0
    if c.rectified:
        c.rect = pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                     / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.5)
    else:
        c.rect = 1.0


cdef inline void _radam_segment(const Call* c, Py_ssize_t t, Py_ssize_t n, floating* p,
                                const floating* g, floating* m,
                                floating* v) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating sign, l2, decay, w1, one_minus_w1, beta2, omb2
    cdef bint low
    cdef bint use_l2 = load_moments(&c.moments, &sign, &l2, &decay, &w1, &one_minus_w1,
                                    &low, &beta2, &omb2)
    cdef floating bc1 = <floating>c.bias_correction1
    cdef floating bc2s = <floating>c.bias_correction2_sqrt
    cdef floating eps = <floating>c.eps
    cdef floating lr = <floating>c.lr
    cdef floating rect = <floating>c.rect
    cdef floating one = 1
    cdef floating gi, pi, mi, vi, ui
    cdef bint rectified = c.rectified
    # One loop: `rectified` is the same for every element (gcc unswitches it).
    for i in range(n):
        gi = signed_grad(g[i], p[i], sign, l2, use_l2)
        pi = p[i] * decay
        mi = lerp(m[i], gi, w1, one_minus_w1, low)
        vi = second_moment(v[i], gi, beta2, omb2)
        m[i] = mi
        v[i] = vi
        ui = mi / bc1 * lr
        if rectified:
            # torch evaluates bc2s / (sqrt(v) + eps) as a reciprocal times bc2s
            ui = ui * (one / (fsqrt(vi) + eps) * bc2s) * rect
        p[i] = pi - ui


include "_radam_api.pxi"
