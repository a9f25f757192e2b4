"""Type aliases shared by optcore's annotations.

Imported by the other modules only under ``typing.TYPE_CHECKING``: nothing
here runs when optcore is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ArrayLike", "FloatArray", "Buffers", "ArrayOrIterable", "StrPath",
           "LrFunction", "Optimizer", "FloatDType", "JSONDict", "Samples", "TimedCall"]

FloatArray: TypeAlias = NDArray[np.floating[Any]]
"""A float32 or float64 array (what the kernels take)."""

Buffers: TypeAlias = NDArray[Any] | Sequence[NDArray[Any]]
"""One buffer argument of a ``*_step`` function: one array or a list (tuple)
of arrays, one per tensor."""

ArrayOrIterable: TypeAlias = NDArray[Any] | Iterable[NDArray[Any]]
"""The gradient utilities' argument: one array, a list, or any iterable
(a generator is consumed once)."""

StrPath: TypeAlias = str | os.PathLike[str]
"""A file path, as ``open`` takes it."""

LrFunction: TypeAlias = Callable[[int], float]
"""A learning rate as a function of the scheduler step count."""

Optimizer: TypeAlias = Any
"""Anything with torch-like ``param_groups`` (a list of dicts with an "lr"
key): optcore's optimizers and ``torch.optim`` ones; checked at run time."""

JSONDict: TypeAlias = dict[str, Any]
"""A dict of JSON data: the bench's results, their sections and rows."""

Samples: TypeAlias = list[float]
"""Seconds per call, one value per sample, in the order taken (the bench)."""

TimedCall: TypeAlias = Callable[[int], float]
"""A timed callable of the bench: ``timed(number)`` makes ``number`` calls and
returns the seconds per call."""

FloatDType: TypeAlias = type[np.floating[Any]] | np.dtype[np.floating[Any]] | str
"""A float dtype as the bench takes it: ``np.float32``, its dtype or its name."""

ParamGroup: TypeAlias = dict[str, Any]
"""One entry of an optimizer's ``param_groups``: its options and ``"params"``."""

StateEntry: TypeAlias = dict[str, Any]
"""One parameter's state in a NumPy optimizer: scalars (``step``) and arrays."""

Kernel: TypeAlias = Callable[..., Any]
"""A functional ``*_step`` kernel, as the optimizer classes call it."""

KernelCall: TypeAlias = tuple[Any, ...]
"""One call as ``optcore.kernels._buffers.check_calls`` takes it:
``(names, objs, roles)`` or ``(names, objs, roles, labels)``."""

Arenas: TypeAlias = dict[tuple[str, np.dtype[Any]], NDArray[Any]]
"""A group's state arenas in a NumPy optimizer: (state kind, dtype) -> 1-D array."""
