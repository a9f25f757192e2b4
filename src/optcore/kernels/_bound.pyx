"""A step kernel call bound once (see _bound.pxd).

``setup`` keeps what ``bind`` found for the written buffers: their pointers,
their arrays (data pointer, dtype object, size) and their byte ranges sorted.
``call`` then takes one step when nothing of that changed: each written array
still has its data, dtype and size and is still C-contiguous, aligned and
writable; each input is an exact NumPy array of the call's dtype and its
tensor's size, C-contiguous and aligned, and overlaps no written range (a
binary search). Otherwise it returns False having written nothing, and the
caller takes the general path, which checks everything and raises the errors
users see.
"""

cimport numpy as cnp
from cpython.list cimport PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport uintptr_t
from libc.stdlib cimport malloc, free, qsort

from optcore.kernels._buffers cimport (BufferSet, Interval, WRITE, FLOAT32, FLOAT64,
                                       _cmp_interval)

cnp.import_array()

cdef int _WRITTEN_FLAGS = (cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
                           | cnp.NPY_ARRAY_WRITEABLE)
cdef int _INPUT_FLAGS = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED


cdef inline bint _overlaps(const Interval* spans, Py_ssize_t n, uintptr_t lo,
                           uintptr_t hi) noexcept:
    # spans are disjoint and sorted, so their stops are sorted too: the first
    # span ending after lo is the only one that can start before hi.
    cdef Py_ssize_t a = 0, b = n, m
    while a < b:
        m = (a + b) // 2
        if spans[m].stop <= lo:
            a = m + 1
        else:
            b = m
    return a < n and spans[a].start < hi


cdef class BoundCall:

    def __dealloc__(self):
        free(self.held)
        free(self.spans)

    cdef bint setup(self, BufferSet b, int input_arg, tuple objs) except -1:
        """Keep ``b`` (bound with the input ABSENT) and its written arrays;
        False when a written buffer is not an exact NumPy array (or a list of
        them) of the call's dtype, or the call is not float32/float64."""
        cdef Py_ssize_t a, j, n, t
        cdef list arrays = []
        cdef cnp.ndarray arr
        if b.dtype != FLOAT32 and b.dtype != FLOAT64:
            return False
        for a in range(b.nargs):
            if b.roles[a] != WRITE:
                continue
            obj = <object>PyTuple_GET_ITEM(objs, a)
            items = obj if type(obj) is list else [obj]
            if len(items) != b.ntensors:
                return False
            for x in items:
                if not cnp.PyArray_CheckExact(x):
                    return False
                arrays.append(x)
        n = len(arrays)
        self.held = <Held*>malloc(max(n, 1) * sizeof(Held))
        self.spans = <Interval*>malloc(max(n, 1) * sizeof(Interval))
        if self.held == NULL or self.spans == NULL:
            raise MemoryError()
        self.nspans = 0
        for j in range(n):
            arr = <cnp.ndarray>PyList_GET_ITEM(arrays, j)
            self.held[j].array = <void*>arr
            self.held[j].data = cnp.PyArray_DATA(arr)
            self.held[j].descr = <void*>cnp.PyArray_DESCR(arr)
            self.held[j].size = cnp.PyArray_SIZE(arr)
            if cnp.PyArray_NBYTES(arr) > 0:
                t = self.nspans
                self.spans[t].start = <uintptr_t>cnp.PyArray_DATA(arr)
                self.spans[t].stop = self.spans[t].start + <uintptr_t>cnp.PyArray_NBYTES(arr)
                self.spans[t].index = j
                self.spans[t].writable = 1
                self.spans[t].dense = 1
                self.nspans += 1
        qsort(self.spans, self.nspans, sizeof(Interval), _cmp_interval)
        self.nheld = n
        self.arrays = arrays
        self.b = b
        self.input_arg = input_arg
        self.input_type = cnp.NPY_FLOAT32 if b.dtype == FLOAT32 else cnp.NPY_FLOAT64
        return True

    cdef bint call(self, object inputs, long long step) except -1:
        """One step with ``inputs`` (a list or tuple of arrays, one per
        tensor); False, with nothing written, when it must take the general
        path."""
        cdef Py_ssize_t j, k = self.b.ntensors
        cdef const Held* h
        cdef cnp.ndarray g
        cdef uintptr_t lo
        cdef void** slot = self.b.data + self.input_arg * k
        if self.busy or (type(inputs) is not list and type(inputs) is not tuple):
            return False
        if len(inputs) != k:
            return False
        for j in range(self.nheld):
            h = &self.held[j]
            arr = <cnp.ndarray>h.array
            if (cnp.PyArray_DATA(arr) != h.data or <void*>cnp.PyArray_DESCR(arr) != h.descr
                    or cnp.PyArray_SIZE(arr) != h.size
                    or (cnp.PyArray_FLAGS(arr) & _WRITTEN_FLAGS) != _WRITTEN_FLAGS):
                return False
        for j in range(k):
            x = inputs[j]
            if not cnp.PyArray_CheckExact(x):
                return False
            g = <cnp.ndarray>x
            if (cnp.PyArray_TYPE(g) != self.input_type or cnp.PyArray_SIZE(g) != self.b.sizes[j]
                    or (cnp.PyArray_FLAGS(g) & _INPUT_FLAGS) != _INPUT_FLAGS):
                return False
            lo = <uintptr_t>cnp.PyArray_DATA(g)
            if cnp.PyArray_NBYTES(g) > 0 and _overlaps(self.spans, self.nspans, lo,
                                                       lo + <uintptr_t>cnp.PyArray_NBYTES(g)):
                return False
        for j in range(k):
            slot[j] = cnp.PyArray_DATA(<cnp.ndarray>(inputs[j]))
        self.busy = True
        try:
            self.launch(step)
        finally:
            self.busy = False
            for j in range(k):
                slot[j] = NULL       # the inputs are the caller's: not kept
        return True

    def run(self, inputs, long long step):
        """``call`` from Python: True when the step ran, False when the
        caller must take its general path (nothing was written)."""
        return self.call(inputs, step)

    def retune_lr(self, double lr):
        """``set_lr`` from Python."""
        return self.set_lr(lr)

    cdef int launch(self, long long step) except -1:
        raise NotImplementedError("BoundCall.launch: the generated subclasses run the kernel")

    cdef bint set_lr(self, double lr) except -1:
        # A new learning rate for the next calls (a scheduler's), checked as
        # the kernel's wrapper checks it: False when it is refused or the
        # kernel has none (the caller then takes its general path).
        return False
