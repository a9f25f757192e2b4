"""The checks of the tensors an optcore.torch step works on, and their NumPy views.

Parameters, gradients and state are CPU, dense float32/float64/complex64/
complex128 tensors the kernels update in place through NumPy views that share
their memory. A complex tensor is viewed as real (``torch.view_as_real``: its
real and imaginary parts are independent elements, as torch.optim steps them).
A parameter whose memory is dense but permuted (a transpose, channels_last) is
stepped over its storage order, zero-copy, with state tensors of the same
strides; any other non-contiguous parameter (a strided slice) is stepped on a
dense copy that the step writes back (``Slot.work``). A DTensor contributes its
local tensor (``optcore.torch._dtensor``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from optcore.torch._dtensor import is_dtensor, param_local, state_local
from optcore.torch._storage import to_numpy

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

    from optcore._spec import Buffer

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
LOW_PRECISION_DTYPES = (torch.bfloat16, torch.float16)
STRIDED = torch.strided
_NEED = "optcore updates CPU, dense float32/float64/complex64/complex128 tensors"
_NEED_LOW = ("optcore updates CPU, dense float32/float64/bfloat16/float16/complex64/"
             "complex128 tensors")


def _where(owner: str, gi: int, j: int) -> str:
    return f"optcore.torch.{owner}: param_groups[{gi}]['params'][{j}]"


def check_param(owner: str, kernel: str, p: torch.Tensor, gi: int, j: int, *,
                low_precision: bool = False) -> torch.Tensor:
    """The tensor whose memory the kernel updates for parameter p (p, or a
    DTensor's local tensor), checked; bfloat16/float16 ones with
    ``low_precision`` (a tiled kernel's)."""
    where = _where(owner, gi, j)
    p = param_local(p, where, kernel)
    need = _NEED_LOW if low_precision else _NEED
    if p.device.type != "cpu":
        raise ValueError(f"{where} is on device {p.device}; {need}")
    if p.layout is not STRIDED:
        raise ValueError(f"{where} has layout {p.layout}; {need}")
    if p.dtype not in SUPPORTED_DTYPES and not (low_precision and
                                                p.dtype in LOW_PRECISION_DTYPES):
        if p.dtype in LOW_PRECISION_DTYPES:
            raise TypeError(f"{where} has dtype {p.dtype}; optcore.torch.{owner} "
                            f"({kernel}) takes float32/float64/complex64/complex128 "
                            f"tensors only")
        raise TypeError(f"{where} has dtype {p.dtype}; {need}")
    if not p.is_contiguous():
        if is_dtensor(p):
            raise ValueError(f"{where} is a DTensor whose local tensor is not contiguous "
                             f"(strides {p.stride()}); optcore steps contiguous local tensors")
        if torch._debug_has_internal_overlap(p) == 1:
            # (torch's own in-place updates refuse such a tensor too)
            raise ValueError(f"{where} has strides {p.stride()} under which elements "
                             f"share memory; an in-place update of it is undefined")
    return p


def _dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill one block of memory, each once (in any
    order of its dimensions: a transpose, channels_last)."""
    expected = 1
    for stride, n in sorted((st, n) for st, n in zip(t.stride(), t.shape) if n > 1):
        if stride != expected:
            return False
        expected *= n
    return True


def _same_order(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether dense tensors a and b of one shape lay out their elements
    alike (strides of size-1 dimensions do not matter)."""
    return all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """Dense non-overlapping t's elements in storage order (t itself if it is
    contiguous), complex ones as real pairs; shares t's memory."""
    if not t.is_contiguous():
        t = t.as_strided((t.numel(),), (1,))
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.detach()


def new_state(p: torch.Tensor, value: float) -> torch.Tensor:
    """A state tensor of p's dtype and strides filled with value (in both the
    real and the imaginary part of a complex p, as torch.optim fills them)."""
    fill: complex | float = complex(value, value) if p.is_complex() else value
    return torch.full_like(p, fill, memory_format=torch.preserve_format)


def state_view(owner: str, t: Any, p: torch.Tensor, key: str | None, gi: int,
               j: int, layout: torch.Tensor | None = None,
               dtype: torch.dtype | None = None) -> np.ndarray:
    """The NumPy view of state tensor t of parameter p, checked: t must be
    of ``dtype`` (default: p's), contiguous, or laid out as ``layout``
    (``Slot.like``) when given."""
    where = f"optcore.torch.{owner}: state[{key!r}] of param_groups[{gi}]['params'][{j}]"
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where} is a {type(t).__name__}, not a tensor")
    t, p = state_local(t, p, where)
    if t.device.type != "cpu" or t.layout is not STRIDED:
        raise ValueError(f"{where} is a {t.layout} tensor on {t.device}; state "
                         f"tensors must be dense CPU tensors")
    if t.dtype != (dtype or p.dtype):
        if dtype is None or dtype == p.dtype:
            raise TypeError(f"{where} has dtype {t.dtype} but the parameter has {p.dtype}")
        raise TypeError(f"{where} has dtype {t.dtype}; the optimizer's state_dtype "
                        f"keeps it in {dtype}")
    if t.shape != p.shape:
        raise ValueError(f"{where} has shape {tuple(t.shape)} but the parameter "
                         f"has {tuple(p.shape)}")
    if not (t.is_contiguous() if layout is None else
            (_dense(t) and _same_order(t, layout))):
        want = "contiguous" if layout is None else f"strides {layout.stride()}"
        raise ValueError(f"{where} has strides {t.stride()} but must be {want} "
                         f"(laid out as the parameter is stepped); optcore updates "
                         f"state in place")
    return to_numpy(_flat(t))


def conform_state(state: dict[str, Any], key: str, slot: Slot,
                  dtype: torch.dtype | None = None) -> Any:
    """state[key], first replaced by a copy laid out as the slot steps its
    parameter if it is a plain tensor of the parameter's shape and dtype laid
    out otherwise (a state tensor loaded, or kept from before ``p.data`` was
    given another layout); the values are unchanged."""
    t = state[key]
    if (type(t) is not torch.Tensor or t.device.type != "cpu" or t.layout is not STRIDED
            or t.dtype != (dtype or slot.view_dtype) or t.shape != slot.local.shape):
        return t
    like = slot.like
    if (t.is_contiguous() if like is None else (_dense(t) and _same_order(t, like))):
        return t
    stepped = slot.local if like is None else like
    with torch.no_grad():
        t = state[key] = torch.empty_like(stepped, dtype=t.dtype,
                                          memory_format=torch.preserve_format).copy_(t)
    return t


def scalar_view(owner: str, t: Any, key: str, gi: int, j: int) -> np.ndarray:
    """The 0-d NumPy view of scalar state t (a step count), checked."""
    if not (isinstance(t, torch.Tensor) and t.numel() == 1 and t.device.type == "cpu"
            and not is_dtensor(t)):
        raise ValueError(
            f"optcore.torch.{owner}: state[{key!r}] of param_groups[{gi}]['params'][{j}] "
            f"must be a one-element CPU tensor (not a DTensor), got {t!r}")
    return t.detach().numpy().reshape(())


class Slot:
    """Cached NumPy views of one parameter and its state, valid while the
    tensors (and their storage) are the ones recorded here."""

    __slots__ = ("param", "ptr", "numel", "view_dtype", "view", "state", "keys",
                 "tensors", "views", "scalar_views", "entries", "created",
                 "local", "strides", "like", "work", "storage", "master_view",
                 "comp_view", "counter")

    param: torch.Tensor
    ptr: int
    numel: int
    view_dtype: torch.dtype
    view: np.ndarray
    state: dict[str, Any]
    keys: tuple[Buffer, ...]
    tensors: tuple[torch.Tensor, ...]
    views: tuple[np.ndarray, ...]
    scalar_views: tuple[np.ndarray, ...]
    entries: tuple[tuple[str, torch.Tensor, int], ...]
    created: tuple[str, ...]
    #: The parameter's memory (a DTensor's local tensor).
    local: torch.Tensor
    #: The parameter's strides when it is not contiguous, else None.
    strides: tuple[int, ...] | None
    #: What state and gradients must be laid out as when the parameter is
    #: not contiguous (it, or ``work``), else None (contiguous).
    like: torch.Tensor | None
    #: The dense copy the kernel steps for a parameter whose memory is not
    #: dense (a strided slice), written back by the step; else None.
    work: torch.Tensor | None
    #: How the state is stored (``optcore.torch._storage.Layout``), and the
    #: views of the master copy and Kahan compensation it may have, and the
    #: rounding count of stochastic rounding without a step count.
    storage: Any
    master_view: np.ndarray | None
    comp_view: np.ndarray | None
    counter: torch.Tensor | None

    def bind(self, local: torch.Tensor) -> None:
        """View the parameter's memory ``local`` (see the module docstring)."""
        self.local = local
        self.ptr = local.data_ptr()
        self.numel = local.numel()
        self.view_dtype = local.dtype
        self.work = None
        if local.is_contiguous():
            self.strides = self.like = None
            stepped = local
        else:
            self.strides = local.stride()
            if not _dense(local):
                # (empty_like keeps the order of the strides, densely: the
                # layout full_like gives the state tensors too)
                self.work = torch.empty_like(local, memory_format=torch.preserve_format)
            stepped = self.like = local if self.work is None else self.work
        self.view = to_numpy(_flat(stepped))

    def same_memory(self, local: torch.Tensor) -> bool:
        """Whether ``local`` is the memory, with the layout, bound here."""
        return (self.ptr == local.data_ptr() and self.numel == local.numel()
                and local.dtype is self.view_dtype
                and (local.is_contiguous() if self.strides is None
                     else local.stride() == self.strides))

    def load(self) -> None:
        """Copy the parameter into ``work`` (if it is stepped on a copy)."""
        if self.work is not None:
            with torch.no_grad():
                self.work.copy_(self.local)

    def write_back(self) -> None:
        """Copy the stepped ``work`` back into the parameter (if any)."""
        if self.work is not None:
            with torch.no_grad():
                self.local.copy_(self.work)

    def grad_view(self, g: torch.Tensor) -> np.ndarray:
        """The NumPy view of gradient g laid out as the parameter's view: g's
        own memory when it is laid out so, else a copy (read only). A grad of
        another dtype or shape is passed as it is, for the kernel's checks to
        name."""
        like = self.like
        if like is None and g.is_contiguous() and not g.is_complex():
            return to_numpy(g if not g.requires_grad else g.detach())
        if g.dtype != self.view_dtype or g.shape != self.local.shape:
            return to_numpy(g.detach()) if g.is_contiguous() else g.detach().numpy()
        if like is None:
            g = g if g.is_contiguous() else g.contiguous()
        elif not (_dense(g) and _same_order(g, like)):
            g = torch.empty_like(like).copy_(g)
        return to_numpy(_flat(g))

    def valid(self, p: torch.Tensor, state: dict[str, Any],
              needed: tuple[Buffer, ...]) -> bool:
        # Same parameter over the same memory with the same strides, the same
        # state tensors over the same memory (share_memory_(), set_() or
        # `.data =` move a tensor's storage and would leave a cached view
        # dangling).
        if not (self.param is p and self.state is state and self.keys == needed
                and self.same_memory(p)):
            return False
        for key, t, ptr in self.entries:
            if state.get(key) is not t or t.data_ptr() != ptr:
                return False
        return True


def forget(state: Any, p: torch.Tensor, keys: Iterable[str]) -> None:
    """Remove the state entries ``keys`` of p (and p's entry once empty)."""
    entry = state.get(p)
    if entry is None:
        return
    for key in keys:
        entry.pop(key, None)
    if not entry:
        del state[p]
