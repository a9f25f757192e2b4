# Element math shared by kernels: exact, branch-free where it vectorises.
from cython cimport floating
from libc.math cimport sqrt, sqrtf, fabs, fabsf, fma, fmaf


cdef inline floating fsqrt(floating x) noexcept nogil:
    # sqrtf for float keeps float32 vectors in float32.
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating fabs_(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating ffma(floating x, floating y, floating z) noexcept nogil:
    # x * y + z rounded once (C's fma: exact on every instruction set; one
    # instruction where the variant has FMA, a libm call on the baseline).
    # The only fused multiply-add of the kernels: -ffp-contract=off makes
    # none of its own. Used where torch's kernel fuses (torch.lerp, add_).
    if floating is float:
        return fmaf(x, y, z)
    else:
        return fma(x, y, z)


cdef struct GradTerm:
    # torch's ±grad (+ L2 weight decay) term, set once per step in double
    double sign                # -1 when maximizing
    double l2                  # weight decay added to the gradient; 0: none


cdef inline void set_grad_term(GradTerm* s, double l2, bint maximize) noexcept nogil:
    s.sign = -1.0 if maximize else 1.0
    s.l2 = l2


cdef inline bint load_grad_term(const GradTerm* s, floating* sign,
                                floating* l2) noexcept nogil:
    # The scalars in the buffer's type (float32 math stays float32), into the
    # segment's locals; returns whether the L2 term applies.
    sign[0] = <floating>s.sign
    l2[0] = <floating>s.l2
    return s.l2 != 0.0


cdef struct Betas:
    # The weights of two plain moving averages (Lion, LAMB): x = beta * x + (1 - beta) * y
    double beta1
    double one_minus_beta1
    double beta2
    double one_minus_beta2


cdef inline void set_betas(Betas* s, double beta1, double beta2) noexcept nogil:
    s.beta1 = beta1
    s.one_minus_beta1 = 1.0 - beta1
    s.beta2 = beta2
    s.one_minus_beta2 = 1.0 - beta2


cdef inline void load_betas(const Betas* s, floating* b1, floating* omb1, floating* b2,
                            floating* omb2) noexcept nogil:
    # The weights in the buffer's type, into the segment's locals.
    b1[0] = <floating>s.beta1
    omb1[0] = <floating>s.one_minus_beta1
    b2[0] = <floating>s.beta2
    omb2[0] = <floating>s.one_minus_beta2


cdef inline floating signed_grad(floating g, floating p, floating sign, floating l2,
                                 bint use_l2) noexcept nogil:
    # The gradient torch's update rules use: ±grad, plus L2 weight decay
    # l2 * p (torch's order: the sign first).
    cdef floating gi = g * sign
    if use_l2:
        gi = gi + l2 * p
    return gi


cdef inline floating maximum(floating a, floating b) noexcept nogil:
    # torch.maximum / np.maximum: NaN in either argument gives NaN. Three
    # selects and no early return, so that gcc if-converts it (and vectorises
    # the loop) even when an argument is computed in the loop body.
    cdef floating r = b if b > a else a
    r = b if b != b else r
    r = a if a != a else r
    return r


cdef inline floating lerp(floating start, floating end, floating w, floating one_minus_w,
                          bint low_weight) noexcept nogil:
    # torch.lerp's two-sided formula (exact at both ends of the weight range).
    if low_weight:
        return start + w * (end - start)
    return end - (end - start) * one_minus_w


cdef inline bint load_lerp_weight(double weight, floating* w,
                                  floating* one_minus_w) noexcept nogil:
    # lerp's weight and 1 - weight in the buffer's type; returns which side of
    # the two-sided formula applies (weight < 0.5).
    w[0] = <floating>weight
    one_minus_w[0] = 1 - w[0]
    return w[0] < 0.5


cdef inline floating centered_variance(floating s, floating a) noexcept nogil:
    # s - a*a as torch's fused addcmul computes it where a*a alone overflows:
    # s = +inf with a finite stays +inf (the unfused inf - inf would be NaN;
    # a NaN s stays NaN either way).
    # Only quiet comparisons (NaN tests, ==): the select then vectorises.
    cdef floating d = s - a * a
    cdef bint keep = (d != d) & (a - a == 0)
    return s if keep else d
cdef enum:
    SUM_LANES = 8      # independent double accumulators of the blocked sums


cdef inline double lanes_sum(const double* acc) noexcept nogil:
    # The SUM_LANES accumulators combined pairwise, in a fixed order.
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline double blocked_sum(const floating* x, Py_ssize_t n, bint absolute) noexcept nogil:
    # sum x*x (absolute: sum |x|) in double over SUM_LANES accumulators
    # combined pairwise: a fixed order (the same bits every time) that the
    # compiler vectorises. `absolute` is a constant at every (inlined) call.
    cdef double acc[SUM_LANES]
    cdef Py_ssize_t i, j, r, nfull = n - n % SUM_LANES
    for j in range(SUM_LANES):
        acc[j] = 0.0
    for r in range(nfull // SUM_LANES):
        i = r * SUM_LANES
        for j in range(SUM_LANES):
            acc[j] += (<double>fabs_(x[i + j]) if absolute
                       else <double>x[i + j] * <double>x[i + j])
    for i in range(nfull, n):
        acc[i - nfull] += (<double>fabs_(x[i]) if absolute
                           else <double>x[i] * <double>x[i])
    return lanes_sum(acc)


cdef inline double sum_squares(const floating* x, Py_ssize_t n) noexcept nogil:
    return blocked_sum(x, n, False)


cdef inline double sum_abs(const floating* x, Py_ssize_t n) noexcept nogil:
    return blocked_sum(x, n, True)
