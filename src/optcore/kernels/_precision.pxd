# The rule of a step kernel's mixed-precision call (which dtype combinations,
# master weights, roundings run) and its Storage (optcore.kernels._storage).
from libc.stdint cimport uint64_t

from optcore.kernels._buffers cimport BufferSet
from optcore.kernels._storage cimport Storage


cdef class Precision:
    cdef Storage storage
    cdef BufferSet scales          # the absmax arrays of quantized states (or None)
    cdef Py_ssize_t* run_sizes     # the sizes the runtime partitions (padded to
                                   # whole blocks when a state is quantized)
    cdef Py_ssize_t align          # chunk boundaries: a multiple of this
    cdef void** absmax_ptrs


# ``layout``: per kernel buffer (name, written, unsigned map) in C-API order;
# the BufferSet holds those buffers, then master_param and compensation.
cdef Precision prepare(BufferSet b, tuple names, tuple objs, tuple layout, object rounding,
                       object seed, long long step, str kernel)

# The checked Rounding of a ``rounding=`` argument, and a ``seed=`` as 64 bits
# (for kernels that bind their buffers themselves: adafactor).
cdef int rounding_mode(object rounding) except -1
cdef uint64_t seed_value(object seed) except? 0
