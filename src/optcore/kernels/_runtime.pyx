"""Thread control and the parallel driver shared by all kernels."""

from cython.parallel cimport prange
from libc.stdlib cimport malloc, free

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

# A child forked after this process ran an OpenMP parallel region inherits a
# thread pool whose threads do not exist in it: GNU libgomp then waits for
# them forever. Such a child runs every kernel on its calling thread instead.
cdef int _parallel_used = 0
cdef int _forked_after_parallel = 0


def _after_fork_in_child():
    global _forked_after_parallel
    if _parallel_used:
        _forked_after_parallel = 1


import os as _os
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)


def get_num_threads():
    """Number of threads a large kernel call uses now.

    It is the number given to `set_num_threads`, else OpenMP's own setting;
    1 without OpenMP and in a process forked after OpenMP ran in its parent
    (see ``threads_for``).

    Returns
    -------
    int
        The thread count, >= 1.

    See Also
    --------
    optcore.set_num_threads : Sets it.

    Examples
    --------
    >>> optcore.get_num_threads() >= 1
    True
    """
    if _forked_after_parallel or not OPTCORE_HAVE_OPENMP:
        return 1
    if _num_threads > 0:
        return _num_threads
    return omp_get_max_threads()


def set_num_threads(n):
    """Use ``n`` threads for large kernel calls.

    OpenMP's own setting (``OMP_NUM_THREADS``, ``threadpoolctl.threadpool_limits``)
    applies while no number is set here. Results do not depend on the count.

    Parameters
    ----------
    n : int or None
        Threads per large call, >= 1; ``None`` or 0 follows OpenMP again.

    Returns
    -------
    None
        The setting applies to later calls.

    Raises
    ------
    ValueError
        A negative ``n``.

    See Also
    --------
    optcore.get_num_threads : The count in use.

    Examples
    --------
    >>> optcore.set_num_threads(1)
    >>> optcore.get_num_threads()
    1
    >>> optcore.set_num_threads(None)
    """
    global _num_threads
    if n is None:
        n = 0
    n = int(n)
    if n < 0:
        raise ValueError(f"num_threads must be >= 0 or None, got {n}")
    _num_threads = n


def get_parallel_threshold():
    """Elements in one call below which kernels run on the calling thread.

    Returns
    -------
    int
        The threshold, in elements per call (measured for this machine).

    See Also
    --------
    optcore.set_parallel_threshold : Sets it.

    Examples
    --------
    >>> optcore.get_parallel_threshold() >= 0
    True
    """
    return PARALLEL_THRESHOLD


def set_parallel_threshold(Py_ssize_t n):
    """Set the single-thread threshold (elements per call).

    Parameters
    ----------
    n : int
        Calls on fewer elements than this run on the calling thread; >= 0.

    Returns
    -------
    int
        The previous threshold.

    Raises
    ------
    ValueError
        A negative ``n``.

    See Also
    --------
    optcore.get_parallel_threshold : The threshold in use.

    Examples
    --------
    >>> old = optcore.set_parallel_threshold(1000)
    >>> optcore.get_parallel_threshold()
    1000
    >>> optcore.set_parallel_threshold(old)
    1000
    """
    global PARALLEL_THRESHOLD
    if n < 0:
        raise ValueError(f"threshold must be >= 0, got {n}")
    old = PARALLEL_THRESHOLD
    PARALLEL_THRESHOLD = n
    return old


def openmp_enabled():
    """Whether optcore was built with OpenMP.

    Returns
    -------
    bool
        True when large calls can run on several threads.

    See Also
    --------
    optcore.get_num_threads : The thread count in use.

    Examples
    --------
    >>> isinstance(optcore.openmp_enabled(), bool)
    True
    """
    return bool(OPTCORE_HAVE_OPENMP)


cdef Py_ssize_t parallel_threshold() noexcept nogil:
    return PARALLEL_THRESHOLD


cdef int threads_for(Py_ssize_t total, int requested) noexcept nogil:
    """Threads for a call over ``total`` elements; ``requested`` <= 0 means the
    process setting (optcore's, else OpenMP's)."""
    global _parallel_used
    cdef int n = requested
    if n <= 0:
        n = _num_threads if _num_threads > 0 else omp_get_max_threads()
    if (not OPTCORE_HAVE_OPENMP or total < PARALLEL_THRESHOLD or n <= 1
            or _forked_after_parallel):
        return 1
    # Never more threads than aligned partitions.
    cdef Py_ssize_t parts = (total + PARTITION_ALIGN - 1) // PARTITION_ALIGN
    if n > parts:
        n = <int>parts
    if n > 1:
        _parallel_used = 1
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


cdef inline Py_ssize_t _clipped_end(Py_ssize_t lo, Py_ssize_t width,
                                    Py_ssize_t limit) noexcept nogil:
    # The end of the range of `width` elements from `lo`, at most `limit`.
    return limit if lo + width > limit else lo + width


cdef void run_segments(segment_fn fn, const void* ctx, const Py_ssize_t* sizes,
                       Py_ssize_t ntensors, int num_threads) noexcept nogil:
    """Apply ``fn`` over all elements of all tensors, with ``num_threads``
    threads (<= 0: the process setting; 1: the calling thread only)."""
    cdef Py_ssize_t total = 0, t, chunk, lo, hi, part
    cdef int nt
    for t in range(ntensors):
        total += sizes[t]
    if total == 0:
        return
    nt = threads_for(total, num_threads)
    if nt == 1:
        _run_range(fn, ctx, sizes, ntensors, 0, total)
        return
    # Static partition into nt contiguous, aligned ranges, so every element is
    # computed by the same code whatever the thread count. The ranges are
    # handed out by prange: OpenMP may start fewer threads than asked (nested
    # regions, OMP_THREAD_LIMIT), and every range must still be done.
    chunk = (total + nt - 1) // nt
    chunk = (chunk + PARTITION_ALIGN - 1) // PARTITION_ALIGN * PARTITION_ALIGN
    for part in prange(nt, schedule='static', num_threads=nt):
        lo = part * chunk
        hi = _clipped_end(lo, chunk, total)
        if lo < hi:
            _run_range(fn, ctx, sizes, ntensors, lo, hi)


cdef inline Py_ssize_t _blocks_of(Py_ssize_t n) noexcept nogil:
    return (n + REDUCE_BLOCK - 1) // REDUCE_BLOCK


cdef void _run_blocks(block_fn fn, const void* ctx, const Py_ssize_t* sizes,
                      Py_ssize_t ntensors, Py_ssize_t first, Py_ssize_t last,
                      double* out, int width) noexcept nogil:
    # Blocks [first, last) of the call, block b's results at out[(b - first) * width].
    cdef Py_ssize_t t = 0, base = 0, j, b, lo, hi
    while base + _blocks_of(sizes[t]) <= first:
        base += _blocks_of(sizes[t])
        t += 1
    j = first - base
    for b in range(first, last):
        while j >= _blocks_of(sizes[t]):     # next tensor (skips empty ones)
            t += 1
            j = 0
        lo = j * REDUCE_BLOCK
        hi = _clipped_end(lo, REDUCE_BLOCK, sizes[t])
        fn(ctx, t, lo, hi, out + (b - first) * width)
        j += 1


cdef void reduce_blocks(block_fn fn, const void* ctx, fold_fn fold, void* acc,
                        const Py_ssize_t* sizes, Py_ssize_t ntensors, int width,
                        int num_threads) noexcept nogil:
    """Run ``fn`` on every block of the call and ``fold`` the block results in
    call order. ``width`` <= REDUCE_MAX_WIDTH doubles per block."""
    cdef Py_ssize_t total = 0, nblocks = 0, t, b, j, chunk, lo, hi, part
    cdef double one[REDUCE_MAX_WIDTH]
    cdef double* partials = NULL
    cdef int nt
    for t in range(ntensors):
        total += sizes[t]
        nblocks += _blocks_of(sizes[t])
    if nblocks == 0:
        return
    nt = threads_for(total, num_threads)
    if nt > 1 and nblocks > 1:
        partials = <double*>malloc(nblocks * width * sizeof(double))
    if partials == NULL:
        # One thread (or no memory for the partials): each block is folded as
        # soon as it is done, the same blocks in the same order.
        for t in range(ntensors):
            for j in range(_blocks_of(sizes[t])):
                lo = j * REDUCE_BLOCK
                hi = _clipped_end(lo, REDUCE_BLOCK, sizes[t])
                fn(ctx, t, lo, hi, one)
                fold(acc, t, one)
        return
    if nt > nblocks:
        nt = <int>nblocks
    chunk = (nblocks + nt - 1) // nt
    for part in prange(nt, schedule='static', num_threads=nt):
        lo = part * chunk
        hi = _clipped_end(lo, chunk, nblocks)
        if lo < hi:
            _run_blocks(fn, ctx, sizes, ntensors, lo, hi, partials + lo * width, width)
    b = 0
    for t in range(ntensors):
        for j in range(_blocks_of(sizes[t])):
            fold(acc, t, partials + b * width)
            b += 1
    free(partials)
