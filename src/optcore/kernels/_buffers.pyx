"""Argument checks shared by every kernel (docs/contract.md §8), all run before any write.

``bind`` takes the buffer arguments of one call (single arrays, or lists of
equal length for a multi-tensor call), checks dtype, size, contiguity,
writability, alignment and overlap, and returns raw pointers for the kernels.
Nothing is written until it returns, so a call that raises changes nothing.
"""

from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release,
                             PyBuffer_IsContiguous, PyBUF_RECORDS_RO)
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
cimport numpy as cnp
from libc.stdint cimport uintptr_t
from libc.stdlib cimport qsort

import numpy as np

cnp.import_array()


cdef class BufferSet:
    """Pointers and sizes of the buffers of one call; owns the acquired views."""

    def __cinit__(self):
        self.data = NULL
        self.sizes = NULL
        self.views = NULL
        self.nviews = 0
        self.refs = NULL
        self.nrefs = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.refs != NULL:
            for i in range(self.nrefs):
                Py_XDECREF(self.refs[i])
            PyMem_Free(self.refs)
        if self.views != NULL:
            for i in range(self.nviews):
                PyBuffer_Release(&self.views[i])
            PyMem_Free(self.views)
        PyMem_Free(self.data)
        PyMem_Free(self.sizes)

    cdef Py_ssize_t total(self) noexcept:
        cdef Py_ssize_t t, s = 0
        for t in range(self.ntensors):
            s += self.sizes[t]
        return s


cdef inline str _label(str name, Py_ssize_t t, bint is_list):
    return f"{name}[{t}]" if is_list else name


cdef int _dtype_of(const Py_buffer* view) noexcept:
    """FLOAT32, FLOAT64, or -1 for anything else."""
    cdef const char* f = view.format
    if f == NULL:
        return -1          # no format: raw bytes
    if f[0] == b'@' or f[0] == b'=' or f[0] == b'<':
        # '<' is native on the little-endian machines optcore builds for;
        # a non-native byte order ('>', '!') is refused by the caller.
        f += 1
    if f[0] == b'f' and f[1] == 0 and view.itemsize == 4:
        return FLOAT32
    if f[0] == b'd' and f[1] == 0 and view.itemsize == 8:
        return FLOAT64
    return -1


cdef str _dtype_name(obj, const Py_buffer* view):
    dt = getattr(obj, "dtype", None)
    if dt is not None:
        return str(dt)
    if view != NULL and view.format != NULL:
        return f"buffer format {view.format.decode('ascii', 'replace')!r}"
    return type(obj).__name__


cdef struct Interval:
    uintptr_t start
    uintptr_t stop
    int index        # position in views
    int writable


cdef int _cmp_interval(const void* a, const void* b) noexcept nogil:
    cdef const Interval* x = <const Interval*>a
    cdef const Interval* y = <const Interval*>b
    if x.start < y.start:
        return -1
    if x.start > y.start:
        return 1
    return x.index - y.index


cdef BufferSet bind(tuple names, tuple objs, tuple roles):
    """Check and bind the buffers of one call.

    ``names[i]`` names argument i in messages, ``objs[i]`` is an array (or a
    list of arrays for a multi-tensor call), ``roles[i]`` a Role. Argument 0 is
    the reference for list length, size and dtype (the parameter, or the
    prediction for losses).
    """
    cdef BufferSet bs = BufferSet.__new__(BufferSet)
    cdef int nargs = len(objs)
    cdef int a, role, dt, i
    cdef Py_ssize_t t, k, nbytes
    cdef Py_buffer* view
    cdef object first = objs[0]
    cdef bint is_list = isinstance(first, (list, tuple))

    bs.nargs = nargs
    bs.is_list = is_list
    bs.keep = None
    k = len(first) if is_list else 1

    # List structure first: every used argument is a list of the same length
    # (or a single array when the parameter is one).
    for a in range(nargs):
        role = roles[a]
        obj = objs[a]
        if role == ABSENT:
            continue
        if obj is None:
            raise ValueError(f"{names[a]} is required for these options but is None")
        if isinstance(obj, (list, tuple)) != is_list:
            if is_list:
                raise ValueError(f"{names[0]} is a list of {k} tensors but {names[a]} is not a list")
            raise ValueError(f"{names[a]} is a list but {names[0]} is a single array")
        if is_list and len(obj) != k:
            raise ValueError(
                f"{names[a]} has {len(obj)} tensors but {names[0]} has {k}")

    bs.ntensors = k
    bs.data = <void**>PyMem_Malloc(max(1, nargs * k) * sizeof(void*))
    bs.sizes = <Py_ssize_t*>PyMem_Malloc(max(1, k) * sizeof(Py_ssize_t))
    bs.views = <Py_buffer*>PyMem_Malloc(max(1, nargs * k) * sizeof(Py_buffer))
    if bs.data == NULL or bs.sizes == NULL or bs.views == NULL:
        raise MemoryError()

    bs.refs = <PyObject**>PyMem_Malloc(max(1, nargs * k) * sizeof(PyObject*))
    if bs.refs == NULL:
        raise MemoryError()

    cdef int dtype = -1
    cdef str ref_label = None
    cdef list copied = None
    cdef int role_of[MAX_ARGS]
    if nargs > MAX_ARGS:
        raise ValueError(f"at most {MAX_ARGS} buffer arguments per call")
    for a in range(nargs):
        role_of[a] = roles[a]
    for t in range(k):
        for a in range(nargs):
            role = role_of[a]
            if role == ABSENT:
                bs.data[a * k + t] = NULL
                continue
            obj = objs[a][t] if is_list else objs[a]
            # Fast path: a NumPy array that passes every check below is read
            # from the array struct (no buffer export, no message formatting).
            # Anything else, including every failing case, takes the general
            # path, which raises the error.
            if _ndarray_ok(obj, role, dtype, a, bs.sizes[t] if a > 0 else -1):
                if dtype < 0:
                    dtype = FLOAT32 if cnp.PyArray_TYPE(<cnp.ndarray>obj) == cnp.NPY_FLOAT32 \
                        else FLOAT64
                    ref_label = _label(names[a], t, is_list)
                if a == 0:
                    bs.sizes[t] = cnp.PyArray_SIZE(<cnp.ndarray>obj)
                bs.data[a * k + t] = cnp.PyArray_DATA(<cnp.ndarray>obj)
                # Hold the array while the kernel runs (and keep its memory
                # from being resized away: NumPy refuses while others refer to it).
                Py_INCREF(obj)
                bs.refs[bs.nrefs] = <PyObject*>obj
                bs.nrefs += 1
                continue
            label = _label(names[a], t, is_list)
            if obj is None:
                raise ValueError(f"{label} is required for these options but is None")
            view = &bs.views[bs.nviews]
            try:
                PyObject_GetBuffer(obj, view, PyBUF_RECORDS_RO)
            except (TypeError, BufferError, ValueError) as exc:
                if type(obj).__module__.startswith("torch"):
                    raise TypeError(
                        f"{label} is a torch tensor; pass tensor.numpy() (a zero-copy "
                        f"view of a CPU tensor) or use the optimizers in optcore.torch"
                    ) from None
                raise TypeError(
                    f"{label} must be a float32 or float64 array (or buffer), "
                    f"got {_dtype_name(obj, NULL) if hasattr(obj, 'dtype') else type(obj).__name__}"
                    f" ({exc})") from None
            bs.nviews += 1
            dt = _dtype_of(view)
            if dt < 0:
                if view.format != NULL and (view.format[0] == b'>' or view.format[0] == b'!'):
                    raise TypeError(
                        f"{label} has dtype {_dtype_name(obj, view)} in non-native "
                        f"byte order; optcore kernels take native float32 or float64")
                raise TypeError(
                    f"{label} has dtype {_dtype_name(obj, view)}; optcore kernels "
                    f"take float32 or float64")
            if dtype < 0:
                dtype = dt
                ref_label = label
            elif dt != dtype:
                raise TypeError(
                    f"{label} has dtype {_dtype_name(obj, view)} but {ref_label} has "
                    f"dtype {'float32' if dtype == FLOAT32 else 'float64'}; "
                    f"all buffers of a call must share one dtype")
            if not PyBuffer_IsContiguous(view, b'C'):
                if role == WRITE:
                    raise ValueError(
                        f"{label} is not C-contiguous; optcore updates it in place and "
                        f"never works on a copy (an update to a copy would be lost)")
                # A read-only input may be copied: nothing is written to it.
                # The copy is fresh memory, so remember where the original
                # lies: a written buffer may not share its elements either.
                if copied is None:
                    copied = []
                copied.append((a * k + t, obj, label) + _extent(view))
                copy = np.ascontiguousarray(obj)
                if bs.keep is None:
                    bs.keep = []
                bs.keep.append(copy)
                bs.nviews -= 1
                PyBuffer_Release(view)
                PyObject_GetBuffer(copy, view, PyBUF_RECORDS_RO)
                bs.nviews += 1
            if role == WRITE and view.readonly:
                raise ValueError(f"{label} is read-only; optcore updates it in place")
            if view.len > 0 and (<uintptr_t>view.buf) % <uintptr_t>view.itemsize != 0:
                raise ValueError(f"{label} is not aligned to its {view.itemsize}-byte elements")
            n = view.len // view.itemsize
            if a == 0:
                bs.sizes[t] = n
            elif n != bs.sizes[t]:
                raise ValueError(
                    f"{label} has {n} elements but {_label(names[0], t, is_list)} has "
                    f"{bs.sizes[t]}")
            bs.data[a * k + t] = view.buf
    bs.dtype = dtype if dtype >= 0 else FLOAT32
    _check_overlap(bs, names, roles)
    if copied is not None:
        _check_copied_overlap(bs, objs, names, roles, copied)
    return bs


cdef tuple _extent(const Py_buffer* view):
    """(first, last + 1) byte address spanned by a strided buffer."""
    cdef uintptr_t lo = <uintptr_t>view.buf, hi = <uintptr_t>view.buf
    cdef Py_ssize_t d, span
    for d in range(view.ndim):
        if view.shape[d] == 0:
            return (lo, lo)
        span = (view.shape[d] - 1) * view.strides[d]
        if span < 0:
            lo -= <uintptr_t>(-span)
        else:
            hi += <uintptr_t>span
    return (lo, hi + <uintptr_t>view.itemsize)


cdef _check_copied_overlap(BufferSet bs, tuple objs, tuple names, tuple roles,
                           list copied):
    # Non-contiguous inputs were copied before binding; their originals may
    # still share elements with a written buffer (e.g. grad = param_memory[::2]).
    # Address ranges first, then NumPy's exact test where they intersect (a
    # strided input may interleave with a buffer without sharing an element).
    cdef Py_ssize_t k = bs.ntensors, t
    cdef int a
    cdef int itemsize = 4 if bs.dtype == FLOAT32 else 8
    cdef uintptr_t start, stop
    for slot, orig, label, lo, hi in copied:
        if lo == hi:
            continue
        for a in range(bs.nargs):
            if roles[a] != WRITE:
                continue
            for t in range(k):
                if bs.sizes[t] == 0:
                    continue
                start = <uintptr_t>bs.data[a * k + t]
                stop = start + <uintptr_t>(bs.sizes[t] * itemsize)
                if stop <= lo or start >= hi:
                    continue
                written = objs[a][t] if bs.is_list else objs[a]
                try:
                    shared = np.shares_memory(orig, written)
                except np.exceptions.TooHardError:
                    shared = True
                if shared:
                    raise ValueError(
                        f"{_label(names[a], t, bs.is_list)} and {label} overlap in "
                        f"memory; a buffer that is written may not share memory "
                        f"with another argument")
cdef inline bint _ndarray_ok(object obj, int role, int dtype, int a,
                             Py_ssize_t size) noexcept:
    """True when ``obj`` is exactly a NumPy array that the general path would
    accept as is: float32/float64 in native byte order (and ``dtype`` when
    set), C-contiguous, writable if written, aligned, of ``size`` elements
    (size < 0: any)."""
    cdef cnp.ndarray arr
    cdef int tn, dt
    cdef int itemsize
    if not cnp.PyArray_CheckExact(obj):
        return False
    arr = <cnp.ndarray>obj
    tn = cnp.PyArray_TYPE(arr)
    if tn == cnp.NPY_FLOAT32:
        dt, itemsize = FLOAT32, 4
    elif tn == cnp.NPY_FLOAT64:
        dt, itemsize = FLOAT64, 8
    else:
        return False
    if dtype >= 0 and dt != dtype:
        return False
    if not cnp.PyArray_ISNOTSWAPPED(arr) or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        return False
    if role == WRITE and not cnp.PyArray_ISWRITEABLE(arr):
        return False
    if (<uintptr_t>cnp.PyArray_DATA(arr)) % <uintptr_t>itemsize != 0:
        return False
    if size >= 0 and cnp.PyArray_SIZE(arr) != size:
        return False
    return True


cdef _check_overlap(BufferSet bs, tuple names, tuple roles):
    # A written buffer (param, state, out) may not share a byte with any other
    # buffer of the call; read-only inputs may share memory with each other.
    cdef Py_ssize_t k = bs.ntensors, t
    cdef int nargs = bs.nargs, a, i, m = 0
    cdef Py_ssize_t nbytes
    cdef int itemsize = 4 if bs.dtype == FLOAT32 else 8
    # Every bound buffer: through a view or (NumPy fast path) a held array.
    cdef Py_ssize_t nbound = bs.nviews + bs.nrefs
    if nbound < 2:
        return
    cdef Interval* iv = <Interval*>PyMem_Malloc(nbound * sizeof(Interval))
    if iv == NULL:
        raise MemoryError()
    cdef uintptr_t max_any = 0, max_w = 0
    cdef int arg_any = -1, arg_w = -1
    cdef int role_of[MAX_ARGS]
    for a in range(nargs):
        role_of[a] = roles[a]
    try:
        for t in range(k):
            for a in range(nargs):
                if role_of[a] == ABSENT or bs.sizes[t] == 0:
                    continue
                iv[m].start = <uintptr_t>bs.data[a * k + t]
                iv[m].stop = iv[m].start + <uintptr_t>(bs.sizes[t] * itemsize)
                iv[m].index = a * <int>k + <int>t
                iv[m].writable = role_of[a] == WRITE
                m += 1
        qsort(iv, m, sizeof(Interval), _cmp_interval)
        for i in range(m):
            if (iv[i].writable and arg_any >= 0 and max_any > iv[i].start) or \
               (not iv[i].writable and arg_w >= 0 and max_w > iv[i].start):
                other = _find_overlap(iv, i, bool(iv[i].writable))
                raise ValueError(
                    f"{_name_of(names, iv[other].index, k, bs.is_list)} and "
                    f"{_name_of(names, iv[i].index, k, bs.is_list)} overlap in memory; "
                    f"a buffer that is written may not share memory with another "
                    f"argument")
            if iv[i].stop > max_any:
                max_any = iv[i].stop
                arg_any = i
            if iv[i].writable and iv[i].stop > max_w:
                max_w = iv[i].stop
                arg_w = i
    finally:
        PyMem_Free(iv)


cdef int _find_overlap(Interval* iv, int i, bint any_kind):
    # The earlier interval that overlaps interval i (error path only).
    cdef int j
    for j in range(i):
        if iv[j].stop > iv[i].start and (any_kind or iv[j].writable):
            return j
    return 0


cdef str _name_of(tuple names, int index, Py_ssize_t k, bint is_list):
    return _label(names[index // k], index % k, is_list)


cdef bint _array_extent(cnp.ndarray arr, uintptr_t* lo, uintptr_t* hi) noexcept:
    """Byte range spanned by ``arr`` (any strides); False when it is empty."""
    cdef uintptr_t start = <uintptr_t>cnp.PyArray_DATA(arr), stop = start
    cdef int d
    cdef cnp.npy_intp* shape = cnp.PyArray_DIMS(arr)
    cdef cnp.npy_intp* strides = cnp.PyArray_STRIDES(arr)
    cdef cnp.npy_intp span
    for d in range(cnp.PyArray_NDIM(arr)):
        if shape[d] == 0:
            return False
        span = (shape[d] - 1) * strides[d]
        if span < 0:
            start -= <uintptr_t>(-span)
        else:
            stop += <uintptr_t>span
    lo[0] = start
    hi[0] = stop + <uintptr_t>cnp.PyArray_ITEMSIZE(arr)
    return True


cdef object _shared_pair(Interval* iv, int i, list arrays):
    # Interval i's range meets an earlier one of a kind that matters: confirm
    # (two dense buffers share memory iff their ranges meet; a strided one may
    # interleave without sharing an element) and name the pair, written first.
    cdef int j
    cdef cnp.ndarray a, b
    for j in range(i):
        if iv[j].stop <= iv[i].start or not (iv[i].writable or iv[j].writable):
            continue
        a = arrays[iv[i].index]
        b = arrays[iv[j].index]
        if not ((cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a)) and
                (cnp.PyArray_IS_C_CONTIGUOUS(b) or cnp.PyArray_IS_F_CONTIGUOUS(b))):
            try:
                if not np.shares_memory(a, b):
                    continue
            except np.exceptions.TooHardError:
                pass
        if iv[i].writable:
            return (iv[i].index, iv[j].index)
        return (iv[j].index, iv[i].index)
    return None


def find_overlap(list written, list read):
    """bind()'s memory rule across several kernel calls, for callers that
    must check them all before the first one writes (the stateful
    optimizers): ``(i, j)`` when ``written[i]`` shares memory with buffer
    ``j`` of ``written + read`` (``j != i``), else None. Inputs in ``read``
    may share memory with each other. Every buffer is a NumPy array."""
    cdef list arrays = written + read
    cdef Py_ssize_t nw = len(written), n = len(arrays), i
    cdef int m = 0
    cdef uintptr_t lo, hi, max_any = 0, max_w = 0
    cdef bint any_seen = False, w_seen = False
    if n < 2:
        return None
    if n > 0x7fffffff:
        raise ValueError("too many buffers")
    for obj in arrays:
        if not cnp.PyArray_Check(obj):
            raise TypeError(f"find_overlap takes NumPy arrays, got {type(obj).__name__}")
    cdef Interval* iv = <Interval*>PyMem_Malloc(n * sizeof(Interval))
    if iv == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            if not _array_extent(<cnp.ndarray>arrays[i], &lo, &hi):
                continue
            iv[m].start = lo
            iv[m].stop = hi
            iv[m].index = <int>i
            iv[m].writable = i < nw
            m += 1
        qsort(iv, m, sizeof(Interval), _cmp_interval)
        for i in range(m):
            if (iv[i].writable and any_seen and max_any > iv[i].start) or \
               (not iv[i].writable and w_seen and max_w > iv[i].start):
                pair = _shared_pair(iv, <int>i, arrays)
                if pair is not None:
                    return pair
            if not any_seen or iv[i].stop > max_any:
                max_any = iv[i].stop
                any_seen = True
            if iv[i].writable and (not w_seen or iv[i].stop > max_w):
                max_w = iv[i].stop
                w_seen = True
        return None
    finally:
        PyMem_Free(iv)
