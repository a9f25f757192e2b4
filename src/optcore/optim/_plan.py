"""Step planning of the NumPy optimizers: gradients split per group and
checked, the kernel calls of a step prepared (and checked against each other)
before the first one runs, and run."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from optcore.kernels._buffers import check_calls
from optcore.kernels._plan import NumpyPlan
from optcore.optim._checks import _MAX_STEP, _check_shape
from optcore.optim._rows import dense_rows, is_row_form, row_step
from optcore.optim._storage import EXTRA_ROLES, call_hyper, check_call_dtypes, kernel_arg
from optcore.precision import QuantizedState

if TYPE_CHECKING:
    from optcore._typing import Kernel, KernelCall, ParamGroup, StateEntry
    from optcore.optim._arena import _Layout, _NewKinds
    from optcore.optim._options import Rules
    from optcore.optim._storage import Storage

    # Per group of a step: (group index, its gradients, kernel keywords,
    # whether every parameter has a gradient); a gradient replaced by an
    # aligned copy: (group index, position, the original).
    _Checked = tuple[int, list[Any], dict[str, Any], bool]
    _Copied = tuple[int, int, np.ndarray]


class _Call:
    """One kernel call of a step, prepared (and checked) before any call of
    the step runs. ``entries`` are the state entries it advances (not yet
    registered when ``fresh``: a first step), ``indices`` their global
    parameter indices."""

    __slots__ = ("g", "indices", "params", "grads", "entries", "kinds", "buffers",
                 "scalars", "fresh", "hyper", "new_kinds")

    def __init__(self, g: int, indices: Sequence[int], params: Sequence[np.ndarray],
                 grads: Sequence[np.ndarray], entries: Sequence[StateEntry] | None,
                 kinds: Sequence[str], buffers: dict[str, list[np.ndarray]],
                 scalars: dict[str, Any], fresh: bool, hyper: dict[str, Any],
                 new_kinds: _NewKinds | None = None) -> None:
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



_NO = object()


def _is_default(value: Any, default: Any) -> bool:
    """``value`` is the kernel's default: the same object (None, a bool), or
    a float or str equal to it (for floats also in the sign of zero)."""
    if value is default:
        return True
    if type(value) is not type(default) or type(value) not in (float, str, int):
        return False
    if type(value) is float:
        return value == default and math.copysign(1.0, value) == math.copysign(1.0, default)
    return bool(value == default)


def _same_options(a: Any, b: Any) -> bool:
    """Option values equal as the kernels see them: a float also in the sign
    of its zero (an lr of -0.0 after 0.0 is a change), tuples item by item."""
    if type(a) is tuple and type(b) is tuple:
        return len(a) == len(b) and all(map(_same_options, a, b))
    if type(a) is float or type(b) is float:
        return (type(a) is type(b) and a == b
                and math.copysign(1.0, a) == math.copysign(1.0, b))
    return a is b or bool(a == b)


def without_defaults(kwargs: dict[str, Any], kernel: Any) -> dict[str, Any]:
    """``kwargs`` of ``kernel`` without those equal to its defaults: each
    keyword the kernel parses costs a small model's step more than its
    update, so the cached step plans pass only what differs."""
    defaults = getattr(kernel, "__kwdefaults__", None) or {}
    return {k: v for k, v in kwargs.items() if not _is_default(v, defaults.get(k, _NO))}


def as_floats(options: dict[str, Any], double_args: frozenset[str]) -> dict[str, Any]:
    """``options`` (checked) with the kernel's double arguments as Python
    floats (an int 0 becomes 0.0: the C value the kernel would take)."""
    return {k: float(v) if (k in double_args and type(v) is not float
                            and isinstance(v, numbers.Real) and not isinstance(v, bool))
            else v for k, v in options.items()}


class PlanMixin:
    """The stepping methods of ``optcore.optim.base.Optimizer``."""

    # What they use of the optimizer (set by its __init__), for type checkers.
    param_groups: list[ParamGroup]
    defaults: dict[str, Any]
    _rules: Rules
    _layouts: list[_Layout]
    _hyper_cache: list[Any]
    _calls: list[Any]
    _state: dict[int, StateEntry]
    _starts: list[int]
    _scalar_names: tuple[str, ...]
    _storage: Storage

    if TYPE_CHECKING:
        def _check_hyper(self, group: ParamGroup, where: str) -> dict[str, Any]: ...
        def _buffers(self, group: ParamGroup) -> tuple[str, ...]: ...
        def _call(self, fn: Kernel, params: Sequence[np.ndarray],
                  grads: Sequence[np.ndarray], buffers: dict[str, list[np.ndarray]],
                  scalars: dict[str, Any], fresh: bool,
                  hyper: dict[str, Any]) -> dict[str, Any] | None: ...
        def _new_kinds(self, g: int, kinds: Sequence[str]) -> _NewKinds | None: ...
        def _attach_kinds(self, new: _NewKinds) -> None: ...
        def _new_entry(self, g: int, j: int, kinds: Sequence[str],
                       new: _NewKinds | None = None) -> StateEntry: ...

    def _group_hyper(self, g: int) -> dict[str, Any]:
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
            unchanged = (values is not None and cached is not None
                         and _same_options(cached[0], values))
        except (TypeError, ValueError):      # e.g. an array put in the group
            unchanged = False
        if unchanged:
            return cached[1]
        hyper = self._rules.kernel_options(self._check_hyper(group, f"param group {g}"))
        self._hyper_cache[g] = (values, hyper)
        return hyper

    def _plan(self, grads: Any) -> tuple[list[_Checked], list[_Copied],
                                          list[Callable[[], None]]]:
        """Split ``grads`` per group and check them. Returns ``(checked,
        copied, rows)``: per group ``(g, grads, hyperparameters, complete)``,
        ``(g, j, original)`` for every gradient replaced by an aligned copy
        (gradients are only read, so a misaligned one is copied rather than
        refused; the original still may not overlap a written buffer), and
        the checked steps of row-form gradients (``_rows.row_step``; their
        parameters count as without a gradient in ``checked``)."""
        ngroups = len(self.param_groups)
        sizes = [len(gr["params"]) for gr in self.param_groups]
        if isinstance(grads, dict):
            plan: Any = {}          # then [(group index, its grads)]
            for g, gs in grads.items():
                if not isinstance(g, (int, np.integer)) or not 0 <= g < ngroups:
                    raise ValueError(f"grads has key {g!r}, not a parameter group index "
                                     f"(0..{ngroups - 1})")
                plan[int(g)] = gs
            plan = sorted(plan.items())
        elif isinstance(grads, (list, tuple)):
            nested = (len(grads) == ngroups and len(grads) > 0
                      and all(isinstance(gs, (list, tuple)) for gs in grads))
            if nested and all(n == 1 for n in sizes):
                # one-parameter groups: (indices, rows) pairs, not group lists
                nested = not any(len(gs) != 1 and is_row_form(gs, gr["params"][0])
                                 for gs, gr in zip(grads, self.param_groups))
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
        row_steps: list[Callable[[], None]] = []
        for g, gs in plan:
            group = self.param_groups[g]
            if not isinstance(gs, (list, tuple)):
                raise TypeError(f"grads for group {g} must be a list, got {type(gs).__name__}")
            if len(gs) != sizes[g]:
                raise ValueError(f"grads for group {g} has {len(gs)} entries but the group "
                                 f"has {sizes[g]} parameters")
            hyper = self._group_hyper(g)
            out: list[np.ndarray | None] = []
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
                if not isinstance(gr, np.ndarray) and is_row_form(gr, p):
                    if self._storage.extras(p) or self._layouts[g].dtypes[j] != p.dtype \
                            or p.dtype.itemsize < 4:
                        raise TypeError(f"the grad of {self._label(g, j)}: row-form "
                                        f"gradients step float32/float64 parameters with "
                                        f"state of their dtype only")
                    dense = dense_rows(self, g, j, p, gr, hyper)  # type: ignore[arg-type]
                    if dense is not None:
                        out.append(dense)
                        continue
                    row_steps.append(row_step(self, g, j, p, gr, hyper))  # type: ignore[arg-type]
                    out.append(None)
                    complete = False
                    continue
                label = f"the grad of {self._label(g, j)}"
                if not isinstance(gr, np.ndarray):
                    try:
                        gr = np.asarray(gr)
                    except Exception as exc:
                        raise TypeError(f"{label} is not an array: {exc}") from None
                # dtype, size and memory: checked with the kernel calls
                _check_shape(gr, p, label)
                if not gr.flags.aligned:
                    copied.append((g, j, gr))
                    gr = np.array(gr, order="C")
                out.append(gr)
            checked.append((g, out, hyper, complete))
        return checked, copied, row_steps

    def _plain_kwargs(self, names: tuple[str, ...], hyper: dict[str, Any],
                      buffers: dict[str, list[np.ndarray]]) -> dict[str, Any] | None:
        """The kernel's keywords but ``step`` when the scalar state is the
        step count alone, kept as is (``_call`` without its per-step work);
        else None."""
        from optcore.optim.base import Optimizer
        if names not in ((), ("step",)) or \
                getattr(type(self), "_scalar_args") is not Optimizer._scalar_args:
            return None
        only = self._rules.scalar_only
        return without_defaults(
            {**buffers, **as_floats({k: v for k, v in hyper.items() if k not in only},
                                    self._rules.double_args)}, self._rules.kernel)

    def _planned_scalars(self, plan: NumpyPlan, grads: Any) -> bool:
        """The cached plan's step when its scalar state is more than a step
        count (``NumpyPlan.run``, which ``step`` calls first, returned None):
        the kernel through ``_call``. False when the general path must take
        the step (nothing was written then)."""
        group = self.param_groups[0]
        first = plan.check(self._calls[0], group, grads)
        if first is None:
            return False
        first = self._checked_scalars(first, 0, 0)
        hyper, buffers, _ = plan.data
        try:
            new = self._call(self._rules.kernel, group["params"], grads, buffers,
                             dict(zip(self._scalar_names, first)), False, hyper)
        except (TypeError, ValueError):
            # The kernel refused its buffers before writing: the general path
            # reports them as the parameters and state users know.
            return False
        if new:
            plan.store(new)
        return True

    def _run(self, fn: Kernel, call: _Call) -> None:
        new = self._call(fn, call.params, call.grads, call.buffers, call.scalars,
                         call.fresh, call.hyper)
        # The kernel returned: only now does the step's new state become state.
        if call.new_kinds is not None:
            self._attach_kinds(call.new_kinds)
        if call.fresh:
            for idx, st in zip(call.indices, call.entries):  # type: ignore[arg-type]
                self._state[idx] = st
            self._calls[call.g] = None
        if new and call.entries:
            for st in call.entries:
                st.update(new)

    def _group_calls(self, g: int, grads: list[Any], hyper: dict[str, Any],
                     complete: bool) -> list[_Call]:
        """The kernel calls that step group g, prepared and checked, with the
        state they create (first-step entries, newly needed kinds) kept aside
        until they have run."""
        group = self.param_groups[g]
        params = group["params"]
        kinds = self._buffers(group)
        layout = self._layouts[g]
        storage = self._storage
        single_dtype = len(layout.signatures) == 1 and (
            storage.default or (all([gr is None or gr.dtype == p.dtype
                                     for p, gr in zip(params, grads)])
                                and (len(params) == 1 or storage.rounding_of(params[0])
                                     != "stochastic")))
        start = self._starts[g]
        if not kinds and not self._scalar_names:            # stateless (SGD without momentum)
            if complete and single_dtype:
                if g == 0 and len(self.param_groups) == 1 and storage.default:
                    # the next steps of this one-group optimizer: re-validated in C
                    self.__dict__["_step_plan"] = NumpyPlan.build(
                        None, group, tuple(self.defaults), [{} for _ in params], (), [], (),
                        (hyper, {}, self._plain_kwargs((), hyper, {})), self._rules.kernel,
                        _MAX_STEP, self._rules.kernel_lr)
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
        buckets: dict[tuple[Any, ...], tuple[list[Any], ...]] = {}
        for j, (p, gr) in enumerate(zip(params, grads)):
            if gr is None:
                continue
            idx = start + j
            extras = storage.extras(p)
            st: Any = self._state.get(idx) if keep_state else None
            fresh = st is None and keep_state
            if fresh:
                st = self._new_entry(g, j, kinds, new)
                arrays: Sequence[Any] = [st[kind] for kind in kinds + extras]
                scalars = tuple(st[k] for k in scalar_names)
            elif keep_state:
                arrays = self._state_arrays(g, j, st, kinds + extras, new)
                scalars = self._entry_scalars(st, g, j)
            else:
                arrays, scalars = (), ()
            key = (p.dtype, gr.dtype, layout.dtypes[j], extras, storage.call_options(p, idx),
                   scalars, fresh)
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = ([], [], [], [], [[] for _ in kinds + extras])
            bucket[0].append(idx)
            bucket[1].append(p)
            bucket[2].append(gr)
            bucket[3].append(st)
            for column, a in zip(bucket[4], arrays):
                column.append(a)
        calls = []
        for key, (indices, ps, gs, entries, columns) in buckets.items():
            extras, options, scalars, fresh = key[3:]
            buffers = {kernel_arg(self._rules, kind): column
                       for kind, column in zip(kinds + extras, columns)}
            calls.append(_Call(g, indices, ps, gs, entries if keep_state else None,
                               kinds + extras, buffers, dict(zip(scalar_names, scalars)),
                               fresh, call_hyper(hyper, options), new))
        return calls

    def _cached_call(self, g: int, kinds: tuple[str, ...], grads: list[Any],
                     hyper: dict[str, Any]) -> _Call | None:
        """The usual case, fast: one dtype, every parameter has a gradient and
        state with the same scalar state -> one call over the whole group,
        with its state arguments cached until the state changes; None when
        the group needs the general case."""
        call = self._calls[g]
        kinds = kinds + self._storage.extras(self.param_groups[g]["params"][0])
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
        p0 = self.param_groups[g]["params"][0]
        hyper = call_hyper(hyper, self._storage.call_options(p0, start))
        if g == 0 and len(self.param_groups) == 1:
            # The next steps of this one-group optimizer: re-validated in C.
            self.__dict__["_step_plan"] = NumpyPlan.build(
                self._calls[g], self.param_groups[g], tuple(self.defaults), entries,
                call[0], [column for _, column in self._calls[g][4]], names,
                (hyper, buffers, self._plain_kwargs(names, hyper, buffers)),
                self._rules.kernel, _MAX_STEP, self._rules.kernel_lr)
        return _Call(g, range(start, start + len(entries)), self.param_groups[g]["params"],
                     grads, entries, kinds, buffers, dict(zip(names, scalars)), False, hyper)

    def _one_call(self, g: int, kinds: tuple[str, ...]) -> tuple[Any, ...] | None:
        """(kinds, state entries, kernel state arguments, scalar getter,
        [(state array getter, the arrays it gave)]) for a step of the whole
        group in one call, or None while some parameter has no state yet.
        The state arrays are checked here."""
        start = self._starts[g]
        entries: list[Any] = [self._state.get(i)
                   for i in range(start, start + len(self.param_groups[g]["params"]))]
        if None in entries:
            return None
        arrays = [self._state_arrays(g, j, st, kinds, None) for j, st in enumerate(entries)]
        columns = [[a[k] for a in arrays] for k in range(len(kinds))]
        buffers = {kernel_arg(self._rules, kind): column
                   for kind, column in zip(kinds, columns)}
        names = self._scalar_names
        call = (kinds, entries, buffers, itemgetter(*names) if names else None,
                [(itemgetter(kind), column) for kind, column in zip(kinds, columns)])
        self._calls[g] = call
        return call

    # -- checks of a step, before its first kernel call --

    def _state_arrays(self, g: int, j: int, st: StateEntry, kinds: Sequence[str],
                      new: _NewKinds | None) -> list[Any]:
        """The arrays of ``kinds`` in parameter j's state entry (or, for a kind
        the group gets only now, its new view). Users may put their own arrays
        into the state (they are updated in place); the kernel calls check
        them as buffers (``_check_calls``)."""
        out = []
        for kind in kinds:
            a = st.get(kind)
            if a is None:
                a = new.views.get((j, kind)) if new is not None else None
                if a is None:
                    raise ValueError(
                        f"{self._label(g, j)}, state {kind!r}: missing (deleted from the "
                        f"state entry?); {type(self).__name__} with these options needs it")
            elif type(a) is not np.ndarray and not isinstance(a, (np.ndarray, QuantizedState)):
                raise TypeError(f"{self._label(g, j)}, state {kind!r}: a "
                                f"{type(a).__module__}.{type(a).__name__}, not a NumPy array")
            out.append(a)
        return out

    def _checked_scalars(self, values: tuple[Any, ...], g: int, j: int) -> tuple[Any, ...]:
        """The scalar state (in the spec's ``scalars`` order) of parameter j of
        group g, checked as the kernel would check it."""
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

    def _entry_scalars(self, st: StateEntry, g: int, j: int) -> tuple[Any, ...]:
        try:
            values = tuple([st[name] for name in self._scalar_names])
        except KeyError as exc:
            raise ValueError(f"{self._label(g, j)}, state {exc.args[0]!r}: missing "
                             f"(deleted from the state entry?)") from None
        return self._checked_scalars(values, g, j)

    def _label(self, g: int, j: int) -> str:
        return f"parameter {self._starts[g] + j} (group {g}, index {j})"

    def _check_calls(self, calls: Sequence[_Call], copied: Sequence[_Copied]) -> None:
        """Every kernel call of a step checked before the first one runs, as
        the kernels' own binding checks them: each call's buffers, then the
        overlap rule over all of them (no written buffer may share memory with
        any other buffer of any call, nor with the original of a copied
        gradient). Errors name parameters and state as users see them."""
        mixed = self._rules.tiled
        try:
            check_calls(self._kernel_calls(calls, copied, False), mixed=mixed)
        except (TypeError, ValueError):
            # Labels are built only to report the error.
            try:
                check_calls(self._kernel_calls(calls, copied, True), mixed=mixed)
            except (TypeError, ValueError) as exc:
                raise exc from None
            raise

    def _kernel_calls(self, calls: Sequence[_Call], copied: Sequence[_Copied],
                      labelled: bool) -> list[KernelCall]:
        """``calls`` (and the originals of ``copied`` gradients) as
        ``check_calls`` takes them."""
        out: list[KernelCall] = []
        kernel_roles = {**self._rules.kernel_roles, **EXTRA_ROLES}
        for call in calls:
            names = ("param", "grad", *call.buffers)
            objs = (call.params, call.grads, *call.buffers.values())
            roles = ("write", "read", *map(kernel_roles.__getitem__, call.buffers))
            if not labelled and not self._rules.tiled:
                out.append((names, objs, roles))
                continue
            start = self._starts[call.g]
            params = [self._label(call.g, idx - start) for idx in call.indices]
            labels = [params, [f"the grad of {label}" for label in params]]
            labels += [[f"the {kind!r} state of {label}" for label in params]
                       for kind in call.kinds]
            if self._rules.tiled:
                # the dtype rule of a mixed-precision call, before any call runs
                check_call_dtypes(names, objs, labels,
                                  {kernel_arg(self._rules, k): u
                                   for k, u in self._rules.unsigned.items()})
            out.append((names, objs, roles, labels) if labelled else (names, objs, roles))
        for g, j, original in copied:
            out.append((("grad",), (original,), ("copy",),
                        (f"the grad of {self._label(g, j)}",) if labelled else None))
        return out
