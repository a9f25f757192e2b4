"""optcore.torch.Adafactor: torch.optim.Adafactor's class over
``optcore.adafactor_step`` (the rules shared with the NumPy class:
``optcore.optim._adafactor``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from optcore.kernels.adafactor import adafactor_step_at
from optcore.optim._adafactor import STATE_DTYPES, check_options, kernel_options, state_shapes
from optcore.torch import _storage as _st

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    from torch import Tensor
    from torch.optim.optimizer import ParamsT

__all__ = ["Adafactor"]

_NEED = ("optcore updates CPU, dense, contiguous float32/float64/bfloat16/float16 "
         "tensors")
_FLOATS = (torch.float32, torch.float64, *_st.LOW)


def _array(t: Tensor) -> np.ndarray:
    return _st.to_numpy(t.detach())


class Adafactor(torch.optim.Optimizer):
    """Adafactor with torch.optim.Adafactor's arguments, defaults, errors and state.

    Each step, per parameter with a gradient: the step size is
    ``min(lr, 1 / sqrt(step)) * max(eps2, RMS(param))``; a parameter of 2 or
    more dimensions keeps factored second moments of its last two dimensions
    (``row_var``, shape ``p.shape[:-1] + (1,)``, and ``col_var``, shape
    ``p.shape[:-2] + (1, p.shape[-1])``), a 0-D or 1-D one a full
    ``variance``; the update ``grad / sqrt(V)`` is scaled down to an RMS of
    at most ``d``; the weight decay is decoupled. The state keys (``step``, a
    float32 tensor, ``row_var``, ``col_var``, ``variance``) and state_dict
    layout are torch's, so state_dicts load both ways. The parameters are
    updated in place, zero-copy, one ``optcore.adafactor_step`` call per
    group (and step count). ``foreach`` has no effect.

    bfloat16 and float16 parameters step in float32, with float32 states
    (torch.optim keeps them in the parameter's dtype and computes in it), and
    take the options of the other classes (docs/torch.md, "Low precision"):
    ``master_weights`` (state ``master_param``), ``rounding``
    (``"stochastic"``, ``"kahan"`` with state ``compensation``) and ``seed``;
    ``state_dtype`` is None or ``"float32"``. ``torch_state_dict()`` gives
    the state_dict torch.optim.Adafactor loads.

    Parameters
    ----------
    params : iterable of torch.Tensor or dict
        The parameters (CPU, dense, contiguous float32, float64, bfloat16 or
        float16), or groups.
    lr : float or torch.Tensor, default 1e-2
        The learning rate (the cap of the relative step size).
    beta2_decay : float, default -0.8
        The second moments' weight at step t is ``t ** beta2_decay``.
    eps : tuple, default (None, 1e-3)
        ``(eps1, eps2)``: the variance estimate's denominator bound (None:
        the machine epsilon of the group's first parameter's dtype) and the
        lower bound of the parameter RMS in the step size.
    d : float, default 1.0
        Clipping threshold of the update's RMS.
    weight_decay : float, default 0.0
        Decoupled weight decay.
    foreach : bool or None, default None
        Accepted; no effect.
    maximize : bool, default False
        Ascend instead of descend.
    state_dtype : {None, "float32"}, default None
        The states' storage (None: the parameter's dtype for float32/float64
        parameters, float32 for bfloat16/float16 ones).
    master_weights : bool, default False
        bfloat16/float16 parameters: step a float32 copy, written back rounded.
    rounding : {"nearest", "stochastic", "kahan"}, default "nearest"
        How a bfloat16/float16 parameter without a master copy is rounded.
    seed : int, default 0
        The stochastic rounding's seed.

    Raises
    ------
    ValueError
        With torch's messages: a tensor ``lr`` of more than one element, or an
        option out of range; a bad ``rounding`` or ``seed``.
    TypeError
        ``state_dtype`` other than None or ``"float32"``.

    See Also
    --------
    optcore.Adafactor : The same optimizer over NumPy arrays.
    optcore.adafactor_step : The function of one step.

    Examples
    --------
    >>> import torch
    >>> import optcore.torch
    >>> w = torch.nn.Parameter(torch.ones(2, 3))
    >>> opt = optcore.torch.Adafactor([w])
    >>> w.grad = torch.full((2, 3), 0.5)
    >>> opt.step()
    >>> [round(v, 4) for v in w[0].tolist()]
    [0.99, 0.99, 0.99]
    >>> sorted(opt.state[w])
    ['col_var', 'row_var', 'step']
    """

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, *, foreach: bool | None = None,
                 maximize: bool = False, state_dtype: str | None = None,
                 master_weights: bool = False, rounding: str = "nearest",
                 seed: int = 0) -> None:
        self._storage = _st.Storage(state_dtype, master_weights, rounding, seed,
                                    STATE_DTYPES, "Adafactor")
        check_options(lr, beta2_decay, eps, d, weight_decay,
                      lr.numel() if isinstance(lr, torch.Tensor) else None)
        defaults = {"lr": lr, "beta2_decay": beta2_decay, "eps": eps, "d": d,
                    "weight_decay": weight_decay, "foreach": foreach, "maximize": maximize}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            for p in group["params"]:
                p_state = self.state.get(p, [])
                if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = torch.tensor(float(p_state["step"]),
                                                   dtype=torch.float32)

    _storage = _st.Storage(state_dtypes=STATE_DTYPES)

    def _with_grads(self, gi: int, group: dict[str, Any], first: int
                    ) -> list[tuple[Tensor, _st.Layout]]:
        """The group's parameters with a gradient (``first``: the index of its
        first parameter over all groups) and their layouts, checked (torch's
        errors first); nothing is written."""
        params = []
        for j, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if torch.is_complex(p):
                raise RuntimeError("Adafactor does not support complex parameters")
            if p.grad.is_sparse:
                raise RuntimeError("Adafactor does not support sparse gradients")
            where = f"optcore.torch.Adafactor: param_groups[{gi}]['params'][{j}]"
            if p.device.type != "cpu" or p.layout is not torch.strided:
                raise ValueError(f"{where} is a {p.layout} tensor on {p.device}; {_NEED}")
            if p.dtype not in _FLOATS:
                raise TypeError(f"{where} has dtype {p.dtype}; {_NEED}")
            if not p.is_contiguous():
                raise ValueError(f"{where} is not contiguous (strides {p.stride()}); "
                                 f"{_NEED}")
            if p.numel() == 0:
                # torch.optim.Adafactor divides the norm by numel ** 0.5
                raise ZeroDivisionError("float division by zero")
            params.append((p, self._storage.layout(p, where, first + j)))
        return params

    def _conform_state(self, p: Tensor, layout: _st.Layout) -> None:
        """Create p's state (torch's lazy start), or conform a loaded one to
        this optimizer's storage: float32 states for a bfloat16/float16
        parameter (torch.optim's are of its dtype; widened exactly), the
        master copy and compensation its layout needs (made as at a first
        step when missing), none it does not."""
        state = self.state[p]
        dtype = torch.float32 if p.dtype in _st.LOW else p.dtype
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            for key, shape in state_shapes(p.shape).items():
                state[key] = torch.zeros(shape, dtype=dtype)
        else:
            for key in state_shapes(p.shape):
                value = state.get(key)
                if torch.is_tensor(value) and value.dtype != dtype:
                    state[key] = value.to(dtype)
        _st.new_extras(state, p, layout, counted=True)
        for key, used in ((_st.MASTER, layout.master),
                          (_st.COMPENSATION, layout.rounding == "kahan")):
            if not used:
                state.pop(key, None)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one Adafactor step for every parameter with a gradient.

        Every parameter and gradient of the step is checked before the first
        write.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (called with
            gradients enabled).

        Returns
        -------
        Any
            The closure's loss, or None.

        Raises
        ------
        RuntimeError
            With torch's messages: a complex parameter or a sparse gradient.
        ValueError
            A parameter optcore cannot update in place (not CPU, dense and
            contiguous), or state of the wrong shape or dtype.
        TypeError
            A parameter that is not float32/float64.

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> b = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
        >>> opt = optcore.torch.Adafactor([b], lr=0.1)
        >>> b.grad = torch.ones(2, dtype=torch.float64)
        >>> opt.step()
        >>> opt.state[b]["step"].item(), opt.state[b]["variance"].tolist()
        (1.0, [1.0, 1.0])
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        checked = []
        first = 0
        for gi, group in enumerate(self.param_groups):
            checked.append(self._with_grads(gi, group, first))
            first += len(group["params"])
        calls = []
        for group, params in zip(self.param_groups, checked):
            if not params:
                continue
            for p, layout in params:
                self._conform_state(p, layout)
            eps1 = group["eps"][0]
            if eps1 is None:            # torch: the first parameter's dtype
                eps1 = torch.finfo(params[0][0].dtype).eps
            # one call per step count and storage (a stochastically rounded
            # parameter: its own seed, its own call)
            by_call: dict[tuple[int, _st.Layout | None], list[tuple[Tensor, _st.Layout]]] = {}
            for p, layout in params:
                call = (int(self.state[p]["step"].item()) + 1,
                        None if layout.plain else layout)
                by_call.setdefault(call, []).append((p, layout))
            options = kernel_options(group, eps1)
            lr = group["lr"]
            # torch keeps a tensor lr a tensor: the step's scalars in its dtype
            lr_f32 = isinstance(lr, torch.Tensor) and lr.dtype == torch.float32
            for (step, shared), items in by_call.items():
                ps = [p for p, _ in items]
                arrays: dict[str, list[Any]] = {"row_var": [], "col_var": [], "variance": []}
                for p in ps:
                    st = self.state[p]
                    for key in arrays:
                        arrays[key].append(_array(st[key]) if key in st else None)
                grads = [_array(p.grad.contiguous()) for p in ps]     # type: ignore[union-attr]
                extra: dict[str, Any] = {}
                if shared is not None:
                    if shared.master:
                        extra["master_param"] = [_array(self.state[p][_st.MASTER]) for p in ps]
                    if shared.rounding == "kahan":
                        extra["compensation"] = [_array(self.state[p][_st.COMPENSATION])
                                                 for p in ps]
                    extra["rounding"] = shared.rounding
                    if shared.seed is not None:
                        extra["seed"] = shared.seed
                calls.append(([_array(p) for p in ps], grads, arrays, step, options, ps,
                              lr_f32, extra))
        for ps_np, grads, arrays, step, options, ps, lr_f32, extra in calls:
            o = options
            adafactor_step_at(ps_np, grads, arrays["row_var"], arrays["col_var"],
                              arrays["variance"], step, o["lr"], o["beta2_decay"], o["eps1"],
                              o["eps2"], o["d"], o["weight_decay"], o["maximize"], lr_f32,
                              **extra)
            for p in ps:
                self.state[p]["step"] += 1
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of torch.optim.Adafactor's or this class.

        torch.optim casts every loaded state to its parameter's dtype; for a
        bfloat16/float16 parameter the float32 states and master copy are
        taken from ``state_dict`` itself instead (copied), so that optcore's
        checkpoints round-trip exactly, and torch.optim's widen exactly.

        Parameters
        ----------
        state_dict : dict
            As ``state_dict()`` returns it (this class's or torch.optim's).

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> w = torch.nn.Parameter(torch.ones(2, 3, dtype=torch.bfloat16))
        >>> theirs = torch.optim.Adafactor([w])
        >>> w.grad = torch.ones_like(w)
        >>> theirs.step()
        >>> theirs.state[w]["row_var"].dtype
        torch.bfloat16
        >>> opt = optcore.torch.Adafactor([w])
        >>> opt.load_state_dict(theirs.state_dict())
        >>> opt.state[w]["row_var"].dtype
        torch.float32
        """
        super().load_state_dict(state_dict)
        saved = _st.indexed_params(state_dict["param_groups"])
        for pid, p in zip(saved, _st.indexed_params(self.param_groups)):
            src = state_dict["state"].get(pid)
            if not src or p.dtype not in _st.LOW:
                continue
            for key, value in src.items():
                if key != "step" and torch.is_tensor(value) and value.is_floating_point():
                    dtype = p.dtype if key == _st.COMPENSATION else torch.float32
                    self.state[p][key] = value.to(dtype=dtype, copy=True)

    def torch_state_dict(self) -> dict[str, Any]:
        """The state_dict as ``torch.optim.Adafactor`` keeps it: every state
        tensor of its parameter's dtype, without master copies and
        compensations.

        Returns
        -------
        dict
            ``{"state": ..., "param_groups": ...}``.

        Examples
        --------
        >>> import torch
        >>> import optcore.torch
        >>> w = torch.nn.Parameter(torch.ones(2, 3, dtype=torch.bfloat16))
        >>> opt = optcore.torch.Adafactor([w], master_weights=True)
        >>> w.grad = torch.ones_like(w)
        >>> opt.step()
        >>> sorted(opt.state_dict()["state"][0])
        ['col_var', 'master_param', 'row_var', 'step']
        >>> sd = opt.torch_state_dict()
        >>> sorted(sd["state"][0]), sd["state"][0]["row_var"].dtype
        (['col_var', 'row_var', 'step'], torch.bfloat16)
        >>> torch.optim.Adafactor([w]).load_state_dict(sd)
        """
        sd = self.state_dict()
        params = _st.indexed_params(self.param_groups)
        state = {}
        for pid, entry in sd["state"].items():
            p = params[pid]
            state[pid] = {k: (v.to(p.dtype) if k != "step" and torch.is_tensor(v) else v)
                          for k, v in entry.items() if k not in _st.EXTRA_KEYS}
        return {"state": state, "param_groups": sd["param_groups"]}
