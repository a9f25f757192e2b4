"""The inputs of the sharded optimizer, checked on each rank (the ranks then
agree on the outcome): the parameter groups and each step's gradients."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from optcore.optim._checks import _as_param_list


def user_groups(params: Iterable[Any]) -> list[dict[str, Any]]:
    if isinstance(params, (np.ndarray, dict)):
        raise TypeError("params must be an iterable of arrays or of dicts (parameter "
                        "groups), as for the single-process optimizers")
    groups = _as_param_list(params, "params")
    if not groups:
        raise ValueError("optimizer got an empty parameter list")
    if not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    out = []
    for g, group in enumerate(groups):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"parameter group {g} must be a dict with 'params'")
        out.append({**group, "params": _as_param_list(group["params"], "params")})
    return out


def checked_grads(params: list[list[np.ndarray]], grads: Any,
                  check_finite: bool) -> list[list[np.ndarray]]:
    """``grads`` (one array per parameter, or one list per group) as one
    list per group, every gradient checked against its parameter."""
    sizes = [len(ps) for ps in params]
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"grads must be a list of arrays (one per parameter) or of "
                        f"lists (one per group), got {type(grads).__name__}")
    if (len(grads) == len(sizes) and len(grads) > 0
            and all(isinstance(gs, (list, tuple)) for gs in grads)):
        per_group = [list(gs) for gs in grads]
    else:
        if len(grads) != sum(sizes):
            raise ValueError(f"grads has {len(grads)} entries but the optimizer has "
                             f"{sum(sizes)} parameters")
        per_group, pos = [], 0
        for n in sizes:
            per_group.append(list(grads[pos:pos + n]))
            pos += n
    index = 0
    for g, (ps, gs) in enumerate(zip(params, per_group)):
        if len(gs) != len(ps):
            raise ValueError(f"grads for group {g} has {len(gs)} entries but the group "
                             f"has {len(ps)} parameters")
        for j, (p, gr) in enumerate(zip(ps, gs)):
            label = f"the grad of parameter {index + j} (group {g}, index {j})"
            if gr is None:
                raise ValueError(f"{label} is missing (None): every parameter needs a "
                                 f"gradient on every rank (pass zeros)")
            if not isinstance(gr, np.ndarray):
                raise TypeError(f"{label} is a {type(gr).__name__}, not a NumPy array")
            if gr.dtype != p.dtype:
                raise TypeError(f"{label} has dtype {gr.dtype} but the parameter has "
                                f"{p.dtype}")
            if gr.shape != p.shape:
                raise ValueError(f"{label} has shape {gr.shape} but the parameter has "
                                 f"{p.shape}")
            if check_finite and not np.isfinite(gr).all():
                raise FloatingPointError(f"{label} is not finite (NaN or infinity)")
        index += len(ps)
    return per_group
