"""The machinery shared by optcore's stateful optimizers (torch.optim-style
classes over NumPy parameters).

An optimizer holds ``param_groups`` (dicts of hyperparameters, each with its
``params``: NumPy arrays updated in place, never copied) and per-parameter
``state`` dicts with torch.optim's keys. Every tensor state of a group lives
in ONE contiguous, 64-byte aligned arena per state kind (and dtype); the
per-parameter entries of ``state`` are views into it (``_arena.py``). A step
over a group is therefore one multi-tensor call of the functional kernel
(``optcore.kernels.<module>.<x>_step``) over the group's parameters, gradients
and state views (``_plan.py``); ``_state_dict.py`` saves and loads it.

A subclass is named after its entry in ``optcore._spec.OPTIMIZERS``, which
gives its kernel, options, state and checks; it declares only its constructor
(torch.optim's signature); see ``optcore/optim/family.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from optcore._spec import OPTIMIZER
from optcore.optim._arena import ArenaMixin, _Layout
from optcore.optim._checks import _as_param_list, _check_params
from optcore.optim._docs import class_docstring
from optcore.optim._options import check_flags, rules_for
from optcore.optim._plan import PlanMixin
from optcore.optim._state_dict import StateDictMixin
from optcore.optim._storage import Storage, with_step_count

if TYPE_CHECKING:
    from optcore._typing import Kernel, ParamGroup, StateEntry
    from optcore.optim._options import Rules

__all__ = ["Optimizer", "OptimizerState"]


class OptimizerState:
    """The per-parameter state of an optimizer (``optimizer.state``).

    A read-only mapping from a parameter's global index (its position over
    all groups, as in ``state_dict()``) to its state dict; the parameter
    array itself is accepted as a key too, like torch's
    ``optimizer.state[p]``. Parameters that have not been stepped yet have no
    entry (state is created at the first step, as in torch.optim).

    Parameters
    ----------
    opt : Optimizer
        The optimizer whose state this is.

    Examples
    --------
    >>> import numpy as np
    >>> import optcore
    >>> w = np.ones(3)
    >>> opt = optcore.Adam([w])
    >>> len(opt.state)
    0
    >>> opt.step([np.ones(3)])
    >>> opt.state[0]["step"], opt.state[w] is opt.state[0], w in opt.state
    (1, True, True)
    """

    __slots__ = ("_opt",)

    def __init__(self, opt: Optimizer) -> None:
        self._opt = opt

    def _index(self, key: Any) -> int:
        if isinstance(key, np.ndarray):
            idx = self._opt._index.get(id(key))
            if idx is None or self._opt._param(idx) is not key:
                raise KeyError("this array is not a parameter of the optimizer")
            return idx
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            return int(key)
        raise KeyError(key)

    def __getitem__(self, key: Any) -> StateEntry:
        return self._opt._state[self._index(key)]

    def get(self, key: Any, default: Any = None) -> Any:
        """The state dict of parameter ``key``, or ``default`` if it has none.

        Parameters
        ----------
        key : int or numpy.ndarray
            The parameter's global index, or the parameter array.
        default : object, optional
            Returned when the parameter has no state (yet).

        Returns
        -------
        dict or object
            The state dict, or ``default``.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.SGD([np.ones(2)], lr=0.1, momentum=0.9)
        >>> opt.state.get(0) is None
        True
        """
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        try:
            return self._index(key) in self._opt._state
        except KeyError:
            return False

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._opt._state))

    def __len__(self) -> int:
        return len(self._opt._state)

    def keys(self) -> list[int]:
        """The global indices of the parameters that have state, in order.

        Returns
        -------
        list of int
            The indices.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> a, b = np.ones(2), np.ones(3)
        >>> opt = optcore.Adam([a, b])
        >>> opt.step([None, np.ones(3)])    # a has no gradient: no state
        >>> opt.state.keys()
        [1]
        """
        return list(self)

    def values(self) -> list[StateEntry]:
        """The state dicts, in the order of ``keys()``.

        Returns
        -------
        list of dict
            One state dict per parameter with state.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.Adam([np.ones(2)])
        >>> opt.step([np.ones(2)])
        >>> [sorted(st) for st in opt.state.values()]
        [['exp_avg', 'exp_avg_sq', 'step']]
        """
        return [self._opt._state[i] for i in self]

    def items(self) -> list[tuple[int, StateEntry]]:
        """(index, state dict) pairs, in the order of ``keys()``.

        Returns
        -------
        list of tuple
            ``(global index, state dict)`` per parameter with state.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.Adam([np.ones(2)])
        >>> opt.step([np.ones(2)])
        >>> [(i, st["step"]) for i, st in opt.state.items()]
        [(0, 1)]
        """
        return [(i, self._opt._state[i]) for i in self]

    def __repr__(self) -> str:
        return f"OptimizerState({dict(self.items())!r})"


# ---- the optimizer ---------------------------------------------------------

class Optimizer(PlanMixin, ArenaMixin, StateDictMixin):
    """The base of the NumPy optimizers: parameter groups, state, step, state_dict.

    Not used directly: ``optcore.SGD``, ``optcore.Adam`` and the others
    subclass it. A subclass named like an entry of ``optcore._spec.OPTIMIZERS``
    (or a subclass of one) takes from it the kernel, the options and their
    checks, the state keys and when each is needed, and the scalar state; it
    declares only its constructor (torch.optim's signature), which passes its
    ``locals()`` here. It may override ``_scalar_args`` (see NAdam).

    Parameters
    ----------
    params : iterable of numpy.ndarray or of dict
        The parameters (float32/float64 arrays, updated in place; also
        bfloat16 and float16 for the classes with a tiled kernel), or parameter groups
        (dicts with ``"params"`` and options).
    arguments : mapping
        The constructor's arguments by name: the spec's options become
        ``defaults``; the torch.optim flags among them are checked and
        dropped; the storage options (``state_dtype``, ``master_weights``,
        ``rounding``, ``seed``; ``optcore.optim._storage``) are kept
        optimizer-wide.

    Attributes
    ----------
    param_groups : list of dict
        The parameter groups: ``"params"`` and every option.
    defaults : dict
        The constructor's options.
    state : OptimizerState
        The per-parameter state, under torch.optim's keys.

    Raises
    ------
    TypeError
        If the class has no spec entry, an option has the wrong type, or
        ``params`` is a single array or dict.
    ValueError
        If an option is out of range or ``params`` is empty.

    See Also
    --------
    optcore.torch : The same optimizers as ``torch.optim.Optimizer`` subclasses.

    Examples
    --------
    >>> import numpy as np
    >>> import optcore
    >>> isinstance(optcore.Adam([np.ones(2)]), optcore.optim.Optimizer)
    True
    """

    _rules: Rules = None  # type: ignore[assignment]  # the class's spec entry

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__ in OPTIMIZER and cls.__module__.startswith("optcore."):
            cls._rules = rules_for(cls.__name__)
            cls.__doc__ = class_docstring(cls, "numpy")

    def __init__(self, params: Iterable[Any], arguments: Mapping[str, Any]) -> None:
        rules = self._rules
        if rules is None:
            raise TypeError(f"{type(self).__name__} has no optimizer spec; subclass one "
                            f"of optcore's optimizers")
        check_flags(type(self).__name__,
                    {k: arguments[k] for k in rules.flags if k in arguments},
                    "NumPy arrays")
        self._storage = (Storage.from_arguments(arguments, rules.state_dtypes,
                                                type(self).__name__)
                         if rules.tiled else Storage())
        self.defaults = {k: arguments[k] for k in rules.spec.options}
        self.defaults.update(rules.spec.fixed)
        rules.check(self.defaults)
        self.param_groups = []
        self._layouts = []          # per group: _Layout
        self._arenas = []           # per group: {(kind, dtype): 1-D arena}
        self._ready = []            # per group: state kinds with arenas and views
        self._hyper_cache = []      # per group: (values checked, kernel keywords)
        self._calls = []            # per group: the one-call step's arguments, cached
        self._state = {}            # global parameter index -> state dict
        self._index: dict[int, int] = {}    # id(param) -> global index
        self._starts = []           # per group: global index of its first parameter
        if self._storage.rounding == "stochastic" and "step" not in rules.scalars:
            # stochastic rounding draws new bits each step: SGD counts them
            rules = self._rules = with_step_count(rules)
        self._scalar_names = tuple(self._rules.scalars)
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
        if self._rules.eager:
            # As torch's Adagrad: state for the constructor's groups now;
            # groups added later get theirs at their first step.
            for g in range(len(self.param_groups)):
                self._init_group_state(g)

    # -- the spec, per group --

    def _buffers(self, group: ParamGroup) -> tuple[str, ...]:
        """The state keys this group's options need."""
        return tuple(b.state_key for b in self._rules.needed(group))

    def _fill(self, kind: str, group: ParamGroup) -> float:
        """Initial value of state ``kind`` in ``group`` (as torch's)."""
        rules = self._rules
        for b in rules.state:
            if b.state_key == kind:
                return rules.fill(b, self.defaults, group)
        return 0.0

    def _scalar_args(self, scalars: dict[str, Any], step: int, hyper: dict[str, Any]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Kernel arguments for the scalar state other than ``step``, and the
        values to store after the call (kernel's result for a returned one)."""
        return {k: v for k, v in scalars.items() if k != "step"}, {}

    def _call(self, fn: Kernel, params: Sequence[np.ndarray], grads: Sequence[np.ndarray],
              buffers: dict[str, list[np.ndarray]], scalars: dict[str, Any], fresh: bool,
              hyper: dict[str, Any]) -> dict[str, Any] | None:
        if "step" not in scalars:
            # No step count kept (SGD): the kernel initialises buffers created
            # now from the gradient when step == 1.
            fn(params, grads, **buffers, step=1 if fresh else 2, **hyper)
            return None
        step = scalars["step"] + 1
        extra, store = self._scalar_args(scalars, step, hyper)
        if self._rules.scalar_only:
            hyper = {k: v for k, v in hyper.items() if k not in self._rules.scalar_only}
        result = fn(params, grads, **buffers, step=step, **extra, **hyper)
        new = {"step": step}
        for name in self._scalar_names:
            if name != "step":
                new[name] = store[name] if name in store else float(result)
        return new

    # -- validation --

    def _check_hyper(self, group: ParamGroup, where: str) -> dict[str, Any]:
        """The group's options checked (plain values); errors name ``where``."""
        try:
            for name in self.defaults:
                if name not in group:
                    raise ValueError(f"missing hyperparameter {name!r}")
            return self._rules.check(group)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None

    # -- groups --

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, as torch.optim's ``add_param_group``.

        Parameters
        ----------
        param_group : dict
            ``"params"`` (an array or a list of arrays) and any options; the
            options it omits take the optimizer's ``defaults``.

        Raises
        ------
        TypeError
            If ``param_group`` is not a dict or an option has the wrong type.
        ValueError
            If it has no ``"params"``, a parameter is already in the optimizer,
            or an option is out of range.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.SGD([np.ones(2)], lr=0.1)
        >>> opt.add_param_group({"params": [np.ones(3)], "lr": 0.01})
        >>> [g["lr"] for g in opt.param_groups]
        [0.1, 0.01]
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group has no 'params'")
        params = _as_param_list(param_group["params"], "param_group['params']")
        g = len(self.param_groups)
        start = sum(len(gr["params"]) for gr in self.param_groups)
        labels = [f"parameter {start + j} (group {g}, index {j})" for j in range(len(params))]
        if self._rules.tiled:
            for p, label in zip(params, labels):
                if isinstance(p, np.ndarray):
                    self._storage.check_param(p, label)
        _check_params([p for gr in self.param_groups for p in gr["params"]] + params,
                      [self._label(gg, j) for gg, gr in enumerate(self.param_groups)
                       for j in range(len(gr["params"]))] + labels,
                      start, mixed=self._rules.tiled)
        group = {k: v for k, v in param_group.items() if k != "params"}
        for name, value in self.defaults.items():
            group.setdefault(name, copy.deepcopy(value))
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        self._check_hyper(group, f"param group {g}")
        group["params"] = params

        self.param_groups.append(group)
        self._layouts.append(_Layout(params, [self._storage.state_dtype_of(p)
                                              for p in params]))
        self._arenas.append({})
        self._ready.append(set())
        self._hyper_cache.append(None)
        self._calls.append(None)
        self._starts.append(start)
        for j, p in enumerate(params):
            self._index[id(p)] = start + j

    def _param(self, idx: int) -> np.ndarray:
        for g in range(len(self.param_groups) - 1, -1, -1):
            if idx >= self._starts[g]:
                return self.param_groups[g]["params"][idx - self._starts[g]]
        raise IndexError(idx)

    def step(self, grads: Any) -> None:
        """Take one optimizer step for every parameter with a gradient.

        Each group is one multi-tensor kernel call (per dtype and step count,
        which normally coincide for the whole group). Every kernel call of the
        step is prepared and checked before the first one runs, so a step that
        raises changes nothing (no parameter, no state, no new state entry).

        Parameters
        ----------
        grads : list of numpy.ndarray, list of lists, or dict
            One gradient per parameter, in order over all groups; or one list
            per group; or ``{group index: list}`` to step only those groups. A
            ``None`` gradient skips its parameter (as a missing ``.grad`` does
            in torch). Gradients have their parameter's shape and dtype
            (bfloat16/float16 parameters: float32, bfloat16 or float16);
            SGD and Adagrad also take a row-form ``(indices, rows)`` pair,
            as ``optcore.SparseAdam`` does, and step only the rows it
            touches (SGD with momentum: the dense gradient it stands for).

        Raises
        ------
        TypeError
            If a gradient is not an array or has another dtype than its
            parameter.
        ValueError
            If the gradients do not match the parameters (count, shape), a
            group's option was set to a bad value, or memory is shared where
            it must not be.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> a, b = np.ones(2), np.ones(3)
        >>> opt = optcore.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
        >>> opt.step([np.ones(2), np.ones(3)])      # one array per parameter
        >>> opt.step({1: [np.ones(3)]})              # only group 1
        >>> print(a, b)
        [0.9 0.9] [0. 0. 0.]
        """
        cached = self.__dict__.get("_step_plan")
        if cached is not None:          # the cached plan (_plan.py), checked in C
            done = cached.run(self, grads)
            if done or (done is None and self._planned_scalars(cached, grads)):
                return
        plan, copied, rows = self._plan(grads)
        fn = self._rules.kernel
        calls = []
        for g, gs, hyper, complete in plan:
            calls += self._group_calls(g, gs, hyper, complete)
        if len(calls) > 1 or copied:
            # A kernel call checks its own buffers before it writes, but not
            # the next call's, nor memory shared across calls: all of them
            # are checked here, before the first one runs.
            self._check_calls(calls, copied)
            for call in calls:
                self._run(fn, call)
        elif calls:
            try:
                self._run(fn, calls[0])
            except (TypeError, ValueError):
                # The kernel refused its buffers before writing anything:
                # report them as the parameters and state users know.
                try:
                    self._check_calls(calls, copied)
                except (TypeError, ValueError) as exc:
                    raise exc from None
                raise
        for run in rows:                # row-form gradients, checked with the plan
            run()

    def zero_state(self) -> None:
        """Forget all optimizer state (moments, step counts).

        The next step is a first step again, as for a new optimizer. The
        parameters and groups are untouched.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.Adam([np.ones(2)])
        >>> opt.step([np.ones(2)])
        >>> opt.zero_state()
        >>> len(opt.state)
        0
        """
        self._state = {}
        self._arenas = [{} for _ in self.param_groups]
        self._ready = [set() for _ in self.param_groups]
        self._calls = [None] * len(self.param_groups)
        self.__dict__.pop("_step_plan", None)
        if self._rules.eager:
            for g in range(len(self.param_groups)):
                self._init_group_state(g)

    # -- copy and pickle: rebuilt through state_dict, so that the copy's state
    # lives in its own arenas again (a plain deepcopy would detach the views) --

    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "param_groups": self.param_groups,
                "storage": self._storage.options(), "state_dict": self.state_dict()}

    def __setstate__(self, saved: dict[str, Any]) -> None:
        Optimizer.__init__(self, [dict(g) for g in saved["param_groups"]],
                           {**saved["defaults"], **saved.get("storage", {})})
        self.load_state_dict(saved["state_dict"])

    # -- display --

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for g, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {g}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
