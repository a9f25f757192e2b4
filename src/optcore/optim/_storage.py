"""Low-precision storage of the NumPy optimizers: the optimizer-wide options
``state_dtype``, ``master_weights``, ``rounding`` and ``seed``, how each
parameter's state is stored under them, and the dtype rule of a step's kernel
calls (checked before the first call runs).

- A parameter's state dtype (``state_dtype_of``): ``state_dtype=None`` keeps
  the parameter's dtype, except float16 parameters, whose states are float32
  (the kernels take no float16 state), and every low-precision parameter of
  a kernel whose states are float32 only (LAMB, ``Kernel.state_dtypes``); ``"int8"`` stores block-quantized
  states (``optcore.QuantizedState``) for tensors of at least
  ``optcore.precision.MIN_QUANTIZED_SIZE`` elements, float32 for smaller ones.
  float64 parameters keep float64 state (any other ``state_dtype`` raises).
- ``master_weights``, ``rounding`` apply to bfloat16/float16 parameters only;
  float32/float64 parameters are stepped as without them.
- Extra per-parameter state (own arrays, not arena views): ``master_param``
  (float32 copy of the parameter, made when its state is created) and
  ``compensation`` (Kahan summation, zeros of the parameter's dtype).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from optcore._spec import ROUNDINGS, STATE_DTYPES
from optcore.precision import (MIN_QUANTIZED_SIZE, QuantizedState, is_bfloat16,
                               parameter_seed)

__all__ = ["Storage", "STORAGE_OPTIONS", "EXTRA_KEYS", "check_call_dtypes", "to_float32"]

#: The constructor options, with their defaults.
STORAGE_OPTIONS: dict[str, Any] = {"state_dtype": None, "master_weights": False,
                                   "rounding": "nearest", "seed": 0}
#: Per-parameter state beyond the spec's kinds: kernel argument = state key.
EXTRA_KEYS = ("master_param", "compensation")

_F32, _F64, _F16, _U8 = (np.dtype(np.float32), np.dtype(np.float64),
                         np.dtype(np.float16), np.dtype(np.uint8))


def _low(dtype: np.dtype[Any]) -> bool:
    return dtype == _F16 or is_bfloat16(dtype)


def _name(dtype: Any) -> str:
    return "int8 (QuantizedState)" if dtype == "int8" else str(dtype)


class Storage:
    """The storage options of one optimizer, checked at construction."""

    __slots__ = ("state_dtype", "master_weights", "rounding", "seed", "default",
                 "float32_states")

    def __init__(self, state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0,
                 state_dtypes: tuple[str, ...] = STATE_DTYPES, owner: str = "") -> None:
        if state_dtype is not None and not isinstance(state_dtype, str):
            raise TypeError(f"state_dtype must be None or one of {STATE_DTYPES}, got "
                            f"{type(state_dtype).__name__}")
        if state_dtype is not None and state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be None or one of {STATE_DTYPES}, got "
                             f"{state_dtype!r}")
        if not isinstance(master_weights, (bool, np.bool_)):
            raise TypeError(f"master_weights must be a bool, got "
                            f"{type(master_weights).__name__}")
        if not isinstance(rounding, str):
            raise TypeError(f"rounding must be one of {ROUNDINGS}, got "
                            f"{type(rounding).__name__}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        if state_dtype is not None and state_dtype not in state_dtypes:
            raise TypeError(f"state_dtype={state_dtype!r}: {owner} keeps its states in "
                            f"{' or '.join(state_dtypes)}")
        if master_weights and rounding != "nearest":
            raise ValueError(f"rounding={rounding!r} with master_weights=True: with a "
                             f"float32 master copy the parameter is rounded to nearest "
                             f"from it (use rounding='nearest')")
        self.state_dtype: str | None = state_dtype
        self.master_weights: bool = bool(master_weights)
        self.rounding: str = rounding
        self.seed: int = int(seed)
        #: the kernel keeps float32 states only (Kernel.state_dtypes): the
        #: default for bfloat16 parameters is then float32
        self.float32_states: bool = tuple(state_dtypes) == ("float32",)
        #: all four options at their defaults
        self.default: bool = self.options() == STORAGE_OPTIONS

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any],
                       state_dtypes: tuple[str, ...] = STATE_DTYPES,
                       owner: str = "") -> Storage:
        return cls(**{k: arguments.get(k, v) for k, v in STORAGE_OPTIONS.items()},
                   state_dtypes=state_dtypes, owner=owner)

    def options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in STORAGE_OPTIONS}

    # -- per parameter --

    def check_param(self, p: np.ndarray, label: str) -> None:
        """The options against parameter ``p``'s dtype (at construction and
        add_param_group, before anything is written)."""
        dt = p.dtype
        if dt not in (_F32, _F64, _F16) and not is_bfloat16(dt):
            raise TypeError(f"{label} has dtype {dt}; optcore optimizers take float32, "
                            f"float64, bfloat16 or float16 parameters")
        if dt == _F64 and self.state_dtype is not None:
            raise TypeError(f"state_dtype={self.state_dtype!r}: {label} has dtype float64, "
                            f"whose state is float64 (the kernels take float64 buffers only "
                            f"with float64 params); use float32 parameters or "
                            f"state_dtype=None")

    def state_dtype_of(self, p: np.ndarray) -> np.dtype[Any]:
        """The dtype of ``p``'s state arrays (uint8: the codes of an int8 state)."""
        sd, dt = self.state_dtype, p.dtype
        if dt == _F64:
            return _F64
        if sd is None:
            return _F32 if dt == _F16 or self.float32_states else dt
        if sd == "float32":
            return _F32
        if sd == "bfloat16":
            if is_bfloat16(dt):
                return dt
            import ml_dtypes
            return np.dtype(ml_dtypes.bfloat16)
        return _U8 if p.size >= MIN_QUANTIZED_SIZE else _F32

    def master(self, p: np.ndarray) -> bool:
        return self.master_weights and _low(p.dtype)

    def rounding_of(self, p: np.ndarray) -> str:
        return self.rounding if _low(p.dtype) else "nearest"

    def extras(self, p: np.ndarray) -> tuple[str, ...]:
        """The extra state keys of ``p`` (EXTRA_KEYS)."""
        if self.master(p):
            return ("master_param",)
        if self.rounding_of(p) == "kahan":
            return ("compensation",)
        return ()

    def new_extra(self, key: str, p: np.ndarray) -> np.ndarray:
        if key == "master_param":
            return p.astype(np.float32)
        return np.zeros_like(p)

    def call_options(self, p: np.ndarray, index: int) -> tuple[Any, ...]:
        """(rounding, seed) of the kernel call stepping ``p`` (global index
        ``index``): stochastic rounding is one call per parameter, its seed
        ``parameter_seed(seed, index)``; else ('nearest' or 'kahan', None)."""
        r = self.rounding_of(p)
        if r == "stochastic":
            return r, parameter_seed(self.seed, index)
        return r, None


def wrap_state(view: np.ndarray, fill: float, unsigned: bool) -> Any:
    """A new state entry's value from its arena view (filled with ``fill``):
    uint8 codes become a QuantizedState with its own absmax."""
    if view.dtype != _U8:
        return view
    q = QuantizedState.from_float(np.full(view.shape, fill, np.float32), signed=not unsigned)
    view[...] = q.codes
    return QuantizedState(view, q.absmax, not unsigned)


def to_float32(value: Any) -> np.ndarray:
    """A state value (array or QuantizedState) as float32 (a new array)."""
    if isinstance(value, QuantizedState):
        return value.dequantize()
    return np.asarray(value).astype(np.float32)


def _dtype(obj: Any) -> Any:
    if isinstance(obj, QuantizedState):
        return "int8"
    return getattr(obj, "dtype", None)


def check_call_dtypes(names: Sequence[str], objs: Sequence[Any],
                      labels: Sequence[Sequence[str]], unsigned: Mapping[str, bool]) -> None:
    """The dtype rule of one step kernel call (optcore/kernels/_precision.pyx),
    applied before any call of a step runs; ``labels`` name each tensor.
    Layout and memory are the binding's (``check_calls``)."""
    params, param_labels = objs[0], labels[0]
    for t, p in enumerate(params):
        pd = _dtype(p)
        for name, column, own in zip(names[1:], objs[1:], labels[1:]):
            a = column[t]
            d = _dtype(a)
            if d is None:
                continue        # not an array: the binding names it
            where = f"{own[t]} has dtype {_name(d)} but {param_labels[t]} has dtype {pd}"
            if pd == _F64:
                if d != _F64:
                    raise TypeError(f"{where}; float64 parameters take float64 buffers only")
                continue
            if name == "grad":
                if d not in (_F32, _F16) and not (d != "int8" and is_bfloat16(d)):
                    raise TypeError(f"{where}; gradients are float32, bfloat16 or float16")
            elif name == "master_param":
                if d != _F32:
                    raise TypeError(f"{where}; master_param is float32")
            elif name == "compensation":
                if d != pd:
                    raise TypeError(f"{where}; compensation has the parameter's dtype")
            elif d == "int8":
                if a.signed == unsigned.get(name, False):
                    raise TypeError(f"{own[t]} is {'a signed' if a.signed else 'an unsigned'}"
                                    f" QuantizedState; this state takes the "
                                    f"{'unsigned' if a.signed else 'signed'} map")
            elif d != _F32 and not is_bfloat16(d):
                raise TypeError(f"{where}; states are float32, bfloat16 or "
                                f"optcore.QuantizedState")


def with_step_count(rules: Any) -> Any:
    """A copy of a class's Rules that keeps a ``step`` count (SGD with
    stochastic rounding: the step keys the rounding's random bits)."""
    import copy
    out = copy.copy(rules)
    out.scalars = {"step": 0, **rules.scalars}
    return out


#: Roles of the extra state buffers in a kernel call.
EXTRA_ROLES = {key: "write" for key in EXTRA_KEYS}


def kernel_arg(rules: Any, key: Any) -> str:
    """The kernel argument of state key ``key``."""
    return rules.kernel_args.get(key, key)


def call_hyper(hyper: dict[str, Any], options: tuple[Any, ...]) -> dict[str, Any]:
    """The kernel keywords of a call: the group's, and its rounding (and the
    stochastic-rounding seed) when not to nearest."""
    rounding, seed = options
    if rounding == "nearest":
        return hyper
    out = {**hyper, "rounding": rounding}
    if seed is not None:
        out["seed"] = seed
    return out


# ---- state_dict -------------------------------------------------------------------

_ABSMAX = ".absmax"


def saved_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A state entry as ``state_dict`` saves it: arrays copied, an int8 state
    as ``<key>`` (uint8 codes) and ``<key>.absmax`` (float32)."""
    out: dict[str, Any] = {}
    for k, v in entry.items():
        if isinstance(v, QuantizedState):
            out[k] = np.array(v.codes, copy=True)
            out[k + _ABSMAX] = np.array(v.absmax, copy=True)
        elif isinstance(v, np.ndarray):
            out[k] = np.array(v, copy=True)
        else:
            out[k] = v
    return out


def dequantized(entry: Mapping[str, Any], kinds: Sequence[Any],
                unsigned: Mapping[Any, bool]) -> dict[str, Any]:
    """A saved entry with its int8 and bfloat16 states (``kinds``) as float32."""
    out = {k: v for k, v in entry.items() if not k.endswith(_ABSMAX)}
    for k in kinds:
        v = out.get(k)
        if not isinstance(v, np.ndarray):
            continue
        if k + _ABSMAX in entry:
            out[k] = QuantizedState(v, entry[k + _ABSMAX], not unsigned.get(k, False)
                                    ).dequantize()
        elif is_bfloat16(v.dtype):
            out[k] = v.astype(np.float32)
    return out


def state_keys(saved: Mapping[str, Any]) -> list[Any]:
    """The keys of a loaded entry in order, an int8 state's absmax counted with it."""
    return [k for k in saved
            if not (isinstance(k, str) and k.endswith(_ABSMAX) and k[:-len(_ABSMAX)] in saved)]


def loaded_value(saved: Mapping[str, Any], key: str, p: np.ndarray, label: str,
                 unsigned: bool) -> Any:
    """A loaded state value checked against parameter ``p``: a QuantizedState
    for saved int8 codes (with ``<key>.absmax``), else the array (float32 or
    bfloat16, or the parameter's dtype)."""
    value = saved[key]
    what = f"{label}: {key!r}"
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{what} must be a NumPy array, got {type(value).__name__}")
    if value.shape != p.shape:
        raise ValueError(f"{what} has shape {value.shape} but the parameter has shape "
                         f"{p.shape}")
    if value.dtype == _U8 and key not in EXTRA_KEYS:
        absmax = saved.get(key + _ABSMAX)
        if absmax is None:
            raise ValueError(f"{what} holds int8 codes but {key + _ABSMAX!r} is missing")
        try:
            return QuantizedState(np.ascontiguousarray(value),
                                  np.ascontiguousarray(absmax), not unsigned)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{what}: {exc}") from None
    ok = {p.dtype}
    if key == "master_param":
        ok = {_F32}
    elif key != "compensation" and p.dtype != _F64:
        ok |= {_F32}
        if is_bfloat16(value.dtype):
            ok.add(value.dtype)
    if value.dtype not in ok:
        raise TypeError(f"{what} has dtype {value.dtype} but the parameter has dtype "
                        f"{p.dtype}")
    return value


def store_into(view: np.ndarray, value: Any, unsigned: bool) -> Any:
    """A loaded value converted into a new state's arena view: int8 codes
    quantized (exact for saved codes), bfloat16 rounded to nearest."""
    if view.dtype == _U8:
        if isinstance(value, QuantizedState):
            q = QuantizedState(value.codes, value.absmax.copy(), value.signed)
        else:
            q = QuantizedState.from_float(np.asarray(value, np.float32), signed=not unsigned)
        view[...] = q.codes
        return QuantizedState(view, q.absmax, not unsigned)
    if isinstance(value, QuantizedState):
        value = value.dequantize()
    if is_bfloat16(view.dtype) and not is_bfloat16(value.dtype):
        from optcore.precision import bf16_nearest
        view.view(np.uint16)[...] = bf16_nearest(
            np.ascontiguousarray(value, np.float32)).reshape(view.shape)
    else:
        view[...] = value
    return view
