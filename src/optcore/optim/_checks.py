"""Checks of the NumPy optimizers' inputs: parameters, state arrays, loaded
scalar state. Hyperparameters are checked by ``optcore.optim._options``."""

import numbers

import numpy as np

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Largest step count kept in state (the kernels take a 64-bit step).
_MAX_STEP = 2**62


def _check_param(p, label):
    if not isinstance(p, np.ndarray):
        raise TypeError(
            f"{label} is a {type(p).__module__}.{type(p).__name__}; optcore optimizers "
            f"update NumPy arrays in place (use optcore.torch for torch tensors)")
    if p.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{label} has dtype {p.dtype}; optcore optimizers take "
                        f"float32 or float64 parameters")
    if not p.flags.c_contiguous:
        raise ValueError(f"{label} is not C-contiguous; optcore updates parameters in "
                         f"place and never works on a copy (an update to a copy would "
                         f"be lost)")
    if not p.flags.writeable:
        raise ValueError(f"{label} is read-only; optcore updates parameters in place")
    if not p.flags.aligned:
        raise ValueError(f"{label} is not aligned to its {p.itemsize}-byte elements")


def _as_param_list(params, what):
    if isinstance(params, np.ndarray):
        return [params]
    if isinstance(params, (set, frozenset)):
        raise TypeError(f"{what} must be an ordered collection (list or tuple) of arrays; "
                        f"a set has no stable order")
    return list(params)


def _check_no_overlap(params):
    """No parameter may appear twice or share memory with another: both would
    be written by one native call."""
    spans = []
    seen = {}
    for i, p in enumerate(params):
        if id(p) in seen:
            raise ValueError(f"parameter {i} is the same array as parameter {seen[id(p)]}; "
                             f"a parameter may appear only once in an optimizer")
        seen[id(p)] = i
        if p.size:
            start = p.__array_interface__["data"][0]
            spans.append((start, start + p.nbytes, i))
    spans.sort()
    for (s0, e0, i), (s1, e1, j) in zip(spans, spans[1:]):
        if s1 < e0:
            raise ValueError(f"parameters {min(i, j)} and {max(i, j)} share memory; every "
                             f"parameter must be its own array (they are updated in place)")


def _check_like(a, p, what):
    """Array ``a`` has the dtype and shape of parameter ``p`` (``what`` names a)."""
    if a.dtype != p.dtype:
        raise TypeError(f"{what} has dtype {a.dtype} but the parameter has dtype "
                        f"{p.dtype}")
    if a.shape != p.shape:
        raise ValueError(f"{what} has shape {a.shape} but the parameter has shape {p.shape}")


def _check_state_array(a, p, kind, label):
    """A state array as the kernels take it for parameter ``p`` (users may
    put their own arrays into the state; they are updated in place)."""
    if type(a) is np.ndarray and a.dtype is p.dtype and a.size == p.size:
        flags = a.flags
        if flags.c_contiguous and flags.writeable and flags.aligned:
            return
    where = f"{label}, state {kind!r}"
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{where}: a {type(a).__module__}.{type(a).__name__}, not a NumPy "
                        f"array")
    if a.dtype != p.dtype:
        raise TypeError(f"{where}: dtype {a.dtype} but the parameter has dtype {p.dtype}")
    if a.size != p.size:
        raise ValueError(f"{where}: {a.size} elements but the parameter has {p.size}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{where}: not C-contiguous; optcore updates state in place and "
                         f"never works on a copy")
    if not a.flags.writeable:
        raise ValueError(f"{where}: read-only; optcore updates it in place")
    if not a.flags.aligned:
        raise ValueError(f"{where}: not aligned to its {a.itemsize}-byte elements")



def _load_scalar(key, value, label):
    """A scalar state value of a loaded state_dict, checked and converted."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if key == "step":
        ok = (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
              and 0 <= value < 2**62 and value == int(value))    # NaN/inf fail
        if not ok:
            raise ValueError(f"{label}: 'step' must be a non-negative integer, got "
                             f"{value!r}")
        return int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{label}: {key!r} must be a real number, got {value!r}")
    return float(value)
