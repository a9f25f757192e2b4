"""The L-BFGS algorithm of ``optcore.LBFGS`` and ``optcore.torch.LBFGS``: one
implementation of the iteration loop, the two-loop recursion and the
strong-Wolfe line search, over flat vectors of either library.

A step needs two things from its caller:

- ``ops``: the vector operations on flat 1-D buffers (``NumpyOps`` here, the
  torch class passes its own): dot products, max/sum of magnitudes, the
  in-place ``y += alpha * x`` and fresh copies. Scalars they return are those
  of the library (NumPy scalars, 0-dim tensors), so every scalar is computed
  in the parameters' precision, as torch.optim.LBFGS computes it.
- ``problem``: the parameters and the objective: ``closure()`` evaluates the
  loss (and leaves the gradients where ``flat_grad()`` gathers them into one
  fresh flat buffer), ``add_(t, d)`` moves every parameter in place by ``t``
  times its slice of the flat direction ``d``, ``clone_params()`` /
  ``set_params(x)`` save and restore them (the line search's trial points).

The rules are torch.optim.LBFGS's (torch 2.13): the same tolerances, the same
curvature test ``y.s > 1e-10`` for keeping a correction pair, the same first
step ``min(1, 1/|g|_1) * lr``, the same evaluation budget, and the same state
keys (``func_evals``, ``n_iter``, ``d``, ``t``, ``old_dirs``, ``old_stps``,
``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss``, ``al``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

__all__ = ["NumpyOps", "check_options", "lbfgs_step"]

#: A correction pair (s, y) is kept only when its curvature y.s exceeds this.
CURVATURE_FLOOR = 1e-10
#: The strong-Wolfe constants (sufficient decrease, curvature).
WOLFE_C1 = 1e-4
WOLFE_C2 = 0.9
#: The state a step leaves for the next, in torch.optim.LBFGS's key order.
CARRIED = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss")


class Ops(Protocol):
    def dot(self, a: Any, b: Any) -> Any: ...
    def abs_max(self, a: Any) -> Any: ...
    def abs_sum(self, a: Any) -> Any: ...
    def neg(self, a: Any) -> Any: ...
    def sub(self, a: Any, b: Any) -> Any: ...
    def scaled(self, a: Any, s: Any) -> Any: ...
    def axpy_(self, y: Any, alpha: Any, x: Any) -> None: ...
    def clone(self, a: Any) -> Any: ...
    def copy_(self, dst: Any, src: Any) -> None: ...
    def sqrt(self, s: Any) -> Any: ...


class Problem(Protocol):
    def closure(self) -> Any: ...
    def flat_grad(self) -> Any: ...
    def add_(self, t: Any, d: Any) -> None: ...
    def clone_params(self) -> Any: ...
    def set_params(self, x: Any) -> None: ...


class NumpyOps:
    """Flat-vector operations on 1-D NumPy arrays (BLAS dot products; scalars
    stay in the arrays' dtype)."""

    @staticmethod
    def dot(a: np.ndarray, b: np.ndarray) -> Any:
        return np.dot(a, b)

    @staticmethod
    def abs_max(a: np.ndarray) -> Any:
        return np.abs(a).max()

    @staticmethod
    def abs_sum(a: np.ndarray) -> Any:
        return np.abs(a).sum()

    @staticmethod
    def neg(a: np.ndarray) -> np.ndarray:
        return np.negative(a)

    @staticmethod
    def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.subtract(a, b)

    @staticmethod
    def scaled(a: np.ndarray, s: Any) -> np.ndarray:
        return np.multiply(a, s, dtype=a.dtype)

    @staticmethod
    def axpy_(y: np.ndarray, alpha: Any, x: np.ndarray) -> None:
        y += np.multiply(x, alpha, dtype=y.dtype)

    @staticmethod
    def clone(a: np.ndarray) -> np.ndarray:
        return a.copy()

    @staticmethod
    def copy_(dst: np.ndarray, src: np.ndarray) -> None:
        dst[...] = src

    @staticmethod
    def sqrt(s: Any) -> Any:
        return np.sqrt(s)


def check_options(lr: Any, is_tensor_lr: bool, numel: int | None) -> None:
    """torch.optim.LBFGS's constructor checks (its messages)."""
    if is_tensor_lr and numel != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")


def _cubic_minimum(x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any, ops: Ops,
                   bounds: tuple[Any, Any] | None = None) -> Any:
    """The minimiser of the cubic through (x1, f1, f1') and (x2, f2, f2'),
    clamped to ``bounds`` (default: the interval between the points); the
    interval's middle when the cubic has no real minimiser."""
    if bounds is None:
        lo, hi = (x1, x2) if x1 <= x2 else (x2, x1)
    else:
        lo, hi = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    disc = d1 ** 2 - g1 * g2
    if disc >= 0:
        d2 = ops.sqrt(disc)
        # measured from the point farther along, as the formula is stable there
        if x1 <= x2:
            m = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            m = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(m, lo), hi)
    return (lo + hi) / 2.0


def _strong_wolfe(problem: Problem, ops: Ops, x0: Any, t: Any, d: Any, f: float, g: Any,
                  gtd: Any, tolerance_change: float, max_ls: int
                  ) -> tuple[float, Any, Any, int]:
    """A step length along ``d`` meeting the strong Wolfe conditions
    (bracketing, then zooming by cubic interpolation). Returns the loss, flat
    gradient and step length of the chosen point and the number of
    evaluations; the parameters are left at ``x0``."""

    def evaluate(step: Any) -> tuple[float, Any]:
        problem.add_(step, d)
        loss = float(problem.closure())
        grad = problem.flat_grad()
        problem.set_params(x0)
        return loss, grad

    d_norm = ops.abs_max(d)
    g = ops.clone(g)
    f_new, g_new = evaluate(t)
    evals = 1
    gtd_new = ops.dot(g_new, d)

    # Bracketing: grow the step until an interval holds an acceptable point.
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    it = 0
    pts: list[Any] = []
    fs: list[Any] = []
    gs: list[Any] = []
    gtds: list[Any] = []
    while it < max_ls:
        if f_new > (f + WOLFE_C1 * t * gtd) or (it > 1 and f_new >= f_prev):
            pts, fs, gs, gtds = ([t_prev, t], [f_prev, f_new], [g_prev, ops.clone(g_new)],
                                 [gtd_prev, gtd_new])
            break
        if abs(gtd_new) <= -WOLFE_C2 * gtd:
            pts, fs, gs = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            pts, fs, gs, gtds = ([t_prev, t], [f_prev, f_new], [g_prev, ops.clone(g_new)],
                                 [gtd_prev, gtd_new])
            break
        # extrapolate, at least 1% beyond t and at most 10 t
        previous = t
        t = _cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, ops,
                           bounds=(t + 0.01 * (t - t_prev), t * 10))
        t_prev, f_prev, g_prev, gtd_prev = previous, f_new, ops.clone(g_new), gtd_new
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = ops.dot(g_new, d)
        it += 1
    if it == max_ls:
        pts, fs, gs = [0, t], [f, f_new], [g, g_new]

    # Zoom: shrink the bracket until its low end meets the conditions.
    stalled = False
    low, high = (0, 1) if fs[0] <= fs[-1] else (1, 0)
    while not done and it < max_ls:
        if abs(pts[1] - pts[0]) * d_norm < tolerance_change:
            break
        t = _cubic_minimum(pts[0], fs[0], gtds[0], pts[1], fs[1], gtds[1], ops)
        # a trial too close to an end (twice running, or outside) moves to
        # 10% of the bracket from that end
        top, bottom = max(pts), min(pts)
        margin = 0.1 * (top - bottom)
        if min(top - t, t - bottom) < margin:
            if stalled or t >= top or t <= bottom:
                t = top - margin if abs(t - top) < abs(t - bottom) else bottom + margin
                stalled = False
            else:
                stalled = True
        else:
            stalled = False
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = ops.dot(g_new, d)
        it += 1
        if f_new > (f + WOLFE_C1 * t * gtd) or f_new >= fs[low]:
            pts[high], fs[high], gs[high], gtds[high] = t, f_new, ops.clone(g_new), gtd_new
            low, high = (0, 1) if fs[0] <= fs[1] else (1, 0)
        else:
            if abs(gtd_new) <= -WOLFE_C2 * gtd:
                done = True
            elif gtd_new * (pts[high] - pts[low]) >= 0:
                pts[high], fs[high], gs[high], gtds[high] = (pts[low], fs[low], gs[low],
                                                             gtds[low])
            pts[low], fs[low], gs[low], gtds[low] = t, f_new, ops.clone(g_new), gtd_new
    return fs[low], gs[low], pts[low], evals


def _direction(mem: dict[str, Any], state: dict[str, Any], ops: Ops, flat_grad: Any,
               history_size: int) -> Any:
    """Record the last correction pair (if its curvature is positive) and
    return -H g by the two-loop recursion over the kept pairs."""
    y = ops.sub(flat_grad, mem["prev_flat_grad"])
    s = ops.scaled(mem["d"], mem["t"])
    ys = ops.dot(y, s)
    dirs, stps, ro = mem["old_dirs"], mem["old_stps"], mem["ro"]
    if ys > CURVATURE_FLOOR:
        if len(dirs) == history_size:
            del dirs[0], stps[0], ro[0]
        dirs.append(y)
        stps.append(s)
        ro.append(1.0 / ys)
        mem["H_diag"] = ys / ops.dot(y, y)
    if "al" not in state:
        state["al"] = [None] * history_size
    al = state["al"]
    q = ops.neg(flat_grad)
    for i in range(len(dirs) - 1, -1, -1):
        al[i] = ops.dot(stps[i], q) * ro[i]
        ops.axpy_(q, -al[i], dirs[i])
    r = ops.scaled(q, mem["H_diag"])
    for i in range(len(dirs)):
        beta = ops.dot(dirs[i], r) * ro[i]
        ops.axpy_(r, al[i] - beta, stps[i])
    return r


def lbfgs_step(state: dict[str, Any], group: dict[str, Any], lr: Any, problem: Problem,
               ops: Ops) -> Any:
    """One ``step(closure)`` of L-BFGS: up to ``max_iter`` iterations and
    ``max_eval`` evaluations. ``state`` is updated in place (torch's keys);
    returns the closure's first result."""
    max_iter, max_eval = group["max_iter"], group["max_eval"]
    tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
    line_search_fn, history_size = group["line_search_fn"], group["history_size"]
    state.setdefault("func_evals", 0)
    state.setdefault("n_iter", 0)

    orig_loss = problem.closure()
    loss = float(orig_loss)
    evals = 1
    state["func_evals"] += 1
    flat_grad = problem.flat_grad()
    if ops.abs_max(flat_grad) <= tolerance_grad:
        return orig_loss

    # What carries over from the previous step (absent on the first); written
    # back at the end, in torch's key order.
    mem: dict[str, Any] = {key: state.get(key) for key in CARRIED}
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        state["n_iter"] += 1
        if state["n_iter"] == 1:
            mem["d"] = ops.neg(flat_grad)
            mem["old_dirs"], mem["old_stps"], mem["ro"] = [], [], []
            mem["H_diag"] = 1
        else:
            mem["d"] = _direction(mem, state, ops, flat_grad, history_size)
        d = mem["d"]
        if mem["prev_flat_grad"] is None:
            mem["prev_flat_grad"] = ops.clone(flat_grad)
        else:
            ops.copy_(mem["prev_flat_grad"], flat_grad)
        mem["prev_loss"] = loss

        # the first iteration ever scales the step by the gradient's size
        t = min(1.0, 1.0 / ops.abs_sum(flat_grad)) * lr if state["n_iter"] == 1 else lr
        mem["t"] = t
        gtd = ops.dot(flat_grad, d)
        if gtd > -tolerance_change:
            break

        step_evals = 0
        if line_search_fn is not None:
            if line_search_fn != "strong_wolfe":
                raise RuntimeError("only 'strong_wolfe' is supported")
            x0 = problem.clone_params()
            loss, flat_grad, t, step_evals = _strong_wolfe(
                problem, ops, x0, t, d, loss, flat_grad, gtd, tolerance_change,
                max_eval - evals)
            mem["t"] = t
            problem.add_(t, d)
            converged = ops.abs_max(flat_grad) <= tolerance_grad
        else:
            problem.add_(t, d)
            converged = False
            # the last iteration's point is not evaluated (the next step does)
            if n_iter != max_iter:
                loss = float(problem.closure())
                flat_grad = problem.flat_grad()
                converged = ops.abs_max(flat_grad) <= tolerance_grad
                step_evals = 1
        evals += step_evals
        state["func_evals"] += step_evals

        if n_iter == max_iter or evals >= max_eval or converged:
            break
        if ops.abs_max(ops.scaled(d, t)) <= tolerance_change:
            break
        if abs(loss - mem["prev_loss"]) < tolerance_change:
            break
    state.update(mem)
    return orig_loss
