"""The NumPy twin of a tiled step kernel's low-precision call.

A kernel whose buffers are not all float32 or all float64 widens every buffer
to float32, runs its float32 update and rounds each stored element once
(optcore/kernels/_storage.pxd). The twin does the same with the float32
reference function and the roundings of :mod:`optcore.precision`, so that the
kernels can be held to it bit for bit.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import numpy as np

from optcore import _spec
from optcore import precision as pr

_PLAIN = (np.dtype(np.float32), np.dtype(np.float64))


def _as_list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _widen(a: Any) -> np.ndarray:
    """A float32 working copy of a buffer (any storage)."""
    if isinstance(a, pr.QuantizedState):
        return pr.dequantize_blocks(a.codes, a.absmax, not a.signed)
    a = np.asarray(a)
    if pr.is_bfloat16(a.dtype):
        return pr.bf16_load(a)
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1).copy()


def _store(dst: Any, x: np.ndarray) -> None:
    """Round float32 ``x`` into a state buffer (nearest; int8: requantized)."""
    if isinstance(dst, pr.QuantizedState):
        codes, absmax = pr.quantize_blocks(x, not dst.signed)
        dst.codes.reshape(-1)[...] = codes
        dst.absmax[...] = absmax
        return
    flat = dst.reshape(-1)
    if pr.is_bfloat16(dst.dtype):
        flat.view(np.uint16)[...] = pr.bf16_nearest(x)
    elif dst.dtype == np.float16:
        flat[...] = x.astype(np.float16)
    else:
        flat[...] = x


def _narrow(dtype: np.dtype, x: np.ndarray) -> np.ndarray:
    return pr.bf16_nearest(x) if pr.is_bfloat16(dtype) else pr.f16_nearest(x)


def _load16(dtype: np.dtype, bits: np.ndarray) -> np.ndarray:
    return pr.bf16_load(bits) if pr.is_bfloat16(dtype) else pr.f16_load(bits)


def _is_plain(buffers: list[Any]) -> bool:
    dtypes = set()
    for b in buffers:
        for a in _as_list(b):
            if isinstance(a, pr.QuantizedState):
                return False
            dtypes.add(np.asarray(a).dtype)
    return len(dtypes) <= 1 and dtypes <= set(_PLAIN)


def _check_float32_states(kernel: _spec.Kernel, used: dict[str, Any]) -> None:
    """The kernel's rule for a kernel whose states are float32 only (LAMB)."""
    first = _as_list(used["param"])[0]
    for b in kernel.state:
        for a in _as_list(used.get(b.name)):
            if a is None:
                continue
            if isinstance(a, pr.QuantizedState) or np.asarray(a).dtype != np.float32:
                what = ("int8 (QuantizedState)" if isinstance(a, pr.QuantizedState)
                        else str(np.asarray(a).dtype))
                raise TypeError(f"{b.name} has dtype {what}; {kernel.name} keeps its states "
                                f"in float32 (with param of dtype {np.asarray(first).dtype})")
            break


def store_param(param: Any, p32: np.ndarray, before: np.ndarray | None,
                compensation: Any, key: np.uint32 | None, t: int) -> None:
    """Write the float32 result ``p32`` of tensor ``t`` into its param: rounded
    to nearest, stochastically (``key``) or Kahan-compensated (``before``, the
    loaded float32 values, and ``compensation``); a float32 param is ``p32``."""
    flat = np.asarray(param).reshape(-1)
    if flat.dtype == np.float32:
        return
    p32 = p32.reshape(-1)
    bits = flat.view(np.uint16)
    if key is not None:
        rounded = pr.f16_stochastic if flat.dtype == np.float16 else pr.bf16_stochastic
        bits[...] = rounded(p32, pr.random_bits(key, t, p32.size))
    elif before is not None and compensation is not None:
        before = before.reshape(-1)
        c = np.asarray(compensation).reshape(-1).view(np.uint16)
        y = (p32 - before) + _load16(flat.dtype, c)
        q = _narrow(flat.dtype, before + y)
        bits[...] = q
        c[...] = _narrow(flat.dtype, y - (_load16(flat.dtype, q) - before))
    else:
        bits[...] = _narrow(flat.dtype, p32)


def tiled_twin(kernel_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a reference step function the kernel's precision arguments."""
    kernel = next(k for k in _spec.KERNELS if kernel_name in (k.name, *k.aliases))
    names = [b.name for b in kernel.buffers]
    written = {b.name for b in kernel.buffers if b.role == "write"}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def twin(*args: Any, master_param: Any = None, rounding: str = "nearest",
                 compensation: Any = None, seed: int = 0, **kwargs: Any) -> Any:
            bufs = dict(zip(names, args))
            for name in names:
                if name in kwargs:
                    bufs[name] = kwargs.pop(name)
            used = {k: v for k, v in bufs.items() if v is not None}
            if (master_param is None and compensation is None and rounding == "nearest"
                    and _is_plain(list(used.values()))):
                return fn(*args, **{**kwargs, **{k: v for k, v in bufs.items()
                                                  if k not in names[:len(args)]}})
            if rounding not in _spec.ROUNDINGS:
                raise ValueError(f"rounding must be 'nearest', 'stochastic' or 'kahan', "
                                 f"got {rounding!r}")
            if kernel.state_dtypes == ("float32",):
                _check_float32_states(kernel, used)
            params = _as_list(bufs["param"])
            masters = _as_list(master_param) if master_param is not None else None
            comps = _as_list(compensation) if compensation is not None else None
            work: dict[str, list[np.ndarray]] = {}
            for name, value in used.items():
                tensors = _as_list(value)
                if name == "param" and masters is not None:
                    work[name] = [np.asarray(m).reshape(-1) for m in masters]
                elif (not isinstance(tensors[0], pr.QuantizedState)
                      and np.asarray(tensors[0]).dtype == np.float32 and name in written):
                    work[name] = [np.asarray(a).reshape(-1) for a in tensors]   # in place
                else:
                    work[name] = [_widen(a) for a in tensors]
            before = [p.copy() for p in work["param"]] if rounding == "kahan" else None
            result = fn(*[work.get(n) for n in names[:len(args)]],
                        **kwargs, **{n: work.get(n) for n in names[len(args):]
                                     if n in bufs})
            step = kwargs["step"]
            key = pr.rounding_key(seed, step) if rounding == "stochastic" else None
            for t, p in enumerate(params):
                store_param(p, work["param"][t], before[t] if before is not None else None,
                            comps[t] if comps is not None else None, key, t)
            for name in written - {"param"}:
                if name not in used:
                    continue
                for dst, x in zip(_as_list(used[name]), work[name]):
                    if isinstance(dst, pr.QuantizedState) or np.asarray(dst).dtype != np.float32:
                        _store(dst, x)
            return result

        sig = inspect.signature(fn)
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                 for name, default in _spec.PRECISION_ARGS.items()]
        twin.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[*sig.parameters.values(), *extra])
        return twin
    return wrap
