"""optcore.LBFGS: torch.optim.LBFGS over NumPy arrays, with a closure that
returns the loss and the gradients (the algorithm: ``optcore.optim._lbfgs``,
shared with ``optcore.torch.LBFGS``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from optcore.optim._checks import _check_strided_params
from optcore.optim._lbfgs import NumpyOps, check_options, lbfgs_step

__all__ = ["LBFGS"]

_OPS = NumpyOps()
_OPTION_NAMES = ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change",
                 "history_size", "line_search_fn")


class _Parameters:
    """The parameters as one flat vector for the algorithm: the closure's
    gradients gathered into a fresh flat buffer per evaluation, each array
    moved in place by its slice of a flat direction."""

    def __init__(self, params: list[np.ndarray],
                 closure: Callable[[], tuple[Any, Sequence[Any]]]) -> None:
        self.params = params
        self._closure = closure
        self.dtype = params[0].dtype
        self.sizes = [p.size for p in params]
        self._grads: Sequence[Any] = ()

    def closure(self) -> Any:
        result = self._closure()
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError("the LBFGS closure must return (loss, grads)")
        loss, grads = result
        if len(grads) != len(self.params):
            raise ValueError(f"the closure returned {len(grads)} gradients for "
                             f"{len(self.params)} parameters")
        for j, (p, g) in enumerate(zip(self.params, grads)):
            if g is not None and np.shape(g) != p.shape:
                raise ValueError(f"gradient {j} has shape {np.shape(g)}, its parameter "
                                 f"{p.shape}")
        self._grads = grads
        return loss

    def flat_grad(self) -> np.ndarray:
        flat = np.empty(sum(self.sizes), self.dtype)
        offset = 0
        for n, g in zip(self.sizes, self._grads):
            flat[offset:offset + n] = 0 if g is None else np.ravel(g)
            offset += n
        return flat

    def add_(self, t: Any, d: np.ndarray) -> None:
        offset = 0
        for p, n in zip(self.params, self.sizes):
            p += np.multiply(d[offset:offset + n], t, dtype=p.dtype).reshape(p.shape)
            offset += n

    def clone_params(self) -> list[np.ndarray]:
        return [p.copy() for p in self.params]

    def set_params(self, saved: list[np.ndarray]) -> None:
        for p, s in zip(self.params, saved):
            p[...] = s


class LBFGS:
    """L-BFGS over NumPy arrays, with torch.optim.LBFGS's arguments and rules.

    Each ``step(closure)`` runs up to ``max_iter`` iterations, each moving
    along ``-H g``, where ``H`` is the inverse Hessian estimate of the last
    ``history_size`` correction pairs (the two-loop recursion over flat
    buffers, BLAS dot products), with a fixed step ``lr`` or a strong-Wolfe
    line search. The closure takes no argument and returns ``(loss, grads)``:
    the loss at the parameters' current values and one gradient per
    parameter (same shapes; ``None`` reads as zeros). The parameters are
    updated in place. The state has torch's keys (``func_evals``,
    ``n_iter``, ``d``, ``t``, ``old_dirs``, ``old_stps``, ``ro``,
    ``H_diag``, ``prev_flat_grad``, ``prev_loss``, ``al``), kept under
    parameter 0 as torch keeps it under the first parameter.

    Parameters
    ----------
    params : iterable of numpy.ndarray
        The parameters: writeable float32 or float64 arrays, one dtype.
    lr : float, default 1
        The step length (the line search's first trial).
    max_iter : int, default 20
        Iterations per ``step``.
    max_eval : int or None, default None
        Closure evaluations per ``step``; ``None`` means ``max_iter * 5 // 4``.
    tolerance_grad : float, default 1e-7
        Stop when the gradient's largest magnitude is at most this.
    tolerance_change : float, default 1e-9
        Stop when the loss or the parameters change less than this.
    history_size : int, default 100
        Correction pairs kept.
    line_search_fn : {None, "strong_wolfe"}, default None
        The line search.

    Raises
    ------
    TypeError
        Parameters that are not float32/float64 NumPy arrays of one dtype.
    ValueError
        A negative ``lr`` (torch's message), no parameters, a read-only
        parameter or one given twice.

    See Also
    --------
    optcore.torch.LBFGS : The same algorithm for torch tensors.

    Examples
    --------
    >>> import numpy as np
    >>> import optcore
    >>> x = np.array([-1.5, 2.0])
    >>> def rosenbrock():
    ...     loss = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    ...     grad = np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2),
    ...                      200 * (x[1] - x[0] ** 2)])
    ...     return loss, [grad]
    >>> opt = optcore.LBFGS([x], line_search_fn="strong_wolfe")
    >>> for _ in range(5):
    ...     _ = opt.step(rosenbrock)
    >>> np.round(x, 4).tolist()
    [1.0, 1.0]
    """

    def __init__(self, params: Iterable[np.ndarray], lr: float = 1, max_iter: int = 20,
                 max_eval: int | None = None, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None) -> None:
        check_options(lr, False, None)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        if isinstance(params, np.ndarray):
            raise TypeError("params argument given to the optimizer should be an iterable "
                            "of arrays, but got an ndarray")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        # any strides: each array is moved in place by its slice of the flat
        # direction (``p += ...``), never copied
        labels = [f"parameter {j} (group 0, index {j})" for j in range(len(params))]
        _check_strided_params(params, labels)
        for p, label in zip(params, labels):
            if p.dtype != params[0].dtype:
                raise TypeError(f"{label} has dtype {p.dtype} but parameter 0 has "
                                f"{params[0].dtype}; LBFGS parameters share one dtype (one "
                                f"flat vector)")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("some parameters appear more than once")
        self.defaults: dict[str, Any] = {
            "lr": lr, "max_iter": max_iter, "max_eval": max_eval,
            "tolerance_grad": tolerance_grad, "tolerance_change": tolerance_change,
            "history_size": history_size, "line_search_fn": line_search_fn}
        self.param_groups: list[dict[str, Any]] = [{"params": params, **self.defaults}]
        self.state: dict[int, dict[str, Any]] = {}

    def step(self, closure: Callable[[], tuple[Any, Sequence[Any]]]) -> Any:
        """Run up to ``max_iter`` L-BFGS iterations.

        Parameters
        ----------
        closure : callable
            Takes no argument and returns ``(loss, grads)`` at the parameters'
            current values; called up to ``max_eval`` times.

        Returns
        -------
        Any
            The loss of the closure's first call (before this step).

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> w = np.array([3.0])
        >>> opt = optcore.LBFGS([w])
        >>> opt.step(lambda: (float(((w - 1) ** 2).sum()), [2 * (w - 1)]))
        4.0
        >>> np.round(w, 6).tolist()
        [1.0]
        """
        group = self.param_groups[0]
        return lbfgs_step(self.state.setdefault(0, {}), group, group["lr"],
                          _Parameters(group["params"], closure), _OPS)

    def state_dict(self) -> dict[str, Any]:
        """Return a deep copy of the state, in torch.optim's layout.

        Returns
        -------
        dict
            ``{"state": {0: {...}}, "param_groups": [{options..., "params":
            [0, 1, ...]}]}``: the state (once a step has run) under parameter
            0, parameters as indices.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> w = np.array([3.0])
        >>> opt = optcore.LBFGS([w], max_iter=2)
        >>> _ = opt.step(lambda: (float(((w - 1) ** 2).sum()), [2 * (w - 1)]))
        >>> sd = opt.state_dict()
        >>> sd["state"][0]["n_iter"], sd["param_groups"][0]["params"]
        (1, [0])
        """
        group = self.param_groups[0]
        saved = {k: v for k, v in group.items() if k != "params"}
        saved["params"] = list(range(len(group["params"])))
        return {"state": copy.deepcopy(self.state), "param_groups": [saved]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from ``state_dict`` (as ``state_dict`` returns it).

        Parameters
        ----------
        state_dict : dict
            The state and options to load; its arrays are copied (and cast to
            the parameters' dtype).

        Raises
        ------
        ValueError
            If it has more than one group, a different number of parameters,
            or option keys other than LBFGS's; nothing is changed then.

        Examples
        --------
        >>> import numpy as np
        >>> import optcore
        >>> w = np.array([3.0])
        >>> opt = optcore.LBFGS([w], max_iter=2)
        >>> _ = opt.step(lambda: (float(((w - 1) ** 2).sum()), [2 * (w - 1)]))
        >>> twin = optcore.LBFGS([w.copy()], max_iter=2)
        >>> twin.load_state_dict(opt.state_dict())
        >>> twin.state[0]["func_evals"]
        2
        """
        groups = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        if len(groups[0]["params"]) != len(params):
            raise ValueError("loaded state dict contains a parameter group that doesn't "
                             "match the size of optimizer's group")
        keys = set(groups[0]) - {"params"}
        if keys != set(_OPTION_NAMES):
            raise ValueError(f"loaded state dict has options {sorted(keys)}, "
                             f"LBFGS has {sorted(_OPTION_NAMES)}")
        dtype = params[0].dtype

        def cast(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return value.astype(dtype, copy=True)
            if isinstance(value, np.floating):
                return dtype.type(value)
            if isinstance(value, list):
                return [cast(v) for v in value]
            return value

        state = {int(k): {key: cast(v) for key, v in entry.items()}
                 for k, entry in state_dict["state"].items()}
        options = {k: groups[0][k] for k in _OPTION_NAMES}
        self.state = state
        self.param_groups = [{"params": params, **options}]

    def __repr__(self) -> str:
        group = self.param_groups[0]
        options = ", ".join(f"{k}={group[k]!r}" for k in _OPTION_NAMES)
        return f"LBFGS({len(group['params'])} parameters, {options})"
