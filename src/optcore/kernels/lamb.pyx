"""LAMB step (You et al. 2019, "Large Batch Optimization for Deep Learning:
Training BERT in 76 minutes", Algorithm 2; optax.lamb).

With ``g`` the gradient (negated when maximizing), per tensor::

    m = beta1 * m + (1 - beta1) * g                 # exp_avg
    v = beta2 * v + (1 - beta2) * g * g             # exp_avg_sq
    u = (m * c1) / (sqrt(v * c2) + eps) + weight_decay * p
          with c1 = 1 / (1 - beta1**step), c2 = 1 / (1 - beta2**step)
    r = ||p|| / ||u||     (r = 1 when either norm is 0, as optax does)
    p = p - (lr * r) * u

The norms are those of each tensor (layer-wise trust ratio), accumulated in
double over fixed blocks added in a fixed order, so the update has the same
bits for any thread count. The bias corrections are applied as products with
their reciprocals (computed once in double): optax divides, which differs by
an ulp at most and costs two more divisions per element and pass (the kernel
is bound by its divisions and square root, not by memory, in float32).

Passes: (1) one blocked reduction over the whole call updates m and v and
produces the block sums of p*p and u*u (reduce_blocks); the sums are folded per
tensor into r, and (2) one elementwise pass recomputes u from the new m, v and
the untouched p (the same operations, so the same bits as in pass 1) and
applies it. Recomputing u costs less than writing and re-reading a scratch
copy of it. Two parallel regions per CHUNK_TENSORS tensors: the per-tensor
sums live on the stack (nothing is allocated), and a call with more tensors
runs both passes chunk by chunk, which gives the same bits (each tensor's sums
are folded in its own block order either way).

Low-precision params and grads (bfloat16/float16; an fp32 master copy,
stochastic or Kahan rounding: _storage.pxd) go through the same passes in
float32: pass 1 widens each block of the param (or reads its master) and
grad onto the stack, pass 2 is the generated tiled segment (the grad is not
read). The states stay float32 (Kernel.state_dtypes): pass 2 recomputes u
from the moments as stored, which are then exactly pass 1's.
"""

include "_lamb_call.pxi"

from libc.math cimport sqrt
from libc.string cimport memset

from optcore.kernels._math cimport Betas, set_betas, load_betas, fsqrt, sum_squares
from optcore.kernels._adam_common cimport bias_correction, second_moment
from optcore.kernels._runtime cimport reduce_blocks, block_fn, REDUCE_BLOCK
from optcore.kernels._storage cimport param_load as _param_load, tile_load as _tile_load

cdef enum:
    CHUNK_TENSORS = 128  # tensors per pair of passes (their sums on the stack)


cdef struct Call:
    Buffers bufs               # the call's tensors (_lamb_call.pxi)
    # per-step scalars, computed once in double
    double grad_sign           # -1 when maximizing
    Betas betas
    double inv_bias_correction1    # 1 / (1 - beta1**step)
    double inv_bias_correction2    # 1 / (1 - beta2**step)
    double eps
    double weight_decay
    # per tensor: sums of p*p and u*u (pass 1), then -lr * r (pass 2)
    double* sums               # sums[2 * t], sums[2 * t + 1]
    double* neg_step


cdef inline floating _update(floating mi, floating vi, floating pi, floating c1,
                             floating c2, floating eps, floating wd,
                             bint use_wd) noexcept nogil:
    # u = m_hat / (sqrt(v_hat) + eps) + wd * p, in the buffer's type;
    # c1, c2: reciprocals of the bias corrections.
    cdef floating u = (mi * c1) / (fsqrt(vi * c2) + eps)
    if use_wd:
        u = u + wd * pi
    return u


cdef inline void _moments_block(const Call* c, Py_ssize_t n, double* out,
                                const floating* p, const floating* g, floating* m,
                                floating* v) noexcept nogil:
    # Pass 1 over one block of n elements: update m and v; out = (sum p*p,
    # sum u*u). u goes through a block-sized buffer on the stack (it stays in
    # L1): two simple loops vectorise better than one that also carries 16
    # accumulators.
    cdef Py_ssize_t i
    cdef floating sign = <floating>c.grad_sign
    cdef floating b1, omb1, b2, omb2
    load_betas(&c.betas, &b1, &omb1, &b2, &omb2)
    cdef floating c1 = <floating>c.inv_bias_correction1
    cdef floating c2 = <floating>c.inv_bias_correction2
    cdef floating eps = <floating>c.eps
    cdef floating wd = <floating>c.weight_decay
    cdef bint use_wd = c.weight_decay != 0.0
    cdef floating gi, mi, vi
    cdef floating u[REDUCE_BLOCK]
    for i in range(n):
        gi = g[i] * sign
        mi = b1 * m[i] + omb1 * gi
        vi = second_moment(v[i], gi, b2, omb2)
        m[i] = mi
        v[i] = vi
        u[i] = _update(mi, vi, p[i], c1, c2, eps, wd, use_wd)
    out[0] = sum_squares(p, n)
    out[1] = sum_squares(<const floating*>u, n)


cdef inline void _lamb_segment(const Call* c, Py_ssize_t t, Py_ssize_t n, floating* p,
                               const floating* g, const floating* m,
                               const floating* v) noexcept nogil:
    # Pass 2: p = p - lr * r * u, with u recomputed from the new m and v (g is
    # not read here).
    cdef Py_ssize_t i
    cdef floating c1 = <floating>c.inv_bias_correction1
    cdef floating c2 = <floating>c.inv_bias_correction2
    cdef floating eps = <floating>c.eps
    cdef floating wd = <floating>c.weight_decay
    cdef bint use_wd = c.weight_decay != 0.0
    cdef floating neg_step = <floating>c.neg_step[t]
    for i in range(n):
        p[i] = p[i] + neg_step * _update(m[i], v[i], p[i], c1, c2, eps, wd, use_wd)


cdef void _block_f32(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                     double* out) noexcept nogil:
    cdef const Call* c = <const Call*>ctx
    _moments_block(c, stop - start, out, <const float*>c.bufs.param[t] + start,
                   <const float*>c.bufs.grad[t] + start, <float*>c.bufs.exp_avg[t] + start,
                   <float*>c.bufs.exp_avg_sq[t] + start)


cdef void _block_f64(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                     double* out) noexcept nogil:
    cdef const Call* c = <const Call*>ctx
    _moments_block(c, stop - start, out, <const double*>c.bufs.param[t] + start,
                   <const double*>c.bufs.grad[t] + start, <double*>c.bufs.exp_avg[t] + start,
                   <double*>c.bufs.exp_avg_sq[t] + start)


cdef void _block_tiled(const void* ctx, Py_ssize_t t, Py_ssize_t start, Py_ssize_t stop,
                       double* out) noexcept nogil:
    # a low-precision call: the param (or its master) and the grad as float32;
    # the states are float32 (the precision rule), stepped in place
    cdef const Call* c = <const Call*>ctx
    cdef const Storage* s = c.bufs.storage
    cdef float tiles[2][REDUCE_BLOCK]
    cdef Py_ssize_t n = stop - start
    # (a Kahan call's "param before" is only pass 2's: the tile serves as both)
    cdef float* p = _param_load(s, c.bufs.param, t, start, n, tiles[0], tiles[0])
    cdef float* g = _tile_load(s, 1, c.bufs.grad, t, start, n, tiles[1])
    _moments_block(c, n, out, <const float*>p, <const float*>g,
                   <float*>c.bufs.exp_avg[t] + start, <float*>c.bufs.exp_avg_sq[t] + start)


cdef void _fold(void* acc, Py_ssize_t t, const double* out) noexcept nogil:
    cdef double* sums = <double*>acc
    sums[2 * t] += out[0]
    sums[2 * t + 1] += out[1]


cdef inline void _run(void** param, void** grad, void** exp_avg, void** exp_avg_sq,
                      const Py_ssize_t* sizes, Py_ssize_t ntensors, long long step,
                      double lr, double beta1, double beta2, double eps,
                      double weight_decay, bint maximize, int num_threads,
                      segment_fn fn, const Storage* storage, Py_ssize_t align) noexcept nogil:
    # fn: the pass-2 segment of the dtype (or _segment_tiled, with the
    # call's storage); pass 1's block function follows it.
    cdef block_fn block = (_block_tiled if storage != NULL
                           else _block_f32 if fn == _segment_f32 else _block_f64)
    cdef double scratch[3 * CHUNK_TENSORS]  # two sums and the step of each tensor
    cdef Call c
    cdef Storage chunk                      # the storage of a chunk's tensors
    cdef Py_ssize_t first, t, count
    cdef double pn, un, ratio
    c.grad_sign = -1.0 if maximize else 1.0
    set_betas(&c.betas, beta1, beta2)
    c.inv_bias_correction1 = 1.0 / bias_correction(beta1, step)
    c.inv_bias_correction2 = 1.0 / bias_correction(beta2, step)
    c.eps = eps
    c.weight_decay = weight_decay
    c.sums = scratch
    c.neg_step = scratch + 2 * CHUNK_TENSORS
    first = 0
    while first < ntensors:
        count = min(<Py_ssize_t>CHUNK_TENSORS, ntensors - first)
        c.bufs.param = param + first
        c.bufs.grad = grad + first
        c.bufs.exp_avg = exp_avg + first
        c.bufs.exp_avg_sq = exp_avg_sq + first
        c.bufs.storage = NULL
        if storage != NULL:
            chunk = storage[0]
            chunk.master = storage.master + first if storage.master != NULL else NULL
            chunk.compensation = (storage.compensation + first
                                  if storage.compensation != NULL else NULL)
            chunk.sizes = storage.sizes + first
            chunk.first = storage.first + first
            c.bufs.storage = &chunk
        memset(scratch, 0, 2 * count * sizeof(double))
        reduce_blocks(block, &c, _fold, c.sums, sizes + first, count, 2, num_threads)
        for t in range(count):
            pn = sqrt(c.sums[2 * t])
            un = sqrt(c.sums[2 * t + 1])
            ratio = 1.0 if (pn == 0.0 or un == 0.0) else pn / un
            c.neg_step[t] = -(lr * ratio)
        run_segments_aligned(fn, &c, sizes + first, count, num_threads, align)
        first += count


include "_lamb_api.pxi"
