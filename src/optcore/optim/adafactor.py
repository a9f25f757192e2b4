"""optcore.Adafactor: torch.optim.Adafactor for NumPy parameters, over
``optcore.adafactor_step`` (the rules: ``optcore.optim._adafactor``)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from optcore.kernels.adafactor import adafactor_step
from optcore.optim._groups import GroupedOptimizer
from optcore.optim._adafactor import (OPTION_NAMES, STATE_DTYPES, check_options,
                                      kernel_options, state_shapes)
from optcore.optim._storage import Storage
from optcore.precision import machine_eps

__all__ = ["Adafactor"]


class Adafactor(GroupedOptimizer):
    """Adafactor over NumPy arrays, with torch.optim.Adafactor's arguments and rule.

    Each step, per parameter with a gradient: the step size is
    ``min(lr, 1 / sqrt(step)) * max(eps2, RMS(param))``; a parameter of 2 or
    more dimensions keeps factored second moments of its last two dimensions
    (``row_var`` of shape ``p.shape[:-1] + (1,)`` and ``col_var`` of shape
    ``p.shape[:-2] + (1, p.shape[-1])``: O(n + m) for an n x m matrix), a
    0-D or 1-D one a full ``variance``; the update ``grad / sqrt(V)`` is
    scaled down to an RMS of at most ``d``; the weight decay is decoupled.
    One ``optcore.adafactor_step`` call per group. torch's signature,
    defaults, checks, state keys (``step``, ``row_var``, ``col_var``,
    ``variance``) and state_dict layout.

    bfloat16 (``ml_dtypes.bfloat16``) and float16 parameters step in float32
    with float32 states (their gradients float32, bfloat16 or float16), and
    take the keyword-only options of the other classes (docs/classes.md,
    "Low precision and 8-bit states"): ``master_weights`` (state
    ``master_param``), ``rounding`` (``"stochastic"``: a seed per parameter
    from ``seed``; ``"kahan"``: state ``compensation``); ``state_dtype`` is
    None or ``"float32"`` (its factored states are small).

    Parameters
    ----------
    params : iterable
        NumPy arrays (float32, float64, bfloat16 or float16, C-contiguous,
        writeable) or parameter-group dicts with a ``"params"`` list.
    lr : float, default 1e-2
        The learning rate (the cap of the relative step size).
    beta2_decay : float, default -0.8
        The second moments' weight at step t is ``t ** beta2_decay``.
    eps : tuple, default (None, 1e-3)
        ``(eps1, eps2)``: the variance estimate's denominator bound (None:
        the machine epsilon of the group's first parameter's dtype, as
        torch) and the lower bound of the parameter RMS in the step size.
    d : float, default 1.0
        Clipping threshold of the update's RMS.
    weight_decay : float, default 0.0
        Decoupled weight decay.
    foreach : bool or None, default None
        Accepted for torch's signature; no effect.
    maximize : bool, default False
        Ascend instead of descend.
    state_dtype : {None, "float32"}, default None
        The states' storage: None keeps float32/float64 parameters' dtype and
        float32 for bfloat16/float16 ones.
    master_weights : bool, default False
        bfloat16/float16 parameters: step a float32 copy (state
        ``master_param``) and write the parameter from it.
    rounding : {"nearest", "stochastic", "kahan"}, default "nearest"
        How a bfloat16/float16 parameter without master weights is rounded.
    seed : int, default 0
        The stochastic rounding's seed.

    Raises
    ------
    TypeError
        A parameter that is not a float32/float64/bfloat16/float16 NumPy
        array, or ``state_dtype`` other than None or ``"float32"``.
    ValueError
        A bad option (torch's messages), no parameters, a parameter that is
        not C-contiguous and writable or overlaps another, or one given twice.

    See Also
    --------
    optcore.adafactor_step : The function of one step.
    optcore.torch.Adafactor : The same optimizer for torch tensors.

    Examples
    --------
    >>> import numpy as np, optcore
    >>> w = np.ones((2, 3))
    >>> opt = optcore.Adafactor([w])
    >>> opt.step([np.full((2, 3), 0.5)])
    >>> w.round(4).tolist()
    [[0.99, 0.99, 0.99], [0.99, 0.99, 0.99]]
    >>> sorted(opt.state[0])
    ['col_var', 'row_var', 'step']
    """

    _options = OPTION_NAMES
    _mixed = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, *, foreach: bool | None = None,
                 maximize: bool = False, state_dtype: str | None = None,
                 master_weights: bool = False, rounding: str = "nearest",
                 seed: int = 0) -> None:
        self._storage = Storage(state_dtype, master_weights, rounding, seed,
                                state_dtypes=STATE_DTYPES, owner="Adafactor")
        super().__init__(params, {
            "lr": lr, "beta2_decay": beta2_decay, "eps": eps, "d": d,
            "weight_decay": weight_decay, "foreach": foreach, "maximize": maximize})

    def _check_param(self, p: Any, index: int) -> None:
        self._storage.check_param(p, f"parameter {index}")

    def _new_state(self, p: np.ndarray) -> dict[str, Any]:
        sd = self._storage.state_dtype_of(p)
        state: dict[str, Any] = {"step": 0, **{
            k: np.zeros(s, sd) for k, s in state_shapes(p.shape).items()}}
        for key in self._storage.extras(p):
            state[key] = self._storage.new_extra(key, p)
        return state

    def _check_group(self, group: dict[str, Any]) -> None:
        check_options(group["lr"], group["beta2_decay"], group["eps"], group["d"],
                      group["weight_decay"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (options not given take the defaults).

        Parameters
        ----------
        param_group : dict
            ``{"params": [arrays], **options}``.

        Raises
        ------
        ValueError
            A bad option, an unknown key, or a parameter already present.

        Examples
        --------
        >>> import numpy as np, optcore
        >>> opt = optcore.Adafactor([np.zeros((2, 2))])
        >>> opt.add_param_group({"params": [np.zeros(3)], "lr": 0.5})
        >>> [g["lr"] for g in opt.param_groups]
        [0.01, 0.5]
        """
        self._add_group(param_group)

    def step(self, grads: Sequence[Any]) -> None:
        """Take one Adafactor step for every parameter with a gradient.

        Parameters
        ----------
        grads : list of numpy.ndarray or list of lists
            One gradient per parameter in order over all groups (or one list
            per group); ``None`` skips its parameter, as a missing ``.grad``
            does in torch.

        Raises
        ------
        TypeError
            A gradient that is not an array or has another dtype than its
            parameter (float32, bfloat16 and float16 gradients go with
            float32, bfloat16 and float16 parameters).
        ValueError
            Gradients that do not match the parameters, or that are not
            C-contiguous; nothing is changed then.

        Examples
        --------
        >>> import numpy as np, optcore
        >>> b = np.ones(2)
        >>> opt = optcore.Adafactor([b], lr=0.1)
        >>> opt.step([np.ones(2)])
        >>> opt.state[0]["step"], opt.state[0]["variance"].tolist()
        (1, [1.0, 1.0])
        """
        grads = self._grads(grads)
        # the kernel's layout rule, checked for every gradient before the
        # first of the step's calls (one per step count and stochastically
        # rounded parameter) writes
        for j, g in enumerate(grads):
            if g is not None and not (g.flags.c_contiguous and g.flags.aligned):
                raise ValueError(f"gradient {j} must be C-contiguous and aligned")
        idx = 0
        calls = []
        for group in self.param_groups:
            chosen: list[tuple[int, np.ndarray, np.ndarray]] = []
            for p in group["params"]:
                if grads[idx] is not None:
                    chosen.append((idx, p, grads[idx]))
                idx += 1
            if chosen:
                calls.append((group, chosen))
        index = {id(p): i for i, p in enumerate(self._params())}
        for group, chosen in calls:
            eps1 = group["eps"][0]
            if eps1 is None:            # torch: the first parameter's dtype
                eps1 = machine_eps(chosen[0][1].dtype)
            # one call per step count (every parameter has its own), and per
            # stochastically rounded parameter (its own seed)
            by_call: dict[tuple[int, Any, Any], list[tuple[int, np.ndarray, np.ndarray]]] = {}
            for i, p, g in chosen:
                state = self.state.get(i)
                if state is None:
                    state = self.state[i] = self._new_state(p)
                rounding, seed = self._storage.call_options(p, index[id(p)])
                by_call.setdefault((state["step"] + 1, rounding, seed), []).append((i, p, g))
            for (step, rounding, seed), items in by_call.items():
                sts = [self.state[i] for i, _, _ in items]
                extra: dict[str, Any] = {}
                if any("master_param" in s for s in sts):
                    extra["master_param"] = [s.get("master_param") for s in sts]
                if rounding != "nearest":
                    extra["rounding"] = rounding
                if rounding == "kahan":
                    extra["compensation"] = [s.get("compensation") for s in sts]
                if seed is not None:
                    extra["seed"] = seed
                adafactor_step([p for _, p, _ in items], [g for _, _, g in items],
                               [s.get("row_var") for s in sts], [s.get("col_var") for s in sts],
                               [s.get("variance") for s in sts], step=step,
                               **kernel_options(group, eps1), **extra)
                for s in sts:
                    s["step"] = step

    def zero_state(self) -> None:
        """Forget the state (the next step starts afresh).

        Examples
        --------
        >>> import numpy as np, optcore
        >>> opt = optcore.Adafactor([np.zeros(2)])
        >>> opt.step([np.ones(2)])
        >>> opt.zero_state()
        >>> len(opt.state)
        0
        """
        self.state = {}

    def state_dict(self) -> dict[str, Any]:
        """Return the state and groups in torch.optim's state_dict layout.

        Returns
        -------
        dict
            ``{"state": {index: {"step": int, "row_var"/"col_var" or
            "variance": array}}, "param_groups": [{options..., "params":
            [indices]}]}`` (copies).

        Examples
        --------
        >>> import numpy as np, optcore
        >>> opt = optcore.Adafactor([np.zeros((2, 2)), np.zeros(3)])
        >>> opt.step([None, np.ones(3)])
        >>> sd = opt.state_dict()
        >>> list(sd["state"]), sd["param_groups"][0]["params"]
        ([1], [0, 1])
        """
        groups, n = [], 0
        for g in self.param_groups:
            groups.append({**{k: copy.deepcopy(g[k]) for k in OPTION_NAMES},
                           "params": list(range(n, n + len(g["params"])))})
            n += len(g["params"])
        return {"state": copy.deepcopy(self.state), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of this layout (or torch.optim.Adafactor's).

        Parameters
        ----------
        state_dict : dict
            As :meth:`state_dict` returns it; buffers are copied into new
            arrays of their parameters' dtype (torch CPU tensors are accepted).

        Raises
        ------
        ValueError
            Groups that do not match, a missing or foreign key, or a buffer of
            the wrong shape; nothing is changed then.

        Examples
        --------
        >>> import numpy as np, optcore
        >>> opt = optcore.Adafactor([np.zeros((2, 2))], lr=0.02)
        >>> opt.step([np.ones((2, 2))])
        >>> twin = optcore.Adafactor([np.zeros((2, 2))])
        >>> twin.load_state_dict(opt.state_dict())
        >>> twin.param_groups[0]["lr"], twin.state[0]["col_var"].shape
        (0.02, (1, 2))
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(mine["params"])
                for g, mine in zip(groups, self.param_groups)):
            raise ValueError("loaded state dict's groups do not match the optimizer's")
        for g in groups:
            missing = [k for k in OPTION_NAMES if k not in g]
            if missing:
                raise ValueError(f"loaded state dict's parameter group lacks {missing}")
            self._check_group(g)
        params = self._params()
        state: dict[int, dict[str, Any]] = {}
        for key, entry in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"loaded state dict has state for parameter {i}, "
                                 f"the optimizer has {len(params)}")
            p = params[i]
            shapes = state_shapes(p.shape)
            extras = self._storage.extras(p)
            keys = set(entry)
            if not {"step", *shapes} <= keys <= {"step", *shapes, *extras}:
                raise ValueError(f"loaded state entry {key!r} has keys {sorted(keys)}, "
                                 f"expected {sorted({'step', *shapes, *extras})}")
            new: dict[str, Any] = {"step": int(float(entry["step"]))}
            sd = self._storage.state_dtype_of(p)
            for name, shape in shapes.items():
                value = np.array(_numpy(entry[name]), dtype=sd)        # a copy
                if value.shape != shape:
                    raise ValueError(f"{name} of parameter {i} has shape {value.shape}, "
                                     f"expected {shape}")
                new[name] = value
            for name in extras:
                # a checkpoint without them (torch.optim's): made as at the first step
                if name not in entry:
                    new[name] = self._storage.new_extra(name, p)
                    continue
                dtype = np.float32 if name == "master_param" else p.dtype
                value = np.array(_numpy(entry[name]), dtype=dtype)
                if value.shape != p.shape:
                    raise ValueError(f"{name} of parameter {i} has shape {value.shape}, "
                                     f"expected {p.shape}")
                new[name] = value
            state[i] = new
        for g, mine in zip(groups, self.param_groups):
            mine.update({k: copy.deepcopy(g[k]) for k in OPTION_NAMES})
        self.state = state

    def __repr__(self) -> str:
        lines = [f"Adafactor ({len(self.param_groups)} groups"]
        for g, group in enumerate(self.param_groups):
            options = ", ".join(f"{k}={group[k]!r}" for k in OPTION_NAMES)
            lines.append(f"  group {g}: {len(group['params'])} parameters, {options}")
        return "\n".join(lines) + ")"




def _numpy(value: Any) -> Any:
    """A loaded state value as NumPy takes it: a torch tensor (bfloat16
    included, through float32) as an array; anything else as it is."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return value
