"""Argument checks shared by every kernel (docs/contract.md §8), all run before any write.

``bind`` takes the buffer arguments of one call (single arrays, or lists of
equal length for a multi-tensor call), checks dtype, size, contiguity,
writability, alignment and overlap, and returns raw pointers for the kernels.
Nothing is written until it returns, so a call that raises changes nothing.

``check_buffers`` and ``check_calls`` run exactly those checks from Python
without binding anything for a kernel call (callers that must check several
calls before the first one writes: the optimizer classes).
"""

from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release,
                             PyBuffer_IsContiguous, PyBUF_RECORDS_RO)
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.list cimport PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM
cimport numpy as cnp
from libc.stdint cimport uintptr_t
from libc.stdlib cimport malloc, free, qsort
from libc.string cimport memcpy

import numpy as np

from optcore.precision import QuantizedState

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # NumPy's type numbers of float16 and of the first user dtype (ml_dtypes')
    int _NPY_HALF "NPY_HALF"
    int _NPY_USERDEF "NPY_USERDEF"

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
        if self.views != NULL:
            for i in range(self.nviews):
                PyBuffer_Release(&self.views[i])
            PyMem_Free(self.views)
        PyMem_Free(self.data)           # (one block: data, refs, sizes)

    cdef Py_ssize_t total(self) noexcept:
        cdef Py_ssize_t t, s = 0
        for t in range(self.ntensors):
            s += self.sizes[t]
        return s


# ---- names in messages ---------------------------------------------------------

cdef str _label(tuple names, object labels, int a, Py_ssize_t t, bint is_list):
    """How messages name tensor t of argument a: the caller's label when given,
    else ``name[t]`` (``name`` for a single array)."""
    if labels is not None:
        own = labels[a]
        if own is not None:
            return own[t] if is_list else own
    return f"{names[a]}[{t}]" if is_list else names[a]


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
    if f[0] == b'e' and f[1] == 0 and view.itemsize == 2:
        return FLOAT16
    if f[0] == b'B' and f[1] == 0 and view.itemsize == 1:
        return UINT8
    return -1


cdef int itemsize_of(int dtype) noexcept:
    return 8 if dtype == FLOAT64 else (4 if dtype == FLOAT32 else
                                       (1 if dtype == UINT8 else 2))


cdef str dtype_name(int dtype):
    return ("float32", "float64", "bfloat16", "float16", "uint8", "mixed")[dtype]


cdef int _array_dtype(cnp.ndarray arr):
    """The Dtype of a NumPy array, -1 for any other (bfloat16: ml_dtypes'
    dtype, recognised by name; ml_dtypes is never imported here)."""
    cdef int tn = cnp.PyArray_TYPE(arr)
    if tn == cnp.NPY_FLOAT32:
        return FLOAT32
    if tn == cnp.NPY_FLOAT64:
        return FLOAT64
    if tn == _NPY_HALF:
        return FLOAT16
    if tn == cnp.NPY_UINT8:
        return UINT8
    if tn >= _NPY_USERDEF:
        dt = arr.dtype
        if dt.name == "bfloat16" and dt.itemsize == 2:
            return BFLOAT16
    return -1


cdef str _dtype_name(obj, const Py_buffer* view):
    dt = getattr(obj, "dtype", None)
    if dt is not None:
        return str(dt)
    if view != NULL and view.format != NULL:
        return f"buffer format {view.format.decode('ascii', 'replace')!r}"
    return type(obj).__name__


# ---- memory ranges and the overlap rule ----------------------------------------

cdef class _Where:
    """The buffers behind interval numbers, for the slow paths (exact sharing
    test, messages): calls numbered one after the other (buffer number = call
    offset + argument * ntensors + tensor)."""
    cdef list calls      # (offset, ntensors, is_list, names, objs, labels)

    cdef tuple _find(self, Py_ssize_t index):
        cdef Py_ssize_t offset, k
        for entry in reversed(self.calls):
            offset, k = entry[0], entry[1]
            if index >= offset:
                return entry, (index - offset) // k, (index - offset) % k
        raise IndexError(index)

    cdef object owner(self, Py_ssize_t index):
        entry, a, t = self._find(index)
        obj = entry[4][a]
        return obj[t] if entry[2] else obj

    cdef str label(self, Py_ssize_t index):
        entry, a, t = self._find(index)
        return _label(entry[3], entry[5], a, t, entry[2])


cdef _Where _where_of_call(tuple names, tuple objs, object labels, BufferSet bs):
    cdef _Where w = _Where.__new__(_Where)
    w.calls = [(0, bs.ntensors, bs.is_list, names, objs, labels)]
    return w


cdef tuple _ordered(Interval* x, Interval* y):
    # The written buffer first; of two written ones, the caller's first.
    if x.writable and (not y.writable or x.index < y.index):
        return (x.index, y.index)
    return (y.index, x.index)


cdef object _sharing_pair(Interval* iv, Py_ssize_t i, _Where where):
    # Interval i's range meets an earlier one of a kind that matters: confirm
    # (two dense buffers share memory iff their ranges meet; a strided one may
    # interleave with another without sharing an element).
    cdef Py_ssize_t j
    for j in range(i):
        if iv[j].stop <= iv[i].start or not (iv[i].writable or iv[j].writable):
            continue
        if not (iv[i].dense and iv[j].dense):
            try:
                if not np.shares_memory(where.owner(iv[i].index), where.owner(iv[j].index)):
                    continue
            except np.exceptions.TooHardError:
                pass
        return _ordered(&iv[i], &iv[j])
    return None


cdef void _sort_intervals(Interval* iv, Py_ssize_t m) noexcept nogil:
    # A call's buffers in address order. Few: insertion sort, linear for
    # buffers listed in address order (arrays allocated one after the other
    # usually are). Many: a natural merge sort, since a multi-tensor call lists
    # each argument's tensors as a run in address order, which it merges in
    # about m * log2(runs) steps (qsort's n log n indirect calls cost a
    # 100-tensor step more than its update).
    cdef Py_ssize_t i, j, k, a, b, o, runs
    cdef Interval x
    cdef Interval* src = iv
    cdef Interval* dst
    cdef Interval* tmp
    if m <= STACK_INTERVALS:
        for i in range(1, m):
            x = iv[i]
            j = i
            while j > 0 and _before(&x, &iv[j - 1]):
                iv[j] = iv[j - 1]
                j -= 1
            iv[j] = x
        return
    tmp = <Interval*>malloc(m * sizeof(Interval))
    if tmp == NULL:
        qsort(iv, m, sizeof(Interval), _cmp_interval)
        return
    dst = tmp
    while True:
        runs = 0
        i = 0
        while i < m:
            j = i + 1                       # the run [i, j), then [j, k)
            while j < m and not _before(&src[j], &src[j - 1]):
                j += 1
            k = j + 1 if j < m else m
            while k < m and not _before(&src[k], &src[k - 1]):
                k += 1
            a, b, o = i, j, i
            while a < j and b < k:
                if _before(&src[b], &src[a]):
                    dst[o] = src[b]
                    b += 1
                else:
                    dst[o] = src[a]
                    a += 1
                o += 1
            while a < j:
                dst[o] = src[a]
                a += 1
                o += 1
            while b < k:
                dst[o] = src[b]
                b += 1
                o += 1
            runs += 1
            i = k
        src, dst = dst, src
        if runs == 1:
            break
    if src != iv:
        memcpy(iv, src, m * sizeof(Interval))
    free(tmp)


cdef object _overlap(Interval* iv, Py_ssize_t m, _Where where):
    """The one overlap rule: a written buffer may not share memory with any
    other buffer; read-only ones may share memory with each other. Sorts
    ``iv[:m]`` and returns ``(written, other)`` buffer numbers, or None."""
    cdef Py_ssize_t i
    cdef uintptr_t max_any = 0, max_w = 0
    cdef bint any_seen = False, w_seen = False
    if m < 2:
        return None
    _sort_intervals(iv, m)
    for i in range(m):
        if (iv[i].writable and any_seen and max_any > iv[i].start) or \
           (not iv[i].writable and w_seen and max_w > iv[i].start):
            pair = _sharing_pair(iv, i, where)
            if pair is not None:
                return pair
        if not any_seen or iv[i].stop > max_any:
            max_any = iv[i].stop
            any_seen = True
        if iv[i].writable and (not w_seen or iv[i].stop > max_w):
            max_w = iv[i].stop
            w_seen = True
    return None


cdef inline Py_ssize_t _add_intervals(BufferSet bs, Py_ssize_t offset,
                                      Interval* iv) except -1:
    """The memory ranges of a bound call, numbered from ``offset``; a copied
    input counts with its original's range. Returns how many were added."""
    cdef Py_ssize_t k = bs.ntensors, t, m = 0, index
    cdef Py_ssize_t itemsize
    cdef int a
    cdef uintptr_t lo, hi
    cdef dict copied = bs.copied
    for a in range(bs.nargs):
        if bs.roles[a] == ABSENT:
            continue
        itemsize = itemsize_of(bs.dtypes[a])
        for t in range(k):
            index = a * k + t
            if copied is not None and index in copied:
                # The copy is fresh memory; the original may still share
                # elements with a written buffer (e.g. grad = param_memory[::2]).
                lo, hi = copied[index]
                if lo == hi:
                    continue
                iv[m].dense = False
            elif not _extent(<uintptr_t>bs.data[index], 1, &bs.sizes[t], &itemsize,
                             itemsize, &lo, &hi):
                continue
            else:
                iv[m].dense = True
            iv[m].start = lo
            iv[m].stop = hi
            iv[m].index = offset + index
            iv[m].writable = bs.roles[a] == WRITE
            m += 1
    return m


cdef str _overlap_message(str first, str second):
    return (f"{first} and {second} overlap in memory; a buffer that is written may "
            f"not share memory with another argument")


# ---- binding -------------------------------------------------------------------

cdef inline bint _ndarray_ok(object obj, int role, int dtype, int a,
                             Py_ssize_t size, bint mixed) noexcept:
    """True when ``obj`` is exactly a NumPy array that the general path would
    accept as is: float32/float64 in native byte order (``mixed``: also
    float16 and, the codes of a QuantizedState, uint8; and ``dtype`` when
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
    elif mixed and tn == _NPY_HALF:
        dt, itemsize = FLOAT16, 2
    elif mixed and tn == cnp.NPY_UINT8:
        dt, itemsize = UINT8, 1
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


cdef BufferSet bind(tuple names, tuple objs, tuple roles):
    """Check and bind the buffers of one call.

    ``names[i]`` names argument i in messages, ``objs[i]`` is an array (or a
    list of arrays for a multi-tensor call), ``roles[i]`` a Role. Argument 0 is
    the reference for list length, size and dtype (the parameter, or the
    prediction for losses).
    """
    cdef BufferSet bs = _bind(names, objs, roles, None, False, False)
    _check_call_overlap(bs, names, objs, None)
    return bs


cdef BufferSet bind_mixed(tuple names, tuple objs, tuple roles):
    cdef BufferSet bs = _bind(names, objs, roles, None, False, True)
    _check_call_overlap(bs, names, objs, None)
    return bs


cdef object _codes_of(BufferSet bs, int a, Py_ssize_t t, object obj, bint is_list,
                      str label):
    """A QuantizedState argument: its codes are bound, its scales kept for
    the kernel (every tensor of an argument quantized, or none)."""
    if bs.absmax is None:
        bs.absmax = [None] * bs.nargs
    if bs.absmax[a] is None:
        if t > 0:
            raise TypeError(f"{label} is a QuantizedState but the argument's first "
                            f"tensor is not; quantize all of its tensors or none")
        bs.absmax[a] = [None] * bs.ntensors
    bs.absmax[a][t] = obj
    return obj.codes


cdef BufferSet _bind(tuple names, tuple objs, tuple roles, object labels,
                     bint check_only, bint mixed):
    """bind() without its overlap check. ``check_only``: a non-contiguous input
    is not copied (nothing is bound for a kernel; its data pointer is NULL).
    ``mixed``: bind_mixed's rules (each argument its own dtype)."""
    cdef BufferSet bs = BufferSet.__new__(BufferSet)
    cdef int nargs = len(objs)
    cdef int a, role, dt
    cdef Py_ssize_t t, k, n, index
    cdef Py_buffer* view
    cdef object first = objs[0]
    cdef bint is_list = isinstance(first, (list, tuple))
    cdef uintptr_t lo, hi

    bs.nargs = nargs
    bs.is_list = is_list
    bs.keep = None
    bs.copied = None
    bs.absmax = None
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
    # One block for the pointers, the held arrays and the sizes (small calls
    # are all overhead); buffer views, which NumPy arrays do not need, come
    # when the first one is taken.
    cdef Py_ssize_t nbuf = max(1, nargs * k)
    bs.data = <void**>PyMem_Malloc((2 * nbuf + max(1, k)) * sizeof(void*))
    if bs.data == NULL:
        raise MemoryError()
    bs.refs = <PyObject**>(bs.data + nbuf)
    bs.sizes = <Py_ssize_t*>(bs.data + 2 * nbuf)

    cdef int dtype = -1
    cdef int ref_arg = 0             # the buffer that set the dtype (messages)
    cdef Py_ssize_t ref_t = 0
    cdef dict copied = None
    if nargs > MAX_ARGS:
        raise ValueError(f"at most {MAX_ARGS} buffer arguments per call")
    for a in range(nargs):
        bs.roles[a] = roles[a]
        bs.dtypes[a] = -1
    cdef bint uniform = True
    for t in range(k):
        for a in range(nargs):
            role = bs.roles[a]
            index = a * k + t
            if role == ABSENT:
                bs.data[index] = NULL
                continue
            obj = <object>PyTuple_GET_ITEM(objs, a)
            if is_list:
                obj = (<object>PyList_GET_ITEM(obj, t) if type(obj) is list
                       else obj[t])
            codes = False
            if mixed:
                # each argument's own dtype, set by its first tensor
                dtype = bs.dtypes[a]
                ref_arg, ref_t = a, 0
                if type(obj) is QuantizedState:
                    codes = True
                    obj = _codes_of(bs, a, t, obj, is_list,
                                    _label(names, labels, a, t, is_list))
                elif bs.absmax is not None and bs.absmax[a] is not None:
                    raise TypeError(
                        f"{_label(names, labels, a, t, is_list)} is not a QuantizedState "
                        f"but the argument's first tensor is; quantize all of its "
                        f"tensors or none")
            # Fast path: a NumPy array that passes every check below is read
            # from the array struct (no buffer export, no message formatting).
            # Anything else, including every failing case, takes the general
            # path, which raises the error.
            if _ndarray_ok(obj, role, dtype, a, bs.sizes[t] if a > 0 else -1, mixed):
                if dtype < 0:
                    dtype = _array_dtype(<cnp.ndarray>obj)
                    ref_arg, ref_t = a, t
                bs.dtypes[a] = dtype
                if a == 0:
                    bs.sizes[t] = cnp.PyArray_SIZE(<cnp.ndarray>obj)
                bs.data[index] = cnp.PyArray_DATA(<cnp.ndarray>obj)
                # Hold the array while the kernel runs (and keep its memory
                # from being resized away: NumPy refuses while others refer to it).
                Py_INCREF(obj)
                bs.refs[bs.nrefs] = <PyObject*>obj
                bs.nrefs += 1
                continue
            label = _label(names, labels, a, t, is_list)
            if obj is None:
                raise ValueError(f"{label} is required for these options but is None")
            if mixed and cnp.PyArray_Check(obj) and \
                    _array_dtype(<cnp.ndarray>obj) == BFLOAT16:
                # NumPy exports no buffer of ml_dtypes' bfloat16: checked here
                obj = _bfloat16_array(bs, <cnp.ndarray>obj, role, label, index,
                                      check_only)
                if dtype >= 0 and dtype != BFLOAT16:
                    raise TypeError(_dtype_mismatch(label, "bfloat16", names, labels,
                                                    ref_arg, ref_t, is_list, dtype))
                dtype = bs.dtypes[a] = BFLOAT16
                ref_arg, ref_t = a, t
                n = cnp.PyArray_SIZE(<cnp.ndarray>obj)
                if a == 0:
                    bs.sizes[t] = n
                elif n != bs.sizes[t]:
                    raise ValueError(
                        f"{label} has {n} elements but "
                        f"{_label(names, labels, 0, t, is_list)} has {bs.sizes[t]}")
                continue
            if bs.views == NULL:
                bs.views = <Py_buffer*>PyMem_Malloc(nbuf * sizeof(Py_buffer))
                if bs.views == NULL:
                    raise MemoryError()
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
            if (dt > FLOAT64 and not mixed) or (dt == UINT8 and not codes):
                dt = -1         # raw bytes are not a uint8 state
            if dt < 0:
                if view.format != NULL and (view.format[0] == b'>' or view.format[0] == b'!'):
                    raise TypeError(
                        f"{label} has dtype {_dtype_name(obj, view)} in non-native "
                        f"byte order; optcore kernels take native float32 or float64")
                raise TypeError(
                    f"{label} has dtype {_dtype_name(obj, view)}; optcore kernels "
                    f"take {_TAKES[mixed]}")
            if dtype < 0:
                dtype = dt
                ref_arg, ref_t = a, t
            elif dt != dtype:
                raise TypeError(_dtype_mismatch(label, _dtype_name(obj, view), names,
                                                labels, ref_arg, ref_t, is_list, dtype,
                                                mixed))
            bs.dtypes[a] = dt
            n = view.len // view.itemsize
            if not PyBuffer_IsContiguous(view, b'C'):
                if role == WRITE:
                    raise ValueError(
                        f"{label} is not C-contiguous; optcore updates it in place and "
                        f"never works on a copy (an update to a copy would be lost)")
                # A read-only input may be copied: nothing is written to it.
                # The copy is fresh (aligned) memory; the original's range is
                # kept: a written buffer may not share its elements either.
                if copied is None:
                    copied = {}
                if not _extent(<uintptr_t>view.buf, view.ndim, view.shape, view.strides,
                               view.itemsize, &lo, &hi):
                    lo = hi = 0
                copied[index] = (lo, hi)
                bs.nviews -= 1
                PyBuffer_Release(view)
                if check_only:
                    bs.data[index] = NULL
                else:
                    copy = np.ascontiguousarray(obj)
                    if bs.keep is None:
                        bs.keep = []
                    bs.keep.append(copy)
                    PyObject_GetBuffer(copy, view, PyBUF_RECORDS_RO)
                    bs.nviews += 1
                    bs.data[index] = view.buf
            else:
                if role == WRITE and view.readonly:
                    raise ValueError(f"{label} is read-only; optcore updates it in place")
                if view.len > 0 and (<uintptr_t>view.buf) % <uintptr_t>view.itemsize != 0:
                    raise ValueError(
                        f"{label} is not aligned to its {view.itemsize}-byte elements")
                bs.data[index] = view.buf
            if a == 0:
                bs.sizes[t] = n
            elif n != bs.sizes[t]:
                raise ValueError(
                    f"{label} has {n} elements but "
                    f"{_label(names, labels, 0, t, is_list)} has {bs.sizes[t]}")
    if mixed:
        dtype = -1
        for a in range(nargs):
            if bs.dtypes[a] < 0:
                continue
            if dtype < 0:
                dtype = bs.dtypes[a]
            elif bs.dtypes[a] != dtype:
                dtype = MIXED
        if dtype > FLOAT64 or bs.absmax is not None:
            dtype = MIXED
    bs.dtype = dtype if dtype >= 0 else FLOAT32
    if not mixed:
        for a in range(nargs):
            if bs.dtypes[a] < 0 and bs.roles[a] != ABSENT:
                bs.dtypes[a] = bs.dtype
    if copied is not None:
        if bs.copied is None:
            bs.copied = copied
        else:
            bs.copied.update(copied)
    return bs


cdef tuple _TAKES = ("float32 or float64", "float32, float64, bfloat16 or float16")


cdef str _dtype_mismatch(str label, str got, tuple names, object labels, int ref_arg,
                         Py_ssize_t ref_t, bint is_list, int dtype, bint mixed=True):
    if mixed:
        return (f"{label} has dtype {got} but "
                f"{_label(names, labels, ref_arg, ref_t, is_list)} (another tensor of "
                f"the same argument) has dtype {dtype_name(dtype)}")
    return (f"{label} has dtype {got} but "
            f"{_label(names, labels, ref_arg, ref_t, is_list)} has "
            f"dtype {dtype_name(dtype)}; all buffers of a call must share one dtype")


cdef object _bfloat16_array(BufferSet bs, cnp.ndarray arr, int role, str label,
                            Py_ssize_t index, bint check_only):
    """Bind a bfloat16 NumPy array (data pointer, held reference); a
    non-contiguous input that is only read is copied, as the general path does."""
    cdef uintptr_t lo, hi
    cdef Py_ssize_t itemsize = 2
    if not arr.dtype.isnative:
        raise TypeError(f"{label} has dtype bfloat16 in non-native byte order")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        if role == WRITE:
            raise ValueError(
                f"{label} is not C-contiguous; optcore updates it in place and "
                f"never works on a copy (an update to a copy would be lost)")
        if bs.copied is None:
            bs.copied = {}
        if not _extent(<uintptr_t>cnp.PyArray_DATA(arr), cnp.PyArray_NDIM(arr),
                       <const Py_ssize_t*>cnp.PyArray_DIMS(arr),
                       <const Py_ssize_t*>cnp.PyArray_STRIDES(arr), itemsize,
                       &lo, &hi):
            lo = hi = 0
        bs.copied[index] = (lo, hi)
        if check_only:
            bs.data[index] = NULL
            return arr
        arr = np.ascontiguousarray(arr)
        if bs.keep is None:
            bs.keep = []
        bs.keep.append(arr)
    else:
        if role == WRITE and not cnp.PyArray_ISWRITEABLE(arr):
            raise ValueError(f"{label} is read-only; optcore updates it in place")
        if (<uintptr_t>cnp.PyArray_DATA(arr)) % 2 != 0:
            raise ValueError(f"{label} is not aligned to its 2-byte elements")
    bs.data[index] = cnp.PyArray_DATA(arr)
    Py_INCREF(arr)
    bs.refs[bs.nrefs] = <PyObject*>arr
    bs.nrefs += 1
    return arr


cdef _check_call_overlap(BufferSet bs, tuple names, tuple objs, object labels):
    # Every buffer of the call: through a view, a held array or a copy.
    cdef dict copied = bs.copied
    cdef _Where where = None
    cdef Py_ssize_t nbound = bs.nviews + bs.nrefs + (len(copied) if copied is not None else 0)
    cdef Interval stack_iv[STACK_INTERVALS]
    cdef Interval* iv = stack_iv
    cdef Py_ssize_t m
    if nbound < 2:
        return
    if nbound > STACK_INTERVALS:
        iv = <Interval*>PyMem_Malloc(nbound * sizeof(Interval))
        if iv == NULL:
            raise MemoryError()
    try:
        m = _add_intervals(bs, 0, iv)
        # Only copied inputs need the objects (the exact test); the fast path
        # builds nothing.
        if copied is not None:
            where = _where_of_call(names, objs, labels, bs)
        pair = _overlap(iv, m, where)
        if pair is not None:
            if where is None:
                where = _where_of_call(names, objs, labels, bs)
            raise ValueError(_overlap_message(where.label(pair[0]), where.label(pair[1])))
    finally:
        if iv != stack_iv:
            PyMem_Free(iv)


cdef check_disjoint(BufferSet x, tuple xnames, tuple xobjs, BufferSet y, tuple ynames,
                    tuple yobjs):
    """The overlap rule between two bound sets of one call (a step's buffers and
    the scales of its quantized states)."""
    cdef _Where where = _Where.__new__(_Where)
    cdef Py_ssize_t nx = x.nargs * x.ntensors
    cdef Py_ssize_t m = 0
    cdef Interval* iv = <Interval*>PyMem_Malloc(max(1, nx + y.nargs * y.ntensors)
                                                * sizeof(Interval))
    if iv == NULL:
        raise MemoryError()
    where.calls = [(0, x.ntensors, x.is_list, xnames, xobjs, None),
                   (nx, y.ntensors, y.is_list, ynames, yobjs, None)]
    try:
        m = _add_intervals(x, 0, iv)
        m += _add_intervals(y, nx, iv + m)
        pair = _overlap(iv, m, where)
        if pair is not None:
            raise ValueError(_overlap_message(where.label(pair[0]), where.label(pair[1])))
    finally:
        PyMem_Free(iv)


# ---- the check-only entry points (Python) --------------------------------------

# "copy": an input the caller copies itself before the call (e.g. a misaligned
# gradient): bind never sees it, so only the overlap rule applies, through
# the original's memory.
cdef enum:
    COPY = -1

cdef dict _ROLES = {"write": WRITE, "read": READ, "absent": ABSENT, None: ABSENT,
                    "copy": COPY, WRITE: WRITE, READ: READ, ABSENT: ABSENT}


cdef tuple _call_args(call):
    """(names, objs, roles, labels) of one call as check_calls takes it."""
    if not isinstance(call, (tuple, list)) or len(call) not in (3, 4):
        raise TypeError("a call is (names, objs, roles) or (names, objs, roles, labels)")
    names, objs, roles = tuple(call[0]), tuple(call[1]), tuple(call[2])
    labels = tuple(call[3]) if len(call) == 4 and call[3] is not None else None
    if not names or len(objs) != len(names) or len(roles) != len(names) or \
            (labels is not None and len(labels) != len(names)):
        raise ValueError("names, objs, roles (and labels) must have one entry per argument")
    try:
        roles = tuple([_ROLES[r] for r in roles])
    except (KeyError, TypeError):
        raise ValueError(f"roles must be 'write', 'read', 'copy' or None (absent), got "
                         f"{call[2]!r}") from None
    if labels is not None:
        for a in range(len(names)):
            obj, own = objs[a], labels[a]
            if own is None or roles[a] == ABSENT:
                continue
            if isinstance(obj, (list, tuple)):
                if isinstance(own, str) or len(own) != len(obj):
                    raise ValueError(f"labels for {names[a]}: one label per tensor "
                                     f"({len(obj)})")
            elif not isinstance(own, str):
                raise ValueError(f"labels for {names[a]}: one str for a single array")
    return names, objs, roles, labels


def check_buffers(names, objs, roles, labels=None, *, mixed=False):
    """Check the buffers of one kernel call exactly as the kernel's own
    binding does, and raise the same TypeError/ValueError with the same
    message; nothing is written, copied or kept.

    ``names``: the argument names (for messages); ``objs``: per argument an
    array (any buffer) or, for a multi-tensor call, a list of arrays;
    ``roles``: per argument ``"write"`` (updated in place), ``"read"``,
    ``None`` (absent: not used, None accepted), or ``"copy"`` (an input the
    caller copies before the call: only its memory counts, for the overlap
    rule; no other check). Argument 0 is the reference
    for list length, sizes and dtype. ``labels`` (optional): per argument
    None, or how messages name it: a str for a single array, a list of str
    (one per tensor) for a list; by default ``name`` / ``name[t]``.
    ``mixed``: the step kernels' rules (each argument its own dtype,
    bfloat16/float16 arrays and QuantizedState states accepted).
    """
    check_calls([(names, objs, roles, labels)], mixed=mixed)


def check_calls(calls, *, mixed=False):
    """``check_buffers`` for several kernel calls that must all be valid
    before the first one runs: each call as ``check_buffers`` checks it (its
    own dtype; calls may differ), then the overlap rule over all of them
    together: a buffer written by any call may share no memory with any other
    buffer of any call (the same message as within one call).

    ``calls``: a sequence of ``(names, objs, roles)`` or ``(names, objs,
    roles, labels)`` tuples, as ``check_buffers`` takes them.
    """
    cdef list args = [_call_args(call) for call in calls]
    cdef list bound = []
    cdef BufferSet bs
    cdef _Where where = _Where.__new__(_Where)
    cdef Py_ssize_t total = 0, m = 0, offset = 0, t
    cdef list copies = []          # (buffer number, object) of "copy" inputs
    cdef int a
    where.calls = []
    for names, objs, roles, labels in args:
        bs = _bind(names, objs, tuple([ABSENT if r == COPY else r for r in roles]),
                   labels, True, mixed)
        _check_call_overlap(bs, names, objs, labels)
        # The views stay held (and the pointers valid) until the check is done.
        bound.append(bs)
        where.calls.append((offset, bs.ntensors, bs.is_list, names, objs, labels))
        for a in range(bs.nargs):
            if roles[a] == COPY:
                for t in range(bs.ntensors):
                    copies.append((offset + a * bs.ntensors + t,
                                   objs[a][t] if bs.is_list else objs[a]))
        offset += bs.nargs * bs.ntensors
        total += bs.nviews + bs.nrefs + (len(bs.copied) if bs.copied is not None else 0)
    total += len(copies)
    if (len(bound) < 2 and not copies) or total < 2:
        return
    cdef Interval* iv = <Interval*>PyMem_Malloc(total * sizeof(Interval))
    if iv == NULL:
        raise MemoryError()
    try:
        for bs, entry in zip(bound, where.calls):
            m += _add_intervals(bs, entry[0], iv + m)
        for index, obj in copies:
            m += _buffer_interval(obj, index, False, iv + m)
        pair = _overlap(iv, m, where)
        if pair is not None:
            raise ValueError(_overlap_message(where.label(pair[0]), where.label(pair[1])))
    finally:
        PyMem_Free(iv)


cdef int _buffer_interval(object obj, Py_ssize_t index, bint writable,
                          Interval* iv) except -1:
    # Any buffer's byte range as interval ``index``; 0 when it is empty.
    cdef Py_buffer view
    PyObject_GetBuffer(obj, &view, PyBUF_RECORDS_RO)
    try:
        if not _extent(<uintptr_t>view.buf, view.ndim, view.shape, view.strides,
                       view.itemsize, &iv.start, &iv.stop):
            return 0
        iv.dense = PyBuffer_IsContiguous(&view, b'A')
    finally:
        PyBuffer_Release(&view)
    iv.index, iv.writable = index, writable
    return 1
