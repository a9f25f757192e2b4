"""The attached side of ``optcore.schedules``: ``Scheduler`` (a schedule
driving an optimizer's learning rates), ``attach`` and ``ReduceOnPlateau``.
Import them from ``optcore.schedules``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optcore._lr_forms import _base, _integer, _number, _Plateau, _reduced
from optcore.schedules import Schedule

if TYPE_CHECKING:
    from collections.abc import Sequence

    from optcore._typing import LrFunction, Optimizer
    from optcore.schedules import ScheduleArg

__all__ = ["Scheduler", "attach", "ReduceOnPlateau", "reduce_on_plateau"]


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
    """A schedule driving an optimizer's learning rates (torch's LRScheduler interface).

    Sets every ``param_groups[i]["lr"]`` to its schedule's value at
    ``last_epoch`` now, and again at each ``step()``. Groups added to the
    optimizer later get the schedule too (when one schedule serves all
    groups). one_cycle schedules also set ``momentum`` (or ``betas[0]``).

    Parameters
    ----------
    optimizer : object
        An optcore optimizer, or anything with torch-like ``param_groups``
        (a ``torch.optim`` optimizer).
    schedule : Schedule, callable, or list of them
        One schedule for every group, or one per group; a plain callable
        ``t -> lr`` works too. A ``Schedule`` with ``base_lr=None`` starts
        from each group's own rate.
    last_epoch : int, default 0
        The scheduler step to start at (``>= 0``).

    Attributes
    ----------
    optimizer : object
        The optimizer it drives.
    last_epoch : int
        The number of ``step()`` calls (plus the starting value).
    schedules : list
        The schedule of each group.

    Raises
    ------
    ValueError
        If a list of schedules does not have one per group, or a one_cycle
        schedule cycles momentum over groups with neither ``momentum`` nor
        ``betas``.
    TypeError
        If ``optimizer`` has no ``param_groups`` or a schedule is not callable.

    See Also
    --------
    attach : The same, as a function.
    Schedule.attach : The same, from a schedule.

    Examples
    --------
    >>> import numpy as np
    >>> import optcore
    >>> from optcore import schedules
    >>> opt = optcore.SGD([np.ones(2)], lr=0.1)
    >>> sched = schedules.Scheduler(opt, schedules.exponential(None, gamma=0.5))
    >>> for _ in range(3):
    ...     sched.step()
    >>> sched.last_epoch, sched.get_last_lr()
    (3, [0.0125])
    """

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
        """Advance one step and set each group's rate to the schedule's value there.

        one_cycle schedules set the momentum (or ``betas[0]``) too.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.SGD([np.ones(2)], lr=0.1)
        >>> sched = optcore.schedules.multi_step(None, milestones=[1]).attach(opt)
        >>> sched.step()
        >>> round(opt.param_groups[0]["lr"], 4)
        0.01
        """
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The rates last set, one per group (torch's ``get_last_lr``).

        Returns
        -------
        list of float
            ``param_groups[i]["lr"]`` as this scheduler set it.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.SGD([{"params": [np.ones(2)]}, {"params": [np.ones(2)],
        ...                    "lr": 1.0}], lr=0.1)
        >>> optcore.schedules.constant(None, factor=0.5, total_iters=1).attach(
        ...     opt).get_last_lr()
        [0.05, 0.5]
        """
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: its step count.

        Returns
        -------
        dict
            ``{"last_epoch": int}``.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.SGD([np.ones(2)], lr=0.1)
        >>> sched = optcore.schedules.cosine_annealing(None, T_max=10).attach(opt)
        >>> sched.step()
        >>> sched.state_dict()
        {'last_epoch': 1}
        """
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from a ``state_dict()``: set the step count and the rates there.

        Parameters
        ----------
        state_dict : dict
            ``{"last_epoch": int}``, from ``state_dict()``.

        Raises
        ------
        KeyError
            If ``state_dict`` has no ``"last_epoch"``.
        TypeError
            If ``last_epoch`` is not an integer.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.SGD([np.ones(2)], lr=0.1)
        >>> sched = optcore.schedules.step_decay(None, step_size=1).attach(opt)
        >>> sched.load_state_dict({"last_epoch": 2})
        >>> round(opt.param_groups[0]["lr"], 4)
        0.001
        """
        self.last_epoch = _integer("last_epoch", state_dict["last_epoch"])
        self._apply()

    def __repr__(self) -> str:
        what = self._template if self._template is not None else self.schedules
        return f"Scheduler({what!r}, last_epoch={self.last_epoch})"


def attach(optimizer: Optimizer, schedule: ScheduleArg) -> Scheduler:
    """Attach a schedule to an optimizer: ``Scheduler(optimizer, schedule)``.

    Parameters
    ----------
    optimizer : object
        An optcore optimizer, or anything with torch-like ``param_groups``
        (a ``torch.optim`` optimizer).
    schedule : Schedule, callable, or list of them
        One schedule for every group, or one per group (a plain callable
        ``t -> lr`` works too).

    Returns
    -------
    Scheduler
        The scheduler; call its ``step()`` after each optimizer step.

    Raises
    ------
    ValueError
        If a list of schedules does not have one per group.
    TypeError
        If ``optimizer`` has no ``param_groups`` or a schedule is not callable.

    Examples
    --------
    >>> import numpy as np
    >>> import optcore
    >>> from optcore import schedules
    >>> opt = optcore.SGD([{"params": [np.ones(2)]}, {"params": [np.ones(2)]}], lr=0.1)
    >>> sched = schedules.attach(opt, [schedules.constant(0.1), lambda t: 0.2 / (t + 1)])
    >>> sched.step()
    >>> sched.get_last_lr()
    [0.1, 0.1]
    """
    return Scheduler(optimizer, schedule)


# ---- reduce on plateau -----------------------------------------------------

class ReduceOnPlateau:
    """Reduce the rate when a metric stops improving (torch's ReduceLROnPlateau).

    Not a function of the step: feed it metrics. Standalone,
    ``lr = sched.step(metric)`` (and ``sched.lr``); attached,
    ``sched.attach(opt).step(metric)`` reduces every group's current rate.

    Parameters
    ----------
    base_lr : float or None, default None
        The initial rate (standalone; attached, it overrides the groups'
        rates). None: attached, the groups keep their own rates.
    mode : {"min", "max"}, default "min"
        Whether the metric should decrease or increase.
    factor : float, default 0.1
        The rate is multiplied by ``factor`` on a plateau, in ``[0, 1)``.
    patience : int, default 10
        Steps without improvement tolerated before reducing.
    threshold : float, default 1e-4
        The least change that counts as an improvement.
    threshold_mode : {"rel", "abs"}, default "rel"
        Whether ``threshold`` is relative to the best metric or absolute.
    cooldown : int, default 0
        Steps to wait after a reduction before counting again.
    min_lr : float or sequence of float, default 0.0
        The lowest rate (one per group, or one for all).
    eps : float, default 1e-8
        A reduction smaller than this is skipped.

    Raises
    ------
    ValueError
        If an argument is out of range or not one of the listed values.
    TypeError
        If an argument has the wrong type.

    See Also
    --------
    reduce_on_plateau : The same, as a function.

    Examples
    --------
    >>> from optcore import schedules
    >>> sched = schedules.ReduceOnPlateau(0.1, patience=1)
    >>> [round(sched.step(m), 4) for m in [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]]
    [0.1, 0.1, 0.01, 0.01, 0.01, 0.001]
    """

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
        """Record one metric value, reducing the rate on a plateau.

        Parameters
        ----------
        metric : float
            The metric of this step (e.g. the validation loss).

        Returns
        -------
        float or None
            Standalone, the (possibly reduced) rate; attached, None (the
            groups' rates are updated).

        Raises
        ------
        ValueError
            If standalone without ``base_lr``, or ``min_lr`` does not have one
            entry per group.

        Examples
        --------
        >>> from optcore import schedules
        >>> sched = schedules.reduce_on_plateau(1.0, patience=0)
        >>> sched.step(2.0), sched.step(3.0)
        (1.0, 0.1)
        """
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
        """A fresh copy of this schedule driving ``optimizer``'s rates.

        The groups keep their own rates unless ``base_lr`` was given.

        Parameters
        ----------
        optimizer : object
            An optcore optimizer, or anything with torch-like ``param_groups``
            (a ``torch.optim`` optimizer).

        Returns
        -------
        ReduceOnPlateau
            The attached copy; this schedule is unchanged.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> opt = optcore.SGD([np.ones(2)], lr=0.1)
        >>> sched = optcore.schedules.reduce_on_plateau(patience=0).attach(opt)
        >>> sched.step(1.0)
        >>> sched.step(1.0)
        >>> round(opt.param_groups[0]["lr"], 4)
        0.01
        """
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
        """The number of metrics recorded by ``step()``.

        Examples
        --------
        >>> from optcore import schedules
        >>> sched = schedules.reduce_on_plateau(0.1)
        >>> _ = sched.step(1.0)
        >>> sched.last_epoch
        1
        """
        return self._plateau.last_epoch

    def get_last_lr(self) -> list[float | None]:
        """The current rates: one per group attached, ``[lr]`` standalone.

        Returns
        -------
        list of float
            The rates (``[None]`` standalone without ``base_lr``).

        Examples
        --------
        >>> from optcore import schedules
        >>> schedules.reduce_on_plateau(0.1).get_last_lr()
        [0.1]
        """
        return list(self._last_lr) if self.optimizer is not None else [self.lr]

    def state_dict(self) -> dict[str, Any]:
        """The plateau detector's state and the standalone rate.

        Returns
        -------
        dict
            ``lr``, ``best``, ``num_bad_epochs``, ``cooldown_counter``,
            ``last_epoch``.

        Examples
        --------
        >>> from optcore import schedules
        >>> sched = schedules.reduce_on_plateau(0.1)
        >>> _ = sched.step(2.0)
        >>> sched.state_dict()
        {'lr': 0.1, 'best': 2.0, 'num_bad_epochs': 0, 'cooldown_counter': 0, 'last_epoch': 1}
        """
        return {"lr": self.lr, **self._plateau.state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from a ``state_dict()``.

        Parameters
        ----------
        state_dict : dict
            A ``state_dict()`` of a ReduceOnPlateau.

        Examples
        --------
        >>> from optcore import schedules
        >>> sched = schedules.reduce_on_plateau(0.1)
        >>> sched.load_state_dict({"lr": 0.01, "best": 1.0, "num_bad_epochs": 0,
        ...                        "cooldown_counter": 0, "last_epoch": 5})
        >>> sched.last_epoch, sched.get_last_lr()
        (5, [0.01])
        """
        self.lr = state_dict["lr"]
        for k, v in state_dict.items():
            if k != "lr":
                setattr(self._plateau, k, v)


def reduce_on_plateau(base_lr: float | None = None, mode: str = "min", factor: float = 0.1,
                      patience: int = 10, threshold: float = 1e-4,
                      threshold_mode: str = "rel", cooldown: int = 0,
                      min_lr: float | Sequence[float] = 0.0,
                      eps: float = 1e-8) -> ReduceOnPlateau:
    """Reduce the rate when a metric stops improving (torch's ReduceLROnPlateau).

    ``ReduceOnPlateau(...)``, with torch's arguments and defaults.

    Parameters
    ----------
    base_lr : float or None, default None
        The initial rate (standalone); None: attached, each group's own.
    mode : {"min", "max"}, default "min"
        Whether the metric should decrease or increase.
    factor : float, default 0.1
        The rate is multiplied by ``factor`` on a plateau, in ``[0, 1)``.
    patience : int, default 10
        Steps without improvement tolerated before reducing.
    threshold : float, default 1e-4
        The least change that counts as an improvement.
    threshold_mode : {"rel", "abs"}, default "rel"
        Whether ``threshold`` is relative to the best metric or absolute.
    cooldown : int, default 0
        Steps to wait after a reduction before counting again.
    min_lr : float or sequence of float, default 0.0
        The lowest rate (one per group, or one for all).
    eps : float, default 1e-8
        A reduction smaller than this is skipped.

    Returns
    -------
    ReduceOnPlateau
        Feed it metrics with ``step(metric)``; ``attach(optimizer)`` drives an
        optimizer.

    Raises
    ------
    ValueError
        If an argument is out of range or not one of the listed values.
    TypeError
        If an argument has the wrong type.

    Examples
    --------
    >>> from optcore import schedules
    >>> sched = schedules.reduce_on_plateau(0.1, patience=1)
    >>> [round(sched.step(m), 4) for m in [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]]
    [0.1, 0.1, 0.01, 0.01, 0.01, 0.001]
    """
    return ReduceOnPlateau(base_lr, mode, factor, patience, threshold, threshold_mode,
                           cooldown, min_lr, eps)
