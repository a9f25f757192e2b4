# Validation and binding of the buffers of one kernel call.
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
    cdef PyObject** refs        # NumPy arrays bound without a buffer view (held)
    cdef Py_ssize_t nrefs
    cdef Py_ssize_t total(self) noexcept

cdef BufferSet bind(tuple names, tuple objs, tuple roles)
