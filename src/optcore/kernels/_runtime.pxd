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
# Chunk boundaries at multiples of `align` (int8 states: whole quantization
# blocks; the caller pads each tensor's size to a multiple of it).
cdef void run_segments_aligned(segment_fn fn, const void* ctx, const Py_ssize_t* sizes,
                               Py_ssize_t ntensors, int num_threads,
                               Py_ssize_t align) noexcept nogil

# Deterministic reductions. Each tensor of a call is cut into blocks of
# REDUCE_BLOCK elements (the last one shorter); a block function reduces one
# block into `width` doubles, and reduce_blocks() hands the results of all
# blocks, in call order (tensor 0 block 0, block 1, ..., tensor 1 ...), to a
# fold function on the calling thread. Threads only decide who computes a
# block, so the folded result has the same bits for any thread count.
cdef enum:
    REDUCE_BLOCK = 4096
    REDUCE_MAX_WIDTH = 4

ctypedef void (*block_fn)(const void* ctx, Py_ssize_t t, Py_ssize_t start,
                          Py_ssize_t stop, double* out) noexcept nogil
ctypedef void (*fold_fn)(void* acc, Py_ssize_t t, const double* out) noexcept nogil

cdef void reduce_blocks(block_fn fn, const void* ctx, fold_fn fold, void* acc,
                        const Py_ssize_t* sizes, Py_ssize_t ntensors, int width,
                        int num_threads) noexcept nogil
