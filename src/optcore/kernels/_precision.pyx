"""Which precisions a step kernel's call combines, checked before anything runs.

A step kernel computes in float32 over tiles (optcore/kernels/_storage.pxd)
when its buffers are not all float32 or all float64:

- ``param``: float32, bfloat16 or float16; ``grad``: float32, bfloat16 or
  float16, whatever the param's dtype;
- states: float32, bfloat16 or an ``optcore.QuantizedState`` (int8 codes of
  the state's map);
- ``master_param`` (float32) with a bfloat16/float16 param: the master is
  updated and the param written from it (nearest);
- ``rounding``: ``"nearest"``, ``"stochastic"`` (bfloat16 or float16 params, no master)
  or ``"kahan"`` (bfloat16/float16 params, a ``compensation`` buffer of the
  param's dtype, no master);
- float64 params take float64 buffers only.

Every violation is a TypeError (a dtype) or ValueError (an option) naming the
argument, raised before the first write.
"""

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint64_t

from optcore.kernels._buffers cimport (BufferSet, bind, check_disjoint, dtype_name,
                                       FLOAT32, FLOAT64, BFLOAT16, FLOAT16, UINT8,
                                       ABSENT, WRITE)
from optcore.kernels._runtime cimport PARTITION_ALIGN
from optcore.kernels._storage cimport (K_F32, K_BF16, K_F16, K_Q8, NEAREST, STOCHASTIC,
                                       KAHAN, QBLOCK, MAX_TILED, rounding_key)

cdef dict _ROUNDINGS = {"nearest": NEAREST, "stochastic": STOCHASTIC, "kahan": KAHAN}
cdef dict _KINDS = {FLOAT32: K_F32, BFLOAT16: K_BF16, FLOAT16: K_F16, UINT8: K_Q8}


cdef class Precision:

    def __cinit__(self):
        self.run_sizes = NULL
        self.absmax_ptrs = NULL
        self.scales = None

    def __dealloc__(self):
        PyMem_Free(self.run_sizes)
        PyMem_Free(self.absmax_ptrs)


cdef str _name(tuple names, int a):
    return names[a]


cdef int rounding_mode(object rounding) except -1:
    try:
        return _ROUNDINGS[rounding]
    except (KeyError, TypeError):
        raise ValueError(f"rounding must be 'nearest', 'stochastic' or 'kahan', "
                         f"got {rounding!r}") from None


cdef uint64_t seed_value(object seed) except? 0:
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    cdef object value = seed.__index__()
    if not 0 <= value < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {value}")
    return <uint64_t>value


cdef Precision prepare(BufferSet b, tuple names, tuple objs, tuple layout, object rounding,
                       object seed, long long step, str kernel):
    # messages name a list argument by its first tensor (all share one dtype)
    if b.is_list:
        names = tuple([f"{n}[0]" for n in names])
    cdef int nbuf = len(layout)
    cdef int a, dt, p = b.dtypes[0], mode = rounding_mode(rounding)
    cdef Py_ssize_t k = b.ntensors, t, j
    cdef bint has_master = b.roles[nbuf] != ABSENT
    cdef bint has_comp = b.roles[nbuf + 1] != ABSENT
    cdef Precision pr = Precision.__new__(Precision)
    if nbuf + 2 > MAX_TILED:
        raise TypeError(f"{kernel} has too many buffers for mixed precision")

    # -- dtypes ------------------------------------------------------------------
    if p == FLOAT64:
        for a in range(1, nbuf + 2):
            if b.roles[a] != ABSENT and b.dtypes[a] != FLOAT64:
                raise TypeError(
                    f"{names[a]} has dtype {_described(b, a)} but {names[0]} has float64; "
                    f"float64 params take float64 buffers only")
    elif p not in (FLOAT32, BFLOAT16, FLOAT16):
        raise TypeError(f"{names[0]} has dtype {dtype_name(p)}; step kernels take float32, "
                        f"float64, bfloat16 or float16 params")
    for a in range(1, nbuf):
        if b.roles[a] == ABSENT:
            continue
        dt = b.dtypes[a]
        quantized = b.absmax is not None and b.absmax[a] is not None
        if a > 1 and layout[a][3] == ("float32",) and (quantized or dt != FLOAT32):
            raise TypeError(f"{names[a]} has dtype {_described(b, a)}; {kernel} keeps its "
                            f"states in float32 (with {names[0]} of dtype {dtype_name(p)})")
        if a == 1:
            if dt not in (FLOAT32, BFLOAT16, FLOAT16):
                raise TypeError(f"{names[1]} has dtype {dtype_name(dt)}; with {names[0]} of dtype "
                                f"{dtype_name(p)} grad is float32, bfloat16 or float16")
        elif quantized:
            signed = not layout[a][2]
            for state in b.absmax[a]:
                if state.signed != signed:
                    raise TypeError(
                        f"{names[a]} is {'a signed' if state.signed else 'an unsigned'} "
                        f"QuantizedState; {kernel}'s {names[a]} takes the "
                        f"{'signed' if signed else 'unsigned'} map")
        elif dt == UINT8:
            raise TypeError(f"{names[a]} has dtype uint8; int8 states are passed as "
                            f"optcore.QuantizedState (codes and block absmax)")
        elif dt not in (FLOAT32, BFLOAT16):
            raise TypeError(f"{names[a]} has dtype {dtype_name(dt)}; with param of dtype "
                            f"{dtype_name(p)} states are float32, bfloat16 or "
                            f"optcore.QuantizedState")

    # -- master weights and rounding -----------------------------------------------
    if has_master:
        if p not in (BFLOAT16, FLOAT16):
            raise TypeError(f"master_param is the float32 copy of bfloat16 or float16 "
                            f"params; param has dtype {dtype_name(p)}")
        if b.dtypes[nbuf] != FLOAT32:
            raise TypeError(f"master_param has dtype {dtype_name(b.dtypes[nbuf])}; "
                            f"it must be float32")
        if mode != NEAREST:
            raise ValueError(f"rounding={rounding!r} rounds a param that has no master "
                             f"copy; with master_param the param is rounded to nearest")
    if mode == STOCHASTIC and p not in (BFLOAT16, FLOAT16):
        raise TypeError(f"rounding='stochastic' takes bfloat16 or float16 params; param "
                        f"has dtype {dtype_name(p)}")
    if mode == KAHAN:
        if p not in (BFLOAT16, FLOAT16):
            raise TypeError(f"rounding='kahan' takes bfloat16 or float16 params; param "
                            f"has dtype {dtype_name(p)}")
        if not has_comp:
            raise ValueError("rounding='kahan' needs a compensation buffer "
                             "(zeros of the param's dtype and shape before the first step)")
        if b.dtypes[nbuf + 1] != p:
            raise TypeError(f"compensation has dtype {dtype_name(b.dtypes[nbuf + 1])} but "
                            f"param has {dtype_name(p)}")
    elif has_comp:
        raise ValueError("compensation is used with rounding='kahan' only")
    if mode == STOCHASTIC:
        pr.storage.key = rounding_key(seed_value(seed), step)
    else:
        pr.storage.key = 0

    # -- the storage -----------------------------------------------------------------
    pr.storage.rounding = mode
    pr.storage.first = 0
    pr.storage.sizes = b.sizes
    pr.storage.master = b.data + nbuf * k if has_master else NULL
    pr.storage.compensation = b.data + (nbuf + 1) * k if has_comp else NULL
    for a in range(nbuf):
        pr.storage.kind[a] = _KINDS.get(b.dtypes[a], K_F32)
        pr.storage.unsigned_map[a] = layout[a][2]
        pr.storage.absmax[a] = NULL
    pr.align = PARTITION_ALIGN
    if b.absmax is not None:
        _bind_scales(pr, b, names, objs, nbuf)
    return pr


cdef str _described(BufferSet b, int a):
    if b.absmax is not None and b.absmax[a] is not None:
        return "int8 (QuantizedState)"
    return dtype_name(b.dtypes[a])


cdef _bind_scales(Precision pr, BufferSet b, tuple names, tuple objs, int nbuf):
    """Bind the absmax arrays of the quantized states (float32, one per block,
    written), check them against the codes, and pad the runtime's sizes to
    whole blocks so that no block is split between threads."""
    cdef Py_ssize_t k = b.ntensors, t, nb
    cdef int a, j
    cdef list quantized = [a for a in range(nbuf)
                           if b.absmax[a] is not None]
    cdef tuple snames = tuple([f"{names[a].removesuffix('[0]')}.absmax" for a in quantized])
    cdef tuple sobjs = tuple([[q.absmax for q in b.absmax[a]] if b.is_list
                              else b.absmax[a][0].absmax for a in quantized])
    # each state's block count against its own codes first (bind compares the
    # scale arguments with each other, which would blame the wrong state)
    for a in quantized:
        for t in range(k):
            nb = (b.sizes[t] + QBLOCK - 1) // QBLOCK
            size = getattr(b.absmax[a][t].absmax, "size", nb)
            if size != nb:
                label = (f"{names[a].removesuffix('[0]')}.absmax[{t}]" if b.is_list
                         else f"{names[a]}.absmax")
                raise ValueError(f"{label} has {size} blocks but {b.sizes[t]} elements "
                                 f"need {nb}")
    pr.scales = bind(snames, sobjs, tuple([WRITE] * len(quantized)))
    for t in range(k):
        nb = (b.sizes[t] + QBLOCK - 1) // QBLOCK
        if pr.scales.sizes[t] != nb:
            label = f"{snames[0]}[{t}]" if b.is_list else snames[0]
            raise ValueError(f"{label} has {pr.scales.sizes[t]} blocks but "
                             f"{b.sizes[t]} elements need {nb}")
    check_disjoint(b, names, objs, pr.scales, snames, sobjs)
    pr.absmax_ptrs = <void**>PyMem_Malloc(max(1, len(quantized) * k) * sizeof(void*))
    pr.run_sizes = <Py_ssize_t*>PyMem_Malloc(max(1, k) * sizeof(Py_ssize_t))
    if pr.absmax_ptrs == NULL or pr.run_sizes == NULL:
        raise MemoryError()
    for j, a in enumerate(quantized):
        for t in range(k):
            pr.absmax_ptrs[j * k + t] = pr.scales.data[j * k + t]
        pr.storage.absmax[a] = pr.absmax_ptrs + j * k
    for t in range(k):
        pr.run_sizes[t] = (b.sizes[t] + QBLOCK - 1) // QBLOCK * QBLOCK
    pr.align = QBLOCK
