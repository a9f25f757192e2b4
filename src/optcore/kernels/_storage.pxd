# Storage formats of step-kernel buffers beyond float32/float64, and the tiles
# that carry them through a kernel's float32 element math.
#
# A call whose buffers are not all of one float dtype (bfloat16 or float16
# params or grads, bfloat16 or block-quantized int8 states, an fp32 master
# copy, a Kahan compensation buffer) runs the kernel's float32 segment over
# tiles of TILE elements: each buffer that is not float32 is widened into a
# tile on the thread's stack (float32 buffers are used in place), the segment
# updates the tiles, and the written ones are narrowed back, each element
# rounded once. One pass over memory: every element is read and written once;
# the tiles stay in the L1 cache. The math (optcore/precision.md) is the
# NumPy reference's, in optcore/_reference_precision.py.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t

cdef extern from * nogil:
    """
    #include <stdint.h>
    #include <string.h>
    static inline uint32_t optcore_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
    static inline float optcore_float(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
    static inline float optcore_f16_load(uint16_t h) {
        _Float16 x; memcpy(&x, &h, 2); return (float)x;
    }
    static inline uint16_t optcore_f16_nearest(float x) {
        _Float16 y = (_Float16)x; uint16_t h; memcpy(&h, &y, 2); return h;
    }
    /* float16 rows: with F16C (the x86-64-v3 and v4 variants) eight at a
       time with the instructions the scalar conversions above compile to
       there (GCC has no vector type for _Float16 without AVX512-FP16) */
    #if defined(__F16C__) && defined(__AVX__)
    #include <immintrin.h>
    #endif
    static inline void optcore_f16_load_n(const uint16_t* h, float* out, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if defined(__F16C__) && defined(__AVX__)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(h + i))));
    #endif
        for (; i < n; i++) out[i] = optcore_f16_load(h[i]);
    }
    static inline void optcore_f16_store_n(const float* x, uint16_t* h, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if defined(__F16C__) && defined(__AVX__)
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i*)(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    #endif
        for (; i < n; i++) h[i] = optcore_f16_nearest(x[i]);
    }
    /* a bijective 32-bit finaliser (xorshift-multiply, two rounds) */
    static inline uint32_t optcore_mix32(uint32_t h) {
        h ^= h >> 16; h *= 0x7FEB352Du; h ^= h >> 15; h *= 0x846CA68Bu; h ^= h >> 16;
        return h;
    }
    #define OPTCORE_GOLDEN 0x9E3779B9u
    #define OPTCORE_TENSOR_MIX 0x85EBCA77u
    """
    uint32_t optcore_bits(float x)
    float optcore_float(uint32_t u)
    float optcore_f16_load(uint16_t h)
    uint16_t optcore_f16_nearest(float x)
    void f16_load_n "optcore_f16_load_n"(const uint16_t* h, float* out, Py_ssize_t n)
    void f16_store_n "optcore_f16_store_n"(const float* x, uint16_t* h, Py_ssize_t n)
    uint32_t mix32 "optcore_mix32"(uint32_t h)
    const uint32_t GOLDEN "OPTCORE_GOLDEN"
    const uint32_t TENSOR_MIX "OPTCORE_TENSOR_MIX"


cdef enum:
    TILE = 512            # elements per tile (two quantization blocks)
    QBLOCK = 256          # elements per int8 quantization block
    MAX_TILED = 8         # buffers of one tiled call (the kernel's + master + compensation)

# How one buffer argument is stored.
cdef enum Kind:
    K_F32 = 0
    K_F64 = 1
    K_BF16 = 2
    K_F16 = 3
    K_Q8 = 4              # int8 codes (uint8) + one float32 absmax per QBLOCK

cdef enum Rounding:
    NEAREST = 0
    STOCHASTIC = 1
    KAHAN = 2


cdef struct Storage:
    int kind[MAX_TILED]           # per buffer argument of the kernel
    bint unsigned_map[MAX_TILED]  # K_Q8: the unsigned (second-moment) map
    void** absmax[MAX_TILED]      # K_Q8: per tensor, the block scales
    void** master                 # per tensor fp32 master copy of param, or NULL
    void** compensation           # per tensor Kahan compensation (param's kind), or NULL
    const Py_ssize_t* sizes       # the tensors' real sizes (the runtime's may be padded)
    int rounding                  # Rounding of the param's store
    uint32_t key                  # stochastic rounding: from (seed, step)
    Py_ssize_t first              # index of tensor 0 in the call (a kernel that runs
                                  # its tensors in chunks): the random bits' tensor


# ---- bfloat16 ------------------------------------------------------------------

cdef inline float bf16_load(uint16_t h) noexcept nogil:
    return optcore_float((<uint32_t>h) << 16)


cdef inline uint16_t bf16_nearest(float x) noexcept nogil:
    # round to nearest even on the 16 dropped bits; NaN stays NaN (quiet bit set)
    cdef uint32_t u = optcore_bits(x)
    cdef uint32_t r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return <uint16_t>(((u >> 16) | 0x40) if x != x else r)


cdef inline uint16_t bf16_stochastic(float x, uint32_t random) noexcept nogil:
    # adding 16 uniform random bits below the kept ones, then truncating, rounds
    # up with probability (distance to the lower neighbour) / ulp: unbiased
    cdef uint32_t u = optcore_bits(x)
    cdef uint32_t r = (u + (random & 0xFFFF)) >> 16
    return <uint16_t>(((u >> 16) | 0x40) if x != x else r)


# ---- float16 stochastic rounding -------------------------------------------------------

cdef inline uint16_t f16_stochastic(float x, uint32_t random) noexcept nogil:
    # Unbiased as bf16_stochastic. Normal float16 (|x| >= 2**-14) keeps 10 of
    # float32's 23 fraction bits: 13 random bits added below them, then the
    # truncated float32 is a float16 value (or beyond its range: inf). Below,
    # float16's grid is 2**-24 apart: the distance to the lower grid point, in
    # units of the grid, against 23 random bits.
    cdef uint32_t u = optcore_bits(x)
    cdef uint32_t sign = u & 0x80000000u
    cdef float a = optcore_float(u & 0x7FFFFFFFu)
    cdef float y, m
    if x != x:
        return optcore_f16_nearest(x)
    if a >= 6.103515625e-05:                      # 2**-14
        return optcore_f16_nearest(optcore_float((u + (random & 0x1FFFu)) & ~0x1FFFu))
    y = a * 16777216.0                            # 2**24: exact, below 1024
    m = <float><int32_t>y
    if (y - m) * 8388608.0 > <float>(random & 0x7FFFFFu):   # 2**23
        m = m + 1.0
    return optcore_f16_nearest(optcore_float(optcore_bits(m * 5.9604644775390625e-08) | sign))


cdef inline uint32_t rounding_key(uint64_t seed, long long step) noexcept nogil:
    # the per-call key of the counter-based random bits
    cdef uint32_t k = mix32(<uint32_t>seed ^ GOLDEN)
    k = mix32(k ^ <uint32_t>(seed >> 32))
    k = mix32(k ^ <uint32_t><uint64_t>step)
    return mix32(k ^ <uint32_t>(<uint64_t>step >> 32))


cdef inline uint32_t random_bits(uint32_t key, Py_ssize_t t, Py_ssize_t i) noexcept nogil:
    # random bits of element i of tensor t: the same for any thread count
    cdef uint32_t hi = mix32(key ^ <uint32_t>t * TENSOR_MIX ^ <uint32_t>(<uint64_t>i >> 32))
    return mix32(<uint32_t>i ^ hi)


# ---- int8 block quantization -----------------------------------------------------
# Codes are floating-point-like: the signed map (first moments, momentum) has
# a sign bit and 7 bits holding 4 exponent and 3 fraction bits of |x|/absmax
# over [2**-15, 1]; the unsigned map (second moments) 4 exponent and 4 fraction
# bits. Code 0 is zero. Quantization is rounding to nearest (ties to even) on
# the fraction bits; below 2**-15 the signed map rounds to 0 or 2**-15, the
# unsigned map to 2**-15 unless the value is 0 (a denominator never rounds to 0).
# A block whose absmax is subnormal is scaled by 2**24 (exactly) before its
# reciprocal is taken, so that the reciprocal stays finite.

cdef inline float q8_value(uint8_t c, bint unsigned_map) noexcept nogil:
    # the code's value relative to the block's absmax, in [-1, 1]
    cdef uint32_t m
    if unsigned_map:
        m = c
        return optcore_float((m + 1791) << 19) if m != 0 else 0.0
    m = c & 0x7F
    return (optcore_float(((m + 895) << 20) | ((<uint32_t>(c & 0x80)) << 24))
            if m != 0 else 0.0)


cdef inline uint8_t q8_code(float x, float inv_absmax, bint unsigned_map) noexcept nogil:
    cdef uint32_t u = optcore_bits(x)
    cdef float a = optcore_float(u & 0x7FFFFFFF) * inv_absmax
    a = 1.0 if a > 1.0 else a
    cdef uint32_t b = optcore_bits(a)
    cdef int32_t q
    cdef uint32_t m
    if unsigned_map:
        q = <int32_t>((b + 0x3FFFF + ((b >> 19) & 1)) >> 19) - 1792
        # (u's magnitude, not a: the product may underflow to 0)
        m = <uint32_t>(q + 1) if q >= 0 else (1 if (u & 0x7FFFFFFF) != 0 else 0)
        return <uint8_t>m
    q = <int32_t>((b + 0x7FFFF + ((b >> 20) & 1)) >> 20) - 896
    m = <uint32_t>(q + 1) if q >= 0 else (1 if a > 1.52587890625e-05 else 0)
    return <uint8_t>((m | ((u >> 24) & 0x80)) if m != 0 else 0)


cdef inline float block_absmax(const float* x, Py_ssize_t n) noexcept nogil:
    # max |x| as an integer max of the magnitude bits: order-independent, and
    # a NaN (above every finite value and inf in that order) wins
    cdef uint32_t best = 0, u
    cdef Py_ssize_t i
    for i in range(n):
        u = optcore_bits(x[i]) & 0x7FFFFFFF
        best = u if u > best else best
    return optcore_float(best)


cdef inline void q8_load(float* out, const uint8_t* codes, const float* absmax,
                         Py_ssize_t start, Py_ssize_t n, bint unsigned_map) noexcept nogil:
    # start: a multiple of QBLOCK (tiles and segments of int8 calls are aligned)
    cdef Py_ssize_t lo, i, m
    cdef float s
    lo = 0
    while lo < n:
        m = QBLOCK if n - lo > QBLOCK else n - lo
        s = absmax[(start + lo) // QBLOCK]
        for i in range(m):
            out[lo + i] = q8_value(codes[start + lo + i], unsigned_map) * s
        lo += m


cdef inline void q8_store(const float* x, uint8_t* codes, float* absmax,
                          Py_ssize_t start, Py_ssize_t n, bint unsigned_map) noexcept nogil:
    cdef Py_ssize_t lo, i, m
    cdef float s, inv, pre
    lo = 0
    while lo < n:
        m = QBLOCK if n - lo > QBLOCK else n - lo
        s = block_absmax(x + lo, m)
        absmax[(start + lo) // QBLOCK] = s
        if s > 0.0 and s - s == 0.0:
            pre = 16777216.0 if s < 1.1754943508222875e-38 else 1.0    # 2**24 below 2**-126
            inv = (<float>1.0) / (s * pre)
            for i in range(m):
                codes[start + lo + i] = q8_code(x[lo + i] * pre, inv, unsigned_map)
        else:
            # a zero block, or one holding a non-finite value, keeps codes 0
            # (it then reads back as zeros, or as NaN through its absmax)
            for i in range(m):
                codes[start + lo + i] = 0
        lo += m


# ---- tiles -------------------------------------------------------------------------

cdef inline float* tile_load(const Storage* s, int a, void** bufs, Py_ssize_t t,
                             Py_ssize_t start, Py_ssize_t n, float* tile) noexcept nogil:
    # buffer argument a of tensor t, elements [start, start + n), as float32:
    # the buffer itself when it is float32, else widened into `tile`
    cdef Py_ssize_t i
    cdef const uint16_t* h
    if bufs == NULL:
        return NULL
    cdef int kind = s.kind[a]
    if kind == K_F32:
        return <float*>bufs[t] + start
    if kind == K_BF16:
        h = <const uint16_t*>bufs[t] + start
        for i in range(n):
            tile[i] = bf16_load(h[i])
    elif kind == K_F16:
        f16_load_n(<const uint16_t*>bufs[t] + start, tile, n)
    else:
        q8_load(tile, <const uint8_t*>bufs[t], <const float*>s.absmax[a][t], start, n,
                s.unsigned_map[a])
    return tile


cdef inline void tile_store(const Storage* s, int a, void** bufs, Py_ssize_t t,
                            Py_ssize_t start, Py_ssize_t n, const float* tile) noexcept nogil:
    # the inverse of tile_load for a written state (nearest rounding)
    cdef Py_ssize_t i
    cdef uint16_t* h
    if bufs == NULL:
        return
    cdef int kind = s.kind[a]
    if kind == K_F32:
        return
    if kind == K_BF16:
        h = <uint16_t*>bufs[t] + start
        for i in range(n):
            h[i] = bf16_nearest(tile[i])
    elif kind == K_F16:
        f16_store_n(tile, <uint16_t*>bufs[t] + start, n)
    else:
        q8_store(tile, <uint8_t*>bufs[t], <float*>s.absmax[a][t], start, n,
                 s.unsigned_map[a])


cdef inline float* param_load(const Storage* s, void** bufs, Py_ssize_t t, Py_ssize_t start,
                              Py_ssize_t n, float* tile, float* before) noexcept nogil:
    # The param as float32: its master copy in place when there is one (the
    # low-precision param is then only written); for Kahan, `before` keeps
    # the loaded values.
    cdef Py_ssize_t i
    if s.master != NULL:
        return <float*>s.master[t] + start
    cdef float* p = tile_load(s, 0, bufs, t, start, n, tile)
    if s.rounding == KAHAN:
        for i in range(n):
            before[i] = p[i]
    return p


cdef inline void param_store(const Storage* s, void** bufs, Py_ssize_t t, Py_ssize_t start,
                             Py_ssize_t n, const float* p, const float* before) noexcept nogil:
    cdef Py_ssize_t i
    cdef int kind = s.kind[0]
    cdef uint16_t* h
    cdef uint16_t* comp
    cdef uint16_t q
    cdef float y, stored
    if kind == K_F32:
        return
    h = <uint16_t*>bufs[t] + start
    if s.rounding == STOCHASTIC:
        if kind == K_BF16:
            for i in range(n):
                h[i] = bf16_stochastic(p[i], random_bits(s.key, s.first + t, start + i))
        else:
            for i in range(n):
                h[i] = f16_stochastic(p[i], random_bits(s.key, s.first + t, start + i))
    elif s.rounding == KAHAN:
        # Kahan-compensated: y is this step's change plus what earlier stores
        # lost; the param takes y rounded and the compensation keeps the rest
        comp = <uint16_t*>s.compensation[t] + start
        if kind == K_BF16:
            for i in range(n):
                y = (p[i] - before[i]) + bf16_load(comp[i])
                q = bf16_nearest(before[i] + y)
                h[i] = q
                comp[i] = bf16_nearest(y - (bf16_load(q) - before[i]))
        else:
            for i in range(n):
                y = (p[i] - before[i]) + optcore_f16_load(comp[i])
                q = optcore_f16_nearest(before[i] + y)
                h[i] = q
                comp[i] = optcore_f16_nearest(y - (optcore_f16_load(q) - before[i]))
    elif kind == K_BF16:
        for i in range(n):
            h[i] = bf16_nearest(p[i])
    else:
        f16_store_n(p, h, n)
