"""Adam and AdamW steps (torch.optim.Adam / AdamW update rules).

Written here: the per-step scalars (`_prepare`), the loop over one contiguous
slice (`_adam_segment`, vectorised by the compiler). The element update is
``p + nss * m / (sqrt(v) * inv_bc2s + eps)``: torch's, except that the
reciprocal of ``sqrt(1 - beta2**step)`` is computed once per step and
multiplied (torch divides by it), so each element costs one square root and one
division instead of two divisions (optcore.reference does the same). The buffer pointers of
`Call` (`_adam_call.pxi`), `_run`, the per-dtype entry points, the C API and
the Python wrappers (which check every argument before the first write) are
generated from optcore/_spec.py into `_adam_api.pxi` (build_tools/generate.py).
"""

include "_adam_call.pxi"

from libc.math cimport pow

from optcore.kernels._math cimport fsqrt, maximum, lerp, signed_grad
from optcore.kernels._adam_common cimport (Moments, set_moments, load_moments,
                                           bias_correction, second_moment)


cdef struct Call:
    Buffers bufs               # the call's tensors (_adam_call.pxi)
    Moments moments            # the Adam family's shared scalars
    # per-step scalars of this kernel, computed once in double
    double inv_bias_correction2_sqrt   # 1 / sqrt(1 - beta2**step)
    double eps
    double neg_step_size       # -lr / (1 - beta1**step)


cdef void _prepare(Call* c, long long step, double lr, double beta1,
                   double beta2, double eps, double weight_decay, bint decoupled,
                   bint amsgrad, bint maximize) noexcept nogil:
    # amsgrad: only which buffers are used (the generated _run)
    set_moments(&c.moments, lr, beta1, beta2, weight_decay, decoupled, maximize)
    # the reciprocal once per step: the element update multiplies by it (one
    # division per element, not torch's two)
    c.inv_bias_correction2_sqrt = 1.0 / pow(bias_correction(beta2, step), 0.5)
    c.eps = eps
    c.neg_step_size = -(lr / bias_correction(beta1, step))


cdef inline void _adam_segment(const Call* c, Py_ssize_t t, Py_ssize_t n, floating* p,
                               const floating* g, floating* m, floating* v,
                               floating* vmax) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating sign, l2, decay, w1, one_minus_w1, beta2, omb2
    cdef bint low
    cdef bint use_l2 = load_moments(&c.moments, &sign, &l2, &decay, &w1, &one_minus_w1,
                                    &low, &beta2, &omb2)
    cdef floating ibc2s = <floating>c.inv_bias_correction2_sqrt
    cdef floating eps = <floating>c.eps
    cdef floating nss = <floating>c.neg_step_size
    cdef floating gi, pi, mi, vi, vm
    if vmax == NULL:
        for i in range(n):
            gi = signed_grad(g[i], p[i], sign, l2, use_l2)
            pi = p[i] * decay
            mi = lerp(m[i], gi, w1, one_minus_w1, low)
            vi = second_moment(v[i], gi, beta2, omb2)
            m[i] = mi
            v[i] = vi
            p[i] = pi + nss * mi / (fsqrt(vi) * ibc2s + eps)
    else:
        for i in range(n):
            gi = signed_grad(g[i], p[i], sign, l2, use_l2)
            pi = p[i] * decay
            mi = lerp(m[i], gi, w1, one_minus_w1, low)
            vi = second_moment(v[i], gi, beta2, omb2)
            vm = maximum(vmax[i], vi)
            m[i] = mi
            v[i] = vi
            vmax[i] = vm
            p[i] = pi + nss * mi / (fsqrt(vm) * ibc2s + eps)


include "_adam_api.pxi"
