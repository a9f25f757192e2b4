"""The closed forms behind ``optcore.schedules`` (torch.optim.lr_scheduler's
``_get_closed_form_lr``), ReduceLROnPlateau's decision rule, and the checks
of the schedules' arguments.

Each form is ``f(base, t, **params)``, ``t`` the scheduler step count.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_right
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence


def _number(name: str, value: object, *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if value != value:
        raise ValueError(f"{name} must not be NaN")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value}")
    return value


def _integer(name: str, value: object, *, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return int(value)


def _base(base_lr: float | None, name: str = "base_lr") -> float | None:
    return None if base_lr is None else _number(name, base_lr, lo=0.0)


def _constant(base: float, t: int, factor: float, total_iters: int) -> float:
    return base * (factor + (t >= total_iters) * (1 - factor))


def _step_decay(base: float, t: int, step_size: int, gamma: float) -> float:
    return base * gamma ** (t // step_size)


def _multi_step(base: float, t: int, milestones: Sequence[int], gamma: float) -> float:
    return base * gamma ** bisect_right(milestones, t)


def _exponential(base: float, t: int, gamma: float) -> float:
    return base * gamma ** t


def _cosine(base: float, t: int, T_max: int, eta_min: float) -> float:
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2


def _warmup_cosine(base: float, t: int, warmup_steps: int, total_steps: int,
                   start_factor: float, eta_min: float) -> float:
    if t < warmup_steps:
        # LinearLR's closed form with end_factor = 1
        return base * (start_factor + (1.0 - start_factor) * t / warmup_steps)
    return _cosine(base, t - warmup_steps, total_steps - warmup_steps, eta_min)


def _one_cycle_phase(t: int, total_steps: int,  # type: ignore[return]  # the last phase returns
                     ends: Sequence[float]) -> tuple[int, float]:
    """(phase index, fraction of the phase done) at step t."""
    if t > total_steps:
        raise ValueError(f"one_cycle was asked for step {t} but has total_steps="
                         f"{total_steps}")
    start = 0.0
    for i, end in enumerate(ends):
        if t <= end or i == len(ends) - 1:
            return i, (t - start) / (end - start)
        start = end


def _anneal(start: float, end: float, pct: float, cos: bool) -> float:
    if cos:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def _one_cycle_lr(max_lr: float, t: int, total_steps: int, ends: Sequence[float],
                  three_phase: bool, cos: bool, div_factor: float, final_div_factor: float,
                  base_momentum: float, max_momentum: float) -> float:
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    phase, pct = _one_cycle_phase(t, total_steps, ends)
    points = ((initial, max_lr), (max_lr, initial), (initial, minimum)) if three_phase \
        else ((initial, max_lr), (max_lr, minimum))
    return _anneal(*points[phase], pct, cos)


def _one_cycle_momentum(t: int, total_steps: int, ends: Sequence[float], three_phase: bool,
                        cos: bool, div_factor: float, final_div_factor: float,
                        base_momentum: float, max_momentum: float) -> float:
    phase, pct = _one_cycle_phase(t, total_steps, ends)
    points = ((max_momentum, base_momentum), (base_momentum, max_momentum),
              (max_momentum, max_momentum)) if three_phase \
        else ((max_momentum, base_momentum), (base_momentum, max_momentum))
    return _anneal(*points[phase], pct, cos)


class _Plateau:
    """torch's ReduceLROnPlateau decision: feed metrics, learn when to reduce."""

    def __init__(self, mode: str, patience: int, threshold: float, threshold_mode: str,
                 cooldown: int) -> None:
        self.mode, self.threshold_mode = mode, threshold_mode
        self.patience, self.threshold, self.cooldown = patience, threshold, cooldown
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _is_better(self, a: float) -> bool:
        best = self.best
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel"
                        else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel"
                    else best + self.threshold)

    def update(self, metric: float) -> bool:
        """Record one metric; True when the rate should be reduced now."""
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
            return True
        return False

    def state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("best", "num_bad_epochs", "cooldown_counter",
                                               "last_epoch")}


def _reduced(lr: float, factor: float, min_lr: float, eps: float) -> float:
    new = max(lr * factor, min_lr)
    return new if lr - new > eps else lr
