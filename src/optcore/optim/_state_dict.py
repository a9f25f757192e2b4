"""state_dict, load_state_dict and pickling of the NumPy optimizers."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np

from optcore.optim._arena import _aligned_empty
from optcore.optim._storage import (EXTRA_KEYS, STORAGE_OPTIONS, dequantized, loaded_value,
                                    saved_entry, state_keys, store_into)
from optcore.optim._checks import (_check_like, _load_scalar, check_loaded_group,
                                   check_loaded_state_keys)

if TYPE_CHECKING:
    from optcore._typing import Arenas, ParamGroup, StateEntry
    from optcore.optim._arena import _Layout
    from optcore.optim._options import Rules
    from optcore.optim._storage import Storage


class StateDictMixin:
    """The state_dict methods of ``optcore.optim.base.Optimizer``."""

    # What they use of the optimizer (set by its __init__), for type checkers.
    param_groups: list[ParamGroup]
    defaults: dict[str, Any]
    _rules: Rules
    _layouts: list[_Layout]
    _arenas: list[Arenas]
    _ready: list[set[str]]
    _hyper_cache: list[Any]
    _calls: list[Any]
    _state: dict[int, StateEntry]
    _starts: list[int]
    _storage: Storage

    if TYPE_CHECKING:
        def _check_hyper(self, group: ParamGroup, where: str) -> dict[str, Any]: ...
        def _buffers(self, group: ParamGroup) -> tuple[str, ...]: ...
        def _fill(self, kind: str, group: ParamGroup) -> float: ...
        def _init_group_state(self, g: int) -> None: ...

    # -- state_dict --

    def state_dict(self) -> dict[str, Any]:
        """Return a deep copy of the state, in torch.optim's layout.

        ``{"state": {index: {"step": int, "exp_avg": ndarray, ...}},
        "param_groups": [{"lr": ..., "params": [indices]}, ...]}``: only plain
        Python containers, numbers, strings and NumPy arrays (what
        ``optcore.save`` writes and ``load_state_dict`` reads).

        Returns
        -------
        dict
            ``"state"`` (per-parameter state by global index) and
            ``"param_groups"`` (the options, parameters as indices).

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.Adam([np.ones(2)], lr=0.01)
        >>> opt.step([np.ones(2)])
        >>> sd = opt.state_dict()
        >>> sd["state"][0]["step"], sd["param_groups"][0]["params"]
        (1, [0])
        """
        state = {idx: saved_entry(self._state[idx]) for idx in sorted(self._state)}
        groups = []
        for g, group in enumerate(self.param_groups):
            saved = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            saved["params"] = list(range(self._starts[g],
                                         self._starts[g] + len(group["params"])))
            groups.append(saved)
        out = {"state": state, "param_groups": groups}
        if not self._storage.default:
            out["storage"] = self._storage.options()
        return out

    def dequantized_state_dict(self) -> dict[str, Any]:
        """Return ``state_dict()`` with float32 states in place of int8 and bfloat16 ones.

        Loadable into an optimizer of this class with float32 states (and,
        converted to tensors, into torch.optim's). ``master_param`` and
        ``compensation`` entries are kept as they are; the ``"storage"``
        options are left out.

        Returns
        -------
        dict
            The state dict, its int8 (``<key>``, ``<key>.absmax``) and
            bfloat16 states dequantized to float32 arrays.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.Adam([np.ones(5000, np.float32)], state_dtype="int8")
        >>> opt.step([np.ones(5000, np.float32)])
        >>> sorted(opt.state_dict()["state"][0])
        ['exp_avg', 'exp_avg.absmax', 'exp_avg_sq', 'exp_avg_sq.absmax', 'step']
        >>> sd = opt.dequantized_state_dict()
        >>> sorted(sd["state"][0]), sd["state"][0]["exp_avg"].dtype
        (['exp_avg', 'exp_avg_sq', 'step'], dtype('float32'))
        """
        sd = self.state_dict()
        sd.pop("storage", None)
        kinds = self._rules.state_keys
        sd["state"] = {i: dequantized(e, kinds, self._rules.unsigned)
                       for i, e in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the state and options of a ``state_dict()`` (copied).

        Everything is checked first (layout, group and parameter counts,
        options, state keys, shapes, dtypes): a load that raises leaves the
        optimizer unchanged.

        Parameters
        ----------
        state_dict : dict
            A ``state_dict()`` of an optimizer of this class with as many
            groups and parameters (of the same shapes).

        Raises
        ------
        TypeError
            If it is not laid out as a state dict, or a state has another
            dtype than its parameter.
        ValueError
            If it does not match the optimizer (groups, parameters, shapes,
            state keys) or an option is out of range.
        KeyError
            If a group or a state lacks a key, or it is the state_dict of
            another optimizer (a ``KeyError`` that is also a ``ValueError``).

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> w = np.ones(2)
        >>> opt = optcore.Adam([w])
        >>> opt.step([np.ones(2)])
        >>> restored = optcore.Adam([w.copy()])
        >>> restored.load_state_dict(opt.state_dict())
        >>> restored.state[0]["step"]
        1
        """
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
        if "storage" in state_dict:
            # the saving optimizer's storage: states are converted to this one's
            saved_storage = state_dict["storage"]
            if not isinstance(saved_storage, dict) or set(saved_storage) - set(STORAGE_OPTIONS):
                raise ValueError(f"state_dict['storage'] must be a dict of "
                                 f"{sorted(STORAGE_OPTIONS)}, got {saved_storage!r}")
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
            check_loaded_group(saved, g, self.defaults,
                               {*self.defaults, *self._rules.spec.options,
                                *self._rules.spec.fixed}, type(self).__name__)
            new = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            if isinstance(new.get("betas"), list):
                new["betas"] = tuple(new["betas"])
            self._check_hyper(new, f"loaded param group {g}")
            new["params"] = group["params"]
            new_groups.append(new)

        # Check every state entry against its parameter.
        scalar_names = set(self._rules.scalars)
        implied = scalar_names - set(self._rules.spec.scalars)
        storage = self._storage
        entries: dict[tuple[int, int], StateEntry] = {}   # (g, j) -> {key: value}
        for idx, saved in saved_state.items():
            if idx not in where:
                raise ValueError(f"loaded state has an entry for parameter {idx!r}, which "
                                 f"no loaded param_group lists")
            g, j = where[idx]
            p = self.param_groups[g]["params"][j]
            label = f"loaded state of parameter {idx!r}"
            if not isinstance(saved, dict):
                raise TypeError(f"{label} must be a dict, got {type(saved).__name__}")
            if "step" in implied and "step" not in saved:
                saved = {**saved, "step": 1}     # SGD's count: not a first step
            keys = state_keys(saved)
            check_loaded_state_keys(keys, label,
                                    set(self._buffers(new_groups[g])) | scalar_names,
                                    set(self._rules.state_keys) | scalar_names
                                    | set(EXTRA_KEYS), type(self).__name__)
            entry: Any = {}
            for key in keys:
                if key in scalar_names:
                    entry[key] = _load_scalar(key, saved[key], label)
                elif self._rules.tiled:
                    value = loaded_value(saved, key, p, label,
                                         self._rules.unsigned.get(key, False))
                    if key not in EXTRA_KEYS or key in storage.extras(p):
                        entry[key] = value
                else:
                    value = saved[key]
                    if not isinstance(value, np.ndarray):
                        raise TypeError(f"{label}: {key!r} must be a NumPy array, got "
                                        f"{type(value).__name__}")
                    _check_like(value, p, f"{label}: {key!r}")
                    entry[key] = value
            entries[g, j] = entry

        # Build the new arenas and state, then swap them in.
        new_arenas: list[Arenas] = [{} for _ in self.param_groups]
        new_state: dict[int, StateEntry] = {}
        for g, group in enumerate(new_groups):
            layout = self._layouts[g]
            kinds = {k for (gg, _), e in entries.items() if gg == g
                     for k in e if k not in scalar_names and k not in EXTRA_KEYS}
            for kind in sorted(kinds):
                for dt, total in layout.totals.items():
                    arena = _aligned_empty(total, dt)
                    arena.fill(self._fill(kind, group) if dt != np.uint8 else 0)
                    new_arenas[g][kind, dt] = arena
            for j, p in enumerate(group["params"]):
                entry = entries.get((g, j))
                if entry is None:
                    continue
                off, dt = layout.offsets[j], layout.dtypes[j]
                st = {}
                for key, value in entry.items():
                    if key in scalar_names:
                        st[key] = value
                    elif key in EXTRA_KEYS:
                        st[key] = np.array(value, copy=True)
                    else:
                        view = new_arenas[g][key, dt][off:off + p.size].reshape(p.shape)
                        st[key] = store_into(view, value, self._rules.unsigned[key])
                for key in storage.extras(p):
                    if key not in st:
                        st[key] = storage.new_extra(key, p)
                new_state[self._starts[g] + j] = st

        self._arenas = new_arenas
        self._ready = [set() for _ in new_arenas]   # views get attached on the next step
        self._hyper_cache = [None] * len(self.param_groups)
        self._calls = [None] * len(self.param_groups)
        self._state = new_state
        for group, new in zip(self.param_groups, new_groups):
            group.clear()
            group.update(new)
        if self._rules.eager:
            for g in range(len(self.param_groups)):
                self._init_group_state(g)
