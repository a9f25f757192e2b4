"""optcore.Muon: torch.optim.Muon over NumPy 2-D arrays (the rules and the
Newton–Schulz iteration: ``optcore.optim._muon``)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from optcore.optim._groups import GroupedOptimizer
from optcore.optim._muon import (
    OPTION_NAMES, adjust_lr, apply_update, check_ns_options, check_options,
    momentum_update, newton_schulz)

__all__ = ["Muon"]


class Muon(GroupedOptimizer):
    """Muon over NumPy 2-D arrays, with torch.optim.Muon's arguments and rules.

    Each step, per parameter with a gradient: the momentum buffer becomes
    ``lerp(buf, grad, 1 - momentum)``; the update is ``lerp(grad, buf,
    momentum)`` with Nesterov, else the buffer; it is orthogonalized by
    ``ns_steps`` Newton–Schulz iterations with ``ns_coefficients`` (in
    bfloat16, as torch does, through NumPy's float32 matmul); then the
    parameter decays, ``p *= 1 - lr * weight_decay``, and moves by the
    orthogonalized update times the adjusted learning rate (``adjust_lr_fn``:
    ``"original"``, ``sqrt(max(1, rows / cols))``, or ``"match_rms_adamw"``,
    ``0.2 * sqrt(max(rows, cols))``). The parameters are updated in place.
    The state has torch's key ``momentum_buffer``. The elementwise parts are
    two native one-pass kernels (``optcore.muon_momentum`` before the
    iterations, ``optcore.muon_apply`` for the decay and the step after),
    with torch's operation order and fused multiply-adds.

    Parameters
    ----------
    params : iterable of numpy.ndarray or dict
        The parameters (writeable float32 or float64 2-D arrays), or groups:
        dicts with ``params`` and any option below.
    lr : float, default 1e-3
        The learning rate before adjustment.
    weight_decay : float, default 0.1
        Decoupled weight decay.
    momentum : float, default 0.95
        The momentum factor.
    nesterov : bool, default True
        Nesterov momentum.
    ns_coefficients : tuple of 3 floats, default (3.4445, -4.775, 2.0315)
        The quintic's coefficients ``(a, b, c)``.
    eps : float, default 1e-7
        The smallest norm the update is divided by.
    ns_steps : int, default 5
        Newton–Schulz iterations (fewer than 100).
    adjust_lr_fn : {None, "original", "match_rms_adamw"}, default None
        The learning-rate adjustment (None is ``"original"``).

    Raises
    ------
    TypeError
        A parameter that is not a float32/float64 NumPy array.
    ValueError
        With torch's messages: a negative ``lr``, ``momentum`` or
        ``weight_decay``, an unknown ``adjust_lr_fn``, a parameter that is not
        2-D; also no parameters, parameters that are not C-contiguous and
        writeable or overlap another, or a parameter given twice.

    See Also
    --------
    optcore.torch.Muon : The same optimizer for torch tensors.

    Examples
    --------
    >>> import numpy as np
    >>> import optcore
    >>> w = np.zeros((2, 3))
    >>> opt = optcore.Muon([w], lr=0.1, weight_decay=0.0)
    >>> opt.step([np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])])
    >>> np.round(w, 1).tolist()
    [[-0.1, 0.0, 0.0], [0.0, -0.1, 0.0]]
    """

    _options = OPTION_NAMES
    _any_strides = True          # the kernels and NumPy step any strided view in place

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True,
                 ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
                 eps: float = 1e-7, ns_steps: int = 5,
                 adjust_lr_fn: str | None = None) -> None:
        super().__init__(params, {
            "lr": lr, "weight_decay": weight_decay, "momentum": momentum,
            "nesterov": nesterov, "ns_coefficients": ns_coefficients, "eps": eps,
            "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn})

    def _check_param(self, p: Any, index: int) -> None:
        if p.ndim != 2:
            raise ValueError("Muon only supports 2D parameters whereas we found a parameter "
                             f"with size: {p.shape}")

    def _check_group(self, group: dict[str, Any]) -> None:
        check_options(group["lr"], group["weight_decay"], group["momentum"],
                      group["adjust_lr_fn"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters, with its own options.

        Parameters
        ----------
        param_group : dict
            ``params`` (an array or a list of arrays) and any option; missing
            options take the constructor's values.

        Raises
        ------
        TypeError
            If a parameter is not a float32/float64 NumPy array.
        ValueError
            If a parameter is not a writeable, C-contiguous 2-D array, is
            already in a group, or an option is unknown.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.Muon([np.zeros((2, 2))])
        >>> opt.add_param_group({"params": [np.zeros((3, 2))], "lr": 0.02})
        >>> [g["lr"] for g in opt.param_groups]
        [0.001, 0.02]
        """
        self._add_group(param_group)

    def step(self, grads: Sequence[Any]) -> None:
        """Take one Muon step for every parameter with a gradient.

        Parameters
        ----------
        grads : list of numpy.ndarray or list of lists
            One gradient per parameter in order over all groups (or one list
            per group); ``None`` skips its parameter, as a missing ``.grad``
            does in torch.

        Raises
        ------
        TypeError
            If a gradient is not an array or has another dtype than its
            parameter.
        ValueError
            If the gradients do not match the parameters, or a group's
            ``ns_steps`` / ``ns_coefficients`` is refused (torch's messages);
            nothing is changed then.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> w = np.ones((2, 2))
        >>> opt = optcore.Muon([w], lr=0.5, weight_decay=0.0)
        >>> opt.step([np.ones((2, 2))])
        >>> opt.state[0]["momentum_buffer"].round(2).tolist()
        [[0.05, 0.05], [0.05, 0.05]]
        """
        grads = self._grads(grads)
        for group in self.param_groups:
            check_ns_options(group["ns_coefficients"], group["ns_steps"])
        idx = 0
        for group in self.param_groups:
            lr, wd = float(group["lr"]), group["weight_decay"]
            for p in group["params"]:
                g = grads[idx]
                if g is not None:
                    entry = self.state.setdefault(idx, {})
                    if "momentum_buffer" not in entry:
                        entry["momentum_buffer"] = np.zeros_like(p)
                    update = momentum_update(entry["momentum_buffer"], g,
                                             group["momentum"], group["nesterov"])
                    ortho = newton_schulz(update, group["ns_coefficients"],
                                          group["ns_steps"], group["eps"])
                    apply_update(p, ortho, adjust_lr(lr, group["adjust_lr_fn"], p.shape),
                                 1 - lr * wd)
                idx += 1

    def zero_state(self) -> None:
        """Forget the momentum buffers (the next step starts afresh).

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.Muon([np.zeros((2, 2))])
        >>> opt.step([np.ones((2, 2))])
        >>> opt.zero_state()
        >>> len(opt.state)
        0
        """
        self.state = {}

    def state_dict(self) -> dict[str, Any]:
        """Return a deep copy of the state and options, in torch.optim's layout.

        Returns
        -------
        dict
            ``{"state": {index: {"momentum_buffer": array}}, "param_groups":
            [{options..., "params": [indices]}]}``.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.Muon([np.zeros((2, 2)), np.zeros((3, 2))])
        >>> opt.step([None, np.ones((3, 2))])
        >>> sd = opt.state_dict()
        >>> list(sd["state"]), sd["param_groups"][0]["params"]
        ([1], [0, 1])
        """
        groups, start = [], 0
        for group in self.param_groups:
            saved = {k: copy.deepcopy(group[k]) for k in OPTION_NAMES}
            saved["params"] = list(range(start, start + len(group["params"])))
            start += len(group["params"])
            groups.append(saved)
        return {"state": copy.deepcopy(self.state), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state (as ``state_dict`` returns it, or torch.optim.Muon's).

        Parameters
        ----------
        state_dict : dict
            The state and options to load; buffers are copied into new arrays
            of their parameters' dtype (torch CPU tensors are accepted).

        Raises
        ------
        ValueError
            If the groups or their sizes differ, a group lacks an option, or
            a buffer's shape is not its parameter's; nothing is changed then.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.Muon([np.zeros((2, 2))], lr=0.02)
        >>> opt.step([np.ones((2, 2))])
        >>> twin = optcore.Muon([np.zeros((2, 2))])
        >>> twin.load_state_dict(opt.state_dict())
        >>> twin.param_groups[0]["lr"], twin.state[0]["momentum_buffer"].shape
        (0.02, (2, 2))
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        params = [p for g in self.param_groups for p in g["params"]]
        options = []
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't "
                                 "match the size of optimizer's group")
            missing = [k for k in OPTION_NAMES if k not in saved]
            if missing:
                raise ValueError(f"loaded state dict's parameter group lacks {missing}")
            options.append({k: copy.deepcopy(saved[k]) for k in OPTION_NAMES})
        state: dict[int, dict[str, Any]] = {}
        for key, entry in state_dict["state"].items():
            idx = int(key)
            if not 0 <= idx < len(params):
                raise ValueError(f"loaded state dict has state for parameter {idx}, "
                                 f"the optimizer has {len(params)}")
            state[idx] = {}
            for name, value in entry.items():
                value = np.asarray(value).astype(params[idx].dtype)    # a copy
                if name == "momentum_buffer" and value.shape != params[idx].shape:
                    raise ValueError(f"momentum_buffer of parameter {idx} has shape "
                                     f"{value.shape}, its parameter {params[idx].shape}")
                state[idx][name] = value
        for group, opts in zip(self.param_groups, options):
            group.update(opts)
        self.state = state

    def __repr__(self) -> str:
        lines = [f"Muon ({len(self.param_groups)} groups"]
        for g, group in enumerate(self.param_groups):
            options = ", ".join(f"{k}={group[k]!r}" for k in OPTION_NAMES)
            lines.append(f"  group {g}: {len(group['params'])} parameters, {options}")
        return "\n".join(lines) + ")"

