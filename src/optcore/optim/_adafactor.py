"""Adafactor's rules shared by ``optcore.Adafactor`` and
``optcore.torch.Adafactor``: torch.optim.Adafactor's option checks and
messages, its defaults and its state shapes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["DEFAULTS", "OPTION_NAMES", "check_options", "state_shapes", "kernel_options",
           "STATE_DTYPES"]

#: The storages of Adafactor's states (its kernel keeps float32 for
#: bfloat16/float16 parameters; float32/float64 parameters their own dtype).
STATE_DTYPES = ("float32",)

#: torch.optim.Adafactor's defaults, in its ``defaults`` order.
DEFAULTS: dict[str, Any] = {
    "lr": 1e-2,
    "beta2_decay": -0.8,
    "eps": (None, 1e-3),
    "d": 1.0,
    "weight_decay": 0.0,
    "foreach": None,
    "maximize": False,
}
OPTION_NAMES = tuple(DEFAULTS)


def check_options(lr: Any, beta2_decay: Any, eps: Any, d: Any, weight_decay: Any,
                  lr_numel: int | None = None) -> None:
    """Raise torch.optim.Adafactor's ValueError for a bad option (``lr_numel``:
    the element count of a tensor ``lr``, else None)."""
    if lr_numel is not None and lr_numel != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
    if not 0.0 >= beta2_decay:
        raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
    if eps[0] is not None and not 0.0 <= eps[0]:
        raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
    if not 0.0 <= eps[1]:
        raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
    if not 1.0 <= d:
        raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")


def state_shapes(shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """torch's state buffers of a gradient of ``shape``: ``row_var``
    (``shape[:-1] + (1,)``) and ``col_var`` (``shape[:-2] + (1, shape[-1])``)
    for 2 or more dimensions, else ``variance`` of the same shape."""
    shape = tuple(shape)
    if len(shape) > 1:
        return {"row_var": shape[:-1] + (1,), "col_var": shape[:-2] + (1, shape[-1])}
    return {"variance": shape}


def kernel_options(group: dict[str, Any], eps1: float | None) -> dict[str, Any]:
    """``optcore.adafactor_step``'s keyword options of a group (``eps1``: the
    group's, resolved as torch resolves None: the first parameter's dtype)."""
    return {"lr": float(group["lr"]), "beta2_decay": group["beta2_decay"], "eps1": eps1,
            "eps2": group["eps"][1], "d": group["d"],
            "weight_decay": group["weight_decay"], "maximize": group["maximize"]}
