"""The state arenas of the NumPy optimizers: every tensor state of a group
lives in one contiguous, 64-byte aligned arena per state kind and dtype, and
the per-parameter entries of ``state`` are views into it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from optcore.optim._storage import wrap_state

if TYPE_CHECKING:
    from optcore._typing import Arenas, ParamGroup, StateEntry
    from optcore.optim._options import Rules
    from optcore.optim._storage import Storage

# Arena slots start on cache-line (and SIMD) boundaries.
_ALIGN = 64


def _aligned_empty(n: int, dtype: np.dtype[Any]) -> np.ndarray:
    """A 1-D array of ``n`` elements whose first element is _ALIGN-byte aligned."""
    itemsize = dtype.itemsize
    raw = np.empty(n + _ALIGN // itemsize, dtype)
    shift = (-raw.ctypes.data % _ALIGN) // itemsize
    return raw[shift:shift + n]


def _slot(n: int, itemsize: int) -> int:
    per = _ALIGN // itemsize
    return (n + per - 1) // per * per


class _Layout:
    """Where each parameter of a group sits in the group's arenas: one arena
    per (state kind, dtype); ``offsets[j]`` is parameter j's first element in
    the arena of its dtype."""

    def __init__(self, params: Iterable[np.ndarray],
                 dtypes: Sequence[np.dtype[Any]] | None = None) -> None:
        params = list(params)
        #: per parameter: the dtype of its state arrays (uint8: int8 codes)
        self.dtypes = list(dtypes) if dtypes is not None else [p.dtype for p in params]
        self.offsets: list[int] = []
        self.totals: dict[np.dtype[Any], int] = {}
        #: the (parameter dtype, state dtype) pairs of the group
        self.signatures = {(p.dtype, dt) for p, dt in zip(params, self.dtypes)}
        for p, dt in zip(params, self.dtypes):
            off = self.totals.get(dt, 0)
            self.offsets.append(off)
            self.totals[dt] = off + _slot(p.size, dt.itemsize)


class _NewKinds:
    """State kinds a group is getting now (see ``Optimizer._new_kinds``):
    their new arenas, and views for existing entries, attached only once a
    kernel call that uses them has returned."""

    __slots__ = ("g", "kinds", "arenas", "views", "done")

    def __init__(self, g: int, kinds: Sequence[str]) -> None:
        self.g = g
        self.kinds = kinds
        self.arenas: Arenas = {}        # (kind, dtype) -> new arena
        # (index in group, kind) -> view for an existing entry
        self.views: dict[tuple[int, str], np.ndarray] = {}
        self.done = False



class ArenaMixin:
    """The arena methods of ``optcore.optim.base.Optimizer``."""

    # What they use of the optimizer (set by its __init__), for type checkers.
    param_groups: list[ParamGroup]
    defaults: dict[str, Any]
    _rules: Rules
    _layouts: list[_Layout]
    _arenas: list[Arenas]
    _ready: list[set[str]]
    _calls: list[Any]
    _state: dict[int, StateEntry]
    _starts: list[int]
    _storage: Storage

    if TYPE_CHECKING:
        def _fill(self, kind: str, group: ParamGroup) -> float: ...
        def _buffers(self, group: ParamGroup) -> tuple[str, ...]: ...

    # -- arenas --

    def _new_kinds(self, g: int, kinds: Sequence[str]) -> _NewKinds | None:
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
                    arena.fill(self._fill(kind, group) if dt != np.uint8 else 0)
                    new.arenas[kind, dt] = arena
            for j in range(len(group["params"])):
                st = self._state.get(self._starts[g] + j)
                if st is not None and kind not in st:
                    new.views[j, kind] = self._state_value(g, j, kind, new.arenas)
        return new

    def _attach_kinds(self, new: _NewKinds) -> None:
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

    def _view(self, g: int, j: int, kind: str,
              new_arenas: Arenas | None = None) -> np.ndarray:
        p = self.param_groups[g]["params"][j]
        layout = self._layouts[g]
        off, dt = layout.offsets[j], layout.dtypes[j]
        arena = new_arenas.get((kind, dt)) if new_arenas else None
        if arena is None:
            arena = self._arenas[g][kind, dt]
        return arena[off:off + p.size].reshape(p.shape)

    def _state_value(self, g: int, j: int, kind: str,
                     new_arenas: Arenas | None = None) -> Any:
        """A new state value of parameter j: its arena view, or for int8
        state a QuantizedState over it (codes of the kind's initial value)."""
        view = self._view(g, j, kind, new_arenas)
        if view.dtype != np.uint8:
            return view
        return wrap_state(view, self._fill(kind, self.param_groups[g]),
                          self._rules.unsigned[kind])

    def _new_entry(self, g: int, j: int, kinds: Sequence[str],
                   new: _NewKinds | None = None) -> StateEntry:
        """A first-step state entry for parameter j of group g: initial
        scalars and views into the arenas. Not registered: the caller puts it
        into ``_state`` once the step that creates it cannot fail any more."""
        st: StateEntry = self._rules.initial_scalars(self.param_groups[g])
        arenas = new.arenas if new is not None else None
        for kind in kinds:
            st[kind] = self._state_value(g, j, kind, arenas)
        p = self.param_groups[g]["params"][j]
        for key in self._storage.extras(p):
            st[key] = self._storage.new_extra(key, p)
        return st

    def _init_group_state(self, g: int) -> None:
        kinds = self._buffers(self.param_groups[g])
        new = self._new_kinds(g, kinds)
        if new is not None:
            self._attach_kinds(new)
        for j in range(len(self.param_groups[g]["params"])):
            if self._starts[g] + j not in self._state:
                self._state[self._starts[g] + j] = self._new_entry(g, j, kinds)
        self._calls[g] = None

    def arena(self, group: int = 0, kind: str | None = None,
              dtype: Any = None) -> np.ndarray:
        """Return the 1-D arena holding state ``kind`` of a group's parameters.

        Every tensor state of a group lives in one contiguous, 64-byte aligned
        array per kind (and dtype); the entries of ``state`` are views into it.

        Parameters
        ----------
        group : int, default 0
            The group's index.
        kind : str
            The state key (``"exp_avg"``...).
        dtype : numpy.dtype, optional
            Needed only when the group mixes float32 and float64 parameters.

        Returns
        -------
        numpy.ndarray
            The arena (writing to it changes the state).

        Raises
        ------
        KeyError
            If the group has no such state (yet), or several dtypes of it and
            no ``dtype``.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.Adam([np.ones(2), np.ones(3)])
        >>> opt.step([np.ones(2), np.ones(3)])
        >>> arena = opt.arena(0, "exp_avg")
        >>> arena.shape[0] >= 5, np.shares_memory(arena, opt.state[1]["exp_avg"])
        (True, True)
        """
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
