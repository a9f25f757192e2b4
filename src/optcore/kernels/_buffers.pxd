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

cdef enum:
    MAX_ARGS = 32    # buffer arguments of one call

cdef enum Dtype:
    FLOAT32 = 0
    FLOAT64 = 1

# How a call uses a buffer argument.
cdef enum Role:
    ABSENT = 0   # not used by this call (None is accepted)
    WRITE = 1    # updated in place: must be C-contiguous, writable, never copied
    READ = 2     # only read: read-only is fine; a non-contiguous input is copied

cdef class BufferSet:
    cdef readonly Py_ssize_t ntensors
    cdef readonly int nargs
    cdef readonly int dtype
    cdef readonly bint is_list
    cdef void** data            # data[arg * ntensors + t]; NULL where ABSENT
    cdef Py_ssize_t* sizes      # sizes[t], elements of tensor t
    cdef Py_buffer* views
    cdef int nviews
    cdef list keep              # contiguous copies of non-contiguous inputs
    cdef dict copied            # buffer number -> (lo, hi) of a copied input's original
    cdef PyObject** refs        # NumPy arrays bound without a buffer view (held)
    cdef Py_ssize_t nrefs
    cdef Py_ssize_t total(self) noexcept

cdef BufferSet bind(tuple names, tuple objs, tuple roles)
