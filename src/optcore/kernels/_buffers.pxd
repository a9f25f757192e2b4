# Validation and binding of the buffers of one kernel call.
#
# bind() is the kernels' entry. Python callers that must validate calls
# before any of them runs use the module's check-only functions, which run
# bind()'s checks (same errors, same messages) and write, copy and keep nothing:
#   check_buffers(names, objs, roles, labels=None)   one call
#   check_calls(calls)     several calls (names, objs, roles[, labels]): each
#                          call as check_buffers, then the overlap rule over all
# roles there are "write", "read" or None (absent); labels (optional) name the
# buffers in messages: per argument None, a str (single array) or a list of
# str (one per tensor).
from cpython.buffer cimport Py_buffer
from cpython.ref cimport PyObject
from libc.stdint cimport uintptr_t
from libc.stdlib cimport qsort

cdef enum:
    MAX_ARGS = 32    # buffer arguments of one call

cdef enum Dtype:
    FLOAT32 = 0
    FLOAT64 = 1
    # step kernels' mixed calls (bind_mixed) also take these:
    BFLOAT16 = 2
    FLOAT16 = 3
    UINT8 = 4       # the codes of an optcore.QuantizedState
    MIXED = 5       # BufferSet.dtype of a call whose arguments differ

# How a call uses a buffer argument.
cdef enum Role:
    ABSENT = 0   # not used by this call (None is accepted)
    WRITE = 1    # updated in place: must be C-contiguous, writable, never copied
    READ = 2     # only read: read-only is fine; a non-contiguous input is copied

cdef class BufferSet:
    cdef readonly Py_ssize_t ntensors
    cdef readonly int nargs
    cdef readonly int dtype         # the call's dtype, or MIXED (bind_mixed)
    cdef int dtypes[MAX_ARGS]       # each argument's dtype (-1: absent)
    cdef list absmax                # bind_mixed: per argument None or the
                                    # QuantizedState scales (list per tensor)
    cdef readonly bint is_list
    cdef void** data            # data[arg * ntensors + t]; NULL where ABSENT
    cdef Py_ssize_t* sizes      # sizes[t], elements of tensor t
    cdef Py_buffer* views
    cdef int nviews
    cdef list keep              # contiguous copies of non-contiguous inputs
    cdef dict copied            # buffer number -> (lo, hi) of a copied input's original
    cdef PyObject** refs        # NumPy arrays bound without a buffer view (held)
    cdef Py_ssize_t nrefs
    cdef int roles[MAX_ARGS]    # the Role of each argument
    cdef Py_ssize_t total(self) noexcept

cdef BufferSet bind(tuple names, tuple objs, tuple roles)
# bind for the step kernels: each argument may have its own dtype (float32,
# float64, bfloat16, float16) and a state may be an optcore.QuantizedState
# (its codes are bound; its scales are listed in BufferSet.absmax). Which
# combinations a kernel runs is optcore.kernels._precision's rule.
cdef BufferSet bind_mixed(tuple names, tuple objs, tuple roles)
cdef check_disjoint(BufferSet x, tuple xnames, tuple xobjs, BufferSet y, tuple ynames,
                    tuple yobjs)
cdef int itemsize_of(int dtype) noexcept
cdef str dtype_name(int dtype)

# ---- byte ranges, for the overlap rule (_buffers.pyx) ----------------------------

cdef enum:
    STACK_INTERVALS = 64   # intervals of one call kept on the stack (more: heap)

cdef struct Interval:
    uintptr_t start
    uintptr_t stop
    Py_ssize_t index   # the caller's number for the buffer (see _Where)
    int writable
    int dense          # [start, stop) holds only the buffer's own elements


cdef inline bint _extent(uintptr_t buf, int ndim, const Py_ssize_t* shape,
                         const Py_ssize_t* strides, Py_ssize_t itemsize,
                         uintptr_t* lo, uintptr_t* hi) noexcept nogil:
    # The byte range [lo, hi) spanned by a strided buffer; False when empty.
    cdef uintptr_t start = buf, stop = buf
    cdef Py_ssize_t span
    cdef int d
    for d in range(ndim):
        if shape[d] == 0:
            return False
        span = (shape[d] - 1) * strides[d]
        if span < 0:
            start -= <uintptr_t>(-span)
        else:
            stop += <uintptr_t>span
    lo[0] = start
    hi[0] = stop + <uintptr_t>itemsize
    return True


cdef inline bint _before(const Interval* x, const Interval* y) noexcept nogil:
    # By start address, then by buffer number: a total order (numbers differ).
    return x.start < y.start or (x.start == y.start and x.index < y.index)


cdef inline int _cmp_interval(const void* a, const void* b) noexcept nogil:
    cdef const Interval* x = <const Interval*>a
    cdef const Interval* y = <const Interval*>b
    if x.start != y.start:
        return -1 if x.start < y.start else 1
    return -1 if x.index < y.index else (1 if x.index > y.index else 0)
