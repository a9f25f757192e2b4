"""The per-step path of ``optcore.torch``: torch.optim's step wrapper at the
cost of what it does (hooks; a profiler record only while a profiler runs),
the step's grad mode, the cached step plan of a one-group optimizer
(``optcore.kernels._plan.TorchPlan``), and the checks of a step's kernel
calls before the first one runs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from optcore.torch import _dtensor
from torch.autograd.graph import increment_version
from torch.optim import optimizer as _torch_optimizer

from optcore.kernels._buffers import check_calls
from optcore.kernels._plan import TorchPlan, bound_call, same_float
from optcore.optim._checks import _MAX_STEP
from optcore.optim._plan import as_floats, without_defaults
from optcore.optim._storage import check_call_dtypes
from optcore.torch._storage import call_args

if TYPE_CHECKING:
    from optcore._typing import KernelCall
    from optcore.torch._base import _Plan

_F = TypeVar("_F", bound=Callable[..., Any])
_profiler_enabled = torch._C._autograd._profiler_enabled
_set_grad_enabled = torch._C._set_grad_enabled
_PLAIN_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
_TYPENUM = {torch.float32: np.dtype(np.float32).num, torch.float64: np.dtype(np.float64).num}


def profile_hook_step(func: _F) -> _F:
    """torch.optim.Optimizer.profile_hook_step's semantics (the global and the
    optimizer's pre-hooks, which may replace the arguments; the step; the
    profiler's entry point; the post-hooks), with the ``record_function``
    scope opened only while a profiler is active: it costs microseconds."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        self = args[0]
        if _profiler_enabled():
            with torch.autograd.profiler.record_function(
                    f"Optimizer.step#{type(self).__name__}.step"):
                return _hooked(func, self, args, kwargs)
        return _hooked(func, self, args, kwargs)

    return wrapper  # type: ignore[return-value]


def _hooked(func: Callable[..., Any], self: Any, args: Any, kwargs: Any) -> Any:
    pre = self._optimizer_step_pre_hooks
    if pre or _torch_optimizer._global_optimizer_pre_hooks:
        for hook in chain(_torch_optimizer._global_optimizer_pre_hooks.values(),
                          pre.values()):
            result = hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(f"{func} must return None or a tuple of "
                                       f"(new_args, new_kwargs), but got {result}.")
    out = func(*args, **kwargs)
    self._optimizer_step_code()
    post = self._optimizer_step_post_hooks
    if post or _torch_optimizer._global_optimizer_post_hooks:
        for hook in chain(post.values(), _torch_optimizer._global_optimizer_post_hooks.values()):
            hook(self, args, kwargs)
    return out


def without_grad(func: _F) -> _F:
    """Run the step with autograd off (optcore refuses ``differentiable=True``,
    so this is torch's ``_use_grad_for_differentiable`` for that case)."""

    @functools.wraps(func)
    def step(*args: Any, **kwargs: Any) -> Any:
        prev = torch.is_grad_enabled()
        _set_grad_enabled(False)
        try:
            return func(*args, **kwargs)
        finally:
            _set_grad_enabled(prev)

    return step  # type: ignore[return-value]


def _retuned(plan: TorchPlan, group: dict[str, Any]) -> bool:
    """A scheduler's new lr (a float, the only option that changed) taken
    into the plan's cached call as it stands: the bound call checks it as
    the kernel does (without one, the kernel call checks it and refuses before
    it writes). False leaves it to the checks of the caller."""
    change = plan.changed_lr(group)
    cached = plan.columns
    if change is None or cached is None:
        return False
    old, lr = change
    slots, needed, options, key, tensors = plan.data
    views, kwargs, bound = cached
    if not (same_float(kwargs.get("lr"), old) and same_float(options.get("lr"), old)):
        return False
    if bound is not None and not bound.retune_lr(lr):
        return False
    plan.set_options(group)
    plan.data = (slots, needed, {**options, "lr": lr}, key, tensors)
    plan.columns = (views, {**kwargs, "lr": lr}, bound)
    return True


class PlannedStepMixin:
    """The step plan and the step's call checks of ``KernelOptimizer``."""

    param_groups: list[dict[str, Any]]
    state: Any

    if TYPE_CHECKING:
        _rules: Any

        def _group_options(self, group: Any) -> tuple[dict[str, Any], tuple[Any, ...]]: ...
        def _scalar_args(self, scalars: dict[str, Any], step: float,
                         options: dict[str, Any], views: tuple[np.ndarray, ...]
                         ) -> tuple[dict[str, Any], dict[str, Any]]: ...

    def _patch_step_function(self) -> None:
        # torch.optim.Optimizer's, with the wrapper above.
        self._zero_grad_profile_name = f"Optimizer.zero_grad#{type(self).__name__}.zero_grad"
        cls: Any = type(self)
        if not getattr(cls.step, "hooked", None):
            cls.step = profile_hook_step(cls.step)
            cls.step.hooked = True

    def _record_plan(self, plans: Sequence[_Plan], keys: tuple[str, ...]) -> None:
        """After a step of the general path: a plan for the next ones when the
        step was one kernel call over every parameter of the only group."""
        self.__dict__.pop("_optcore_plan", None)
        if len(plans) != 1 or len(self.param_groups) != 1:
            return
        gi, slots, grads, buckets, needed, options = plans[0]
        group = self.param_groups[0]
        if (len(buckets) != 1 or len(slots) != len(group["params"])
                or any(s.created for s in slots)):
            return
        dtype = slots[0].view_dtype
        # Plain contiguous real tensors only: a complex, non-contiguous (stepped
        # on a copy) or DTensor parameter keeps the general path.
        # Low-precision storage (bfloat16/float16 parameters, other state
        # dtypes, master copies, roundings) keeps the general path too.
        if dtype not in _TYPENUM or any(
                s.work is not None or not s.storage.plain or _dtensor.is_dtensor(s.param)
                or s.param.is_complex() or not s.param.is_contiguous() for s in slots):
            return
        data = (slots, needed, options, buckets[0][0],
                [s.param for s in slots] + [t for s in slots for t in s.tensors])
        plan = TorchPlan.build(
            self, group, keys, self.state,
            [s.state if s.param in self.state else None for s in slots],
            [[(key, t) for key, t, _ in s.entries] for s in slots],
            [s.scalar_views for s in slots], dtype, _TYPENUM[dtype], data)
        if plan is not None:
            self.__dict__["_optcore_plan"] = plan

    def _planned_step(self) -> bool:
        """The step through the cached plan when nothing it was built from
        changed; False when the general path must take it (nothing written)."""
        plan = self.__dict__.get("_optcore_plan")
        if plan is None or len(self.param_groups) != 1:
            return False
        group = self.param_groups[0]
        slots, needed, options, _, tensors = plan.data
        if not plan.same_options(group) and not _retuned(plan, group):
            # (other options: checked, and kept while the buffers the
            # options need stay the same)
            options, now_needed = self._group_options(group)
            if now_needed != needed or not plan.set_options(group):
                self.__dict__.pop("_optcore_plan", None)
                return False
            plan.data = (slots, needed, options, None, tensors)
            plan.columns = None
        slots, needed, options, _, tensors = plan.data
        found = plan.check(self, group, self.state)
        if found is None:
            return False
        grads, key = found
        rules = self._rules
        cached = plan.columns
        if cached is None:
            # The kernel's arguments but the gradients and the scalar state.
            kwargs = as_floats({k: v for k, v in options.items()
                                if k not in rules.scalar_only}, rules.double_args)
            kwargs.update({b.name: [s.views[i] for s in slots]
                           for i, b in enumerate(needed)})
            views = [s.view for s in slots]
            kwargs = without_defaults(kwargs, rules.kernel)
            # The call bound to the parameters' and states' views once; each
            # step binds only the gradients' views (None: no binder).
            cached = plan.columns = (views, kwargs, bound_call(rules.kernel, views, kwargs))
        views, kwargs, bound = cached
        names = rules.scalars
        scalars = dict(zip(names, key))
        # (a plan has a step count or state created in an earlier step)
        step = scalars["step"] + 1.0 if "step" in scalars else 2.0
        extra, store = self._scalar_args(scalars, step, options, slots[0].scalar_views)
        store["step"] = step
        try:
            count = int(step)
            if extra or bound is None or not 0 < count <= _MAX_STEP or \
                    not bound.run(grads, count):
                rules.kernel(views, grads, step=count,
                             **({**kwargs, **extra} if extra else kwargs))
        except (TypeError, ValueError):
            # The kernel refused its buffers before writing: the general
            # path names them as users see them.
            return False
        # The scalar state, rounded to the tensors' dtype (as torch's is).
        plan.store_scalars(tuple([store[name] for name in names]))
        increment_version(tensors)
        return True

    # ---- the checks of a step's kernel calls --------------------------------

    def _check_calls(self, plans: Sequence[_Plan]) -> None:
        """Every kernel call of ``plans`` checked as the kernels' own binding
        checks it, then the overlap rule over all of them (``check_calls``);
        labels are built only to report an error."""
        # (bfloat16/float16 buffers, QuantizedState states: the mixed rules)
        mixed = any(not s.storage.plain or s.view_dtype not in _PLAIN_DTYPES
                    for plan in plans for s in plan[1])
        if mixed:
            # the dtype rule of the mixed calls (the binding's mixed mode
            # takes each argument's own dtype), before any call runs
            for plan, call in zip(chain.from_iterable([plan] * len(plan[3]) for plan in plans),
                                  self._kernel_calls(plans, True)):
                names, objs, _, labels = call
                try:
                    check_call_dtypes(names, objs, labels,
                                      {b.name: b.unsigned for b in plan[4]})
                except TypeError as exc:
                    exc.add_note(f"in optcore.torch.{type(self).__name__}.step()")
                    raise exc from None
        try:
            check_calls(self._kernel_calls(plans, False), mixed=mixed)
        except (TypeError, ValueError):
            try:
                check_calls(self._kernel_calls(plans, True), mixed=mixed)
            except (TypeError, ValueError) as exc:
                exc.add_note(f"in optcore.torch.{type(self).__name__}.step()")
                raise exc from None
            raise

    def _kernel_calls(self, plans: Sequence[_Plan], labelled: bool) -> list[KernelCall]:
        """``plans`` as ``check_calls`` takes them: one call per bucket, on the
        NumPy views the kernels get."""
        calls: list[KernelCall] = []
        for gi, slots, grads, buckets, needed, _ in plans:
            for key, members in buckets:
                part = [slots[i] for i in members]
                extra = call_args(part, key[-1])
                lists = {k: v for k, v in extra.items() if isinstance(v, list)}
                names = ("param", "grad", *(b.name for b in needed), *lists)
                roles = ("write", "read", *(b.role for b in needed), *["write"] * len(lists))
                objs = ([s.view for s in part], [grads[i] for i in members],
                        *([s.views[k] for s in part] for k in range(len(needed))),
                        *lists.values())
                if not labelled:
                    calls.append((names, objs, roles))
                    continue
                position = {id(p): j for j, p in enumerate(self.param_groups[gi]["params"])}
                where = [f"param_groups[{gi}]['params'][{position[id(s.param)]}]"
                         for s in part]
                labels = [where, [f"the grad of {w}" for w in where]]
                labels += [[f"state[{b.state_key!r}] of {w}" for w in where] for b in needed]
                labels += [[f"state[{k!r}] of {w}" for w in where] for k in lists]
                calls.append((names, objs, roles, labels))
        return calls


__all__ = ["PlannedStepMixin", "profile_hook_step", "without_grad"]
