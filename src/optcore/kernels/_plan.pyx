"""Cached step plans: the per-step re-validation of the optimizer classes.

A class steps a parameter group with one multi-tensor kernel call whose
arguments (parameter views, state views, options) do not change from step to
step. A plan holds them, built once by the class from its checked general
path, and re-validates them at each step in C by identity (the same group
dict, parameter list and parameters, the same option objects, the same state
entries and arrays; for torch tensors also the same data pointer, size, dtype
and contiguity). Anything that does not pass makes ``check`` return None and
the class takes its general path, which checks everything and raises the
errors users see. A NumPy plan's kernel call is bound once when the kernel
has a binder (``_bound.pxd``): each step binds only the gradients and re-checks
the written arrays (data, dtype, size, flags); any other call still binds and
checks every buffer (``_buffers.bind``) before it writes. A new learning
rate (a scheduler's float, the only option that changed) is taken by the plan
as it stands: the bound call's lr is set and checked (``set_lr``), nothing is
bound again.
"""

import sys

cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.ref cimport Py_INCREF
from libc.math cimport copysign
from libc.stdint cimport uintptr_t

from optcore.kernels._bound cimport BoundCall

cdef extern from "Python.h":
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf,
                               object kwnames)

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    int PyArray_SetBaseObject(cnp.ndarray arr, object base) except -1


cdef inline bint _grad_like(object gr, cnp.ndarray p) noexcept:
    # Exactly an aligned NumPy array of p's dtype (the same descriptor
    # object) and shape: the grads the general path accepts unchanged.
    cdef cnp.ndarray g
    cdef int d
    if not cnp.PyArray_CheckExact(gr):
        return False
    g = <cnp.ndarray>gr
    if <PyObject*>cnp.PyArray_DESCR(g) != <PyObject*>cnp.PyArray_DESCR(p):
        return False
    if cnp.PyArray_NDIM(g) != cnp.PyArray_NDIM(p) or not cnp.PyArray_ISALIGNED(g):
        return False
    for d in range(cnp.PyArray_NDIM(p)):
        if cnp.PyArray_DIM(g, d) != cnp.PyArray_DIM(p, d):
            return False
    return True


cdef inline bint _same_values(dict group, tuple keys, tuple values) noexcept:
    cdef Py_ssize_t i
    cdef PyObject* v
    for i in range(len(keys)):
        v = PyDict_GetItem(group, <object>PyTuple_GET_ITEM(keys, i))
        if v == NULL:
            v = <PyObject*>None
        if v != PyTuple_GET_ITEM(values, i):
            return False
    return True


def same_float(a, b):
    """Whether ``a`` and ``b`` are floats of the same value and sign."""
    return (type(a) is float and type(b) is float and <double>a == <double>b
            and copysign(1.0, <double>a) == copysign(1.0, <double>b))


cdef bint _immutable(object v):
    if v is None or type(v) in (float, int, bool, str):
        return True
    if type(v) is tuple:
        return all([_immutable(x) for x in v])
    return False


cdef class _GroupPlan:
    """What both plans check: the group, its parameters and its options."""
    cdef readonly object owner        # what the plan belongs to (a cache's key)
    cdef readonly dict group
    cdef list params                  # the group's "params" list (identity)
    cdef tuple param_items            # its items when the plan was built
    cdef tuple keys                   # option names
    cdef tuple values                 # their objects when the plan was built
    cdef Py_ssize_t lr_slot           # the index of "lr" in keys, or -1
    cdef public object data           # the caller's cached call arguments

    cdef bint _init_group(self, object owner, dict group, tuple keys) except -1:
        self.owner = owner
        self.group = group
        self.params = group["params"]
        self.param_items = tuple(self.params)
        self.keys = keys
        self.lr_slot = keys.index("lr") if "lr" in keys else -1
        return self.set_options(group)

    cdef object _changed_lr(self, dict group):
        # The group's new lr when it is the only option whose object changed
        # and both the recorded and the new value are floats, else None.
        cdef Py_ssize_t i
        cdef PyObject* v
        if self.lr_slot < 0:
            return None
        for i in range(len(self.keys)):
            v = PyDict_GetItem(group, <object>PyTuple_GET_ITEM(self.keys, i))
            if v == NULL:
                return None
            if v != PyTuple_GET_ITEM(self.values, i) and i != self.lr_slot:
                return None
        lr = group["lr"]
        old = <object>PyTuple_GET_ITEM(self.values, self.lr_slot)
        if type(lr) is not float or type(old) is not float or lr is old:
            return None
        return lr

    cdef _record_lr(self, lr):
        cdef list values = list(self.values)
        values[self.lr_slot] = lr
        self.values = tuple(values)

    def changed_lr(self, dict group):
        """``(recorded lr, the group's lr)`` when the group's lr is the only
        option that changed (both floats), else None."""
        lr = self._changed_lr(group)
        if lr is None:
            return None
        return <object>PyTuple_GET_ITEM(self.values, self.lr_slot), lr

    def set_options(self, dict group):
        """Record the group's option objects (after the caller checked them);
        False when one is mutable (a list, a tensor lr: it may change in
        place, so the plan must not be used)."""
        self.values = tuple([group.get(k) for k in self.keys])
        return all([_immutable(v) for v in self.values])

    def same_options(self, dict group):
        """True when every option of ``group`` is the object recorded."""
        return _same_values(group, self.keys, self.values)

    cdef inline bint _group_ok(self, dict group) noexcept:
        cdef Py_ssize_t j, n = len(self.param_items)
        if group is not self.group or \
                PyDict_GetItem(group, "params") != <PyObject*>self.params:
            return False
        if PyList_GET_SIZE(self.params) != n:
            return False
        for j in range(n):
            if PyList_GET_ITEM(self.params, j) != PyTuple_GET_ITEM(self.param_items, j):
                return False
        return True


cdef enum:
    _MAX_CALL_ARGS = 64               # a kernel's arguments (run's stack array)


cdef class NumpyPlan(_GroupPlan):
    """The plan of one group of a NumPy optimizer (``optcore.optim``): its
    state entries, the state arrays in them, the names of its scalar state."""
    cdef list entries
    cdef tuple kinds                  # state keys of the arrays
    cdef list columns                 # per kind: the arrays, per parameter
    cdef tuple scalar_names
    cdef object kernel                # the group's kernel (run calls it)
    cdef long long max_step           # run's bound of the step count
    cdef tuple kwnames                # run's keywords of the kernel: data[2]'s, then step
    cdef list kwvalues                # data[2]'s values (None: run leaves it to the caller)
    cdef Py_ssize_t lr_kw             # the index of "lr" in kwvalues when it is the group's, or -1
    cdef bint lr_hyper                # data[0]'s "lr" is the group's (and data[2]'s, if any)
    cdef BoundCall bound              # the kernel call bound once, or None

    @staticmethod
    def build(owner, dict group, tuple keys, list entries, tuple kinds, list columns,
              tuple scalar_names, data, kernel, long long max_step, bint kernel_lr=False):
        """A plan, or None when the group's options may change in place.
        ``kernel_lr``: the kernel takes the group's lr and checks it (a new
        float lr is then taken without building the plan again)."""
        cdef NumpyPlan plan = NumpyPlan.__new__(NumpyPlan)
        if not plan._init_group(owner, group, keys):
            return None
        plan.kernel = kernel
        plan.max_step = max_step
        plain = data[2]
        plan.lr_kw = -1
        if plain is not None:
            plan.kwnames = tuple(plain) + ("step",)
            plan.kwvalues = list(plain.values())
            plan.bound = bound_call(kernel, group["params"], plain)
            if plan.lr_slot >= 0 and same_float(plain.get("lr"), group["lr"]):
                plan.lr_kw = list(plain).index("lr")
        # The kernel's lr is the group's value, so a new float can replace it
        # (not when the cached keywords leave it out, as the kernel's default).
        plan.lr_hyper = (kernel_lr and plan.lr_slot >= 0
                         and same_float(data[0].get("lr"), group["lr"])
                         and (plain is None or plan.lr_kw >= 0))
        plan.entries = entries
        plan.kinds = kinds
        plan.columns = columns
        plan.scalar_names = scalar_names
        plan.data = data
        return plan

    def check(self, owner, dict group, grads):
        """The scalar state shared by every entry (a tuple), or None when the
        general path must take this step: anything changed, a gradient that
        is not an aligned array of its parameter's dtype and shape, or
        diverged scalar state."""
        return self._check(owner, group, grads)

    def run(self, opt, grads):
        """Take optimizer ``opt``'s step when the plan holds and its only
        scalar state is a step count below the plan's ``max_step`` (or it has
        none): the kernel with the keywords cached as ``data[2]`` and
        ``step=count + 1`` (2 without a count), then the new count into every
        entry. True when it stepped; False when the general path must take the
        step (nothing was written: the kernel refuses before it writes); None
        when the plan holds but the caller's own call must run it (other
        scalar state)."""
        groups = opt.param_groups
        if type(groups) is not list or PyList_GET_SIZE(groups) != 1:
            return False
        group = <object>PyList_GET_ITEM(groups, 0)
        if group is not self.group:
            return False
        first = self._check(opt._calls[0], <dict>group, grads)
        if first is None:
            return False
        if self.kwnames is None or PyList_GET_SIZE(self.kwvalues) + 3 > _MAX_CALL_ARGS:
            return None
        if PyTuple_GET_SIZE(self.scalar_names) == 0:
            # No scalar state (SGD): step 2, as for every step whose buffers
            # exist (the kernel fills new ones from the gradient at step 1).
            return self._call_kernel(grads, 2)
        if len(<tuple>first) != 1:
            return None
        count = (<tuple>first)[0]
        if type(count) is not int or not 0 <= count < self.max_step:
            return None
        step = count + 1
        if not self._call_kernel(grads, step):
            return False
        self._store_step(step)
        return True

    cdef bint _call_kernel(self, grads, step) except -1:
        # The cached call with ``step``; False when the kernel refused its
        # buffers (it wrote nothing).
        cdef Py_ssize_t j, nkw = PyList_GET_SIZE(self.kwvalues)
        if self.bound is not None and self.bound.call(grads, <long long>step):
            return True
        # A vectorcall with the keyword names built once: packing a keyword
        # dict anew each step costs a small model's step a tenth.
        cdef PyObject* args[_MAX_CALL_ARGS]
        args[0] = <PyObject*>self.params
        args[1] = <PyObject*>grads
        for j in range(nkw):
            args[2 + j] = PyList_GET_ITEM(self.kwvalues, j)
        args[2 + nkw] = <PyObject*>step
        try:
            PyObject_Vectorcall(self.kernel, args, 2, self.kwnames)
        except (TypeError, ValueError):
            return False
        return True

    @property
    def compiled(self):
        """True when the plan's kernel call is bound once (``_bound.pxd``)."""
        return self.bound is not None

    cdef _store_step(self, step):
        cdef Py_ssize_t j
        name = <object>PyTuple_GET_ITEM(self.scalar_names, 0)
        for j in range(PyList_GET_SIZE(self.entries)):
            PyDict_SetItem(<dict>PyList_GET_ITEM(self.entries, j), name, step)

    cdef object _check(self, owner, dict group, grads):
        cdef Py_ssize_t j, k, n = len(self.param_items)
        cdef PyObject* a
        cdef list column
        if owner is not self.owner or not self._group_ok(group):
            return None
        if not _same_values(group, self.keys, self.values) and not self._retune(group):
            return None
        if type(grads) is not list and type(grads) is not tuple:
            return None
        if len(grads) != n:
            return None
        for j in range(n):
            if not _grad_like(grads[j], <cnp.ndarray>PyTuple_GET_ITEM(self.param_items, j)):
                return None
        for j in range(n):
            entry = <dict>PyList_GET_ITEM(self.entries, j)
            for k in range(len(self.kinds)):
                a = PyDict_GetItem(entry, <object>PyTuple_GET_ITEM(self.kinds, k))
                column = <list>PyList_GET_ITEM(self.columns, k)
                if a == NULL or a != PyList_GET_ITEM(column, j):
                    return None
        if n == 0:
            return ()
        # One call needs the same scalar state (step count) in every entry.
        cdef Py_ssize_t i, ns = len(self.scalar_names)
        cdef list first = []
        cdef PyObject* f
        entry = <dict>PyList_GET_ITEM(self.entries, 0)
        for i in range(ns):
            a = PyDict_GetItem(entry, <object>PyTuple_GET_ITEM(self.scalar_names, i))
            if a == NULL:
                return None
            first.append(<object>a)
        for j in range(1, n):
            entry = <dict>PyList_GET_ITEM(self.entries, j)
            for i in range(ns):
                a = PyDict_GetItem(entry, <object>PyTuple_GET_ITEM(self.scalar_names, i))
                f = PyList_GET_ITEM(first, i)
                if a == NULL or (a != f and not (<object>a == <object>f)):
                    return None
        return tuple(first)

    cdef bint _retune(self, dict group) except -1:
        # A scheduler's new lr into the cached call (its keywords and the
        # options of the caller's own call): the bound call checks it as the
        # kernel does (without one, the kernel call checks it and refuses
        # before it writes); False leaves the step to the general path.
        if not self.lr_hyper:
            return False
        lr = self._changed_lr(group)
        if lr is None or (self.bound is not None and not self.bound.set_lr(<double>lr)):
            return False
        self._record_lr(lr)
        hyper, buffers, plain = self.data
        hyper = dict(hyper)
        hyper["lr"] = lr
        if plain is not None:
            self.kwvalues[self.lr_kw] = lr
            plain = dict(plain)
            plain["lr"] = lr
        self.data = (hyper, buffers, plain)
        return True

    def store(self, dict new):
        """The scalar state after the kernel ran, into every entry."""
        cdef Py_ssize_t j
        for j in range(PyList_GET_SIZE(self.entries)):
            entry = <dict>PyList_GET_ITEM(self.entries, j)
            for key, value in new.items():
                PyDict_SetItem(entry, key, value)


def bound_call(kernel, params, dict plain):
    """``kernel(params, grads, step=..., **plain)`` bound to its written
    buffers (a ``_bound.BoundCall``: ``run(grads, step)``), or None: no binder
    for this kernel, or a call it cannot bind (low precision, master weights,
    a buffer that is not an exact NumPy array, an invalid call)."""
    module = sys.modules.get(getattr(kernel, "__module__", None))
    binder = getattr(module, "_BINDERS", {}).get(getattr(kernel, "__name__", None))
    if binder is None:
        return None
    try:
        return binder(params, None, step=1, **plain)
    except (TypeError, ValueError):
        return None


cdef class TorchPlan(_GroupPlan):
    """The plan of one group of an ``optcore.torch`` optimizer: its parameters'
    memory, their state entries and tensors (with their memory)."""
    cdef object state                 # the optimizer's state mapping
    cdef list entries                 # per parameter: its state dict (None: it has none)
    cdef list entry_items             # per parameter: its (key, tensor) pairs
    cdef list ptrs                    # per parameter: data_ptr, numel
    cdef object dtype                 # the group's parameters' dtype
    cdef list tensors                 # per parameter: ((key, tensor, data_ptr), ...)
    cdef object layout                # the parameters' layout (strided)
    cdef list scalar_views            # per parameter: its scalar state's 0-d views
    cdef int typenum
    cdef public object columns        # the caller's kernel arguments, cached

    @staticmethod
    def build(owner, dict group, tuple keys, state, list entries, list entry_items,
              list scalar_views, dtype, int typenum, data):
        """A plan, or None when the group's options may change in place."""
        cdef TorchPlan plan = TorchPlan.__new__(TorchPlan)
        if not plan._init_group(owner, group, keys):
            return None
        plan.state = state
        plan.entries = entries
        plan.entry_items = entry_items
        plan.scalar_views = scalar_views
        plan.dtype = dtype
        plan.typenum = typenum
        plan.ptrs = [(p.data_ptr(), p.numel()) for p in plan.param_items]
        plan.tensors = [tuple([(key, t, t.data_ptr()) for key, t in items])
                        for items in entry_items]
        plan.layout = plan.param_items[0].layout if plan.param_items else None
        plan.data = data
        return plan

    def check(self, owner, dict group, state):
        """``(gradients as NumPy views, the scalar state shared by every
        parameter)``, or None when the general path must take this step
        (options are checked by ``same_options``)."""
        cdef Py_ssize_t j, n = len(self.param_items)
        cdef list grads = []
        cdef cnp.npy_intp size
        cdef cnp.ndarray view
        cdef uintptr_t ptr
        cdef PyObject* found
        cdef tuple item
        cdef Py_ssize_t i
        layout = self.layout
        if owner is not self.owner or state is not self.state or not self._group_ok(group):
            return None
        dtype = self.dtype
        for j in range(n):
            p = <object>PyTuple_GET_ITEM(self.param_items, j)
            entry = <object>PyList_GET_ITEM(self.entries, j)
            found = PyDict_GetItem(state, p)
            if found != <PyObject*>entry and not (found == NULL and entry is None):
                return None
            pptr, numel = <tuple>PyList_GET_ITEM(self.ptrs, j)
            if (p.dtype is not dtype or p.data_ptr() != pptr or p.numel() != numel
                    or not p.is_contiguous()):
                return None
            items = <tuple>PyList_GET_ITEM(self.tensors, j)
            for i in range(len(items)):
                item = <tuple>PyTuple_GET_ITEM(items, i)
                found = PyDict_GetItem(<dict>entry, <object>PyTuple_GET_ITEM(item, 0))
                if found == NULL or found != PyTuple_GET_ITEM(item, 1):
                    return None
                if (<object>found).data_ptr() != <object>PyTuple_GET_ITEM(item, 2):
                    return None
            g = p.grad
            if (g is None or g.layout is not layout or g.dtype is not dtype
                    or not g.is_cpu or g.numel() != numel or not g.is_contiguous()):
                return None
            # A NumPy view of the gradient's memory that keeps the tensor alive
            # (what tensor.numpy() gives, without its cost).
            ptr = g.data_ptr()
            size = numel
            view = cnp.PyArray_SimpleNewFromData(1, &size, self.typenum, <void*>ptr)
            Py_INCREF(g)          # (PyArray_SetBaseObject steals a reference)
            PyArray_SetBaseObject(view, g)
            grads.append(view)
        # One call needs one scalar state (step count) for every parameter:
        # each compared with the first parameter's, in C.
        if n == 0:
            return grads, ()
        cdef tuple first = <tuple>PyList_GET_ITEM(self.scalar_views, 0)
        cdef tuple views
        for j in range(1, n):
            views = <tuple>PyList_GET_ITEM(self.scalar_views, j)
            for i in range(len(first)):
                # (!= : a NaN step count never matches, as tuples compared)
                if (_scalar(<cnp.ndarray>PyTuple_GET_ITEM(views, i))
                        != _scalar(<cnp.ndarray>PyTuple_GET_ITEM(first, i))):
                    return None
        return grads, tuple([_scalar(v) for v in first])

    def store_scalars(self, tuple values):
        """Write ``values`` (in scalar-state order) into every parameter's
        scalar state tensors, rounded to their dtype."""
        cdef Py_ssize_t i
        cdef cnp.ndarray v
        cdef double x
        for views in self.scalar_views:
            for i in range(len(values)):
                v = <cnp.ndarray>PyTuple_GET_ITEM(<tuple>views, i)
                x = values[i]
                if cnp.PyArray_TYPE(v) == cnp.NPY_FLOAT32:
                    (<float*>cnp.PyArray_DATA(v))[0] = <float>x
                elif cnp.PyArray_TYPE(v) == cnp.NPY_FLOAT64:
                    (<double*>cnp.PyArray_DATA(v))[0] = x
                else:
                    v[()] = x


cdef double _scalar(cnp.ndarray v) except? -1:
    # A one-element state tensor's value, as float() reads it.
    cdef int tn = cnp.PyArray_TYPE(v)
    if tn == cnp.NPY_FLOAT32:
        return (<float*>cnp.PyArray_DATA(v))[0]
    if tn == cnp.NPY_FLOAT64:
        return (<double*>cnp.PyArray_DATA(v))[0]
    return float(v)
