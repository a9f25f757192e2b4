"""Thread control and the parallel driver shared by all kernels."""

from cython.parallel cimport parallel

# Total elements in one call below which a kernel runs on the calling thread.
# Set from `python -m optcore bench` ("single-thread threshold" section) on a
# 2-core AMD EPYC (x86-64-v4 kernels), float32, in three full runs: a 2-thread
# OpenMP region cost 0.4-1.0 us back to back (35-85 us once the workers
# sleep); 2 threads beat 1 from 11.6k-46k elements for Adam/AdamW (~0.18
# ns/element on one core) and from 23k-65k for SGD with momentum and
# mse_loss_grad (~0.1 ns/element). Over the three runs, all four kernels and
# sizes 1k..256k, 32768 loses least against the better of 1 and 2 threads;
# forking early risks more (a slower call, a sleeping pool's wake-up) than it gains.
cdef Py_ssize_t PARALLEL_THRESHOLD = 32768

# 0: follow OpenMP (OMP_NUM_THREADS, threadpoolctl); >0: optcore's own setting.
cdef int _num_threads = 0


def get_num_threads():
    """Number of threads a large kernel call uses now."""
    if _num_threads > 0:
        return _num_threads
    return omp_get_max_threads()


def set_num_threads(n):
    """Use ``n`` threads for large kernel calls (``None`` or 0: follow OpenMP).

    OpenMP's own setting (``OMP_NUM_THREADS``, ``threadpoolctl.threadpool_limits``)
    applies while no number is set here.
    """
    global _num_threads
    if n is None:
        n = 0
    n = int(n)
    if n < 0:
        raise ValueError(f"num_threads must be >= 0 or None, got {n}")
    _num_threads = n


def get_parallel_threshold():
    """Elements in one call below which kernels run on the calling thread."""
    return PARALLEL_THRESHOLD


def set_parallel_threshold(Py_ssize_t n):
    """Set the single-thread threshold (elements per call); returns the old one."""
    global PARALLEL_THRESHOLD
    if n < 0:
        raise ValueError(f"threshold must be >= 0, got {n}")
    old = PARALLEL_THRESHOLD
    PARALLEL_THRESHOLD = n
    return old


def openmp_enabled():
    """True when optcore was built with OpenMP."""
    return bool(OPTCORE_HAVE_OPENMP)


cdef Py_ssize_t parallel_threshold() noexcept nogil:
    return PARALLEL_THRESHOLD


cdef int threads_for(Py_ssize_t total, int requested) noexcept nogil:
    """Threads for a call over ``total`` elements; ``requested`` <= 0 means the
    process setting (optcore's, else OpenMP's)."""
    cdef int n = requested
    if n <= 0:
        n = _num_threads if _num_threads > 0 else omp_get_max_threads()
    if total < PARALLEL_THRESHOLD or n < 1:
        return 1
    # Never more threads than aligned partitions.
    cdef Py_ssize_t parts = (total + PARTITION_ALIGN - 1) // PARTITION_ALIGN
    if n > parts:
        n = <int>parts
    return n


cdef inline void _run_range(segment_fn fn, const void* ctx, const Py_ssize_t* sizes,
                            Py_ssize_t ntensors, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # Call fn on every tensor slice that lies in [lo, hi) of the concatenation.
    cdef Py_ssize_t t, base = 0, start, stop
    for t in range(ntensors):
        if base >= hi:
            break
        if base + sizes[t] > lo:
            start = lo - base if lo > base else 0
            stop = hi - base if hi - base < sizes[t] else sizes[t]
            if stop > start:
                fn(ctx, t, start, stop)
        base += sizes[t]


cdef void run_segments(segment_fn fn, const void* ctx, const Py_ssize_t* sizes,
                       Py_ssize_t ntensors, int num_threads) noexcept nogil:
    """Apply ``fn`` over all elements of all tensors, with ``num_threads``
    threads (<= 0: the process setting; 1: the calling thread only)."""
    cdef Py_ssize_t total = 0, t, chunk, lo, hi
    cdef int tid, nt
    for t in range(ntensors):
        total += sizes[t]
    if total == 0:
        return
    nt = threads_for(total, num_threads)
    if nt == 1:
        _run_range(fn, ctx, sizes, ntensors, 0, total)
        return
    # Static partition: thread i owns one contiguous, aligned range, so every
    # element is computed by the same code whatever the thread count.
    chunk = (total + nt - 1) // nt
    chunk = (chunk + PARTITION_ALIGN - 1) // PARTITION_ALIGN * PARTITION_ALIGN
    with parallel(num_threads=nt):
        tid = omp_get_thread_num()
        lo = tid * chunk
        hi = lo + chunk
        if hi > total:
            hi = total
        if lo < hi:
            _run_range(fn, ctx, sizes, ntensors, lo, hi)
