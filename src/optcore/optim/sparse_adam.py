"""optcore.SparseAdam: torch.optim.SparseAdam for NumPy parameters, with
row-sparse gradients (row indices and rows) over
``optcore.kernels.sparse_rows.sparse_adam_rows``."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from optcore.kernels import sparse_rows
from optcore.optim._groups import GroupedOptimizer
from optcore.optim._rows import check_rows

__all__ = ["SparseAdam"]

_OPTIONS = ("lr", "betas", "eps", "maximize")


class SparseAdam(GroupedOptimizer):
    """Adam on the rows a row-sparse gradient touches (torch.optim.SparseAdam).

    For embedding tables: a gradient is a pair ``(indices, rows)`` of k row
    numbers of the parameter's first axis and the k gradient rows (shape
    ``(k, *param.shape[1:])``); duplicate indices are summed as torch's
    coalesce sums them, and only the touched rows of the parameter and of its
    moments are read and written. torch.optim.SparseAdam's signature, defaults,
    checks, state keys (``step`` an int, ``exp_avg``, ``exp_avg_sq``) and
    state_dict layout.

    Parameters
    ----------
    params : iterable
        NumPy arrays (float32/float64, C-contiguous, at least 1-D) or
        parameter-group dicts with a ``"params"`` list.
    lr : float, optional
        Learning rate.
    betas : tuple of float, optional
        The moments' decay rates.
    eps : float, optional
        Added to the square root of the second moment.
    maximize : bool, optional
        Ascend instead of descend.

    Raises
    ------
    TypeError
        A parameter that is not a float32/float64 NumPy array.
    ValueError
        A bad hyperparameter (torch's messages), no parameters, or a
        parameter that is 0-dimensional, not C-contiguous and writeable, or
        overlaps another.

    See Also
    --------
    optcore.sparse_adam_rows : The kernel of one parameter.
    optcore.torch.SparseAdam : The torch class (sparse COO gradients).

    Examples
    --------
    >>> import numpy as np, optcore
    >>> table = np.zeros((4, 2))
    >>> opt = optcore.SparseAdam([table], lr=0.1)
    >>> opt.step([([3, 1, 3], np.ones((3, 2)))])
    >>> table[:, 0].round(4).tolist()
    [0.0, -0.1, 0.0, -0.1]
    >>> sorted(opt.state[0])
    ['exp_avg', 'exp_avg_sq', 'step']
    """

    _options = _OPTIONS

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 maximize: bool = False) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "maximize": maximize})

    def _check_param(self, p: Any, index: int) -> None:
        if p.ndim < 1:
            raise ValueError(f"parameter {index} is 0-dimensional; SparseAdam steps "
                             f"parameters of at least one dimension (embedding tables)")

    def _check_group(self, group: dict[str, Any]) -> None:
        # torch.optim.SparseAdam's checks and messages
        lr, eps, betas = group["lr"], group["eps"], group["betas"]
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i in (0, 1):
            if not 0.0 <= betas[i] < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (options not given take the defaults).

        Parameters
        ----------
        param_group : dict
            ``{"params": [arrays], **options}``.

        Raises
        ------
        ValueError
            A bad option, an unknown key, or a parameter already present.

        Examples
        --------
        >>> import numpy as np, optcore
        >>> opt = optcore.SparseAdam([np.zeros((2, 2))])
        >>> opt.add_param_group({"params": [np.zeros((3, 1))], "lr": 0.5})
        >>> [g["lr"] for g in opt.param_groups]
        [0.001, 0.5]
        """
        self._add_group(param_group)

    def step(self, grads: Sequence[Any]) -> None:
        """Take one step for every parameter with a gradient.

        Every gradient is checked before the first write, so a step that
        raises changes nothing.

        Parameters
        ----------
        grads : list
            One entry per parameter, in order over all groups: ``None`` (no
            gradient: the parameter and its step count are left alone) or an
            ``(indices, rows)`` pair.

        Raises
        ------
        RuntimeError
            A dense gradient (an array instead of a pair; torch's message).
        TypeError
            Indices that are not integers, or rows of another dtype.
        ValueError
            The wrong number of gradients, or rows of the wrong shape.
        IndexError
            An index outside the parameter's rows.

        Examples
        --------
        >>> import numpy as np, optcore
        >>> a, b = np.zeros((3, 1)), np.zeros((2, 1))
        >>> opt = optcore.SparseAdam([a, b], lr=0.5)
        >>> opt.step([([2], np.ones((1, 1))), None])
        >>> a.ravel().round(4).tolist(), opt.state[0]["step"], 1 in opt.state
        ([0.0, 0.0, -0.5], 1, False)
        """
        params = self._params()
        grads = list(grads)
        if len(grads) != len(params):
            raise ValueError(f"expected {len(params)} gradients (one per parameter, "
                             f"None for none), got {len(grads)}")
        calls = []
        owner = [g for g in self.param_groups for _ in g["params"]]
        for i, (p, grad) in enumerate(zip(params, grads)):
            if grad is None:
                continue
            if isinstance(grad, np.ndarray) or not (isinstance(grad, tuple | list)
                                                     and len(grad) == 2):
                raise RuntimeError("SparseAdam does not support dense gradients, "
                                   "please consider Adam instead")
            idx, rows = check_rows(p, grad, f"grads[{i}]")
            calls.append((i, p, idx, rows, owner[i]))
        for i, p, idx, rows, group in calls:
            state = self.state.get(i)
            if state is None:
                state = self.state[i] = {"step": 0, "exp_avg": np.zeros_like(p),
                                         "exp_avg_sq": np.zeros_like(p)}
            state["step"] += 1
            beta1, beta2 = group["betas"]
            sparse_rows.sparse_adam_rows(p, idx, rows, state["exp_avg"], state["exp_avg_sq"],
                                         step=state["step"], lr=group["lr"], beta1=beta1,
                                         beta2=beta2, eps=group["eps"],
                                         maximize=group["maximize"])

    def state_dict(self) -> dict[str, Any]:
        """Return the state and groups in torch.optim's state_dict layout.

        ``{"state": {index: entry}, "param_groups": [...]}``.

        Returns
        -------
        dict
            Copies of the state and the groups (``params`` as indices).

        Examples
        --------
        >>> import numpy as np, optcore
        >>> opt = optcore.SparseAdam([np.zeros((2, 1))])
        >>> opt.state_dict()["param_groups"][0]["params"]
        [0]
        """
        groups, n = [], 0
        for g in self.param_groups:
            groups.append({**{k: g[k] for k in _OPTIONS},
                           "params": list(range(n, n + len(g["params"])))})
            n += len(g["params"])
        return {"state": copy.deepcopy(self.state), "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of this layout (checked fully before anything changes).

        Parameters
        ----------
        state_dict : dict
            As :meth:`state_dict` returns (or torch.optim.SparseAdam's, with
            its tensors converted to arrays).

        Raises
        ------
        ValueError
            Groups that do not match, a missing or foreign key, or state of
            the wrong shape.

        Examples
        --------
        >>> import numpy as np, optcore
        >>> a = np.zeros((2, 1))
        >>> opt = optcore.SparseAdam([a])
        >>> opt.step([([0], np.ones((1, 1)))])
        >>> twin = optcore.SparseAdam([a.copy()])
        >>> twin.load_state_dict(opt.state_dict())
        >>> twin.state[0]["step"]
        1
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(g["params"]) != len(mine["params"])
                for g, mine in zip(groups, self.param_groups)):
            raise ValueError("loaded state dict's groups do not match the optimizer's")
        for g in groups:
            if set(g) != {"params", *_OPTIONS}:
                raise ValueError(f"a loaded param group has keys {sorted(g)}, expected "
                                 f"{sorted({'params', *_OPTIONS})}")
            self._check_group(g)
        params = self._params()
        state: dict[int, dict[str, Any]] = {}
        for key, entry in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params) or set(entry) != {"step", "exp_avg", "exp_avg_sq"}:
                raise ValueError(f"loaded state entry {key!r} does not belong to SparseAdam")
            p = params[i]
            moments = {k: np.array(entry[k], dtype=p.dtype) for k in ("exp_avg", "exp_avg_sq")}
            if any(m.shape != p.shape for m in moments.values()):
                raise ValueError(f"loaded state entry {key!r} has the wrong shape")
            state[i] = {"step": int(entry["step"]), **moments}
        for g, mine in zip(groups, self.param_groups):
            mine.update({k: g[k] for k in _OPTIONS})
        self.state = state
