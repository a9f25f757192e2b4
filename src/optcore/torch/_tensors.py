"""The checks of the tensors an optcore.torch step works on, and their NumPy views.

Parameters, gradients and state are CPU, dense, C-contiguous float32/float64
tensors the kernels update in place through NumPy views that share their
memory; nothing is ever copied. A DTensor contributes its local tensor
(``optcore.torch._dtensor``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from optcore.torch._dtensor import is_dtensor, param_local, state_local

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

    from optcore._spec import Buffer

SUPPORTED_DTYPES = (torch.float32, torch.float64)
STRIDED = torch.strided
_NEED = ("optcore updates CPU, dense, C-contiguous float32/float64 tensors in "
         "place and never works on a copy")


def _where(owner: str, gi: int, j: int) -> str:
    return f"optcore.torch.{owner}: param_groups[{gi}]['params'][{j}]"


def check_param(owner: str, kernel: str, p: torch.Tensor, gi: int, j: int) -> torch.Tensor:
    """The tensor whose memory the kernel updates for parameter p (p, or a
    DTensor's local tensor), checked."""
    where = _where(owner, gi, j)
    p = param_local(p, where, kernel)
    if p.device.type != "cpu":
        raise ValueError(f"{where} is on device {p.device}; {_NEED}")
    if p.layout is not STRIDED:
        raise ValueError(f"{where} has layout {p.layout}; {_NEED}")
    if p.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{where} has dtype {p.dtype}; {_NEED}")
    if not p.is_contiguous():
        raise ValueError(f"{where} is not contiguous (strides {p.stride()}); {_NEED}")
    return p


def state_view(owner: str, t: Any, p: torch.Tensor, key: str | None, gi: int,
               j: int) -> np.ndarray:
    """The NumPy view of state tensor t of parameter p, checked."""
    where = f"optcore.torch.{owner}: state[{key!r}] of param_groups[{gi}]['params'][{j}]"
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where} is a {type(t).__name__}, not a tensor")
    t, p = state_local(t, p, where)
    if t.device.type != "cpu" or t.layout is not STRIDED:
        raise ValueError(f"{where} is a {t.layout} tensor on {t.device}; state "
                         f"tensors must be dense CPU tensors")
    if t.dtype != p.dtype:
        raise TypeError(f"{where} has dtype {t.dtype} but the parameter has {p.dtype}")
    if t.shape != p.shape:
        raise ValueError(f"{where} has shape {tuple(t.shape)} but the parameter "
                         f"has {tuple(p.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{where} is not contiguous; optcore updates state in "
                         f"place and never works on a copy")
    return t.detach().numpy()


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
                 "tensors", "views", "scalar_views", "entries", "created")

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

    def valid(self, p: torch.Tensor, state: dict[str, Any],
              needed: tuple[Buffer, ...]) -> bool:
        # Same parameter over the same contiguous memory, the same state
        # tensors over the same memory (share_memory_(), set_() or `.data =`
        # move a tensor's storage and would leave a cached view dangling).
        if not (self.param is p and self.state is state and self.keys == needed
                and self.ptr == p.data_ptr() and self.numel == p.numel()
                and p.dtype is self.view_dtype and p.is_contiguous()):
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
