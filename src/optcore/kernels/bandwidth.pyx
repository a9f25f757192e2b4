"""The machine's memory-bandwidth ceiling, measured with the kernels' traffic.

Each pattern moves the bytes of one kernel family per element and does almost
no arithmetic, through the same kind of driver as the kernels (one OpenMP
region per pass, static contiguous partitions aligned to 64 bytes), timed in
native code. ``python -m optcore bench`` judges each kernel against the pattern
with its traffic, at the same size, dtype and thread count.

Patterns (R reads and W writes per element, in place unless said):
  "4r3w"   param, grad, two state buffers read; param and states written (Adam)
  "3r2w"   param, grad, one state read; param and state written (SGD momentum)
  "2r1w"   param, grad read; param written (plain SGD)
  "1r1w"   one buffer scaled in place (unscale_, clip_grad_value_)
  "1r"     one buffer read (norms, all_finite)
  "triad"  a = b + s * c: two inputs read, a separate output written
           (12 bytes per float32 element, STREAM's count; mse_loss_grad)
  "5r4w"   four written buffers and the gradient (Adam with amsgrad)
  "4r2w"   two written, two only read (a first pass of a two-pass update)
  "3r1w"   one written, two only read
"""

from cython cimport floating
from cython.parallel cimport parallel

from optcore.kernels._runtime cimport (omp_get_thread_num, PARTITION_ALIGN,
                                       OPTCORE_HAVE_OPENMP)

import numpy as np

cdef extern from * nogil:
    """
    #ifdef _WIN32
    #include <windows.h>
    static unsigned long long optcore_now_ns(void) {
        LARGE_INTEGER t, f;
        QueryPerformanceCounter(&t);
        QueryPerformanceFrequency(&f);
        return (unsigned long long)((double)t.QuadPart * 1e9 / (double)f.QuadPart);
    }
    #else
    #include <time.h>
    static unsigned long long optcore_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (unsigned long long)ts.tv_sec * 1000000000ull
               + (unsigned long long)ts.tv_nsec;
    }
    #endif
    """
    unsigned long long optcore_now_ns()


# name: (reads, writes, buffers). The written buffers come first. The
# position in this table is the pattern's code in _segment.
PATTERNS = {
    "4r3w": (4, 3, 4),      # 0
    "3r2w": (3, 2, 3),      # 1
    "2r1w": (2, 1, 2),      # 2
    "1r1w": (1, 1, 1),      # 3
    "1r": (1, 0, 1),        # 4
    "triad": (2, 1, 3),     # 5
    "5r4w": (5, 4, 5),      # 6
    "4r2w": (4, 2, 4),      # 7
    "3r1w": (3, 1, 3),      # 8
}
cdef dict _CODES = {name: i for i, name in enumerate(PATTERNS)}

cdef enum:
    LANES = 64        # independent sums: enough to hide the add latency
    MAX_BUFFERS = 5


cdef struct Pass:
    int code
    int nbuf
    void* buf[MAX_BUFFERS]
    double scale
    double sink[256]          # per-thread results of the read-only pattern
    # how run() times it
    Py_ssize_t n              # elements per buffer
    int num_threads
    bint f32


def bytes_per_element(str pattern, itemsize):
    """Bytes one element of ``pattern`` moves (reads + writes)."""
    reads, writes, _ = PATTERNS[pattern]
    return (reads + writes) * int(itemsize)


cdef void _segment(Pass* ps, Py_ssize_t lo, Py_ssize_t hi, int tid,
                   floating tag) noexcept nogil:
    cdef floating s = <floating>ps.scale
    cdef floating* a = <floating*>ps.buf[0] + lo
    cdef floating* b = NULL
    cdef floating* c = NULL
    cdef floating* d = NULL
    cdef floating* e = NULL
    cdef Py_ssize_t i, j, r, n = hi - lo, nfull
    cdef floating acc[LANES]
    cdef floating t, total
    if ps.nbuf > 1:
        b = <floating*>ps.buf[1] + lo
    if ps.nbuf > 2:
        c = <floating*>ps.buf[2] + lo
    if ps.nbuf > 3:
        d = <floating*>ps.buf[3] + lo
    if ps.nbuf > 4:
        e = <floating*>ps.buf[4] + lo
    if ps.code == 0:            # 4r3w: a, b, c written; d read
        for i in range(n):
            t = d[i]
            a[i] = a[i] * s + t
            b[i] = b[i] * s + t
            c[i] = c[i] * s + t
    elif ps.code == 1:          # 3r2w: a, b written; c read
        for i in range(n):
            t = c[i]
            a[i] = a[i] * s + t
            b[i] = b[i] * s + t
    elif ps.code == 2:          # 2r1w: a written; b read
        for i in range(n):
            a[i] = a[i] * s + b[i]
    elif ps.code == 3:          # 1r1w
        for i in range(n):
            a[i] = a[i] * s + s
    elif ps.code == 4:          # 1r: a sum in LANES independent lanes
        for j in range(LANES):
            acc[j] = 0
        nfull = n - n % LANES
        for r in range(nfull // LANES):
            i = r * LANES
            for j in range(LANES):
                acc[j] = acc[j] + a[i + j]
        for i in range(nfull, n):
            acc[0] = acc[0] + a[i]
        total = 0
        for j in range(LANES):
            total = total + acc[j]
        ps.sink[tid & 255] = total
    elif ps.code == 5:          # triad: a = b + s * c
        for i in range(n):
            a[i] = b[i] + s * c[i]
    elif ps.code == 7:          # 4r2w: a, b written; c, d read
        for i in range(n):
            t = c[i] + d[i]
            a[i] = a[i] * s + t
            b[i] = b[i] * s + t
    elif ps.code == 8:          # 3r1w: a written; b, c read
        for i in range(n):
            a[i] = a[i] * s + (b[i] + c[i])
    else:                       # 5r4w: a, b, c, d written; e read
        for i in range(n):
            t = e[i]
            a[i] = a[i] * s + t
            b[i] = b[i] * s + t
            c[i] = c[i] * s + t
            d[i] = d[i] * s + t


cdef void _one_pass(Pass* ps, Py_ssize_t n, int nt, bint f32) noexcept nogil:
    cdef Py_ssize_t chunk, lo, hi
    cdef int tid
    if nt <= 1:
        if f32:
            _segment[float](ps, 0, n, 0, 0)
        else:
            _segment[double](ps, 0, n, 0, 0)
        return
    # The kernels' partition: contiguous, aligned to PARTITION_ALIGN elements.
    chunk = (n + nt - 1) // nt
    chunk = (chunk + PARTITION_ALIGN - 1) // PARTITION_ALIGN * PARTITION_ALIGN
    with parallel(num_threads=nt):
        tid = omp_get_thread_num()
        lo = tid * chunk
        hi = lo + chunk
        if hi > n:
            hi = n
        if lo < hi:
            if f32:
                _segment[float](ps, lo, hi, tid, 0)
            else:
                _segment[double](ps, lo, hi, tid, 0)


ctypedef void (*timed_fn)(void* ctx) noexcept nogil


cdef list _seconds_per_call(timed_fn body, void* ctx, int number, int repeat):
    # `repeat` samples of the mean wall time of `number` calls of body(ctx).
    cdef int rep, k
    cdef unsigned long long t0, t1
    times = []
    for rep in range(repeat):
        with nogil:
            t0 = optcore_now_ns()
            for k in range(number):
                body(ctx)
            t1 = optcore_now_ns()
        times.append((t1 - t0) * 1e-9 / number)
    return times


cdef void _timed_pass(void* ctx) noexcept nogil:
    cdef Pass* ps = <Pass*>ctx
    _one_pass(ps, ps.n, ps.num_threads, ps.f32)


def make_buffers(str pattern, Py_ssize_t n, dtype=np.float32, seed=0):
    """Random (never zero) buffers for ``pattern``: a list of arrays."""
    _, _, nbuf = PATTERNS[pattern]
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.5, 1.5, n).astype(dtype) for _ in range(nbuf)]


def run(str pattern, list buffers, int num_threads=1, int number=1,
        int repeat=1, double scale=0.5):
    """Run ``repeat`` samples of ``number`` passes of ``pattern`` over
    ``buffers`` (from make_buffers) with exactly ``num_threads`` threads (one
    OpenMP region per pass, as a kernel call); return the seconds per pass of
    each sample. Values stay bounded (``scale`` < 1 makes every update a
    contraction towards a fixed point)."""
    cdef Pass ps
    cdef int i, nbuf
    if number < 1 or repeat < 1:
        raise ValueError("number and repeat must be >= 1")
    ps.code = _CODES[pattern]
    nbuf = PATTERNS[pattern][2]
    ps.nbuf = nbuf
    if len(buffers) != nbuf:
        raise ValueError(f"pattern {pattern!r} takes {nbuf} buffers")
    arrays = [np.ascontiguousarray(b) for b in buffers]
    dt = arrays[0].dtype
    if dt not in (np.float32, np.float64):
        raise TypeError(f"buffers must be float32 or float64, got {dt}")
    ps.n = arrays[0].size
    for a in arrays:
        if a.dtype != dt or a.size != ps.n or not a.flags.writeable:
            raise ValueError("buffers must be writable arrays of one dtype and size")
    for i in range(nbuf):
        ps.buf[i] = <void*><Py_ssize_t>arrays[i].ctypes.data
    ps.f32 = dt == np.float32
    ps.scale = scale
    ps.num_threads = 1 if num_threads < 1 or not OPTCORE_HAVE_OPENMP else num_threads
    return _seconds_per_call(_timed_pass, &ps, number, repeat)


cdef void _timed_fork_join(void* ctx) noexcept nogil:
    cdef int tid
    with parallel(num_threads=(<int*>ctx)[0]):
        tid = omp_get_thread_num()


def fork_join(int num_threads, int number=1000, int repeat=15):
    """Seconds per empty OpenMP parallel region of ``num_threads`` threads
    (the fixed cost a parallel kernel call pays), one value per sample."""
    cdef int nt = num_threads
    if nt < 1 or not OPTCORE_HAVE_OPENMP:
        nt = 1
    return _seconds_per_call(_timed_fork_join, &nt, number, repeat)
