"""The machinery shared by optcore's stateful optimizers (torch.optim-style
classes over NumPy parameters).

An optimizer holds ``param_groups`` (dicts of hyperparameters, each with its
``params``: NumPy arrays updated in place, never copied) and per-parameter
``state`` dicts with torch.optim's keys. Every tensor state of a group lives
in ONE contiguous, 64-byte aligned arena per state kind (and dtype); the
per-parameter entries of ``state`` are views into it. A step over a group is
therefore one multi-tensor call of the functional kernel (``optcore.<x>_step``)
over the group's parameters, gradients and state views.

A subclass declares the kernel, its state, and its constructor; see
``optcore/optim/family.py``.
"""

import copy
import importlib
import numbers
import operator
from operator import itemgetter

import numpy as np

from optcore.kernels._buffers import find_overlap

__all__ = ["Optimizer"]

# Arena slots start on cache-line (and SIMD) boundaries.
_ALIGN = 64

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Largest step count kept in state (the kernels take a 64-bit step).
_MAX_STEP = 2**62


# ---- hyperparameter checks (torch.optim's wording) -------------------------

def _real(name, value):
    if type(value) is float or type(value) is int:
        return float(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def _nonneg(label):
    def check(name, value):
        if not 0.0 <= _real(name, value):       # NaN fails too
            raise ValueError(f"Invalid {label}: {value}")
    return check


def _unit_closed(name, value):
    if not 0.0 <= _real(name, value) <= 1.0:
        raise ValueError(f"Invalid {name} value: {value}")


def _any_real(name, value):
    if _real(name, value) != _real(name, value):
        raise ValueError(f"Invalid {name} value: {value}")


def _betas(name, value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {value!r}")
    for i, beta in enumerate(value):
        if not 0.0 <= _real(f"betas[{i}]", beta) < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


_CHECKS = {
    "lr": _nonneg("learning rate"),
    "eps": _nonneg("epsilon value"),
    "weight_decay": _nonneg("weight_decay value"),
    "momentum": _nonneg("momentum value"),
    "alpha": _nonneg("alpha value"),
    "lr_decay": _nonneg("lr_decay value"),
    "initial_accumulator_value": _nonneg("initial_accumulator_value value"),
    "momentum_decay": _nonneg("momentum_decay value"),
    "dampening": _any_real,
    "rho": _unit_closed,
    "betas": _betas,
    "amsgrad": _flag,
    "maximize": _flag,
    "nesterov": _flag,
    "centered": _flag,
    "decoupled_weight_decay": _flag,
}


def _unsupported_torch_flags(cls_name, capturable=False, differentiable=False):
    """torch.optim's device/autograd switches: meaningless for NumPy arrays;
    ``foreach``/``fused`` are accepted and ignored (a step is always one fused
    multi-tensor call), these two cannot be honoured."""
    if capturable:
        raise ValueError(f"{cls_name}: capturable=True (CUDA graphs) does not apply to "
                         f"NumPy parameters")
    if differentiable:
        raise ValueError(f"{cls_name}: differentiable=True (autograd through the step) "
                         f"is not supported by optcore's in-place kernels")


# ---- parameters ------------------------------------------------------------

def _check_param(p, label):
    if not isinstance(p, np.ndarray):
        raise TypeError(
            f"{label} is a {type(p).__module__}.{type(p).__name__}; optcore optimizers "
            f"update NumPy arrays in place (use optcore.torch for torch tensors)")
    if p.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{label} has dtype {p.dtype}; optcore optimizers take "
                        f"float32 or float64 parameters")
    if not p.flags.c_contiguous:
        raise ValueError(f"{label} is not C-contiguous; optcore updates parameters in "
                         f"place and never works on a copy (an update to a copy would "
                         f"be lost)")
    if not p.flags.writeable:
        raise ValueError(f"{label} is read-only; optcore updates parameters in place")
    if not p.flags.aligned:
        raise ValueError(f"{label} is not aligned to its {p.itemsize}-byte elements")


def _as_param_list(params, what):
    if isinstance(params, np.ndarray):
        return [params]
    if isinstance(params, (set, frozenset)):
        raise TypeError(f"{what} must be an ordered collection (list or tuple) of arrays; "
                        f"a set has no stable order")
    return list(params)


def _check_no_overlap(params):
    """No parameter may appear twice or share memory with another: both would
    be written by one native call."""
    spans = []
    seen = {}
    for i, p in enumerate(params):
        if id(p) in seen:
            raise ValueError(f"parameter {i} is the same array as parameter {seen[id(p)]}; "
                             f"a parameter may appear only once in an optimizer")
        seen[id(p)] = i
        if p.size:
            start = p.__array_interface__["data"][0]
            spans.append((start, start + p.nbytes, i))
    spans.sort()
    for (s0, e0, i), (s1, e1, j) in zip(spans, spans[1:]):
        if s1 < e0:
            raise ValueError(f"parameters {min(i, j)} and {max(i, j)} share memory; every "
                             f"parameter must be its own array (they are updated in place)")


def _aligned_empty(n, dtype):
    """A 1-D array of ``n`` elements whose first element is _ALIGN-byte aligned."""
    itemsize = dtype.itemsize
    raw = np.empty(n + _ALIGN // itemsize, dtype)
    shift = (-raw.ctypes.data % _ALIGN) // itemsize
    return raw[shift:shift + n]


def _slot(n, itemsize):
    per = _ALIGN // itemsize
    return (n + per - 1) // per * per


class _Layout:
    """Where each parameter of a group sits in the group's arenas: one arena
    per (state kind, dtype); ``offsets[j]`` is parameter j's first element in
    the arena of its dtype."""

    def __init__(self, params):
        self.offsets = []
        self.totals = {}
        for p in params:
            off = self.totals.get(p.dtype, 0)
            self.offsets.append(off)
            self.totals[p.dtype] = off + _slot(p.size, p.itemsize)


class _NewKinds:
    """State kinds a group is getting now (see ``Optimizer._new_kinds``):
    their new arenas, and views for existing entries, attached only once a
    kernel call that uses them has returned."""

    __slots__ = ("g", "kinds", "arenas", "views", "done")

    def __init__(self, g, kinds):
        self.g = g
        self.kinds = kinds
        self.arenas = {}        # (kind, dtype) -> new arena
        self.views = {}         # (index in group, kind) -> view for an existing entry
        self.done = False


class _Call:
    """One kernel call of a step, prepared (and checked) before any call of
    the step runs. ``entries`` are the state entries it advances (not yet
    registered when ``fresh``: a first step), ``indices`` their global
    parameter indices."""

    __slots__ = ("g", "indices", "params", "grads", "entries", "kinds", "buffers",
                 "scalars", "fresh", "hyper", "new_kinds")

    def __init__(self, g, indices, params, grads, entries, kinds, buffers, scalars, fresh,
                 hyper, new_kinds=None):
        self.g = g
        self.indices = indices
        self.params = params
        self.grads = grads
        self.entries = entries
        self.kinds = kinds
        self.buffers = buffers
        self.scalars = scalars
        self.fresh = fresh
        self.hyper = hyper
        self.new_kinds = new_kinds


def _check_state_array(a, p, kind, label):
    """A state array as the kernels take it for parameter ``p`` (users may
    put their own arrays into the state; they are updated in place)."""
    if type(a) is np.ndarray and a.dtype is p.dtype and a.size == p.size:
        flags = a.flags
        if flags.c_contiguous and flags.writeable and flags.aligned:
            return
    where = f"{label}, state {kind!r}"
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}: a {type(a).__module__}.{type(a).__name__}, not a NumPy "
                        f"array")
    if a.dtype != p.dtype:
        raise TypeError(f"{where}: dtype {a.dtype} but the parameter has dtype {p.dtype}")
    if a.size != p.size:
        raise ValueError(f"{where}: {a.size} elements but the parameter has {p.size}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{where}: not C-contiguous; optcore updates state in place and "
                         f"never works on a copy")
    if not a.flags.writeable:
        raise ValueError(f"{where}: read-only; optcore updates it in place")
    if not a.flags.aligned:
        raise ValueError(f"{where}: not aligned to its {a.itemsize}-byte elements")


class OptimizerState:
    """``optimizer.state``: per-parameter state dicts, keyed by the parameter's
    global index (its position over all groups, as in ``state_dict()``); the
    parameter array itself is accepted as a key too, like torch's
    ``optimizer.state[p]``. Parameters that have not been stepped yet have no
    entry (state is created lazily on the first step, as in torch.optim)."""

    __slots__ = ("_opt",)

    def __init__(self, opt):
        self._opt = opt

    def _index(self, key):
        if isinstance(key, np.ndarray):
            idx = self._opt._index.get(id(key))
            if idx is None or self._opt._param(idx) is not key:
                raise KeyError("this array is not a parameter of the optimizer")
            return idx
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            return int(key)
        raise KeyError(key)

    def __getitem__(self, key):
        return self._opt._state[self._index(key)]

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key):
        try:
            return self._index(key) in self._opt._state
        except KeyError:
            return False

    def __iter__(self):
        return iter(sorted(self._opt._state))

    def __len__(self):
        return len(self._opt._state)

    def keys(self):
        return list(self)

    def values(self):
        return [self._opt._state[i] for i in self]

    def items(self):
        return [(i, self._opt._state[i]) for i in self]

    def __repr__(self):
        return f"OptimizerState({dict(self.items())!r})"


# ---- the optimizer ---------------------------------------------------------

class Optimizer:
    """Base class: parameter groups, arena-backed state, step, state_dict.

    Subclasses set:

    - ``_kernel``: the functional kernel's name in ``optcore`` (looked up at
      the first step);
    - ``_scalars``: per-parameter scalar state and its initial value
      (``{"step": 0}`` for most);
    - ``_kinds``: every tensor state kind it can hold (torch.optim's state
      keys), and ``_buffers(group)``: those the group's options need (all of
      them unless overridden);
    - optionally ``_kernel_args`` (state key -> kernel argument name where they
      differ), ``_not_kernel`` (hyperparameters the kernel does not take),
      ``_fill(kind, group)`` (initial value of a state kind), ``_eager``
      (create state at construction, as torch's Adagrad does), ``_check_group``
      (cross-option checks) and ``_call`` (how the kernel is called).
    """

    _kernel = None
    _kinds = ()
    _scalars = {"step": 0}
    _kernel_args = {}
    _not_kernel = ()
    _eager = False

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        for name, value in self.defaults.items():
            self._check_value(name, value)
        self._check_group(self.defaults)
        self.param_groups = []
        self._layouts = []          # per group: _Layout
        self._arenas = []           # per group: {(kind, dtype): 1-D arena}
        self._ready = []            # per group: state kinds with arenas and views
        self._hyper_cache = []      # per group: (values checked, kernel keywords)
        self._calls = []            # per group: the one-call step's arguments, cached
        self._state = {}            # global parameter index -> state dict
        self._index = {}            # id(param) -> global index
        self._starts = []           # per group: global index of its first parameter
        self._scalar_names = tuple(self._scalars)
        self.state = OptimizerState(self)

        if isinstance(params, np.ndarray):
            raise TypeError("params must be an iterable of arrays or of dicts (parameter "
                            "groups), got a single ndarray; wrap it in a list")
        if isinstance(params, dict):
            raise TypeError("params must be an iterable of arrays or of dicts (parameter "
                            "groups), got a dict; pass a list of dicts")
        groups = _as_param_list(params, "params")
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- subclass hooks (defaults) --

    def _buffers(self, group):
        return self._kinds

    def _fill(self, kind, group):
        return 0.0

    def _check_group(self, group):
        pass

    def _call(self, fn, params, grads, buffers, scalars, fresh, hyper):
        step = scalars["step"] + 1
        fn(params, grads, **buffers, step=step, **hyper)
        return {"step": step}

    # -- validation --

    @staticmethod
    def _check_value(name, value):
        check = _CHECKS.get(name)
        if check is not None:
            check(name, value)

    def _check_hyper(self, group, where):
        try:
            for name in self.defaults:
                if name not in group:
                    raise ValueError(f"missing hyperparameter {name!r}")
                self._check_value(name, group[name])
            self._check_group(group)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None

    # -- groups --

    def add_param_group(self, param_group):
        """Add a group of parameters (dict with ``"params"`` and any
        hyperparameters; missing ones take the optimizer's defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group has no 'params'")
        params = _as_param_list(param_group["params"], "param_group['params']")
        g = len(self.param_groups)
        start = sum(len(gr["params"]) for gr in self.param_groups)
        for j, p in enumerate(params):
            _check_param(p, f"parameter {start + j} (group {g}, index {j})")
        _check_no_overlap([p for gr in self.param_groups for p in gr["params"]] + params)
        group = {k: v for k, v in param_group.items() if k != "params"}
        for name, value in self.defaults.items():
            group.setdefault(name, copy.deepcopy(value))
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        self._check_hyper(group, f"param group {g}")
        group["params"] = params

        self.param_groups.append(group)
        self._layouts.append(_Layout(params))
        self._arenas.append({})
        self._ready.append(set())
        self._hyper_cache.append(None)
        self._calls.append(None)
        self._starts.append(start)
        for j, p in enumerate(params):
            self._index[id(p)] = start + j
        if self._eager:
            self._init_group_state(g)

    def _param(self, idx):
        for g in range(len(self.param_groups) - 1, -1, -1):
            if idx >= self._starts[g]:
                return self.param_groups[g]["params"][idx - self._starts[g]]
        raise IndexError(idx)

    # -- arenas --

    def _new_kinds(self, g, kinds):
        """What giving group g the state ``kinds`` takes, or None when it has
        them all: arenas not allocated yet and views for the existing entries
        that lack a kind. Nothing is attached until ``_attach_kinds``, so that
        a step that raises later leaves the state as it was."""
        ready = self._ready[g]
        if ready.issuperset(kinds):
            return None
        group, layout, arenas = self.param_groups[g], self._layouts[g], self._arenas[g]
        new = _NewKinds(g, kinds)
        for kind in kinds:
            if kind in ready:
                continue
            for dt, total in layout.totals.items():
                if (kind, dt) not in arenas:
                    arena = _aligned_empty(total, dt)
                    arena.fill(self._fill(kind, group))
                    new.arenas[kind, dt] = arena
            for j in range(len(group["params"])):
                st = self._state.get(self._starts[g] + j)
                if st is not None and kind not in st:
                    new.views[j, kind] = self._view(g, j, kind, new.arenas)
        return new

    def _attach_kinds(self, new):
        """Apply ``_new_kinds``: from now on the group holds those kinds."""
        if new.done:
            return
        g = new.g
        self._arenas[g].update(new.arenas)
        for (j, kind), view in new.views.items():
            st = self._state.get(self._starts[g] + j)
            if st is not None and kind not in st:
                st[kind] = view
        self._ready[g].update(new.kinds)
        self._calls[g] = None
        new.done = True

    def _view(self, g, j, kind, new_arenas=None):
        p = self.param_groups[g]["params"][j]
        off = self._layouts[g].offsets[j]
        arena = new_arenas.get((kind, p.dtype)) if new_arenas else None
        if arena is None:
            arena = self._arenas[g][kind, p.dtype]
        return arena[off:off + p.size].reshape(p.shape)

    def _new_entry(self, g, j, kinds, new=None):
        """A first-step state entry for parameter j of group g: initial
        scalars and views into the arenas. Not registered: the caller puts it
        into ``_state`` once the step that creates it cannot fail any more."""
        st = dict(self._scalars)
        arenas = new.arenas if new is not None else None
        for kind in kinds:
            st[kind] = self._view(g, j, kind, arenas)
        return st

    def _init_group_state(self, g):
        kinds = self._buffers(self.param_groups[g])
        new = self._new_kinds(g, kinds)
        if new is not None:
            self._attach_kinds(new)
        for j in range(len(self.param_groups[g]["params"])):
            if self._starts[g] + j not in self._state:
                self._state[self._starts[g] + j] = self._new_entry(g, j, kinds)
        self._calls[g] = None

    def arena(self, group=0, kind=None, dtype=None):
        """The 1-D arena holding state ``kind`` of every parameter of ``group``
        (of ``dtype``, needed only when the group mixes dtypes). The entries of
        ``state`` are views into it. KeyError before the state exists."""
        arenas = self._arenas[group]
        matches = [a for (k, dt), a in arenas.items()
                   if k == kind and (dtype is None or dt == np.dtype(dtype))]
        if len(matches) != 1:
            if not matches:
                raise KeyError(f"group {group} has no {kind!r} state"
                               + (f" of dtype {np.dtype(dtype)}" if dtype else ""))
            raise KeyError(f"group {group} has {kind!r} arenas of several dtypes; "
                           f"pass dtype=")
        return matches[0]

    # -- stepping --

    def _kernel_fn(self):
        cls = type(self)
        fn = cls.__dict__.get("_kernel_cache")
        if fn is None:
            fn = getattr(importlib.import_module("optcore"), self._kernel, None)
            if fn is None:
                raise NotImplementedError(
                    f"{cls.__name__} needs optcore.{self._kernel}, which this build "
                    f"of optcore does not have")
            cls._kernel_cache = fn
        return fn

    def _group_hyper(self, g):
        """The kernel keywords of group g, checked again whenever a value of
        the group changed since the last step (users edit param_groups)."""
        group = self.param_groups[g]
        try:
            values = tuple([tuple(v) if type(v) is list else v
                            for v in [group[k] for k in self.defaults]])
        except KeyError:
            values = None
        cached = self._hyper_cache[g]
        try:
            unchanged = values is not None and cached is not None and cached[0] == values
        except (TypeError, ValueError):      # e.g. an array put in the group
            unchanged = False
        if unchanged:
            return cached[1]
        self._check_hyper(group, f"param group {g}")
        hyper = self._hyper(group)
        self._hyper_cache[g] = (values, hyper)
        return hyper

    def _hyper(self, group):
        hyper = {}
        for name in self.defaults:
            if name in self._not_kernel:
                continue
            if name == "betas":
                hyper["beta1"], hyper["beta2"] = group["betas"]
            else:
                hyper[name] = group[name]
        return hyper

    def _plan(self, grads):
        """Split ``grads`` per group and check them. Returns ``(checked,
        copied)``: per group ``(g, grads, hyperparameters, complete)``, and
        ``(g, j, original)`` for every gradient replaced by an aligned copy
        (gradients are only read, so a misaligned one is copied rather than
        refused; the original still may not overlap a written buffer)."""
        ngroups = len(self.param_groups)
        sizes = [len(gr["params"]) for gr in self.param_groups]
        if isinstance(grads, dict):
            plan = {}
            for g, gs in grads.items():
                if not isinstance(g, (int, np.integer)) or not 0 <= g < ngroups:
                    raise ValueError(f"grads has key {g!r}, not a parameter group index "
                                     f"(0..{ngroups - 1})")
                plan[int(g)] = gs
            plan = sorted(plan.items())
        elif isinstance(grads, (list, tuple)):
            nested = (len(grads) == ngroups and len(grads) > 0
                      and all(isinstance(gs, (list, tuple)) for gs in grads))
            if nested:
                plan = list(enumerate(grads))
            else:
                total = sum(sizes)
                if len(grads) != total:
                    raise ValueError(f"grads has {len(grads)} entries but the optimizer has "
                                     f"{total} parameters (pass one gradient per parameter, "
                                     f"or one list per parameter group)")
                plan, pos = [], 0
                for g, n in enumerate(sizes):
                    plan.append((g, grads[pos:pos + n]))
                    pos += n
        else:
            raise TypeError(f"grads must be a list of arrays (one per parameter), a list of "
                            f"lists (one per group) or a dict {{group index: list}}, got "
                            f"{type(grads).__name__}")
        checked, copied = [], []
        for g, gs in plan:
            group = self.param_groups[g]
            if not isinstance(gs, (list, tuple)):
                raise TypeError(f"grads for group {g} must be a list, got {type(gs).__name__}")
            if len(gs) != sizes[g]:
                raise ValueError(f"grads for group {g} has {len(gs)} entries but the group "
                                 f"has {sizes[g]} parameters")
            hyper = self._group_hyper(g)
            out = []
            complete = True
            for j, (p, gr) in enumerate(zip(group["params"], gs)):
                if gr is None:
                    out.append(None)
                    complete = False
                    continue
                if (type(gr) is np.ndarray and gr.dtype is p.dtype and gr.shape == p.shape
                        and gr.flags.aligned):
                    out.append(gr)
                    continue
                label = f"grad of parameter {self._starts[g] + j} (group {g}, index {j})"
                if not isinstance(gr, np.ndarray):
                    try:
                        gr = np.asarray(gr)
                    except Exception as exc:
                        raise TypeError(f"{label} is not an array: {exc}") from None
                if gr.dtype != p.dtype:
                    raise TypeError(f"{label} has dtype {gr.dtype} but the parameter has "
                                    f"dtype {p.dtype}")
                if gr.shape != p.shape:
                    raise ValueError(f"{label} has shape {gr.shape} but the parameter has "
                                     f"shape {p.shape}")
                if not gr.flags.aligned:
                    copied.append((g, j, gr))
                    gr = np.array(gr, order="C")
                out.append(gr)
            checked.append((g, out, hyper, complete))
        return checked, copied

    def step(self, grads):
        """One optimizer step for every parameter with a gradient.

        ``grads``: one array per parameter in order over all groups; or one list
        per group; or a dict ``{group index: list}`` stepping only those groups.
        A ``None`` gradient skips its parameter (as a missing ``.grad`` does in
        torch). Each group is one multi-tensor kernel call (per dtype and step
        count, which normally coincide for the whole group).

        Every kernel call of the step is prepared and checked before the first
        one runs, so a step that raises changes nothing (no parameter, no
        state, and no new state entry).
        """
        plan, copied = self._plan(grads)
        fn = self._kernel_fn()
        calls = []
        for g, gs, hyper, complete in plan:
            calls += self._group_calls(g, gs, hyper, complete)
        if len(calls) > 1 or copied:
            # Each kernel call checks its own buffers before it writes; what
            # could make a later call fail (or read memory an earlier one
            # wrote) is checked here, over all of them.
            self._check_calls(calls, copied)
        for call in calls:
            self._run(fn, call)

    def _run(self, fn, call):
        new = self._call(fn, call.params, call.grads, call.buffers, call.scalars,
                         call.fresh, call.hyper)
        # The kernel returned: only now does the step's new state become state.
        if call.new_kinds is not None:
            self._attach_kinds(call.new_kinds)
        if call.fresh:
            for idx, st in zip(call.indices, call.entries):
                self._state[idx] = st
            self._calls[call.g] = None
        if new and call.entries:
            for st in call.entries:
                st.update(new)

    def _group_calls(self, g, grads, hyper, complete):
        """The kernel calls that step group g, prepared and checked, with the
        state they create (first-step entries, newly needed kinds) kept aside
        until they have run."""
        group = self.param_groups[g]
        params = group["params"]
        kinds = self._buffers(group)
        single_dtype = len(self._layouts[g].totals) == 1
        start = self._starts[g]
        if not kinds and not self._scalars:            # stateless (SGD without momentum)
            if complete and single_dtype:
                return [_Call(g, range(start, start + len(params)), params, grads, None,
                              (), {}, {}, False, hyper)]
            new = None
        else:
            new = self._new_kinds(g, kinds)
            if complete and single_dtype and new is None:
                call = self._cached_call(g, kinds, grads, hyper)
                if call is not None:
                    return [call]
        # The general case: one call per (dtype, scalar state, first step).
        scalar_names = self._scalar_names
        keep_state = bool(kinds) or bool(scalar_names)
        buckets = {}
        for j, (p, gr) in enumerate(zip(params, grads)):
            if gr is None:
                continue
            idx = start + j
            st = self._state.get(idx) if keep_state else None
            fresh = st is None and keep_state
            if fresh:
                st = self._new_entry(g, j, kinds, new)
                arrays = [st[kind] for kind in kinds]
                scalars = tuple(st[k] for k in scalar_names)
            elif keep_state:
                arrays = self._state_arrays(g, j, st, kinds, new)
                scalars = self._entry_scalars(st, g, j)
            else:
                arrays, scalars = (), ()
            key = (p.dtype, scalars, fresh)
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = ([], [], [], [], [[] for _ in kinds])
            bucket[0].append(idx)
            bucket[1].append(p)
            bucket[2].append(gr)
            bucket[3].append(st)
            for column, a in zip(bucket[4], arrays):
                column.append(a)
        calls = []
        for (_, scalars, fresh), (indices, ps, gs, entries, columns) in buckets.items():
            buffers = {self._kernel_args.get(kind, kind): column
                       for kind, column in zip(kinds, columns)}
            calls.append(_Call(g, indices, ps, gs, entries if keep_state else None, kinds,
                               buffers, dict(zip(scalar_names, scalars)), fresh, hyper, new))
        return calls

    def _cached_call(self, g, kinds, grads, hyper):
        """The usual case, fast: one dtype, every parameter has a gradient and
        state with the same scalar state -> one call over the whole group,
        with its state arguments cached until the state changes; None when
        the group needs the general case."""
        call = self._calls[g]
        if call is not None:
            # State entries are the truth: rebuild if a user replaced (or
            # deleted) an array. Compared by identity, never by value (an
            # equal-valued replacement is still another array); the cache
            # holds the arrays, so no other object can take their place.
            entries = call[1]
            try:
                if call[0] != kinds or not all([all(map(operator.is_, map(get, entries),
                                                        column))
                                                for get, column in call[4]]):
                    call = None
            except KeyError:
                call = None
        if call is None:
            call = self._one_call(g, kinds)
            if call is None:
                return None
        entries, buffers, scalars_of = call[1:4]
        try:
            values = list(map(scalars_of, entries)) if scalars_of else [()]
        except KeyError:            # a deleted scalar: the general case names it
            return None
        first = values[0]
        if values.count(first) != len(values):
            return None
        names = self._scalar_names
        if len(names) == 1:
            first = (first,)
        scalars = self._checked_scalars(first, g, 0)
        start = self._starts[g]
        return _Call(g, range(start, start + len(entries)), self.param_groups[g]["params"],
                     grads, entries, kinds, buffers, dict(zip(names, scalars)), False, hyper)

    def _one_call(self, g, kinds):
        """(kinds, state entries, kernel state arguments, scalar getter,
        [(state array getter, the arrays it gave)]) for a step of the whole
        group in one call, or None while some parameter has no state yet.
        The state arrays are checked here."""
        start = self._starts[g]
        entries = [self._state.get(i)
                   for i in range(start, start + len(self.param_groups[g]["params"]))]
        if None in entries:
            return None
        arrays = [self._state_arrays(g, j, st, kinds, None) for j, st in enumerate(entries)]
        columns = [[a[k] for a in arrays] for k in range(len(kinds))]
        buffers = {self._kernel_args.get(kind, kind): column
                   for kind, column in zip(kinds, columns)}
        names = self._scalar_names
        call = (kinds, entries, buffers, itemgetter(*names) if names else None,
                [(itemgetter(kind), column) for kind, column in zip(kinds, columns)])
        self._calls[g] = call
        return call

    # -- checks of a step, before its first kernel call --

    def _state_arrays(self, g, j, st, kinds, new):
        """The arrays of ``kinds`` in parameter j's state entry (or, for a kind
        the group gets only now, its new view), each checked as the kernel
        would: a step's later call must not fail after an earlier one wrote."""
        p = self.param_groups[g]["params"][j]
        out = []
        for kind in kinds:
            a = st.get(kind)
            if a is None:
                a = new.views.get((j, kind)) if new is not None else None
                if a is None:
                    raise ValueError(
                        f"{self._label(g, j)}, state {kind!r}: missing (deleted from the "
                        f"state entry?); {type(self).__name__} with these options needs it")
            else:
                _check_state_array(a, p, kind, self._label(g, j))
            out.append(a)
        return out

    def _checked_scalars(self, values, g, j):
        """The scalar state (in ``_scalars`` order) of parameter j of group g,
        checked as the kernel would check it."""
        for name, value in zip(self._scalar_names, values):
            if name == "step":
                if type(value) is int and 0 <= value < _MAX_STEP:
                    continue
                if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
                    raise TypeError(f"{self._label(g, j)}, state 'step': must be an "
                                    f"integer, got {value!r}")
                if not 0 <= operator.index(value) < _MAX_STEP:
                    raise ValueError(f"{self._label(g, j)}, state 'step': must be a "
                                     f"non-negative integer, got {value!r}")
            elif type(value) is not float and (isinstance(value, (bool, np.bool_))
                                               or not isinstance(value, numbers.Real)):
                raise TypeError(f"{self._label(g, j)}, state {name!r}: must be a real "
                                f"number, got {value!r}")
        return values

    def _entry_scalars(self, st, g, j):
        try:
            values = tuple([st[name] for name in self._scalar_names])
        except KeyError as exc:
            raise ValueError(f"{self._label(g, j)}, state {exc.args[0]!r}: missing "
                             f"(deleted from the state entry?)") from None
        return self._checked_scalars(values, g, j)

    def _label(self, g, j):
        return f"parameter {self._starts[g] + j} (group {g}, index {j})"

    def _check_calls(self, calls, copied):
        """What each kernel call cannot see: its buffers against the other
        calls' (no gradient may share memory with a parameter or state of any
        call, no written buffer with another), the originals of copied
        gradients, and the writability of everything written."""
        written, read = [], []
        for call in calls:
            written += call.params
            for column in call.buffers.values():
                written += column
            read += call.grads
        read += [original for _, _, original in copied]
        for k, a in enumerate(written):
            if not a.flags.writeable:
                raise ValueError(f"{self._describe(calls, copied, k)} is read-only; optcore "
                                 f"updates it in place")
        pair = find_overlap(written, read)
        if pair is not None:
            i, j = (self._describe(calls, copied, k) for k in pair)
            raise ValueError(f"{i} and {j} share memory; a gradient may not overlap a "
                             f"parameter or optimizer state, nor may two of those overlap")

    def _describe(self, calls, copied, k):
        """Name buffer k of ``_check_calls``' written + read lists (error path)."""
        written, read = [], []
        for call in calls:
            start = self._starts[call.g]
            labels = [self._label(call.g, idx - start) for idx in call.indices]
            written += labels
            for kind in call.kinds:
                written += [f"the {kind!r} state of {label}" for label in labels]
            read += [f"the grad of {label}" for label in labels]
        read += [f"the grad of {self._label(g, j)}" for g, j, _ in copied]
        return (written + read)[k]

    def zero_state(self):
        """Forget all optimizer state (moments, step counts): the next step is a
        first step again, as for a new optimizer. Parameters are untouched."""
        self._state = {}
        self._arenas = [{} for _ in self.param_groups]
        self._ready = [set() for _ in self.param_groups]
        self._calls = [None] * len(self.param_groups)
        if self._eager:
            for g in range(len(self.param_groups)):
                self._init_group_state(g)

    # -- state_dict --

    def state_dict(self):
        """A deep copy of the state, in torch.optim's layout::

            {"state": {index: {"step": int, "exp_avg": ndarray, ...}},
             "param_groups": [{"lr": ..., ..., "params": [indices]}]}

        Only plain Python containers, numbers, strings and NumPy arrays."""
        state = {}
        for idx in sorted(self._state):
            state[idx] = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v)
                          for k, v in self._state[idx].items()}
        groups = []
        for g, group in enumerate(self.param_groups):
            saved = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            saved["params"] = list(range(self._starts[g],
                                         self._starts[g] + len(group["params"])))
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a ``state_dict()`` (deep-copied). Everything is checked first
        (layout, group and parameter counts, hyperparameters, state keys,
        shapes, dtypes): a load that raises leaves the optimizer unchanged."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"state_dict has no {key!r} entry")
        saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(saved_groups, (list, tuple)):
            raise TypeError("state_dict['param_groups'] must be a list of dicts")
        if not isinstance(saved_state, dict):
            raise TypeError("state_dict['state'] must be a dict {parameter index: dict}")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups "
                             f"but the optimizer has {len(self.param_groups)}")

        # Saved parameter index -> (group, position), and the new groups.
        where, new_groups = {}, []
        for g, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, dict):
                raise TypeError(f"state_dict['param_groups'][{g}] must be a dict")
            if "params" not in saved:
                raise ValueError(f"state_dict['param_groups'][{g}] has no 'params'")
            ids = saved["params"]
            if not isinstance(ids, (list, tuple)) or len(ids) != len(group["params"]):
                n = len(ids) if isinstance(ids, (list, tuple)) else ids
                raise ValueError(f"loaded parameter group {g} has {n} parameters but the "
                                 f"optimizer's group {g} has {len(group['params'])}")
            for j, idx in enumerate(ids):
                if idx in where:
                    raise ValueError(f"parameter index {idx!r} appears twice in the loaded "
                                     f"param_groups")
                where[idx] = (g, j)
            new = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            if isinstance(new.get("betas"), list):
                new["betas"] = tuple(new["betas"])
            self._check_hyper(new, f"loaded param group {g}")
            new["params"] = group["params"]
            new_groups.append(new)

        # Check every state entry against its parameter.
        scalar_names = set(self._scalars)
        entries = {}              # (g, j) -> {key: value}
        for idx, saved in saved_state.items():
            if idx not in where:
                raise ValueError(f"loaded state has an entry for parameter {idx!r}, which "
                                 f"no loaded param_group lists")
            g, j = where[idx]
            p = self.param_groups[g]["params"][j]
            label = f"loaded state of parameter {idx!r}"
            if not isinstance(saved, dict):
                raise TypeError(f"{label} must be a dict, got {type(saved).__name__}")
            needed = set(self._buffers(new_groups[g])) | scalar_names
            missing = needed - set(saved)
            if missing:
                raise ValueError(f"{label} lacks {sorted(missing)} (needed by "
                                 f"{type(self).__name__} with these options)")
            allowed = set(self._kinds) | scalar_names
            extra = set(saved) - allowed
            if extra:
                raise ValueError(f"{label} has unknown keys {sorted(map(str, extra))} "
                                 f"({type(self).__name__} state keys: {sorted(allowed)})")
            entry = {}
            for key, value in saved.items():
                if key in scalar_names:
                    entry[key] = self._load_scalar(key, value, label)
                    continue
                if not isinstance(value, np.ndarray):
                    raise TypeError(f"{label}: {key!r} must be a NumPy array, got "
                                    f"{type(value).__name__}")
                if value.dtype != p.dtype:
                    raise TypeError(f"{label}: {key!r} has dtype {value.dtype} but the "
                                    f"parameter has dtype {p.dtype}")
                if value.shape != p.shape:
                    raise ValueError(f"{label}: {key!r} has shape {value.shape} but the "
                                     f"parameter has shape {p.shape}")
                entry[key] = value
            entries[g, j] = entry

        # Build the new arenas and state, then swap them in.
        new_arenas = [{} for _ in self.param_groups]
        new_state = {}
        for g, group in enumerate(new_groups):
            layout = self._layouts[g]
            kinds = {k for (gg, _), e in entries.items() if gg == g
                     for k in e if k not in scalar_names}
            for kind in sorted(kinds):
                for dt, total in layout.totals.items():
                    arena = _aligned_empty(total, dt)
                    arena.fill(self._fill(kind, group))
                    new_arenas[g][kind, dt] = arena
            for j, p in enumerate(group["params"]):
                entry = entries.get((g, j))
                if entry is None:
                    continue
                off = layout.offsets[j]
                st = {}
                for key, value in entry.items():
                    if key in scalar_names:
                        st[key] = value
                    else:
                        view = new_arenas[g][key, p.dtype][off:off + p.size].reshape(p.shape)
                        view[...] = value
                        st[key] = view
                new_state[self._starts[g] + j] = st

        self._arenas = new_arenas
        self._ready = [set() for _ in new_arenas]   # views get attached on the next step
        self._hyper_cache = [None] * len(self.param_groups)
        self._calls = [None] * len(self.param_groups)
        self._state = new_state
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        if self._eager:
            for g in range(len(self.param_groups)):
                self._init_group_state(g)

    def _load_scalar(self, key, value, label):
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        if key == "step":
            ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
                  and 0 <= value < 2**62 and value == int(value))    # NaN/inf fail
            if not ok:
                raise ValueError(f"{label}: 'step' must be a non-negative integer, got "
                                 f"{value!r}")
            return int(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{label}: {key!r} must be a real number, got {value!r}")
        return float(value)

    # -- copy and pickle: rebuilt through state_dict, so that the copy's state
    # lives in its own arenas again (a plain deepcopy would detach the views) --

    def __getstate__(self):
        return {"defaults": self.defaults, "param_groups": self.param_groups,
                "state_dict": self.state_dict()}

    def __setstate__(self, saved):
        Optimizer.__init__(self, [dict(g) for g in saved["param_groups"]], saved["defaults"])
        self.load_state_dict(saved["state_dict"])

    # -- display --

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for g, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {g}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
