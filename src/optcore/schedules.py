"""Learning-rate schedules, usable two ways.

As a plain function of the step count (optax style)::

    lr_at = optcore.schedules.cosine_annealing(0.1, T_max=1000, eta_min=1e-4)
    lr_at(0), lr_at(500)                      # -> 0.1, 0.05005

Attached to an optimizer (torch style): ``sched.step()`` then sets every
``param_groups[i]["lr"]``; this works with optcore's optimizers and with
anything exposing torch-like ``param_groups`` (a ``torch.optim`` optimizer)::

    sched = optcore.schedules.cosine_annealing(None, T_max=1000).attach(opt)
    for ...:
        opt.step(grads)
        sched.step()

``step`` counts scheduler steps, like torch's ``last_epoch``: ``lr_at(0)`` is
the rate of the first optimizer step, ``lr_at(t)`` the rate after ``t`` calls of
``sched.step()``. With ``base_lr=None`` an attached schedule starts from each
group's own rate (``group["initial_lr"]``, set from ``group["lr"]`` on first
attach, as torch's schedulers do); with a number every group uses it.

The values are torch.optim.lr_scheduler's closed forms (its
``_get_closed_form_lr``): StepLR, MultiStepLR, ConstantLR, ExponentialLR,
CosineAnnealingLR, LinearLR then CosineAnnealingLR under SequentialLR,
OneCycleLR (including its momentum cycling) and ReduceLROnPlateau. torch's
``step()`` computes most of them recursively (each rate from the previous
one), which differs from the closed form by rounding only; an attached
optcore schedule always sets the closed form, so it does not compound with
other changes made to ``group["lr"]`` (ReduceLROnPlateau, which is relative by
nature, excepted).
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_right
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from optcore._typing import LrFunction, Optimizer

    # a Scheduler's schedule argument: one for every group, or one per group
    ScheduleArg = LrFunction | list[LrFunction] | tuple[LrFunction, ...]

__all__ = ["Schedule", "Scheduler", "ReduceOnPlateau", "constant", "step_decay",
           "multi_step", "exponential", "cosine_annealing", "warmup_cosine",
           "one_cycle", "reduce_on_plateau", "attach"]


# ---- argument checks -------------------------------------------------------

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


# ---- schedules as functions of the step ------------------------------------

class Schedule:
    """A learning rate as a function of the scheduler step count.

    ``schedule(t)`` -> float; ``schedule.attach(optimizer)`` -> a ``Scheduler``
    that sets the optimizer's ``group["lr"]``; ``schedule.with_base_lr(x)`` ->
    the same schedule from another base rate. Built by the functions of this
    module (``cosine_annealing`` etc.).
    """

    __slots__ = ("name", "base_lr", "params", "_lr", "_momentum")

    def __init__(self, name: str, lr_fn: Callable[..., float], base_lr: float | None,
                 params: dict[str, Any], momentum_fn: Callable[..., float] | None = None
                 ) -> None:
        self.name = name
        self.base_lr = base_lr
        self.params = params
        self._lr = lr_fn
        self._momentum = momentum_fn

    def __call__(self, step: int) -> float:
        if self.base_lr is None:
            raise ValueError(f"{self.name} has no base_lr: give one, or attach it to an "
                             f"optimizer to start from each group's rate")
        return float(self._lr(self.base_lr, _integer("step", step), **self.params))

    def momentum(self, step: int) -> float | None:
        """The momentum (SGD) or beta1 (Adam family) this schedule sets at
        ``step``, or None when it leaves momentum alone (all but one_cycle
        with ``cycle_momentum``)."""
        if self._momentum is None:
            return None
        return float(self._momentum(_integer("step", step), **self.params))

    def with_base_lr(self, base_lr: float | None) -> Schedule:
        return Schedule(self.name, self._lr, _base(base_lr), self.params, self._momentum)

    def attach(self, optimizer: Optimizer) -> Scheduler:
        """Drive ``optimizer``'s learning rates: sets them to ``self(0)`` now and
        to ``self(t)`` at the ``t``-th ``Scheduler.step()``."""
        return Scheduler(optimizer, self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}(base_lr={self.base_lr!r}, {args})"


def constant(base_lr: float | None, factor: float = 1.0, total_iters: int = 0) -> Schedule:
    """``base_lr`` (times ``factor`` for the first ``total_iters`` steps):
    torch's ConstantLR; the defaults give a plain constant rate."""
    factor = _number("factor", factor, lo=0.0, hi=1.0)
    total_iters = _integer("total_iters", total_iters)
    return Schedule("constant", _constant, _base(base_lr),
                    dict(factor=factor, total_iters=total_iters))


def _constant(base: float, t: int, factor: float, total_iters: int) -> float:
    return base * (factor + (t >= total_iters) * (1 - factor))


def step_decay(base_lr: float | None, step_size: int, gamma: float = 0.1) -> Schedule:
    """``base_lr * gamma ** (t // step_size)``: torch's StepLR."""
    return Schedule("step_decay", _step_decay, _base(base_lr),
                    dict(step_size=_integer("step_size", step_size, lo=1),
                         gamma=_number("gamma", gamma, lo=0.0)))


def _step_decay(base: float, t: int, step_size: int, gamma: float) -> float:
    return base * gamma ** (t // step_size)


def multi_step(base_lr: float | None, milestones: Iterable[int],
               gamma: float = 0.1) -> Schedule:
    """``base_lr * gamma ** (number of milestones <= t)``: torch's
    MultiStepLR (a repeated milestone counts each time)."""
    milestones = tuple(sorted(_integer("milestone", m) for m in milestones))
    return Schedule("multi_step", _multi_step, _base(base_lr),
                    dict(milestones=milestones, gamma=_number("gamma", gamma, lo=0.0)))


def _multi_step(base: float, t: int, milestones: Sequence[int], gamma: float) -> float:
    return base * gamma ** bisect_right(milestones, t)


def exponential(base_lr: float | None, gamma: float) -> Schedule:
    """``base_lr * gamma ** t``: torch's ExponentialLR."""
    return Schedule("exponential", _exponential, _base(base_lr),
                    dict(gamma=_number("gamma", gamma, lo=0.0)))


def _exponential(base: float, t: int, gamma: float) -> float:
    return base * gamma ** t


def cosine_annealing(base_lr: float | None, T_max: int, eta_min: float = 0.0) -> Schedule:
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``:
    torch's CosineAnnealingLR (periodic past ``T_max``, as torch's is)."""
    return Schedule("cosine_annealing", _cosine, _base(base_lr),
                    dict(T_max=_integer("T_max", T_max, lo=1),
                         eta_min=_number("eta_min", eta_min, lo=0.0)))


def _cosine(base: float, t: int, T_max: int, eta_min: float) -> float:
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2


def warmup_cosine(base_lr: float | None, warmup_steps: int, total_steps: int,
                  start_factor: float = 1.0 / 3, eta_min: float = 0.0) -> Schedule:
    """Linear warm-up from ``start_factor * base_lr`` to ``base_lr`` over
    ``warmup_steps``, then cosine annealing to ``eta_min`` at ``total_steps``:
    torch's ``SequentialLR([LinearLR(opt, start_factor, 1.0, warmup_steps),
    CosineAnnealingLR(opt, total_steps - warmup_steps, eta_min)],
    milestones=[warmup_steps])``. ``start_factor`` defaults to LinearLR's."""
    warmup_steps = _integer("warmup_steps", warmup_steps)
    total_steps = _integer("total_steps", total_steps, lo=warmup_steps + 1)
    return Schedule("warmup_cosine", _warmup_cosine, _base(base_lr),
                    dict(warmup_steps=warmup_steps, total_steps=total_steps,
                         start_factor=_number("start_factor", start_factor, lo=0.0,
                                              hi=1.0, lo_open=True),
                         eta_min=_number("eta_min", eta_min, lo=0.0)))


def _warmup_cosine(base: float, t: int, warmup_steps: int, total_steps: int,
                   start_factor: float, eta_min: float) -> float:
    if t < warmup_steps:
        # LinearLR's closed form with end_factor = 1
        return base * (start_factor + (1.0 - start_factor) * t / warmup_steps)
    return _cosine(base, t - warmup_steps, total_steps - warmup_steps, eta_min)


def one_cycle(max_lr: float | None, total_steps: int, pct_start: float = 0.3,
              anneal_strategy: str = "cos", cycle_momentum: bool = True,
              base_momentum: float = 0.85, max_momentum: float = 0.95,
              div_factor: float = 25.0, final_div_factor: float = 1e4,
              three_phase: bool = False) -> Schedule:
    """The 1cycle policy: torch's OneCycleLR (``max_lr`` plays ``base_lr``'s
    part; None: each group's rate). From ``max_lr / div_factor`` up to
    ``max_lr`` over ``pct_start`` of ``total_steps``, then down to
    ``max_lr / div_factor / final_div_factor`` (with ``three_phase``: back to
    the initial rate first). With ``cycle_momentum`` the attached schedule also
    cycles momentum (or beta1) inversely between ``max_momentum`` and
    ``base_momentum``, as torch does."""
    total_steps = _integer("total_steps", total_steps, lo=1)
    pct_start = _number("pct_start", pct_start, lo=0.0, hi=1.0)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
    # Phase ends, as torch computes them (floats).
    first = float(pct_start * total_steps) - 1
    ends: tuple[float, ...]
    if three_phase:
        ends = (first, float(2 * pct_start * total_steps) - 2, total_steps - 1)
    else:
        ends = (first, total_steps - 1)
    starts = (0.0,) + ends[:-1]
    if any(not e > s for s, e in zip(starts, ends)):
        raise ValueError(f"one_cycle phases need at least one step each: pct_start="
                         f"{pct_start} of total_steps={total_steps} gives phase ends {ends}")
    params = dict(total_steps=total_steps, ends=ends, three_phase=bool(three_phase),
                  cos=anneal_strategy == "cos",
                  div_factor=_number("div_factor", div_factor, lo=0.0, lo_open=True),
                  final_div_factor=_number("final_div_factor", final_div_factor, lo=0.0,
                                           lo_open=True),
                  base_momentum=_number("base_momentum", base_momentum),
                  max_momentum=_number("max_momentum", max_momentum))
    return Schedule("one_cycle", _one_cycle_lr, _base(max_lr, "max_lr"), params,
                    _one_cycle_momentum if cycle_momentum else None)


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


# ---- attached to an optimizer ----------------------------------------------

def _groups(optimizer: Optimizer) -> list[dict[str, Any]]:
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        raise TypeError(f"{type(optimizer).__name__} has no param_groups; a schedule "
                        f"attaches to an optimizer with torch-like param_groups")
    return groups


def _set(group: dict[str, Any], key: str, value: float | None) -> None:
    old: Any = group.get(key)       # a float, or a torch tensor
    if hasattr(old, "fill_"):        # a torch tensor hyperparameter: keep it one
        old.fill_(value)
    else:
        group[key] = value


class Scheduler:
    """A schedule (or one per group, or plain callables ``t -> lr``) driving an
    optimizer's ``param_groups[i]["lr"]``; torch's LRScheduler interface:
    ``step()``, ``last_epoch``, ``get_last_lr()``, ``state_dict()``."""

    def __init__(self, optimizer: Optimizer, schedule: ScheduleArg,
                 last_epoch: int = 0) -> None:
        self.optimizer = optimizer
        groups = _groups(optimizer)
        self._template: LrFunction | None     # one schedule for every group, or None
        self.schedules: list[LrFunction]
        if isinstance(schedule, (list, tuple)):
            if len(schedule) != len(groups):
                raise ValueError(f"got {len(schedule)} schedules for {len(groups)} "
                                 f"parameter groups")
            self._template = None
            self.schedules = list(schedule)
        else:
            self._template = schedule
            self.schedules = []
        for s in ([schedule] if self._template is not None else self.schedules):
            if not callable(s):
                raise TypeError(f"a schedule must be callable (step -> lr), got "
                                f"{type(s).__name__}")
        self._momentum_key: list[str | None] = []
        self.last_epoch = _integer("last_epoch", last_epoch)
        self._apply()

    def _schedule_for(self, group: dict[str, Any]) -> LrFunction:
        s: Any = self._template        # (not None: called only for a template)
        if isinstance(s, Schedule) and s.base_lr is None:
            group.setdefault("initial_lr", group["lr"])
            s = s.with_base_lr(float(group["initial_lr"]))
        return s

    def _apply(self) -> None:
        groups = _groups(self.optimizer)
        # Groups added to the optimizer after attaching get their own schedule.
        while len(self.schedules) < len(groups):
            if self._template is None:
                raise ValueError(f"the optimizer now has {len(groups)} parameter groups "
                                 f"but this scheduler was given {len(self.schedules)} "
                                 f"schedules")
            self.schedules.append(self._schedule_for(groups[len(self.schedules)]))
        while len(self._momentum_key) < len(groups):
            self._momentum_key.append(self._momentum_key_of(
                self.schedules[len(self._momentum_key)], groups[len(self._momentum_key)]))
        t = self.last_epoch
        s: Any                         # a Schedule wherever mkey is set
        for group, s, mkey in zip(groups, self.schedules, self._momentum_key):
            _set(group, "lr", s(t))
            if mkey == "betas":
                group["betas"] = (s.momentum(t), *tuple(group["betas"])[1:])
            elif mkey == "momentum":
                _set(group, "momentum", s.momentum(t))
        self._last_lr = [float(group["lr"]) for group in groups]

    @staticmethod
    def _momentum_key_of(s: LrFunction, group: dict[str, Any]) -> str | None:
        if not isinstance(s, Schedule) or s._momentum is None:
            return None
        if "betas" in group:
            return "betas"
        if "momentum" in group:
            return "momentum"
        raise ValueError(f"{s.name} cycles momentum but the optimizer's groups have "
                         f"neither 'momentum' nor 'betas' (pass cycle_momentum=False)")

    def step(self) -> None:
        """Advance one step and set each group's rate (and momentum, for
        one_cycle) to the schedule's value there."""
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = _integer("last_epoch", state_dict["last_epoch"])
        self._apply()

    def __repr__(self) -> str:
        what = self._template if self._template is not None else self.schedules
        return f"Scheduler({what!r}, last_epoch={self.last_epoch})"


def attach(optimizer: Optimizer, schedule: ScheduleArg) -> Scheduler:
    """Attach ``schedule`` (a Schedule, any callable ``t -> lr``, or a list
    of those, one per group) to ``optimizer``; returns the Scheduler."""
    return Scheduler(optimizer, schedule)


# ---- reduce on plateau -----------------------------------------------------

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


class ReduceOnPlateau:
    """Reduce the rate by ``factor`` when a metric stops improving (torch's
    ReduceLROnPlateau). Not a function of the step: feed it metrics.

    Standalone: ``lr = sched.step(metric)`` (and ``sched.lr``). Attached:
    ``sched.attach(opt).step(metric)`` reduces every group's current rate."""

    def __init__(self, base_lr: float | None = None, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | Sequence[float] = 0.0,
                 eps: float = 1e-8) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.factor = _number("factor", factor, lo=0.0, hi=1.0, hi_open=True)
        self._args = (mode, _integer("patience", patience), _number("threshold", threshold),
                      threshold_mode, _integer("cooldown", cooldown))
        self.min_lr: list[float] | float = (list(min_lr) if isinstance(min_lr, (list, tuple))
                       else _number("min_lr", min_lr, lo=0.0))
        self.eps = _number("eps", eps, lo=0.0)
        self.base_lr = _base(base_lr)
        self.lr = self.base_lr
        self._plateau = _Plateau(*self._args)
        self.optimizer: Optimizer = None
        self._last_lr: list[float]     # set when attached

    def _min_lr(self, i: int) -> float:
        return self.min_lr[i] if isinstance(self.min_lr, list) else self.min_lr

    def step(self, metric: float) -> float | None:
        """Record ``metric``; returns the (possibly reduced) rate standalone,
        or None when attached (the groups' rates are updated)."""
        reduce = self._plateau.update(metric)
        if self.optimizer is None:
            if self.lr is None:
                raise ValueError("reduce_on_plateau has no base_lr: give one, or attach "
                                 "it to an optimizer")
            if reduce:
                self.lr = _reduced(self.lr, self.factor, self._min_lr(0), self.eps)
            return self.lr
        groups = _groups(self.optimizer)
        if isinstance(self.min_lr, list) and len(self.min_lr) != len(groups):
            raise ValueError(f"min_lr has {len(self.min_lr)} entries but the optimizer has "
                             f"{len(groups)} parameter groups")
        if reduce:
            for i, group in enumerate(groups):
                _set(group, "lr", _reduced(float(group["lr"]), self.factor,
                                           self._min_lr(i), self.eps))
        self._last_lr = [float(group["lr"]) for group in groups]
        return None

    def attach(self, optimizer: Optimizer) -> ReduceOnPlateau:
        """A fresh copy of this schedule driving ``optimizer``'s rates (its
        groups keep their own rates unless ``base_lr`` was given)."""
        attached = ReduceOnPlateau.__new__(ReduceOnPlateau)
        attached.__dict__.update(self.__dict__)
        attached._plateau = _Plateau(*self._args)
        attached.optimizer = optimizer
        groups = _groups(optimizer)
        if self.base_lr is not None:
            for group in groups:
                _set(group, "lr", self.base_lr)
        attached._last_lr = [float(group["lr"]) for group in groups]
        return attached

    @property
    def last_epoch(self) -> int:
        return self._plateau.last_epoch

    def get_last_lr(self) -> list[float | None]:
        return list(self._last_lr) if self.optimizer is not None else [self.lr]

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, **self._plateau.state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.lr = state_dict["lr"]
        for k, v in state_dict.items():
            if k != "lr":
                setattr(self._plateau, k, v)


def reduce_on_plateau(base_lr: float | None = None, mode: str = "min", factor: float = 0.1,
                      patience: int = 10, threshold: float = 1e-4,
                      threshold_mode: str = "rel", cooldown: int = 0,
                      min_lr: float | Sequence[float] = 0.0,
                      eps: float = 1e-8) -> ReduceOnPlateau:
    """torch's ReduceLROnPlateau, with its arguments and defaults; see
    ``ReduceOnPlateau``."""
    return ReduceOnPlateau(base_lr, mode, factor, patience, threshold, threshold_mode,
                           cooldown, min_lr, eps)
