"""Low-precision storage in optcore.torch: bfloat16/float16 parameters, the
dtype of the state tensors, float32 master weights and the rounding of
parameters (the options ``state_dtype``, ``master_weights``, ``rounding``
and ``seed`` of every class whose kernel is tiled, ``Kernel.tiled``).

The options are the optimizer's (not a group's). Each parameter gets a
:class:`Layout` from them and its dtype and size, checked when it joins the
optimizer (errors name the option):

- ``state_dtype=None``: torch.optim's, the parameter's dtype, except for
  float16 parameters, whose states are float32 (the kernels keep no float16
  state), and for LAMB, whose states are float32 only (``Kernel.state_dtypes``); ``"float32"``, ``"bfloat16"``: that dtype; ``"int8"``: block-
  quantized (``optcore.QuantizedState``) for tensors of at least
  ``MIN_QUANTIZED_SIZE`` elements, float32 below. float64 and complex
  parameters take their own dtype only.
- an int8 state ``key`` is two tensors: ``state[key]`` the uint8 codes (the
  parameter's shape and layout) and ``state[key + ".absmax"]`` the float32
  scale of each block of 256 elements; the map (signed, or unsigned for second
  moments) is the kernel's for that state.
- ``master_weights=True``: ``state["master_param"]``, a float32 copy of a
  bfloat16/float16 parameter made at its first step; the kernel updates it and
  writes the parameter from it (nearest).
- ``rounding="kahan"``: ``state["compensation"]`` (the parameter's dtype,
  zeros at the first step); ``"stochastic"`` (bfloat16/float16 parameters): random
  bits from a per-parameter seed, ``optcore.precision.parameter_seed(seed,
  index)`` over the parameter's index in ``param_groups`` (each parameter
  stepped in its own kernel call, so tensors are not correlated; the NumPy
  classes' seeds, so both draw the same bits), and the step count (where the
  optimizer keeps none, SGD: a ``rounding_step`` count mixed into the seed the
  same way).
- ``master_weights`` and ``rounding`` apply to bfloat16/float16 parameters:
  float32/float64 ones (e.g. a model's norms kept in float32) are stepped as
  without them, as in the NumPy classes.
"""

from __future__ import annotations

from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from optcore._spec import ROUNDINGS, STATE_DTYPES
from optcore.precision import MIN_QUANTIZED_SIZE, QBLOCK, QuantizedState, parameter_seed

if TYPE_CHECKING:
    from collections.abc import Mapping

    from optcore.torch._tensors import Slot

ABSMAX = ".absmax"
MASTER, COMPENSATION, COUNTER = "master_param", "compensation", "rounding_step"
EXTRA_KEYS = (MASTER, COMPENSATION, COUNTER)
LOW = (torch.bfloat16, torch.float16)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """The NumPy view of a contiguous tensor (bfloat16 as ``ml_dtypes.bfloat16``)."""
    if t.dtype is torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


class Layout(NamedTuple):
    """How one parameter's state is stored: ``state`` None (the parameter's
    dtype), a torch dtype or ``"int8"``; a float32 ``master``; the ``rounding``
    and, for stochastic rounding, the parameter's ``seed``."""

    state: Any
    master: bool
    rounding: str
    seed: int | None

    @property
    def plain(self) -> bool:
        return self.state is None and not self.master and self.rounding == "nearest"


PLAIN = Layout(None, False, "nearest", None)


class Storage:
    """The checked storage options of an optimizer (see the module docstring)."""

    __slots__ = ("state_dtype", "master_weights", "rounding", "seed", "float32_states")

    def __init__(self, state_dtype: str | None = None, master_weights: bool = False,
                 rounding: str = "nearest", seed: int = 0,
                 state_dtypes: tuple[str, ...] = STATE_DTYPES, owner: str = "") -> None:
        if state_dtype is not None and state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be None, 'float32', 'bfloat16' or 'int8', "
                             f"got {state_dtype!r}")
        if state_dtype is not None and state_dtype not in state_dtypes:
            raise TypeError(f"state_dtype={state_dtype!r}: {owner} keeps its states in "
                            f"{' or '.join(state_dtypes)}")
        #: the kernel keeps float32 states only (LAMB): None gives float32
        #: states to bfloat16 parameters too
        self.float32_states = tuple(state_dtypes) == ("float32",)
        if not isinstance(master_weights, bool):
            raise TypeError(f"master_weights must be a bool, got "
                            f"{type(master_weights).__name__}")
        if not isinstance(rounding, str) or rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be 'nearest', 'stochastic' or 'kahan', "
                             f"got {rounding!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        if master_weights and rounding != "nearest":
            raise ValueError(f"rounding={rounding!r} rounds a parameter that has no master "
                             f"copy; with master_weights=True parameters are rounded to "
                             f"nearest from their float32 master")
        self.state_dtype, self.master_weights = state_dtype, master_weights
        self.rounding, self.seed = rounding, seed

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.state_dtype, self.master_weights, self.rounding, self.seed,
                self.float32_states)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.state_dtype, self.master_weights, self.rounding, self.seed,
         *rest) = state
        self.float32_states = bool(rest and rest[0])

    def layout(self, p: torch.Tensor, where: str, index: int = 0) -> Layout:
        """The Layout of parameter p (its memory: a DTensor's local tensor);
        TypeError/ValueError naming the option p cannot take."""
        dt, sd = p.dtype, self.state_dtype
        # master weights and roundings are for bfloat16/float16 parameters: a
        # float32/float64 one (a model's norms kept in float32) steps without
        master = self.master_weights and dt in LOW
        rounding = self.rounding if dt in LOW else "nearest"
        if sd is not None and dt not in (torch.float32, *LOW):
            raise TypeError(f"state_dtype={sd!r} needs float32, bfloat16 or float16 "
                            f"parameters; {where} has dtype {dt} (its states keep it)")
        from optcore.torch._dtensor import is_dtensor

        # master copies and compensations are elementwise: DTensors laid out as
        # the parameter, stepped shard by shard. The int8 block scales and the
        # random bits of stochastic rounding are indexed by position in the
        # tensor, which a shard does not know.
        if is_dtensor(p) and (sd == "int8" or rounding == "stochastic"):
            raise TypeError(f"{where} is a DTensor; state_dtype='int8' and "
                            f"rounding='stochastic' take plain tensors")
        if sd == "int8":
            state: Any = "int8" if p.numel() >= MIN_QUANTIZED_SIZE else torch.float32
        elif sd is not None:
            state = _DTYPES[sd]
        else:
            state = (torch.float32 if dt is torch.float16
                     or (self.float32_states and dt in LOW) else None)
        if state is dt:
            state = None
        seed = parameter_seed(self.seed, index) if rounding == "stochastic" else None
        return Layout(state, master, rounding, seed)


DEFAULT = Storage()


# ---- creating state -------------------------------------------------------------

def _like(p: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty_like(p, dtype=dtype, memory_format=torch.preserve_format)


def _order(t: torch.Tensor) -> torch.Tensor:
    """t's elements in storage order, flat (t dense, non-overlapping)."""
    return t.reshape(-1) if t.is_contiguous() else t.as_strided((t.numel(),), (1,))


def quantized(p: torch.Tensor, values: torch.Tensor, signed: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, absmax) tensors of ``values`` (p's shape) quantized in the order
    p's states are stored in (empty_like(p)'s)."""
    floats = _like(p, torch.float32)
    floats.copy_(values)
    q = QuantizedState.from_float(_order(floats).numpy(), signed=signed)
    codes = _like(p, torch.uint8)
    _order(codes).copy_(torch.from_numpy(q.codes))
    return codes, torch.from_numpy(q.absmax)


def dequantized(codes: torch.Tensor, absmax: torch.Tensor, signed: bool,
                dtype: torch.dtype) -> torch.Tensor:
    """The values of an int8 state, as a tensor of ``dtype`` laid out as codes."""
    q = QuantizedState(_order(codes).contiguous().numpy(),
                       absmax.detach().contiguous().numpy(), signed)
    out = _like(codes, dtype)
    _order(out).copy_(torch.from_numpy(q.dequantize()))
    return out


def new_states(p: torch.Tensor, key: str, value: float, layout: Layout,
               unsigned: bool) -> dict[str, torch.Tensor]:
    """The entries of a new state buffer ``key`` of p filled with value."""
    from optcore.torch._tensors import new_state

    if layout.state is None:
        return {key: new_state(p, value)}
    if layout.state == "int8":
        codes, absmax = quantized(p, torch.full((), float(value)).expand(p.shape),
                                  not unsigned)
        return {key: codes, key + ABSMAX: absmax}
    return {key: torch.full_like(p, value, dtype=layout.state,
                                 memory_format=torch.preserve_format)}


def new_extras(state: dict[str, Any], p: torch.Tensor, layout: Layout,
               counted: bool) -> list[str]:
    """Create the master copy, Kahan compensation and rounding count p's
    layout needs and state lacks; returns the keys created."""
    created = []
    if layout.master and state.get(MASTER) is None:
        state[MASTER] = _like(p, torch.float32).copy_(p.detach())
        created.append(MASTER)
    if layout.rounding == "kahan" and state.get(COMPENSATION) is None:
        state[COMPENSATION] = torch.zeros_like(p, memory_format=torch.preserve_format)
        created.append(COMPENSATION)
    if layout.rounding == "stochastic" and not counted and state.get(COUNTER) is None:
        state[COUNTER] = torch.tensor(0.0)
        created.append(COUNTER)
    return created


# ---- the kernel's views ---------------------------------------------------------

def bind_states(owner: str, slot: Slot, needed: tuple[Any, ...], gi: int, j: int
                ) -> tuple[list[str], list[torch.Tensor], tuple[Any, ...]]:
    """(keys, tensors, state views) of the slot's state buffers ``needed``
    under its layout, checked; the master and compensation views are set on
    the slot."""
    from optcore.torch._tensors import conform_state, state_view

    # (p: the parameter, a DTensor's state checked against it; its memory
    # slot.local)
    layout, state, p = slot.storage, slot.state, slot.param
    keys: list[str] = []
    tensors: list[torch.Tensor] = []
    views: list[Any] = []
    dtype = None if layout.state in (None, "int8") else layout.state
    for b in needed:
        key = b.state_key
        if layout.state == "int8":
            codes = state[key]
            view = state_view(owner, codes, p, key, gi, j, slot.like, torch.uint8)
            absmax = state.get(key + ABSMAX)
            where = (f"optcore.torch.{owner}: state[{key + ABSMAX!r}] of "
                     f"param_groups[{gi}]['params'][{j}]")
            blocks = (slot.local.numel() + QBLOCK - 1) // QBLOCK
            if not (type(absmax) is torch.Tensor and absmax.dtype is torch.float32
                    and absmax.shape == (blocks,) and absmax.device.type == "cpu"):
                raise ValueError(f"{where} must be a float32 CPU tensor of {blocks} "
                                 f"block scales (state_dtype='int8'), got {absmax!r:.80}")
            views.append(QuantizedState(view, absmax.detach().numpy(), not b.unsigned))
            keys += [key, key + ABSMAX]
            tensors += [codes, absmax]
            continue
        t = conform_state(state, key, slot, dtype)
        views.append(state_view(owner, t, p, key, gi, j, slot.like, dtype))
        keys.append(key)
        tensors.append(t)
    slot.master_view = slot.comp_view = slot.counter = None
    if layout.master:
        t = conform_state(state, MASTER, slot, torch.float32)
        slot.master_view = state_view(owner, t, p, MASTER, gi, j, slot.like, torch.float32)
        keys.append(MASTER)
        tensors.append(t)
    if layout.rounding == "kahan":
        t = conform_state(state, COMPENSATION, slot)
        slot.comp_view = state_view(owner, t, p, COMPENSATION, gi, j, slot.like)
        keys.append(COMPENSATION)
        tensors.append(t)
    if COUNTER in state and layout.rounding == "stochastic":
        slot.counter = state[COUNTER]
        keys.append(COUNTER)
        tensors.append(state[COUNTER])
    return keys, tensors, tuple(views)


def call_key(slot: Slot) -> Any:
    """What a kernel call shares among its parameters beyond dtype and scalar
    state: the layout, and for stochastic rounding the call's seed (one
    parameter per call)."""
    layout = slot.storage
    if layout.plain:
        return None
    if layout.seed is None:
        return layout
    seed = layout.seed
    if slot.counter is not None:
        seed = parameter_seed(seed, int(slot.counter.item()))
    return layout, seed


def call_args(slots: list[Slot], key: Any) -> dict[str, Any]:
    """The kernel's precision keywords for slots sharing ``call_key`` key."""
    if key is None:
        return {}
    layout = key if isinstance(key, Layout) else key[0]
    out: dict[str, Any] = {}
    if layout.master:
        out["master_param"] = [s.master_view for s in slots]
    if layout.rounding != "nearest":
        out["rounding"] = layout.rounding
    if layout.rounding == "kahan":
        out["compensation"] = [s.comp_view for s in slots]
    if layout.seed is not None:
        out["seed"] = key[1]
    return out


def after_call(slots: list[Slot]) -> None:
    for s in slots:
        if s.counter is not None:
            s.counter += 1


# ---- state_dict ------------------------------------------------------------------

def conform_loaded(dst: dict[str, Any], src: Mapping[str, Any], p: torch.Tensor,
                   layout: Layout, buffers: tuple[Any, ...]) -> None:
    """Store the loaded state ``src`` of parameter p (as saved: torch.optim's
    or optcore's) in ``dst`` (torch's cast of it) as p's layout keeps it: int8
    codes quantized from a float state or dequantized into a float one, float
    states rounded to the state dtype; extras this layout does not use dropped."""
    for b in buffers:
        key = b.state_key
        if key not in src or not torch.is_tensor(src[key]):
            continue
        value, scales = src[key], src.get(key + ABSMAX)
        dst.pop(key + ABSMAX, None)
        target = p.dtype if layout.state is None else layout.state
        if scales is not None:
            if target == "int8":
                dst[key], dst[key + ABSMAX] = value, scales
                continue
            value = dequantized(value, scales, not b.unsigned, torch.float32)
        if target == "int8":
            dst[key], dst[key + ABSMAX] = quantized(p, value, not b.unsigned)
        else:
            dst[key] = value.to(dtype=target, device=p.device)
    for key, used in ((MASTER, layout.master), (COMPENSATION, layout.rounding == "kahan"),
                      (COUNTER, layout.rounding == "stochastic")):
        if not used:
            dst.pop(key, None)
        elif key in src:
            dst[key] = src[key].to(dtype=torch.float32 if key != COMPENSATION else p.dtype)


def torch_state(state_dict: dict[str, Any], params: list[torch.Tensor],
                buffers: tuple[Any, ...]) -> dict[str, Any]:
    """``state_dict`` (optcore's) as torch.optim keeps it: every state tensor
    of its parameter's dtype (int8 ones dequantized), without the master
    copies, compensations and rounding counts."""
    signed = {b.state_key: not b.unsigned for b in buffers}
    out = {}
    for pid, st in state_dict["state"].items():
        p = params[pid]
        entry = {}
        for key, value in st.items():
            if key in EXTRA_KEYS or (isinstance(key, str) and key.endswith(ABSMAX)):
                continue
            if key + ABSMAX in st:
                value = dequantized(value, st[key + ABSMAX], signed[key], p.dtype)
            elif key in signed and torch.is_tensor(value) and value.dtype != p.dtype:
                value = value.to(p.dtype)
            entry[key] = value
        out[pid] = entry
    return {"state": out, "param_groups": state_dict["param_groups"]}


def indexed_params(groups: list[dict[str, Any]]) -> list[torch.Tensor]:
    return list(chain.from_iterable(g["params"] for g in groups))


class StorageMixin:
    """The state_dict side of the storage options (of ``KernelOptimizer``)."""

    if TYPE_CHECKING:
        _rules: Any
        _storage: Storage
        param_groups: list[dict[str, Any]]
        state: Any

        def state_dict(self) -> dict[str, Any]: ...
        def _layout(self, local: torch.Tensor, gi: int, j: int) -> Layout: ...

    def _conform_loaded(self, state_dict: dict[str, Any]) -> None:
        """The loaded states stored as this optimizer's options keep them
        (``optcore.torch._storage.conform_loaded``)."""
        if not self._rules.spec.spec.tiled:
            return
        saved = indexed_params(state_dict["param_groups"])
        index = 0
        for gi, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                src = state_dict["state"].get(saved[index])
                index += 1
                if not src:
                    continue
                layout = self._layout(p, gi, j)
                if layout.plain and not any(isinstance(k, str) and
                                            (k.endswith(ABSMAX) or k in EXTRA_KEYS)
                                            for k in src):
                    continue
                conform_loaded(self.state[p], src, p, layout, self._rules.state)

    def torch_state_dict(self) -> dict[str, Any]:
        """The state_dict as ``torch.optim``'s class of this name keeps it.

        ``state_dict()`` stores the states as this optimizer keeps them (an
        int8 state as its uint8 codes and ``"<key>.absmax"`` block scales, a
        ``master_param`` or ``compensation``, see docs/torch.md, "Low
        precision"). This one has every state tensor in its parameter's dtype
        (int8 states dequantized) and neither master copies, compensations
        nor rounding counts, so ``torch.optim``'s ``load_state_dict`` takes
        it. Loading it back into an optcore optimizer quantizes or rounds the
        states again.

        Returns
        -------
        dict
            ``{"state": ..., "param_groups": ...}``, the tensors shared with
            the optimizer where no conversion was needed.

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> w = torch.nn.Parameter(torch.ones(2, dtype=torch.bfloat16))
        >>> opt = optcore.torch.AdamW([w], state_dtype="float32")
        >>> w.grad = torch.ones_like(w)
        >>> opt.step()
        >>> opt.torch_state_dict()["state"][0]["exp_avg"].dtype
        torch.bfloat16
        >>> torch.optim.AdamW([w]).load_state_dict(opt.torch_state_dict())
        """
        return torch_state(self.state_dict(), indexed_params(self.param_groups),
                               self._rules.state)

