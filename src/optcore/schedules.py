"""Learning-rate schedules, usable two ways.

As a plain function of the step count (optax style):

>>> import numpy as np
>>> import optcore
>>> lr_at = optcore.schedules.cosine_annealing(0.1, T_max=1000, eta_min=1e-4)
>>> lr_at(0), round(lr_at(500), 5)
(0.1, 0.05005)

Attached to an optimizer (torch style): ``sched.step()`` then sets every
``param_groups[i]["lr"]``; this works with optcore's optimizers and with
anything exposing torch-like ``param_groups`` (a ``torch.optim`` optimizer):

>>> w = np.ones(2)
>>> opt = optcore.SGD([w], lr=0.1)
>>> sched = optcore.schedules.cosine_annealing(None, T_max=1000).attach(opt)
>>> for _ in range(500):
...     opt.step([2 * w])
...     sched.step()
>>> sched.get_last_lr()
[0.05]

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

from typing import TYPE_CHECKING, Any

from optcore._lr_forms import (_base, _constant, _cosine, _exponential, _integer,
                               _multi_step, _number, _one_cycle_lr, _one_cycle_momentum,
                               _step_decay, _warmup_cosine)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from optcore._typing import LrFunction, Optimizer

    # a Scheduler's schedule argument: one for every group, or one per group
    ScheduleArg = LrFunction | list[LrFunction] | tuple[LrFunction, ...]

__all__ = ["Schedule", "Scheduler", "ReduceOnPlateau", "constant", "step_decay",
           "multi_step", "exponential", "cosine_annealing", "warmup_cosine",
           "one_cycle", "reduce_on_plateau", "attach"]


# ---- schedules as functions of the step ------------------------------------

class Schedule:
    """A learning rate as a function of the scheduler step count.

    ``schedule(t)`` is the rate after ``t`` scheduler steps;
    ``schedule.attach(optimizer)`` returns a ``Scheduler`` that sets the
    optimizer's ``group["lr"]``; ``schedule.with_base_lr(x)`` is the same
    schedule from another base rate. Built by the functions of this module
    (``cosine_annealing`` and the others), not directly.

    Parameters
    ----------
    name : str
        The name of the function that built it (for messages and ``repr``).
    lr_fn : callable
        ``lr_fn(base_lr, t, **params)``: the rate at step ``t``.
    base_lr : float or None
        The initial rate; None until attached.
    params : dict
        The schedule's checked arguments.
    momentum_fn : callable, optional
        ``momentum_fn(t, **params)``: the momentum it sets (one_cycle).

    See Also
    --------
    Scheduler : A schedule attached to an optimizer.

    Examples
    --------
    >>> from optcore import schedules
    >>> lr_at = schedules.exponential(0.1, gamma=0.5)
    >>> lr_at
    exponential(base_lr=0.1, gamma=0.5)
    >>> [lr_at(t) for t in range(3)]
    [0.1, 0.05, 0.025]
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
        """The learning rate after ``step`` scheduler steps.

        Parameters
        ----------
        step : int
            The number of ``Scheduler.step()`` calls so far (0: the first
            optimizer step's rate).

        Returns
        -------
        float
            The rate.

        Raises
        ------
        ValueError
            If the schedule has no ``base_lr`` or ``step`` is negative (or past
            ``total_steps`` for one_cycle).
        TypeError
            If ``step`` is not an integer.

        Examples
        --------
        >>> from optcore import schedules
        >>> schedules.step_decay(1.0, step_size=10)(25)
        0.01...
        """
        if self.base_lr is None:
            raise ValueError(f"{self.name} has no base_lr: give one, or attach it to an "
                             f"optimizer to start from each group's rate")
        return float(self._lr(self.base_lr, _integer("step", step), **self.params))

    def momentum(self, step: int) -> float | None:
        """The momentum (SGD) or beta1 (Adam family) this schedule sets at ``step``.

        Parameters
        ----------
        step : int
            The number of scheduler steps so far.

        Returns
        -------
        float or None
            The momentum, or None when the schedule leaves momentum alone (all
            but one_cycle with ``cycle_momentum``).

        Examples
        --------
        >>> from optcore import schedules
        >>> s = schedules.one_cycle(0.1, total_steps=5)
        >>> [round(s.momentum(t), 4) for t in range(5)]
        [0.95, 0.855, 0.8889, 0.9312, 0.95]
        >>> schedules.constant(0.1).momentum(0) is None
        True
        """
        if self._momentum is None:
            return None
        return float(self._momentum(_integer("step", step), **self.params))

    def with_base_lr(self, base_lr: float | None) -> Schedule:
        """The same schedule from another base rate.

        Parameters
        ----------
        base_lr : float or None
            The new initial rate (None: each group's own, when attached).

        Returns
        -------
        Schedule
            A new schedule; this one is unchanged.

        Examples
        --------
        >>> from optcore import schedules
        >>> schedules.exponential(None, gamma=0.5).with_base_lr(2.0)(1)
        1.0
        """
        return Schedule(self.name, self._lr, _base(base_lr), self.params, self._momentum)

    def attach(self, optimizer: Optimizer) -> Scheduler:
        """Drive ``optimizer``'s learning rates with this schedule.

        Sets every group's rate to ``self(0)`` now and to ``self(t)`` at the
        ``t``-th ``Scheduler.step()``.

        Parameters
        ----------
        optimizer : object
            An optcore optimizer, or anything with torch-like ``param_groups``
            (a ``torch.optim`` optimizer).

        Returns
        -------
        Scheduler
            The scheduler; call its ``step()`` after each optimizer step.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.SGD([np.ones(2)], lr=0.1)
        >>> sched = optcore.schedules.step_decay(None, step_size=1, gamma=0.5).attach(opt)
        >>> sched.step()
        >>> opt.param_groups[0]["lr"]
        0.05
        """
        return Scheduler(optimizer, self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}(base_lr={self.base_lr!r}, {args})"


def constant(base_lr: float | None, factor: float = 1.0, total_iters: int = 0) -> Schedule:
    """A constant rate, optionally scaled for the first steps (torch's ConstantLR).

    ``base_lr * factor`` for the first ``total_iters`` steps, then
    ``base_lr``; the defaults give a plain constant rate.

    Parameters
    ----------
    base_lr : float or None
        The initial rate. None: attached, each group starts from its own rate
        (``group["initial_lr"]``, set from ``group["lr"]`` on first attach).
    factor : float, default 1.0
        The scale of the first steps, in ``[0, 1]``.
    total_iters : int, default 0
        How many steps are scaled.

    Returns
    -------
    Schedule
        ``schedule(t)`` is the rate after ``t`` scheduler steps;
        ``schedule.attach(optimizer)`` drives an optimizer.

    Raises
    ------
    ValueError
        If an argument is out of range.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> from optcore import schedules
    >>> s = schedules.constant(0.1, factor=0.5, total_iters=2)
    >>> [round(s(t), 4) for t in range(5)]
    [0.05, 0.05, 0.1, 0.1, 0.1]
    """
    factor = _number("factor", factor, lo=0.0, hi=1.0)
    total_iters = _integer("total_iters", total_iters)
    return Schedule("constant", _constant, _base(base_lr),
                    dict(factor=factor, total_iters=total_iters))


def step_decay(base_lr: float | None, step_size: int, gamma: float = 0.1) -> Schedule:
    """Decay by ``gamma`` every ``step_size`` steps (torch's StepLR).

    The rate is ``base_lr * gamma ** (t // step_size)``.

    Parameters
    ----------
    base_lr : float or None
        The initial rate. None: attached, each group starts from its own rate
        (``group["initial_lr"]``, set from ``group["lr"]`` on first attach).
    step_size : int
        Steps between decays, ``>= 1``.
    gamma : float, default 0.1
        The decay factor, ``>= 0``.

    Returns
    -------
    Schedule
        ``schedule(t)`` is the rate after ``t`` scheduler steps;
        ``schedule.attach(optimizer)`` drives an optimizer.

    Raises
    ------
    ValueError
        If an argument is out of range.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> from optcore import schedules
    >>> s = schedules.step_decay(0.1, step_size=2)
    >>> [round(s(t), 4) for t in range(5)]
    [0.1, 0.1, 0.01, 0.01, 0.001]
    """
    return Schedule("step_decay", _step_decay, _base(base_lr),
                    dict(step_size=_integer("step_size", step_size, lo=1),
                         gamma=_number("gamma", gamma, lo=0.0)))


def multi_step(base_lr: float | None, milestones: Iterable[int],
               gamma: float = 0.1) -> Schedule:
    """Decay by ``gamma`` at each milestone (torch's MultiStepLR).

    The rate is ``base_lr * gamma ** (number of milestones <= t)``; a
    repeated milestone counts each time.

    Parameters
    ----------
    base_lr : float or None
        The initial rate. None: attached, each group starts from its own rate
        (``group["initial_lr"]``, set from ``group["lr"]`` on first attach).
    milestones : iterable of int
        The steps at which the rate decays (any order), each ``>= 0``.
    gamma : float, default 0.1
        The decay factor, ``>= 0``.

    Returns
    -------
    Schedule
        ``schedule(t)`` is the rate after ``t`` scheduler steps;
        ``schedule.attach(optimizer)`` drives an optimizer.

    Raises
    ------
    ValueError
        If an argument is out of range.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> from optcore import schedules
    >>> s = schedules.multi_step(0.1, milestones=[1, 3])
    >>> [round(s(t), 4) for t in range(5)]
    [0.1, 0.01, 0.01, 0.001, 0.001]
    """
    milestones = tuple(sorted(_integer("milestone", m) for m in milestones))
    return Schedule("multi_step", _multi_step, _base(base_lr),
                    dict(milestones=milestones, gamma=_number("gamma", gamma, lo=0.0)))


def exponential(base_lr: float | None, gamma: float) -> Schedule:
    """Decay by ``gamma`` every step (torch's ExponentialLR).

    The rate is ``base_lr * gamma ** t``.

    Parameters
    ----------
    base_lr : float or None
        The initial rate. None: attached, each group starts from its own rate
        (``group["initial_lr"]``, set from ``group["lr"]`` on first attach).
    gamma : float
        The decay factor, ``>= 0``.

    Returns
    -------
    Schedule
        ``schedule(t)`` is the rate after ``t`` scheduler steps;
        ``schedule.attach(optimizer)`` drives an optimizer.

    Raises
    ------
    ValueError
        If an argument is out of range.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> from optcore import schedules
    >>> s = schedules.exponential(0.1, gamma=0.5)
    >>> [round(s(t), 4) for t in range(5)]
    [0.1, 0.05, 0.025, 0.0125, 0.0063]
    """
    return Schedule("exponential", _exponential, _base(base_lr),
                    dict(gamma=_number("gamma", gamma, lo=0.0)))


def cosine_annealing(base_lr: float | None, T_max: int, eta_min: float = 0.0) -> Schedule:
    """Cosine annealing from ``base_lr`` to ``eta_min`` (torch's CosineAnnealingLR).

    The rate is ``eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``
    (periodic past ``T_max``, as torch's closed form is).

    Parameters
    ----------
    base_lr : float or None
        The initial rate. None: attached, each group starts from its own rate
        (``group["initial_lr"]``, set from ``group["lr"]`` on first attach).
    T_max : int
        Steps from ``base_lr`` down to ``eta_min``, ``>= 1``.
    eta_min : float, default 0.0
        The final rate, ``>= 0``.

    Returns
    -------
    Schedule
        ``schedule(t)`` is the rate after ``t`` scheduler steps;
        ``schedule.attach(optimizer)`` drives an optimizer.

    Raises
    ------
    ValueError
        If an argument is out of range.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> from optcore import schedules
    >>> s = schedules.cosine_annealing(0.1, T_max=4)
    >>> [round(s(t), 4) for t in range(5)]
    [0.1, 0.0854, 0.05, 0.0146, 0.0]
    """
    return Schedule("cosine_annealing", _cosine, _base(base_lr),
                    dict(T_max=_integer("T_max", T_max, lo=1),
                         eta_min=_number("eta_min", eta_min, lo=0.0)))


def warmup_cosine(base_lr: float | None, warmup_steps: int, total_steps: int,
                  start_factor: float = 1.0 / 3, eta_min: float = 0.0) -> Schedule:
    """Linear warm-up, then cosine annealing.

    From ``start_factor * base_lr`` up to ``base_lr`` over ``warmup_steps``,
    then cosine annealing down to ``eta_min`` at ``total_steps``: torch's
    ``SequentialLR([LinearLR(opt, start_factor, 1.0, warmup_steps),
    CosineAnnealingLR(opt, total_steps - warmup_steps, eta_min)],
    milestones=[warmup_steps])``.

    Parameters
    ----------
    base_lr : float or None
        The initial rate. None: attached, each group starts from its own rate
        (``group["initial_lr"]``, set from ``group["lr"]`` on first attach).
    warmup_steps : int
        Steps of the linear warm-up, ``>= 0``.
    total_steps : int
        The step at which the rate reaches ``eta_min``, ``> warmup_steps``.
    start_factor : float, default 1/3
        The first rate as a fraction of ``base_lr``, in ``(0, 1]`` (LinearLR's
        default).
    eta_min : float, default 0.0
        The final rate, ``>= 0``.

    Returns
    -------
    Schedule
        ``schedule(t)`` is the rate after ``t`` scheduler steps;
        ``schedule.attach(optimizer)`` drives an optimizer.

    Raises
    ------
    ValueError
        If an argument is out of range.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> from optcore import schedules
    >>> s = schedules.warmup_cosine(0.1, warmup_steps=2, total_steps=6)
    >>> [round(s(t), 4) for t in range(7)]
    [0.0333, 0.0667, 0.1, 0.0854, 0.05, 0.0146, 0.0]
    """
    warmup_steps = _integer("warmup_steps", warmup_steps)
    total_steps = _integer("total_steps", total_steps, lo=warmup_steps + 1)
    return Schedule("warmup_cosine", _warmup_cosine, _base(base_lr),
                    dict(warmup_steps=warmup_steps, total_steps=total_steps,
                         start_factor=_number("start_factor", start_factor, lo=0.0,
                                              hi=1.0, lo_open=True),
                         eta_min=_number("eta_min", eta_min, lo=0.0)))


def one_cycle(max_lr: float | None, total_steps: int, pct_start: float = 0.3,
              anneal_strategy: str = "cos", cycle_momentum: bool = True,
              base_momentum: float = 0.85, max_momentum: float = 0.95,
              div_factor: float = 25.0, final_div_factor: float = 1e4,
              three_phase: bool = False) -> Schedule:
    """The 1cycle policy (torch's OneCycleLR).

    From ``max_lr / div_factor`` up to ``max_lr`` over ``pct_start`` of
    ``total_steps``, then down to ``max_lr / div_factor / final_div_factor``
    (with ``three_phase``: back to the initial rate first). With
    ``cycle_momentum`` the attached schedule also cycles momentum (or beta1)
    inversely between ``max_momentum`` and ``base_momentum``, as torch does.

    Parameters
    ----------
    max_lr : float or None
        The peak rate (it plays ``base_lr``'s part). None: attached, each
        group's own rate.
    total_steps : int
        The length of the cycle, ``>= 1``; asking for a later step raises.
    pct_start : float, default 0.3
        The fraction of the cycle spent increasing the rate, in ``[0, 1]``.
    anneal_strategy : {"cos", "linear"}, default "cos"
        Cosine or linear annealing.
    cycle_momentum : bool, default True
        Also cycle the momentum (``momentum``, or ``betas[0]``).
    base_momentum : float, default 0.85
        The momentum at the peak rate.
    max_momentum : float, default 0.95
        The momentum at the lowest rates.
    div_factor : float, default 25.0
        The initial rate is ``max_lr / div_factor``, ``> 0``.
    final_div_factor : float, default 1e4
        The final rate is ``max_lr / div_factor / final_div_factor``, ``> 0``.
    three_phase : bool, default False
        Return to the initial rate before annealing to the final one.

    Returns
    -------
    Schedule
        ``schedule(t)`` is the rate after ``t`` scheduler steps;
        ``schedule.attach(optimizer)`` drives an optimizer.

    Raises
    ------
    ValueError
        If an argument is out of range or a phase would have no step.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> from optcore import schedules
    >>> s = schedules.one_cycle(0.1, total_steps=5)
    >>> [round(s(t), 4) for t in range(5)]
    [0.004, 0.095, 0.0611, 0.0188, 0.0]
    """
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


# The attached side (Scheduler, attach, ReduceOnPlateau) lives in its own module
# for size; it is part of this module's API.
from optcore._schedulers import (ReduceOnPlateau, Scheduler, attach,  # noqa: E402
                                 reduce_on_plateau)
