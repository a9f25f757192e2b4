"""DTensor parameters (FSDP2's ``fully_shard``) in optcore.torch.

A DTensor is a wrapper without storage of its own: its memory is the local
tensor (``to_local()``) of this rank, the shard FSDP2 keeps resident. The
kernels step that local tensor in place, zero-copy, with the local tensor of
the gradient; the state tensors are DTensors built from the parameter
(``torch.full_like`` keeps its device mesh and placements), so
``torch.distributed.checkpoint`` and ``get_optimizer_state_dict`` /
``set_optimizer_state_dict`` save, load and reshard them as they do
torch.optim's.

The hooks: ``param_local`` and ``state_local`` (the checks of
``optcore.torch._tensors``: the tensor to view, a state tensor against its
parameter), ``grad_local`` (``_base.py``, for a gradient that is not a plain
tensor), ``local_ptr`` and ``new_slot`` (``_base.py``: the slot class whose
validity check reads the local tensors). For plain tensors each returns its
argument, or the plain slot; a step whose slots are cached calls none of
them for plain tensors.

The step moves no data: gradients that are DTensors have been reduced by
the engine (FSDP2 reduce-scatters in backward). It has one small collective,
``agree``: once every rank has checked its step, and before any write, the
ranks of the parameters' device mesh agree that all of them can take it (and
that the same parameters have gradients on each). If one cannot, every rank
raises the same error, naming the rank and its reason, and no rank changes
anything; the ranks stay in step and none waits at a later collective.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from optcore.torch._base import _Slot

try:
    if not torch.distributed.is_available():  # pragma: no cover - torch built without it
        raise ImportError("torch.distributed is not available")
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover
    DTensor = None  # type: ignore[misc,assignment]

# Kernels whose update reduces over each whole tensor (LAMB's trust ratio,
# a ratio of per-tensor norms): on a shard they would see the shard's norms
# only, so sharded parameters are refused rather than stepped wrongly.
_WHOLE_TENSOR_KERNELS = frozenset({"lamb_step"})


_ERRORS = {e.__name__: e for e in (TypeError, ValueError, RuntimeError, IndexError,
                                   KeyError)}


def mesh_of(groups: list[dict[str, Any]]) -> Any:
    """The device mesh of the first DTensor parameter, or None."""
    if DTensor is None:
        return None
    for group in groups:
        for p in group["params"]:
            if isinstance(p, DTensor):
                return p.device_mesh
    return None


def agree(mesh: Any, groups: list[dict[str, Any]], error: BaseException | None,
          where: str) -> None:
    """The step's collective check over the ranks of ``mesh``: returns when
    every rank checked its step without error and the same parameters have
    gradients everywhere; else raises, on every rank, the same error (the
    lowest failing rank's type and message, or a ValueError for gradients
    present on some ranks only). One all-reduce of five integers per step;
    the messages travel only when a rank failed."""
    import torch.distributed as dist
    present = [i for i, p in enumerate(p for g in groups for p in g["params"])
               if p.grad is not None]
    count, digest = len(present), sum((i + 1) * 2654435761 for i in present) % (1 << 61)
    flags = torch.tensor([int(error is not None), count, -count, digest, -digest],
                         dtype=torch.int64)
    dims = range(mesh.ndim)
    for d in dims:        # a maximum over each mesh dimension: over the whole mesh
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=mesh.get_group(d))
    failed, most, least, high, low = (int(v) for v in flags)
    if failed:
        mine = [] if error is None else [(dist.get_rank(), type(error).__name__,
                                          str(error))]
        for d in dims:
            gathered: list[Any] = [None] * mesh.size(d)
            dist.all_gather_object(gathered, mine, group=mesh.get_group(d))
            mine = sorted({m for part in gathered for m in part})
        rank, kind, message = mine[0]
        others = [r for r, _, _ in mine[1:]]
        also = f" (and on rank{'s' if len(others) > 1 else ''} "                \
               f"{', '.join(map(str, others))})" if others else ""
        exc = _ERRORS.get(kind, RuntimeError)(
            f"{where}: refused on rank {rank}{also}, so no rank stepped: {message}")
        raise exc from error
    if most != -least or high != -low:
        raise ValueError(f"{where}: the ranks have gradients for different parameters "
                         f"(a gradient is missing on some rank), so no rank stepped")


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a DTensor (or a Parameter wrapping one)."""
    return DTensor is not None and isinstance(t, DTensor)


def _local(t: Any) -> torch.Tensor:
    # (steps run in no-grad mode, where to_local() is the local tensor
    # itself; in grad mode it is an autograd view of the same memory)
    local: torch.Tensor = t.to_local()
    return local if not torch.is_grad_enabled() else local.detach()


def _layout(t: Any) -> tuple[Any, tuple[Any, ...]]:
    return t.device_mesh, tuple(t.placements)


def param_local(p: Any, where: str, kernel: str) -> torch.Tensor:
    """The tensor whose memory a step updates: p, or the local shard of a
    DTensor p (checked by the caller as any parameter: on the CPU, dense,
    contiguous); a kernel that reduces over whole tensors only with
    replicated placements."""
    if not is_dtensor(p):
        return p
    placements = tuple(p.placements)
    if kernel in _WHOLE_TENSOR_KERNELS and not all(pl.is_replicate() for pl in placements):
        raise ValueError(
            f"{where} is a DTensor with placements {placements}; {kernel} computes "
            f"per-tensor norms, which a shard cannot give: use replicated placements "
            f"or another optimizer")
    return _local(p)


def state_local(t: Any, p: torch.Tensor, where: str) -> tuple[Any, torch.Tensor]:
    """(state tensor, parameter) as the kernel sees them: both local tensors
    when p is a DTensor, after checking that t is a DTensor laid out as p
    (a checkpoint saves and reshards it as p)."""
    if is_dtensor(p):
        if not is_dtensor(t):
            raise TypeError(f"{where} is a {type(t).__name__}, but the parameter is a "
                            f"DTensor: its state must be a DTensor of the same device "
                            f"mesh and placements")
        if _layout(t) != _layout(p):
            raise ValueError(f"{where} has device mesh and placements {_layout(t)} but "
                             f"the parameter has {_layout(p)}")
        if t.shape != p.shape:
            raise ValueError(f"{where} has shape {tuple(t.shape)} but the parameter "
                             f"has {tuple(p.shape)}")
        return _local(t), _local(p)
    if is_dtensor(t):
        raise TypeError(f"{where} is a DTensor, but the parameter is not")
    return t, p


def grad_local(g: torch.Tensor, p: torch.Tensor, where: str) -> torch.Tensor:
    """The tensor a step reads for gradient g of p (``where``): g's local
    tensor when both are DTensors laid out alike; g itself when neither is."""
    if is_dtensor(g) != is_dtensor(p):
        raise ValueError(
            f"{where} is {'a' if is_dtensor(p) else 'not a'} DTensor but its grad "
            f"is {'a' if is_dtensor(g) else 'not a'} DTensor")
    if not is_dtensor(g):
        return g
    if _layout(g) != _layout(p) or g.shape != p.shape:
        raise ValueError(
            f"{where} has shape {tuple(p.shape)}, device mesh and placements "
            f"{_layout(p)}, but its grad has {tuple(g.shape)}, {_layout(g)}")
    return _local(g)


def local_ptr(t: torch.Tensor) -> int:
    """The data pointer of t's memory (a DTensor's own is 0)."""
    return _local(t).data_ptr() if is_dtensor(t) else t.data_ptr()


def new_slot(p: torch.Tensor, plain: type[_Slot]) -> _Slot:
    """An empty slot for p: the plain class, or its DTensor variant."""
    if not is_dtensor(p):
        return plain()
    slot = _dtensor_slot(plain)()
    slot.layout = _layout(p)  # type: ignore[attr-defined]
    return slot


_SLOT_CLASSES: dict[type, type] = {}


def _dtensor_slot(plain: type[_Slot]) -> type[_Slot]:
    cls = _SLOT_CLASSES.get(plain)
    if cls is None:
        class DTensorSlot(plain):  # type: ignore[valid-type,misc]
            """A slot over the local tensors of a DTensor parameter and its state;
            valid while they (their memory, the layouts) are the ones recorded."""

            __slots__ = ("layout",)

            def valid(self, p: torch.Tensor, state: dict[str, Any],
                      needed: tuple[Any, ...]) -> bool:
                if not (self.param is p and self.state is state and self.keys == needed
                        and _layout(p) == self.layout):
                    return False
                lp = _local(p)
                if not self.same_memory(lp):
                    return False
                for key, t, ptr in self.entries:
                    if state.get(key) is not t or local_ptr(t) != ptr:
                        return False
                return True

        cls = _SLOT_CLASSES[plain] = DTensorSlot
    return cls
