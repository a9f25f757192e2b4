"""Thread control and the parallel driver shared by all kernels."""

from cython.parallel cimport parallel
from libc.stdlib cimport malloc, free

cdef extern from * nogil:
    """
    #include <time.h>
    /* Work is handed out by an atomic counter; the fallback state is read and
       written by concurrent callers, so every access is atomic (relaxed: each
       value stands alone). */
    static inline Py_ssize_t optcore_claim(Py_ssize_t *next) {
        return __atomic_fetch_add(next, 1, __ATOMIC_RELAXED);
    }
    static inline long long optcore_load(long long *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline void optcore_store(long long *p, long long v) {
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
    }
    static inline void optcore_count(long long *p) {
        __atomic_fetch_add(p, 1, __ATOMIC_RELAXED);
    }
    static inline long long optcore_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
    """
    Py_ssize_t optcore_claim(Py_ssize_t* next)
    long long optcore_load(long long* p)
    void optcore_store(long long* p, long long v)
    void optcore_count(long long* p)
    long long optcore_now_ns()

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

# Dynamic threads (on a busy machine). A parallel call is cut into more chunks
# than threads, claimed from a counter, so the calling thread takes over the
# chunks a thread that waits for a core has not started. The call still ends
# when every team thread has arrived: if the calling thread then waited longer
# than it worked (a thread got no core in time), large calls run on the
# calling thread alone for a while before trying again: 20 times what the
# call waited, so that trying again costs at most about 5% of the time if it
# is late again (under load, a late call waited up to tens of milliseconds
# for a time slice); at least 1 ms, four times longer on each late call in a
# row, at most 1 s. The time late calls lost is a debt;
# each prompt parallel call pays it back with what it saved against the
# calling thread doing all of it (its own rate over the whole call), or adds
# to it what it lost (a team that shares a core with other work saves
# nothing); the fallback time halves each time the debt is paid. A late call
# under load costs a scheduler time slice (milliseconds), tens of prompt
# calls' gain: halving on every prompt call would keep trying too often.
# Results do not change: every element and block is computed the same way by
# any thread.
cdef enum:
    CHUNKS_PER_THREAD = 8
    BACKOFF_GROWTH = 4
    LOSS_FACTOR = 20
cdef long long LATE_MIN_NS = 50000          # waits under 50 us are never late
cdef long long BACKOFF_MIN_NS = 1000000
cdef long long BACKOFF_MAX_NS = 1000000000
cdef long long _dynamic = 1
cdef long long _backoff_ns = 0
cdef long long _debt_ns = 0                 # what late calls lost, not yet repaid
cdef long long _serial_until_ns = 0
# counts, for the bench and the tests: parallel calls, late ones, and calls
# run on the calling thread because of a fallback
cdef long long _parallel_calls = 0
cdef long long _late_calls = 0
cdef long long _fallback_calls = 0


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


def set_dynamic_threads(enabled):
    """Let large calls fall back to the calling thread on a busy machine.

    When a thread of a parallel call waits for a core, the whole call waits
    for it. With dynamic threads on (the default, or ``OPTCORE_DYNAMIC_THREADS=1``
    in the environment at import), a call whose calling thread waited longer
    for the team than it worked makes the following large calls run on the
    calling thread alone for a while (20 times what the late call waited, at
    least 1 ms, four times longer while calls stay late, at most 1 s; halving
    once prompt parallel calls have saved the time late ones lost). Like the
    thread count, this never changes a result.

    Parameters
    ----------
    enabled : bool
        True to allow the fallback, False to always use the set thread count.

    Returns
    -------
    None
        The setting applies to later calls.

    See Also
    --------
    optcore.get_dynamic_threads : The setting in use.
    optcore.set_num_threads : The thread count of large calls.

    Examples
    --------
    >>> optcore.set_dynamic_threads(False)
    >>> optcore.get_dynamic_threads()
    False
    >>> optcore.set_dynamic_threads(True)
    """
    optcore_store(&_dynamic, 1 if enabled else 0)
    optcore_store(&_backoff_ns, 0)
    optcore_store(&_debt_ns, 0)
    optcore_store(&_serial_until_ns, 0)


def get_dynamic_threads():
    """Whether large calls may fall back to the calling thread on a busy machine.

    Returns
    -------
    bool
        The setting of :func:`optcore.set_dynamic_threads`.

    See Also
    --------
    optcore.set_dynamic_threads : Changes it, and describes the fallback.

    Examples
    --------
    >>> optcore.get_dynamic_threads() in (True, False)
    True
    """
    return bool(optcore_load(&_dynamic))


def _thread_stats():
    """Counts since import, for the bench and the tests: parallel calls, the
    late ones among them, calls run on the calling thread by the fallback, and
    whether a fallback is on now."""
    return {"parallel_calls": optcore_load(&_parallel_calls),
            "late_calls": optcore_load(&_late_calls),
            "fallback_calls": optcore_load(&_fallback_calls),
            "falling_back": optcore_now_ns() < optcore_load(&_serial_until_ns),
            "backoff_ns": optcore_load(&_backoff_ns), "debt_ns": optcore_load(&_debt_ns)}


def _note_call(long long start, long long done, long long end, Py_ssize_t own=1,
               Py_ssize_t chunks=2):
    """Record a parallel call as the runtime does (tests): it started at
    ``start`` ns, the calling thread finished its share (``own`` of the
    call's ``chunks``) at ``done`` and the team at ``end``."""
    _note_parallel_call(start, done, end, own, chunks)


def _force_fallback(double seconds):
    """Start a fallback of ``seconds`` now, as a late call would (tests)."""
    optcore_store(&_serial_until_ns, optcore_now_ns() + <long long>(seconds * 1e9))


if _os.environ.get("OPTCORE_DYNAMIC_THREADS", "1").strip() == "0":
    optcore_store(&_dynamic, 0)


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
    if n > 1 and optcore_load(&_dynamic) and \
            optcore_now_ns() < optcore_load(&_serial_until_ns):
        optcore_count(&_fallback_calls)
        return 1
    if n > 1:
        _parallel_used = 1
    return n


cdef inline void _add_debt(long long lost) noexcept nogil:
    cdef long long debt = optcore_load(&_debt_ns) + lost
    optcore_store(&_debt_ns, debt if debt < BACKOFF_MAX_NS else BACKOFF_MAX_NS)


cdef void _note_parallel_call(long long start, long long done, long long end,
                              Py_ssize_t own, Py_ssize_t chunks) noexcept nogil:
    """Record how long the calling thread waited for the team after doing its
    share (``own`` of the ``chunks``, by ``done``) of a parallel call that ran
    from ``start`` to ``end``."""
    cdef long long wait = end - done, backoff, debt, saved
    optcore_count(&_parallel_calls)
    if wait > LATE_MIN_NS and wait > done - start:
        optcore_count(&_late_calls)
        backoff = BACKOFF_GROWTH * optcore_load(&_backoff_ns)
        if backoff < LOSS_FACTOR * wait:
            backoff = LOSS_FACTOR * wait
        if backoff < BACKOFF_MIN_NS:
            backoff = BACKOFF_MIN_NS
        if backoff > BACKOFF_MAX_NS:
            backoff = BACKOFF_MAX_NS
        optcore_store(&_backoff_ns, backoff)
        optcore_store(&_serial_until_ns, end + backoff)
        _add_debt(wait)
    elif optcore_load(&_backoff_ns) and own > 0:
        # What the call saved: the calling thread's time for all chunks at
        # its own rate, less the call's. A gain repays the debt (once it is
        # repaid, the next late call falls back for half as long); a loss
        # adds to it.
        saved = <long long>(<double>(done - start) * chunks / own) - (end - start)
        if saved <= 0:
            _add_debt(-saved)
            return
        debt = optcore_load(&_debt_ns) - saved
        if debt > 0:
            optcore_store(&_debt_ns, debt)
            return
        optcore_store(&_debt_ns, 0)
        backoff = optcore_load(&_backoff_ns) // 2
        optcore_store(&_backoff_ns, backoff if backoff >= BACKOFF_MIN_NS else 0)


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
    run_segments_aligned(fn, ctx, sizes, ntensors, num_threads, PARTITION_ALIGN)


cdef void run_segments_aligned(segment_fn fn, const void* ctx, const Py_ssize_t* sizes,
                               Py_ssize_t ntensors, int num_threads,
                               Py_ssize_t align) noexcept nogil:
    """run_segments with chunk boundaries at multiples of ``align`` elements
    of the concatenation (a multiple of PARTITION_ALIGN)."""
    cdef Py_ssize_t total = 0, t, chunk, nchunks, lo, part, mine, next_chunk = 0
    cdef long long stamps[2]
    cdef Py_ssize_t own[1]            # the chunks the calling thread ran
    cdef int nt
    for t in range(ntensors):
        total += sizes[t]
    if total == 0:
        return
    nt = threads_for(total, num_threads)
    if nt == 1:
        _run_range(fn, ctx, sizes, ntensors, 0, total)
        return
    # Chunks of aligned, contiguous ranges, claimed in order by whichever
    # thread is free: every element is computed by the same code whatever the
    # thread count. OpenMP may start fewer threads than asked (nested regions,
    # OMP_THREAD_LIMIT); the chunks are done all the same.
    chunk = (total + nt * CHUNKS_PER_THREAD - 1) // (nt * CHUNKS_PER_THREAD)
    chunk = (chunk + align - 1) // align * align
    nchunks = (total + chunk - 1) // chunk
    stamps[0] = optcore_now_ns()
    own[0] = 0
    with parallel(num_threads=nt):
        mine = 0
        part = optcore_claim(&next_chunk)
        while part < nchunks:
            lo = part * chunk
            _run_range(fn, ctx, sizes, ntensors, lo, _clipped_end(lo, chunk, total))
            mine = mine + 1
            part = optcore_claim(&next_chunk)
        if omp_get_thread_num() == 0:
            stamps[1] = optcore_now_ns()
            own[0] = mine
    _note_parallel_call(stamps[0], stamps[1], optcore_now_ns(), own[0], nchunks)


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
    cdef Py_ssize_t total = 0, nblocks = 0, t, b, j, chunk, nchunks, lo, hi, part, mine
    cdef Py_ssize_t next_chunk = 0
    cdef long long stamps[2]
    cdef Py_ssize_t own[1]            # the chunks the calling thread ran
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
    # Runs of blocks claimed as in run_segments; each block's results go to
    # its own slot, folded in call order below.
    chunk = (nblocks + nt * CHUNKS_PER_THREAD - 1) // (nt * CHUNKS_PER_THREAD)
    nchunks = (nblocks + chunk - 1) // chunk
    stamps[0] = optcore_now_ns()
    own[0] = 0
    with parallel(num_threads=nt):
        mine = 0
        part = optcore_claim(&next_chunk)
        while part < nchunks:
            lo = part * chunk
            hi = _clipped_end(lo, chunk, nblocks)
            _run_blocks(fn, ctx, sizes, ntensors, lo, hi, partials + lo * width, width)
            mine = mine + 1
            part = optcore_claim(&next_chunk)
        if omp_get_thread_num() == 0:
            stamps[1] = optcore_now_ns()
            own[0] = mine
    _note_parallel_call(stamps[0], stamps[1], optcore_now_ns(), own[0], nchunks)
    b = 0
    for t in range(ntensors):
        for j in range(_blocks_of(sizes[t])):
            fold(acc, t, partials + b * width)
            b += 1
    free(partials)
