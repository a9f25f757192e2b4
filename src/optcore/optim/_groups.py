"""Parameter groups of the NumPy optimizers that are not spec entries
(Adafactor, Muon, SparseAdam): the constructor's and ``add_param_group``'s
checks, and the gradient list of a step, written once.

A subclass names its options (``_options``) and checks a parameter
(``_check_param``: beyond what every optimizer checks, ``_check_params``'s
array type, dtype, layout and memory, or with ``_any_strides`` only the
type, dtype and writability) and a whole group's options
(``_check_group``), with torch's messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from optcore.optim._checks import _check_params, _check_strided_params
from optcore.precision import is_bfloat16

__all__ = ["GroupedOptimizer"]


class GroupedOptimizer:
    """Groups of NumPy parameters, each with its copy of every option."""

    # the options a group holds, in torch's order
    _options: ClassVar[tuple[str, ...]] = ()
    # the class moves a parameter in place at any strides (Muon): no
    # C-contiguity or alignment asked of it
    _any_strides: ClassVar[bool] = False
    # the class's kernel takes bfloat16/float16 parameters, and gradients of
    # another float dtype than their parameter (Adafactor)
    _mixed: ClassVar[bool] = False

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self._check_group(defaults)
        if isinstance(params, np.ndarray):
            raise TypeError("params argument given to the optimizer should be an iterable "
                            "of arrays or dicts, but got an ndarray")
        items = list(params)
        if not items:
            raise ValueError("optimizer got an empty parameter list")
        groups = items if isinstance(items[0], dict) else [{"params": items}]
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        for group in groups:
            self._add_group(group)

    def _check_param(self, p: Any, index: int) -> None:
        """Raise if ``p`` (parameter ``index`` over all groups, a float32/float64
        array as ``_check_params`` takes it) is refused."""

    def _check_group(self, group: dict[str, Any]) -> None:
        """Raise if a group's (or the defaults') options are refused."""

    def _params(self) -> list[np.ndarray]:
        return [p for g in self.param_groups for p in g["params"]]

    def _add_group(self, param_group: dict[str, Any]) -> None:
        """``add_param_group``'s work: every check before the group is added."""
        unknown = set(param_group) - {"params", *self._options}
        if unknown:
            raise ValueError(f"unknown parameter-group keys: {sorted(unknown)}")
        arrays = param_group["params"]
        arrays = [arrays] if isinstance(arrays, np.ndarray) else list(arrays)
        existing = self._params()
        known = {id(p) for p in existing}
        start = len(known)
        for a in arrays:
            if id(a) in known:
                raise ValueError("some parameters appear in more than one parameter group")
            known.add(id(a))
        g = len(self.param_groups)
        labels = [f"parameter {i} (group {gg}, index {j})"
                  for i, (gg, j) in enumerate(
                      [(gg, j) for gg, gr in enumerate(self.param_groups)
                       for j in range(len(gr["params"]))]
                      + [(g, j) for j in range(len(arrays))])]
        if self._any_strides:
            _check_strided_params(arrays, labels[start:])
        else:
            _check_params(existing + arrays, labels, start, mixed=self._mixed)
        for j, a in enumerate(arrays):
            self._check_param(a, start + j)
        group = {"params": arrays,
                 **{k: param_group.get(k, self.defaults[k]) for k in self._options}}
        self._check_group(group)
        self.param_groups.append(group)

    def _grads(self, grads: Sequence[Any]) -> list[Any]:
        """One gradient (or None) per parameter over all groups, each checked
        against its parameter; one list per group is flattened first."""
        params = self._params()
        grads = list(grads)
        if grads and all(isinstance(g, (list, tuple)) for g in grads) \
                and len(grads) == len(self.param_groups):
            grads = [x for gs in grads for x in gs]
        if len(grads) != len(params):
            raise ValueError(f"step got {len(grads)} gradients for {len(params)} parameters")
        for j, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            if not isinstance(g, np.ndarray):
                raise TypeError(f"gradient {j} must be a numpy.ndarray")
            if g.shape != p.shape:
                raise ValueError(f"gradient {j} has shape {g.shape}, its parameter {p.shape}")
            if g.dtype != p.dtype and not (self._mixed and _mixed_grad(p.dtype, g.dtype)):
                raise TypeError(f"gradient {j} is {g.dtype}, its parameter {p.dtype}")
        return grads


def _mixed_grad(param: np.dtype[Any], grad: np.dtype[Any]) -> bool:
    """A gradient dtype a mixed-precision kernel takes for a float32,
    bfloat16 or float16 parameter: float32, bfloat16 or float16."""
    def low(dt: np.dtype[Any]) -> bool:
        return dt in (np.float32, np.float16) or is_bfloat16(dt)
    return low(param) and low(grad)
