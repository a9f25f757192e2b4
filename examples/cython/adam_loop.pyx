# cython: language_level=3, boundscheck=False, wraparound=False
"""Embedding optcore in Cython: Adam steps over several buffers inside our
own nogil parallel loop, through optcore's C-level kernels."""

from cython.parallel cimport prange
from libc.stdlib cimport malloc, free

from optcore.kernels cimport adam_step_f32


def adam_step_all(list params, list grads, list exp_avgs, list exp_avg_sqs, *,
                  long long step, double lr=1e-3, double beta1=0.9,
                  double beta2=0.999, double eps=1e-8, double weight_decay=0.0):
    """One Adam step for each (param, grad, exp_avg, exp_avg_sq) float32 array.

    The buffers are spread over our own OpenMP threads; each kernel call runs
    on the thread that makes it (num_threads=1).
    """
    cdef Py_ssize_t k = len(params), i
    cdef float** p = <float**>malloc(4 * k * sizeof(float*) + 1)
    cdef float** g = p + k
    cdef float** m = p + 2 * k
    cdef float** v = p + 3 * k
    cdef Py_ssize_t* n = <Py_ssize_t*>malloc(k * sizeof(Py_ssize_t) + 1)
    cdef float[::1] pv, mv, vv
    cdef const float[::1] gv
    if p == NULL or n == NULL:
        free(p)
        free(n)
        raise MemoryError()
    try:
        for i in range(k):
            pv, gv, mv, vv = params[i], grads[i], exp_avgs[i], exp_avg_sqs[i]
            n[i] = pv.shape[0]
            if gv.shape[0] != n[i] or mv.shape[0] != n[i] or vv.shape[0] != n[i]:
                raise ValueError(f"buffers of tensor {i} differ in size")
            if n[i] == 0:
                continue
            p[i], g[i], m[i], v[i] = &pv[0], <float*>&gv[0], &mv[0], &vv[0]
        with nogil:
            for i in prange(k, schedule="dynamic"):
                if n[i] > 0:
                    adam_step_f32(p[i], g[i], m[i], v[i], NULL, n[i], step, lr,
                                  beta1, beta2, eps, weight_decay, 0, 0, 0, 1)
    finally:
        free(p)
        free(n)


def adam_repeat(float[::1] p, const float[::1] g, float[::1] m, float[::1] v,
                long long calls):
    """``calls`` Adam steps on one buffer from a nogil loop (per-call cost of
    the C-level kernel, without Python in between)."""
    cdef long long s
    with nogil:
        for s in range(1, calls + 1):
            adam_step_f32(&p[0], &g[0], &m[0], &v[0], NULL, p.shape[0], s, 1e-3,
                          0.9, 0.999, 1e-8, 0.0, 0, 0, 0, 1)
