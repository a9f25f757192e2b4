# A step kernel call bound once: the written buffers (parameters, state) of a
# plan's group, bound and checked when the plan is built; each call binds only
# its inputs (the gradients) and re-checks the written arrays cheaply.
#
# Each kernel module generates one subclass (_<name>_api.pxi: its options as
# C values, its launch) and a binder per Python wrapper (_BINDERS[wrapper
# name]); optcore.kernels._plan.bound_call finds and calls them.
from libc.stdint cimport uintptr_t
from optcore.kernels._buffers cimport BufferSet, Interval

cdef struct Held:
    # a written array as it was bound; any change sends the step elsewhere
    void* array          # the PyArrayObject (a reference in BoundCall.arrays)
    void* data
    void* descr
    Py_ssize_t size

cdef class BoundCall:
    cdef BufferSet b             # the call's buffers; the input's pointers set per call
    cdef int input_arg           # the argument bound per call (the gradient)
    cdef int input_type          # its NumPy type number (the call's dtype)
    cdef list arrays             # the written arrays (held)
    cdef Held* held
    cdef Py_ssize_t nheld
    cdef Interval* spans         # the written byte ranges, sorted by address
    cdef Py_ssize_t nspans
    cdef bint busy               # a call is running (another thread's step)
    cdef bint setup(self, BufferSet b, int input_arg, tuple objs) except -1
    cdef bint call(self, object inputs, long long step) except -1
    cdef int launch(self, long long step) except -1
    cdef bint set_lr(self, double lr) except -1
