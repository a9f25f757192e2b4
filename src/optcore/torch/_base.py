"""The generic torch.optim.Optimizer behind every optcore.torch class.

A subclass is named after its entry in ``optcore._spec.OPTIMIZERS`` and
declares only its constructor (torch.optim's signature); the entry gives the
kernel, the options and their checks (``optcore.optim._options``, shared with
the NumPy classes), and the per-parameter state (torch.optim's keys).
Everything else lives here:

- parameters are checked when they join the optimizer and again whenever their
  storage changes: CPU, dense float32/float64 or complex (viewed as real),
  stepped in place (``optcore.torch._tensors``: non-contiguous ones included);
- each step is ONE multi-tensor kernel call per parameter group (one per
  dtype and distinct step count when a group mixes float32 and float64 or its
  parameters' step counts have diverged), on NumPy views that share memory
  with the tensors;
- state tensors are torch tensors under torch.optim's keys, so state_dict() and
  load_state_dict() are the base class's own and interchange with torch.optim;
- a step that raises changes nothing: every kernel call of every group is
  checked (``optcore.kernels._buffers.check_calls``) before the first one runs,
  state created for the step is removed again, and step counts are written
  only after the kernel succeeded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.autograd.graph import increment_version
from torch.optim.optimizer import Optimizer, _get_scalar_dtype
from torch.optim.optimizer import _device_dtype_check_for_fused as _fused_dtype_check

from optcore._spec import OPTIMIZER
from optcore.optim._checks import check_loaded_group, check_loaded_state_keys
from optcore.optim._docs import class_docstring
from optcore.optim._options import check_flags, rules_for
from optcore.torch import _dtensor
from optcore.torch import _storage as _st
from optcore.torch._plan import PlannedStepMixin, without_grad
from optcore.torch._tensors import Slot as _Slot
from optcore.torch._tensors import check_param, forget as _forget, scalar_view

if TYPE_CHECKING:
    import numpy as np
    from torch.optim.optimizer import ParamsT

    from optcore._spec import Buffer
    from optcore._typing import Kernel, ParamGroup
    from optcore.optim._options import Rules

    # The kernel calls that step one group: (group index, its slots, their
    # gradients, [(bucket key, positions in slots)], state buffers, options).
    _Plan = tuple[int, list["_Slot"], list[np.ndarray], list[tuple[Any, list[int]]],
                  tuple[Buffer, ...], dict[str, Any]]

_NO_STATE: dict = {}          # shared by parameters without state; never written
_STRIDED = torch.strided
_TENSOR = torch.Tensor
_FLAGS = ("fused", "foreach", "capturable", "differentiable")
_PLAIN = (float, int, bool, type(None))
_CACHES = ("_optcore_slots", "_optcore_options", "_optcore_plan")


class KernelOptimizer(_st.StorageMixin, PlannedStepMixin, Optimizer):
    """A ``torch.optim.Optimizer`` whose step runs an optcore multi-tensor kernel.

    The base of ``optcore.torch.SGD``, ``Adam`` and the others. A subclass
    named like an entry of ``optcore._spec.OPTIMIZERS`` (or a subclass of one)
    takes its kernel, options, checks and state from it, and defines
    ``__init__`` with torch.optim's signature, passing every option to
    ``super().__init__`` as keywords in torch.optim's ``defaults`` order.

    Parameters
    ----------
    params : iterable of torch.Tensor or of dict
        The parameters (CPU, dense float32/float64/complex64/complex128 tensors) or
        parameter groups, as for torch.optim.
    **defaults
        The options, by name.

    Raises
    ------
    ValueError
        If an option is out of range, or a parameter is not on the CPU, not
        dense (strided) or has elements sharing memory.
    TypeError
        If an option has the wrong type or a parameter's dtype is not
        float32/float64/complex64/complex128.

    See Also
    --------
    optcore.optim.Optimizer : The same machinery over NumPy arrays.

    Examples
    --------
    >>> import torch
    >>> import optcore.torch
    >>> opt = optcore.torch.Adam([torch.zeros(2, requires_grad=True)])
    >>> isinstance(opt, torch.optim.Optimizer)
    True
    """

    _rules: Rules = None  # type: ignore[assignment]  # the class's spec entry
    #: The low-precision storage options (``optcore.torch._storage``).
    _storage: _st.Storage = _st.DEFAULT

    #: The group keys the torch.optim twin's ``__setstate__`` fills when a
    #: loaded (or unpickled) group lacks them, with the values it fills in
    #: (not always the constructor's defaults: torch's SGD fills fused=False).
    #: Only keys of the class's defaults are filled; any other missing key
    #: makes load_state_dict raise.
    _setstate_fills: dict[str, Any] = {"foreach": None, "maximize": False,
                                       "differentiable": False, "capturable": False}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__ in OPTIMIZER and cls.__module__.startswith("optcore."):
            cls._rules = rules_for(cls.__name__)
            cls.__doc__ = class_docstring(cls, "torch")

    def __init__(self, params: ParamsT, **defaults: Any) -> None:
        # torch.optim.Optimizer's step wrapper reads defaults["differentiable"]
        # (a class whose constructor has no such flag steps with grad off).
        defaults.setdefault("differentiable", False)
        self._storage = _st.Storage(
            defaults.pop("state_dtype", None), defaults.pop("master_weights", False),
            defaults.pop("rounding", "nearest"), defaults.pop("seed", 0),
            self._rules.spec.spec.state_dtypes, type(self).__name__)
        self._check_options(defaults)
        super().__init__(params, defaults)
        if self._rules.eager:
            # As torch's Adagrad: state for the constructor's groups now;
            # groups added later get theirs at their first step.
            for group in self.param_groups:
                for p in group["params"]:
                    self._init_state(self.state[p], p, group)

    # ---- options ---------------------------------------------------------

    def _check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options checked (plain values, see ``Rules.check``), then the
        torch.optim flags; errors as torch's (and the kernels') own."""
        checked = self._rules.check(options)
        check_flags(f"optcore.torch.{type(self).__name__}",
                    {k: options.get(k) for k in _FLAGS}, "CPU tensors")
        return checked

    # ---- parameters ----------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, checked as the constructor's groups are.

        torch.optim's ``add_param_group``, then optcore's checks of the
        group's options and parameters; a group that fails them is not added.

        Parameters
        ----------
        param_group : dict
            ``"params"`` (a tensor or a list of tensors) and any options; the
            options it omits take the optimizer's ``defaults``.

        Raises
        ------
        ValueError
            If an option is out of range, a parameter is already in the
            optimizer, or a parameter is not a CPU, dense, contiguous tensor.
        TypeError
            If an option has the wrong type or a parameter's dtype is not
            float32/float64/complex64/complex128.

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> opt = optcore.torch.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
        >>> opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)],
        ...                      "lr": 0.01})
        >>> [g["lr"] for g in opt.param_groups]
        [0.1, 0.01]
        """
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_options({k: v for k, v in group.items() if k != "params"})
            for j, p in enumerate(group["params"]):
                self._check_param(p, len(self.param_groups) - 1, j)
        except Exception:
            self.param_groups.pop()
            raise

    def _check_param(self, p: torch.Tensor, gi: int, j: int) -> torch.Tensor:
        tiled = self._rules.spec.spec.tiled
        local = check_param(type(self).__name__, self._rules.spec.spec.name, p, gi, j,
                            low_precision=tiled)
        if tiled:
            self._layout(p if _dtensor.is_dtensor(p) else local, gi, j)
        return local

    def _layout(self, local: torch.Tensor, gi: int, j: int) -> _st.Layout:
        """How parameter j of group gi keeps its state (checked)."""
        if not self._rules.spec.spec.tiled:
            return _st.PLAIN
        index = sum(len(g["params"]) for g in self.param_groups[:gi]) + j
        where = f"optcore.torch.{type(self).__name__}: param_groups[{gi}]['params'][{j}]"
        return self._storage.layout(local, where, index)

    # ---- state ---------------------------------------------------------------

    def _init_state(self, state: dict[str, Any], p: torch.Tensor,
                    group: ParamGroup) -> list[str]:
        """Create missing state entries (torch.optim's lazy initialisation);
        returns the keys created."""
        if group.get("fused") and p.is_complex():
            _fused_dtype_check(p)        # torch's RuntimeError for fused complex
        created = []
        # torch keeps scalar state in float32 for fused optimizers, else in
        # the default dtype.
        scalar_dtype = _get_scalar_dtype(is_fused=group.get("fused"))
        rules = self._rules
        layout = self._storage.layout(p, "a parameter") if rules.spec.spec.tiled else _st.PLAIN
        for key, value in rules.initial_scalars(group).items():
            if key not in state:
                state[key] = torch.tensor(float(value), dtype=scalar_dtype)
                created.append(key)
        for b in rules.needed(group):
            key = b.state_key
            if state.get(key) is None:
                entries = _st.new_states(p, key, rules.fill(b, self.defaults, group), layout,
                                         b.unsigned)
                state.update(entries)
                created += entries
        return created

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self._setstate_fills.items():
                if key in self.defaults:
                    group.setdefault(key, value)
            scalar_dtype = _get_scalar_dtype(is_fused=group.get("fused"))
            for p in group["params"]:
                p_state = self.state.get(p)
                if not p_state:
                    continue
                for key in self._rules.scalars:
                    if key in p_state and not torch.is_tensor(p_state[key]):
                        p_state[key] = torch.tensor(float(p_state[key]), dtype=scalar_dtype)
        for cache in _CACHES:
            self.__dict__.pop(cache, None)
        if self.__dict__.get("_optcore_loading"):
            self._check_loaded()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of torch.optim's or optcore.torch's class of this name.

        The layouts are the same, so either loads into either. Everything is
        checked before anything changes: a load that raises leaves the
        optimizer as it was. As torch.optim does, a group lacking one of the
        flags its ``__setstate__`` fills gets torch's value.

        Parameters
        ----------
        state_dict : dict
            The ``state_dict()`` of an optimizer of this class over as many
            groups and parameters.

        Raises
        ------
        KeyError
            If a group lacks any other option, a state lacks a key, or an
            option or state key belongs to another optimizer (torch.optim
            raises a KeyError for a missing key at its next step). The
            exception is also a ``ValueError``.
        ValueError
            If the groups or parameters do not match, or an option is out of
            range.

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> reference = torch.optim.Adam([w], lr=0.1)
        >>> w.grad = torch.ones(2)
        >>> reference.step()
        >>> opt = optcore.torch.Adam([w])
        >>> opt.load_state_dict(reference.state_dict())
        >>> opt.param_groups[0]["lr"], int(opt.state[w]["step"])
        (0.1, 1)
        """
        before = {k: self.__dict__[k] for k in ("state", "param_groups")}
        caches: dict[str, Any] = {k: self.__dict__.pop(k) for k in _CACHES
                                  if k in self.__dict__}
        self.__dict__["_optcore_loading"] = True
        try:
            super().load_state_dict(state_dict)
            self._conform_loaded(state_dict)
        except BaseException:
            self.__dict__.update(before)
            self.__dict__.update(caches)
            raise
        finally:
            self.__dict__.pop("_optcore_loading", None)

    def _check_loaded(self) -> None:
        """The groups and state just loaded (see load_state_dict)."""
        owner = type(self).__name__
        own = {*self.defaults, *self._rules.spec.options, *self._rules.spec.fixed}
        scalars = set(self._rules.scalars)
        allowed = set(self._rules.state_keys) | scalars
        if self._rules.spec.spec.tiled:
            allowed |= {f"{k}{_st.ABSMAX}" for k in self._rules.state_keys}
            allowed |= set(_st.EXTRA_KEYS)
        required = [k for k in self.defaults if k not in self._rules.optional]
        index = 0
        for g, group in enumerate(self.param_groups):
            check_loaded_group(group, g, required, own, owner)
            checked = self._check_options(group)
            needed = {b.state_key for b in self._rules.needed(checked)} | scalars
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state:
                    # (torch's SGD reads its momentum buffer with state.get:
                    # only state with a step count must be complete)
                    check_loaded_state_keys(p_state, f"loaded state of parameter {index}",
                                            needed if scalars else (), allowed, owner)
                index += 1

    def _slot(self, p: torch.Tensor, state: dict[str, Any], group: ParamGroup,
              needed: tuple[Buffer, ...], gi: int, j: int) -> _Slot:
        """Views of p and its state, checked; builds state on first use."""
        slots = self.__dict__.setdefault("_optcore_slots", {})
        slot = slots.get(id(p))
        if slot is not None and slot.valid(p, state, needed):
            slot.created = ()
            slot.load()
            return slot
        local = self._check_param(p, gi, j)
        layout = self._layout(local, gi, j)
        created = self._init_state(state, p, group)
        try:
            if not layout.plain and state is not _NO_STATE:
                # (a DTensor's master copy and compensation are DTensors laid out as it)
                created += _st.new_extras(state, p if _dtensor.is_dtensor(p) else local,
                                          layout, "step" in self._rules.scalars)
            slot = _dtensor.new_slot(p, _Slot)
            slot.param = p
            slot.bind(local)
            slot.state = state
            slot.keys = needed
            slot.storage = layout
            names = tuple(self._rules.scalars)
            owner = type(self).__name__
            keys, tensors, slot.views = _st.bind_states(owner, slot, needed, gi, j)
            slot.tensors = tuple(tensors)
            scalars = tuple(state[k] for k in names)
            slot.scalar_views = tuple(scalar_view(owner, t, k, gi, j)
                                      for k, t in zip(names, scalars))
            slot.entries = tuple(
                (key, t, _dtensor.local_ptr(t)) for key, t in
                zip((*names, *keys), (*scalars, *slot.tensors)))
        except Exception:
            _forget(self.state, p, created)
            raise
        slot.created = tuple(created)
        slots[id(p)] = slot
        slot.load()
        return slot

    # ---- step ----------------------------------------------------------------

    # (torch declares step as two overloads: no closure -> None, a closure -> its loss)
    @without_grad
    def step(self,  # type: ignore[override]
             closure: Callable[[], float] | None = None) -> float | None:
        """Perform a single optimization step (one kernel call per group).

        Parameters with a ``.grad`` are updated in place. Every kernel call of
        the step is prepared and checked before the first one runs, so a step
        that raises changes no parameter and no state.

        Parameters
        ----------
        closure : callable, optional
            A closure that reevaluates the model and returns the loss (run
            with gradients enabled, before the update).

        Returns
        -------
        object
            The closure's loss (a tensor, typically), or None without a closure.

        Raises
        ------
        ValueError
            If a parameter, gradient or state tensor is not a CPU, dense,
            contiguous tensor of the parameter's shape, or a group's option
            was set to a bad value.
        TypeError
            If a gradient or state has another dtype than its parameter.

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = optcore.torch.SGD([w], lr=0.25)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = (w ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> opt.step(closure).item()
        5.0
        >>> w.tolist()
        [0.5, -1.0]
        """
        loss = None
        where = f"optcore.torch.{type(self).__name__}.step()"
        if closure is not None:
            try:
                with torch.enable_grad():
                    loss = closure()
            except Exception as exc:
                # DTensor parameters: the ranks agree before anyone writes
                # (_dtensor.agree), on a closure's error too
                mesh = _dtensor.mesh_of(self.param_groups)
                if mesh is not None:
                    _dtensor.agree(mesh, self.param_groups, exc, where)   # raises
                raise
        if self._planned_step():        # (plans hold plain tensors, never DTensors)
            return loss
        mesh = _dtensor.mesh_of(self.param_groups)
        plans = []
        sparse: list[Callable[[], None]] = []     # checked sparse steps, run last
        try:
            for gi, group in enumerate(self.param_groups):
                plan = self._plan_group(gi, group, sparse)
                if plan is not None:
                    plans.append(plan)
            if mesh is not None or len(plans) > 1 or (plans and len(plans[0][3]) > 1):
                # A kernel call checks its own buffers before it writes, but
                # not the next call's, nor memory shared across calls.
                self._check_calls(plans)
        except Exception as exc:
            for plan in plans:
                self._rollback(plan[1])
            if mesh is not None:
                _dtensor.agree(mesh, self.param_groups, exc, where)   # raises
            raise
        if mesh is not None:
            try:
                _dtensor.agree(mesh, self.param_groups, None, where)
            except Exception:
                for plan in plans:
                    self._rollback(plan[1])
                raise
        for n in range(len(plans)):
            self._run_group(plans, n)
        for run in sparse:
            run()
        self._record_plan(plans, self._rules.spec.options + _FLAGS)
        return loss

    def _group_options(self, group: ParamGroup) -> tuple[dict[str, Any], tuple[Buffer, ...]]:
        """(kernel keywords, state buffers needed) of a group, checked again
        whenever its values change (users and schedulers edit param_groups);
        cached by value while they are plain numbers (a tensor lr may change
        in place, so it is checked every time)."""
        values = tuple([group.get(k) for k in self._rules.spec.options + _FLAGS])
        plain = all([type(v) in _PLAIN or (type(v) is tuple and
                                            all([type(b) in _PLAIN for b in v]))
                     for v in values])
        cache = self.__dict__.setdefault("_optcore_options", {})
        if plain:
            found = cache.get(values)
            if found is not None:
                return found
        checked = self._check_options(group)
        found = (self._rules.kernel_options(checked), self._rules.needed(checked))
        if plain:
            if len(cache) > 64:
                cache.clear()
            cache[values] = found
        return found

    def _plan_group(self, gi: int, group: ParamGroup,
                    sparse: list[Callable[[], None]]) -> _Plan | None:
        """(gi, slots, grads, buckets, needed, options) of the kernel calls
        that step group gi, or None when no parameter has a dense gradient;
        the checked steps of its sparse gradients are appended to `sparse`
        (``_sparse_step``); state created for them is removed again if this
        raises."""
        options, needed = self._group_options(group)
        state = self.state
        # e.g. SGD without momentum (unless a master copy or compensation is kept)
        stateless = not needed and not self._rules.scalars and not (
            self._storage.master_weights or self._storage.rounding != "nearest")
        slots, grads = [], []
        try:
            for j, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                if g.layout is not _STRIDED:
                    sparse.append(self._sparse_step(gi, j, group, p, g))
                    continue
                if g.__class__ is not _TENSOR:   # a DTensor's: its local tensor
                    g = _dtensor.grad_local(g, p, f"optcore.torch.{type(self).__name__}: "
                                                  f"param_groups[{gi}]['params'][{j}]")
                # torch.optim leaves no state entry where there is no state.
                p_state = _NO_STATE if stateless and p not in state else state[p]
                slot = self._slot(p, p_state, group, needed, gi, j)
                slots.append(slot)
                grads.append(slot.grad_view(g))
        except Exception:
            self._rollback(slots)
            raise
        if not slots:
            return None
        # One call for the whole group unless its parameters differ in dtype
        # (a kernel call takes one) or their scalar state (step count, NAdam's
        # mu product) has diverged.
        if self._rules.scalars:
            keyed = [(*map(float, s.scalar_views), s.view_dtype, _st.call_key(s))
                     for s in slots]
        else:
            keyed = [(bool(s.created), s.view_dtype, _st.call_key(s)) for s in slots]
        first = keyed[0]
        if all(k == first for k in keyed):
            buckets = [(first, list(range(len(slots))))]
        else:
            by_key: dict[tuple[Any, ...], list[int]] = {}
            for i, k in enumerate(keyed):
                by_key.setdefault(k, []).append(i)
            buckets = list(by_key.items())
        return gi, slots, grads, buckets, needed, options

    def _sparse_step(self, gi: int, j: int, group: ParamGroup, p: torch.Tensor,
                     g: torch.Tensor) -> Callable[[], None]:
        """The checked step of a sparse gradient, to run after the dense ones
        (``optcore.torch.sparse.SparseGrads``); refused here."""
        raise RuntimeError(
            f"optcore.torch.{type(self).__name__} does not support sparse "
            f"gradients (param_groups[{gi}]['params'][{j}] has a {g.layout} gradient)")

    def _run_group(self, plans: list[_Plan], n_plan: int) -> None:
        """Run the kernel calls of ``plans[n_plan]``; if one raises, the state
        created for it and for the calls after it is removed again."""
        gi, slots, grads, buckets, needed, options = plans[n_plan]
        kernel = self._rules.kernel
        for n, (key, members) in enumerate(buckets):
            part = [slots[i] for i in members]
            try:
                self._call(kernel, part, [grads[i] for i in members], key, needed,
                           options)
            except Exception as exc:
                labelled = None
                if isinstance(exc, (TypeError, ValueError)):
                    # The kernel refused its buffers before writing: name
                    # them as users see them (check_calls finds the fault).
                    try:
                        self._check_calls([(gi, slots, grads, [buckets[n]], needed,
                                            options)])
                    except (TypeError, ValueError) as found:
                        labelled = found
                for plan in [(gi, slots, grads, buckets[n:], needed, options),
                             *plans[n_plan + 1:]]:
                    self._rollback([plan[1][i] for _, m in plan[3] for i in m])
                if labelled is not None:
                    raise labelled from None
                exc.add_note(
                    f"in optcore.torch.{type(self).__name__}.step(), param_groups[{gi}]; "
                    f"list positions are the group's parameters that have a gradient")
                raise

    def _scalar_args(self, scalars: dict[str, Any], step: float, options: dict[str, Any],
                     views: tuple[np.ndarray, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Kernel arguments for the scalar state other than ``step``, and the
        values to store in it after the call (see NAdam)."""
        return {}, {}

    def _call(self, kernel: Kernel, slots: list[_Slot], grads: list[np.ndarray],
              key: tuple[Any, ...], needed: tuple[Buffer, ...], options: dict[str, Any]) -> None:
        names = tuple(self._rules.scalars)
        scalars = dict(zip(names, key))
        if "step" in scalars:
            step = scalars["step"] + 1.0
        else:
            # No step count kept (SGD): buffers created now are initialised by
            # the kernel's first step.
            step = 1.0 if key[0] else 2.0
        kwargs = {k: v for k, v in options.items() if k not in self._rules.scalar_only}
        for i, b in enumerate(needed):
            kwargs[b.name] = [s.views[i] for s in slots]
        extra, store = self._scalar_args(scalars, step, options, slots[0].scalar_views)
        kwargs.update(extra)
        kwargs.update(_st.call_args(slots, key[-1]))
        store["step"] = step
        kernel([s.view for s in slots], grads, step=int(step), **kwargs)
        _st.after_call(slots)
        for s in slots:
            if s.work is not None:   # a parameter stepped on a dense copy
                s.write_back()
        # Commit the scalar state (rounded to the tensors' dtype, as torch's is).
        for s in slots:
            for name, view in zip(names, s.scalar_views):
                view[()] = store[name]
        increment_version([s.param for s in slots] + [t for s in slots for t in s.tensors])

    def _rollback(self, slots: Iterable[_Slot]) -> None:
        slot_cache = self.__dict__.get("_optcore_slots", {})
        for s in slots:
            if s.created:
                _forget(self.state, s.param, s.created)
                slot_cache.pop(id(s.param), None)
