# Threads and work partitioning shared by every kernel module.
#
# Kernels describe one step as a "segment function" over a slice of one tensor;
# run_segments() spreads the concatenated elements of all tensors of a call over
# the threads (one parallel region, static contiguous partitions aligned to
# cache lines) and calls the segment function on each piece.

cdef extern from * nogil:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define OPTCORE_HAVE_OPENMP 1
    #else
    #define OPTCORE_HAVE_OPENMP 0
    static inline int omp_get_max_threads(void) { return 1; }
    static inline int omp_get_thread_num(void) { return 0; }
    static inline int omp_get_num_threads(void) { return 1; }
    #endif
    """
    const int OPTCORE_HAVE_OPENMP
    int omp_get_max_threads()
    int omp_get_thread_num()
    int omp_get_num_threads()

# Work on elements [start, stop) of tensor t of the call described by ctx.
ctypedef void (*segment_fn)(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                            Py_ssize_t stop) noexcept nogil

# Elements per partition boundary: 64 bytes of float32 (and 128 of float64).
cdef enum:
    PARTITION_ALIGN = 16

cdef Py_ssize_t parallel_threshold() noexcept nogil
cdef int threads_for(Py_ssize_t total, int requested) noexcept nogil
cdef void run_segments(segment_fn fn, const void* ctx, const Py_ssize_t* sizes,
                       Py_ssize_t ntensors, int num_threads) noexcept nogil
