"""Checks of the NumPy optimizers' inputs: parameters, loaded scalar state;
and the keys of a loaded state_dict (shared with optcore.torch, so both
class layers refuse the same state_dict with the same message).
Buffers are checked by the kernels' own binding (``optcore.kernels._buffers``);
hyperparameters by ``optcore.optim._options``."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from optcore.kernels._buffers import check_calls
from optcore.optim._options import ALL_OPTIONS

# Largest step count kept in state (the kernels take a 64-bit step).
_MAX_STEP = 2**62

# A parameter as a kernel call takes it (names and roles of check_calls).
_PARAM = ("param",)
_WRITE = ("write",)


def _check_params(params: Sequence[Any], labels: Sequence[str], first_new: int = 0,
                  mixed: bool = False) -> None:
    """All parameters of an optimizer (``params[first_new:]`` the ones being
    added), named by ``labels``: NumPy arrays, each its own array, and each
    as a kernel call takes it (``check_calls``: float32/float64,
    C-contiguous, writable, aligned, sharing no memory with another)."""
    for p, label in zip(params[first_new:], labels[first_new:]):
        if not isinstance(p, np.ndarray):
            raise _not_an_array(p, label)
    # The optimizer finds a parameter's state by identity: one array, one index.
    seen: dict[int, int] = {}
    for i, p in enumerate(params):
        if id(p) in seen:
            raise ValueError(f"parameter {i} is the same array as parameter {seen[id(p)]}; "
                             f"a parameter may appear only once in an optimizer")
        seen[id(p)] = i
    # One call per parameter: parameters of one optimizer may differ in dtype.
    check_calls([(_PARAM, (p,), _WRITE, (label,)) for p, label in zip(params, labels)],
                mixed=mixed)


def _check_strided_params(params: Sequence[Any], labels: Sequence[str]) -> None:
    """Parameters of a class that moves them in place at any strides (LBFGS,
    Muon: NumPy operations on the array itself, never a copy): writable
    float32/float64 NumPy arrays."""
    for p, label in zip(params, labels):
        if not isinstance(p, np.ndarray):
            raise _not_an_array(p, label)
        if p.dtype not in (np.float32, np.float64):
            raise TypeError(f"{label} has dtype {p.dtype}; optcore kernels take float32 or "
                            f"float64")
        if not p.flags.writeable:
            raise ValueError(f"{label} is read-only; optcore updates it in place")


def _not_an_array(p: Any, label: str) -> TypeError:
    return TypeError(f"{label} is a {type(p).__module__}.{type(p).__name__}; optcore "
                     f"optimizers update NumPy arrays in place (use optcore.torch for "
                     f"torch tensors)")


def _as_param_list(params: np.ndarray | Iterable[Any], what: str) -> list[Any]:
    if isinstance(params, np.ndarray):
        return [params]
    if isinstance(params, (set, frozenset)):
        raise TypeError(f"{what} must be an ordered collection (list or tuple) of arrays; "
                        f"a set has no stable order")
    return list(params)


def _check_like(a: np.ndarray, p: np.ndarray, what: str) -> None:
    """Array ``a`` (a loaded state value) has the dtype and shape of parameter
    ``p`` (``what`` names a)."""
    if a.dtype != p.dtype:
        raise TypeError(f"{what} has dtype {a.dtype} but the parameter has dtype "
                        f"{p.dtype}")
    _check_shape(a, p, what)


def _check_shape(a: np.ndarray, p: np.ndarray, what: str) -> None:
    """Array ``a`` has the shape of parameter ``p`` (``what`` names a); the
    kernels check only its size (and its dtype, layout and memory)."""
    if a.shape != p.shape:
        raise ValueError(f"{what} has shape {a.shape} but the parameter has shape {p.shape}")


def _load_scalar(key: str, value: Any, label: str) -> int | float:
    """A scalar state value of a loaded state_dict, checked and converted."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if key == "step":
        ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
              and 0 <= value < _MAX_STEP    # type: ignore[operator]
              and value == int(value))    # type: ignore[call-overload]  # NaN/inf fail
        if not ok:
            raise ValueError(f"{label}: 'step' must be a non-negative integer, got "
                             f"{value!r}")
        return int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{label}: {key!r} must be a real number, got {value!r}")
    return float(value)


class StateDictKeyError(KeyError, ValueError):
    """A loaded state_dict lacks a key its optimizer needs: a KeyError, as
    torch.optim raises for it, and a ValueError, as for any other invalid
    state_dict. Its message is printed as it is (not quoted as a key)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def check_loaded_group(saved: Mapping[str, Any], g: int, required: Iterable[str],
                       own: Iterable[str], owner: str) -> None:
    """Loaded param group ``g`` has every option in ``required`` and no
    option of another optimizer (one in no ``own``); ``owner`` names the
    class. A state_dict of another optimizer fails here."""
    where = f"loaded param group {g}"
    for name in required:
        if name not in saved:
            raise StateDictKeyError(
                f"{where}: missing hyperparameter {name!r} ({owner} needs it; is this "
                f"the state_dict of another optimizer?)")
    own = set(own)
    foreign = sorted(k for k in saved if k in ALL_OPTIONS and k not in own)
    if foreign:
        raise ValueError(f"{where}: {foreign} are not options of {owner} (is this the "
                         f"state_dict of another optimizer?)")


def check_loaded_state_keys(keys: Iterable[Any], label: str, needed: Iterable[Any],
                            allowed: Iterable[Any], owner: str) -> None:
    """A loaded per-parameter state (its ``keys``) has every key in
    ``needed`` and none outside ``allowed``; ``label`` names it."""
    keys = set(keys)
    missing = set(needed) - keys
    if missing:
        raise StateDictKeyError(f"{label} lacks {sorted(missing)} (needed by {owner} with "
                                f"these options)")
    extra = keys - set(allowed)
    if extra:
        raise ValueError(f"{label} has unknown keys {sorted(map(str, extra))} ({owner} "
                         f"state keys: {sorted(allowed)})")
