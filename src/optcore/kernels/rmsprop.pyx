"""RMSprop step (torch.optim.RMSprop's update: weight decay, momentum,
centered variance, maximize).

Element update, in torch's operation order:
    g = ±grad (+ weight_decay * param)
    square_avg = square_avg * alpha + (1 - alpha) * g * g
    centered:  grad_avg = lerp(grad_avg, g, 1 - alpha)
               avg = sqrt(square_avg - grad_avg * grad_avg) + eps
    else:      avg = sqrt(square_avg) + eps
    momentum:  buf = buf * momentum + g / avg;  param += -lr * buf
    else:      param += (-lr * g) / avg
"""

include "_rmsprop_call.pxi"

from optcore.kernels._math cimport (GradTerm, set_grad_term, load_grad_term, signed_grad,
                                     load_lerp_weight, centered_variance, fsqrt, lerp)


cdef struct Call:
    Buffers bufs               # the call's tensors (_rmsprop_call.pxi)
    GradTerm grad              # ±grad + weight_decay * param
    double alpha
    double w                   # 1 - alpha: the new-gradient weight of both averages
    double eps
    double momentum
    double neg_lr


cdef inline void _rmsprop_segment(const Call* c, Py_ssize_t t, Py_ssize_t n,
                                  floating* p, const floating* g, floating* sq,
                                  floating* buf, floating* ga) noexcept nogil:
    cdef Py_ssize_t i
    # Scalars in the buffer's type, so float32 math stays float32.
    cdef floating sign, wd
    cdef bint use_wd = load_grad_term(&c.grad, &sign, &wd)
    cdef floating alpha = <floating>c.alpha
    cdef floating w, one_minus_w
    cdef bint low = load_lerp_weight(c.w, &w, &one_minus_w)
    cdef floating eps = <floating>c.eps
    cdef floating mom = <floating>c.momentum
    cdef floating neg_lr = <floating>c.neg_lr
    cdef floating gi, si, ai, avg, bi
    # One loop per state layout, so that each vectorises without dead loads.
    if ga == NULL and buf == NULL:
        for i in range(n):
            gi = signed_grad(g[i], p[i], sign, wd, use_wd)
            si = sq[i] * alpha + w * gi * gi
            sq[i] = si
            avg = fsqrt(si) + eps
            p[i] = p[i] + neg_lr * gi / avg
    elif buf == NULL:
        for i in range(n):
            gi = signed_grad(g[i], p[i], sign, wd, use_wd)
            si = sq[i] * alpha + w * gi * gi
            ai = lerp(ga[i], gi, w, one_minus_w, low)
            sq[i] = si
            ga[i] = ai
            avg = fsqrt(centered_variance(si, ai)) + eps
            p[i] = p[i] + neg_lr * gi / avg
    elif ga == NULL:
        for i in range(n):
            gi = signed_grad(g[i], p[i], sign, wd, use_wd)
            si = sq[i] * alpha + w * gi * gi
            sq[i] = si
            avg = fsqrt(si) + eps
            bi = buf[i] * mom + gi / avg
            buf[i] = bi
            p[i] = p[i] + neg_lr * bi
    else:
        for i in range(n):
            gi = signed_grad(g[i], p[i], sign, wd, use_wd)
            si = sq[i] * alpha + w * gi * gi
            ai = lerp(ga[i], gi, w, one_minus_w, low)
            sq[i] = si
            ga[i] = ai
            avg = fsqrt(centered_variance(si, ai)) + eps
            bi = buf[i] * mom + gi / avg
            buf[i] = bi
            p[i] = p[i] + neg_lr * bi


cdef inline void _prepare(Call* c, long long step, double lr, double alpha, double eps,
                          double weight_decay, double momentum, bint centered,
                          bint maximize) noexcept nogil:
    set_grad_term(&c.grad, weight_decay, maximize)
    c.alpha = alpha
    c.w = 1.0 - alpha
    c.eps = eps
    c.momentum = momentum
    c.neg_lr = -lr


include "_rmsprop_api.pxi"
