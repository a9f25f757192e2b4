# Element math shared by kernels: exact, branch-free where it vectorises.
from cython cimport floating
from libc.math cimport sqrt, sqrtf, fabs, fabsf


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
