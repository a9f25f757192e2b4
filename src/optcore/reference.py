"""Pure-NumPy reference implementations, name for name with the fast API.

Written from torch.optim's documented update rules, one NumPy operation per
step of the rule and in the buffer's dtype (scalars are cast to it, as torch
does), so that it is readable and exact. Tests hold the Cython kernels to it;
benchmarks use it as the baseline. Buffers are updated in place; every buffer
argument is one array or a list of arrays.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from optcore._typing import ArrayOrIterable, Buffers

__all__ = [
    "sgd_step",
    "adam_step",
    "adamw_step",
    "rmsprop_step",
    "adagrad_step",
    "adadelta_step",
    "adamax_step",
    "nadam_step",
    "radam_step",
    "rprop_step",
    "asgd_step",
    "mse_loss",
    "mse_grad",
    "mse_loss_grad",
    "linear_mse_grad",
    "lion_step",
    "lamb_step",
    "muon_momentum",
    "muon_apply",
    "global_norm",
    "clip_grad_norm_",
    "clip_grad_value_",
    "all_finite",
    "unscale_",
    "sparse_adam_rows",
    "adagrad_rows",
    "sgd_rows",
    "adafactor_step",
]


def _tensors(*buffers: Any) -> list[tuple[Any, ...]]:
    """Zip the buffer arguments of a call into per-tensor tuples."""
    if isinstance(buffers[0], (list, tuple)):
        n = len(buffers[0])
        cols = [b if isinstance(b, (list, tuple)) else [b] * n for b in buffers]
        return list(zip(*cols))
    return [buffers]


# (Any, not NDArray | None: an optional buffer is None in every tensor or in none.)
def _flat(a: ArrayLike | None) -> Any:
    return None if a is None else np.asarray(a).reshape(-1)


def sgd_step(param: Buffers, grad: Buffers, momentum_buffer: Buffers | None = None, *,
             step: int, lr: float, momentum: float = 0.0, dampening: float = 0.0,
             nesterov: bool = False, weight_decay: float = 0.0,
             maximize: bool = False) -> None:
    for p, g, buf in _tensors(param, grad, momentum_buffer):
        p, g, buf = _flat(p), _flat(g), _flat(buf)
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            if step == 1:
                buf[...] = g
            else:
                buf *= momentum
                buf += (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p += -lr * g


def _lerp_(start: NDArray[Any], end: NDArray[Any], weight: float) -> None:
    """``start.lerp_(end, weight)`` in place, with torch.lerp's two-sided formula."""
    dt = start.dtype.type
    w = dt(weight)
    if w < 0.5:
        start += w * (end - start)
    else:
        start[...] = end - (end - start) * (dt(1) - w)


def _adam_moments_(p: Any, g: Any, m: Any, v: Any, *, lr: float, beta1: float,
                   beta2: float, weight_decay: float, decoupled: bool,
                   maximize: bool) -> Any:
    """The Adam family's common part, in place (torch's order): ±grad, the
    weight decay (decoupled: ``p *= 1 - lr * weight_decay``, else L2 added to
    the gradient), ``m.lerp_(g, 1 - beta1)``, ``v = v * beta2 + (1 - beta2) *
    g * g``. Returns the gradient the update uses."""
    g = -g if maximize else g
    if weight_decay != 0:
        if decoupled:
            p *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * p
    _lerp_(m, g, 1 - beta1)
    v *= beta2
    v += (1 - beta2) * g * g
    return g


def adam_step(param: Buffers, grad: Buffers, exp_avg: Buffers, exp_avg_sq: Buffers, *,
              step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-8, weight_decay: float = 0.0,
              decoupled_weight_decay: bool = False, amsgrad: bool = False,
              max_exp_avg_sq: Buffers | None = None, maximize: bool = False) -> None:
    bias_correction1 = 1 - beta1**step
    # torch divides sqrt(v) by sqrt(1 - beta2**step); here it is multiplied by
    # the reciprocal, computed once in double (one division per element)
    inv_bias_correction2_sqrt = 1 / (1 - beta2**step) ** 0.5
    step_size = lr / bias_correction1
    for p, g, m, v, vmax in _tensors(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
        p, g, m, v, vmax = map(_flat, (p, g, m, v, vmax))
        _adam_moments_(p, g, m, v, lr=lr, beta1=beta1, beta2=beta2,
                       weight_decay=weight_decay, decoupled=decoupled_weight_decay,
                       maximize=maximize)
        if amsgrad:
            np.maximum(vmax, v, out=vmax)
            denom = np.sqrt(vmax) * inv_bias_correction2_sqrt + eps
        else:
            denom = np.sqrt(v) * inv_bias_correction2_sqrt + eps
        p += -step_size * m / denom


def adamw_step(param: Buffers, grad: Buffers, exp_avg: Buffers, exp_avg_sq: Buffers, *,
               step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
               eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
               max_exp_avg_sq: Buffers | None = None, maximize: bool = False) -> None:
    adam_step(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, beta1=beta1,
              beta2=beta2, eps=eps, weight_decay=weight_decay,
              decoupled_weight_decay=True, amsgrad=amsgrad,
              max_exp_avg_sq=max_exp_avg_sq, maximize=maximize)



def rmsprop_step(param: Buffers, grad: Buffers, square_avg: Buffers,
                 momentum_buffer: Buffers | None = None, grad_avg: Buffers | None = None, *,
                 step: int, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
    for p, g, sq, buf, ga in _tensors(param, grad, square_avg, momentum_buffer,
                                      grad_avg):
        p, g, sq, buf, ga = map(_flat, (p, g, sq, buf, ga))
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        sq *= alpha
        sq += (1 - alpha) * g * g
        if centered:
            _lerp_(ga, g, 1 - alpha)
            # where ga*ga overflows, torch's fused addcmul keeps sq = +inf
            avg = np.sqrt(np.where(np.isposinf(sq) & np.isfinite(ga), sq, sq - ga * ga))
        else:
            avg = np.sqrt(sq)
        avg += eps
        if momentum > 0:
            buf *= momentum
            buf += g / avg
            p += -lr * buf
        else:
            p += -lr * g / avg


def adagrad_step(param: Buffers, grad: Buffers, state_sum: Buffers, *, step: int,
                 lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 eps: float = 1e-10, maximize: bool = False) -> None:
    clr = lr / (1 + (step - 1) * lr_decay)
    for p, g, s in _tensors(param, grad, state_sum):
        p, g, s = map(_flat, (p, g, s))
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        s += g * g
        std = np.sqrt(s) + eps
        p += -clr * g / std


def adadelta_step(param: Buffers, grad: Buffers, square_avg: Buffers, acc_delta: Buffers,
                  *, step: int, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                  weight_decay: float = 0.0, maximize: bool = False) -> None:
    for p, g, sq, acc in _tensors(param, grad, square_avg, acc_delta):
        p, g, sq, acc = map(_flat, (p, g, sq, acc))
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        sq *= rho
        sq += (1 - rho) * g * g
        std = np.sqrt(sq + eps)
        delta = np.sqrt(acc + eps) / std * g
        acc *= rho
        acc += (1 - rho) * delta * delta
        p += -lr * delta


def adamax_step(param: Buffers, grad: Buffers, exp_avg: Buffers, exp_inf: Buffers, *,
                step: int, lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999,
                eps: float = 1e-8, weight_decay: float = 0.0,
                maximize: bool = False) -> None:
    clr = lr / (1 - beta1**step)
    for p, g, m, u in _tensors(param, grad, exp_avg, exp_inf):
        p, g, m, u = map(_flat, (p, g, m, u))
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        _lerp_(m, g, 1 - beta1)
        u *= beta2
        np.maximum(u, np.abs(g) + eps, out=u)
        p += -clr * m / u


def nadam_step(param: Buffers, grad: Buffers, exp_avg: Buffers, exp_avg_sq: Buffers, *,
               step: int, mu_product: float, lr: float = 2e-3, beta1: float = 0.9,
               beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
               momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False,
               maximize: bool = False) -> float:
    """Returns the new ``mu_product`` (kept in double)."""
    bias_correction2 = 1 - beta2**step
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product = float(mu_product) * mu
    grad_coef = -lr * (1.0 - mu) / (1.0 - mu_product)
    avg_coef = -lr * mu_next / (1.0 - mu_product * mu_next)
    for p, g, m, v in _tensors(param, grad, exp_avg, exp_avg_sq):
        p, g, m, v = map(_flat, (p, g, m, v))
        g = _adam_moments_(p, g, m, v, lr=lr, beta1=beta1, beta2=beta2,
                           weight_decay=weight_decay, decoupled=decoupled_weight_decay,
                           maximize=maximize)
        denom = np.sqrt(v / bias_correction2) + eps
        p += grad_coef * g / denom
        p += avg_coef * m / denom
    return mu_product


def radam_step(param: Buffers, grad: Buffers, exp_avg: Buffers, exp_avg_sq: Buffers, *,
               step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
               eps: float = 1e-8, weight_decay: float = 0.0,
               decoupled_weight_decay: bool = False, maximize: bool = False) -> None:
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
    rectified = rho_t > 5.0
    if rectified:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    for p, g, m, v in _tensors(param, grad, exp_avg, exp_avg_sq):
        p, g, m, v = map(_flat, (p, g, m, v))
        dt = p.dtype.type
        _adam_moments_(p, g, m, v, lr=lr, beta1=beta1, beta2=beta2,
                       weight_decay=weight_decay, decoupled=decoupled_weight_decay,
                       maximize=maximize)
        update = m / bias_correction1 * lr
        if rectified:
            # torch computes bc2**0.5 / (sqrt(v) + eps) as reciprocal(...) * bc2**0.5
            adaptive = dt(1) / (np.sqrt(v) + eps) * bias_correction2**0.5
            update = update * adaptive * rect
        p -= update

def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_shapes(pred: ArrayLike, target: ArrayLike) -> None:
    ps, ts = np.shape(pred), np.shape(target)
    if ps == ts or math.prod(ps) != math.prod(ts):
        return
    try:
        paired = math.prod(np.broadcast_shapes(ps, ts)) == math.prod(ps)
    except ValueError:
        paired = False
    if not paired:
        raise ValueError(f"target has shape {ts} but pred has shape {ps}; they would "
                         f"broadcast to a larger shape (pass arrays of the same shape)")


@overload
def mse_loss(pred: ArrayLike, target: ArrayLike,
             reduction: Literal["mean", "sum"] = "mean") -> float: ...
@overload
def mse_loss(pred: ArrayLike, target: ArrayLike,
             reduction: Literal["none"]) -> NDArray[Any]: ...
@overload
def mse_loss(pred: ArrayLike, target: ArrayLike,
             reduction: str = "mean") -> float | NDArray[Any]: ...
def mse_loss(pred: ArrayLike, target: ArrayLike,
             reduction: str = "mean") -> float | NDArray[Any]:
    _check_reduction(reduction)
    _check_shapes(pred, target)
    d = np.asarray(pred) - np.asarray(target)
    if reduction == "none":
        return d * d
    total = float(np.sum(np.square(d.astype(np.float64))))
    if reduction == "sum":
        return total
    return total / d.size if d.size else float("nan")


def mse_grad(pred: ArrayLike, target: ArrayLike, *, reduction: str = "mean",
             out: NDArray[Any] | None = None) -> NDArray[Any]:
    _check_reduction(reduction)
    _check_shapes(pred, target)
    pred = np.asarray(pred)
    d = pred - np.asarray(target)
    scale = 2.0 / d.size if (reduction == "mean" and d.size) else 2.0
    g = scale * d
    if out is None:
        return g
    np.copyto(out, g.reshape(np.shape(out)))
    return out


def mse_loss_grad(pred: ArrayLike, target: ArrayLike, *, reduction: str = "mean",
                  out: NDArray[Any] | None = None
                  ) -> tuple[float | NDArray[Any], NDArray[Any]]:
    return mse_loss(pred, target, reduction), mse_grad(pred, target,
                                                       reduction=reduction, out=out)


def linear_mse_grad(X: ArrayLike, y: ArrayLike, w: ArrayLike, b: ArrayLike | None = None,
                    *, reduction: str = "mean"
                    ) -> tuple[float, NDArray[Any], NDArray[Any] | None]:
    """Loss and gradients of the linear model ``pred = X @ w + b`` under MSE."""
    X, y, w = np.asarray(X), np.asarray(y), np.asarray(w)
    pred = X @ w
    if b is not None:
        pred = pred + b
    loss = mse_loss(pred, y, reduction="sum" if reduction == "sum" else "mean")
    r = mse_grad(pred, y, reduction=reduction)
    grad_w = X.T @ r
    grad_b = None
    if b is not None:
        total = r.sum() if np.size(b) == 1 else r.sum(axis=0)
        grad_b = np.asarray(total, dtype=pred.dtype).reshape(np.shape(b))
    return loss, grad_w, grad_b


# ---- Lion, LAMB ----------------------------------------------------------------

def rprop_step(param: Buffers, grad: Buffers, prev: Buffers, step_size: Buffers, *,
               step: int, etaminus: float = 0.5, etaplus: float = 1.2,
               step_size_min: float = 1e-6, step_size_max: float = 50.0,
               maximize: bool = False) -> None:
    for p, g, prv, ss in _tensors(param, grad, prev, step_size):
        p, g, prv, ss = map(_flat, (p, g, prv, ss))
        dt = p.dtype.type
        g = -g if maximize else g
        s = g * prv
        factor = np.where(s > 0, dt(etaplus), np.where(s < 0, dt(etaminus), dt(1)))
        ss *= factor
        # torch's clamp: the lower bound, then the upper one (NaN kept)
        ss[...] = np.where(ss < dt(step_size_min), dt(step_size_min), ss)
        ss[...] = np.where(dt(step_size_max) < ss, dt(step_size_max), ss)
        g = np.where(s < 0, dt(0), g)
        # torch.sign: 0 for NaN (numpy.sign keeps NaN)
        sign = (g > 0).astype(dt) - (g < 0).astype(dt)
        p -= sign * ss
        prv[...] = g


def asgd_step(param: Buffers, grad: Buffers, ax: Buffers, *, step: int, eta: float,
              mu: float, lambd: float = 1e-4, weight_decay: float = 0.0,
              maximize: bool = False) -> None:
    for p, g, a in _tensors(param, grad, ax):
        p, g, a = map(_flat, (p, g, a))
        dt = p.dtype.type
        g = -g if maximize else g
        if weight_decay != 0:
            g = g + weight_decay * p
        p *= dt(1 - lambd * eta)
        p += dt(-eta) * g
        if mu == 1:
            a[...] = p
        else:
            a += (p - a) * dt(mu)


def lion_step(param: Buffers, grad: Buffers, exp_avg: Buffers, *, step: int,
              lr: float = 1e-4, beta1: float = 0.9, beta2: float = 0.99,
              weight_decay: float = 0.0, maximize: bool = False) -> None:
    """Lion (Chen et al. 2023, Algorithm 2; optax.lion)."""
    for p, g, m in _tensors(param, grad, exp_avg):
        p, g, m = _flat(p), _flat(g), _flat(m)
        dt = p.dtype.type
        g = -g if maximize else g
        c = dt(beta1) * m + dt(1 - beta1) * g
        if weight_decay != 0:
            p *= dt(1 - lr * weight_decay)
        p += dt(-lr) * np.sign(c)
        m[...] = dt(beta2) * m + dt(1 - beta2) * g


_BLOCK, _LANES = 4096, 8


def _sum_squares_blocked(x: ArrayLike) -> float:
    """sum(x * x) in float64, added in the kernels' order (so that the LAMB
    trust ratio has the kernel's bits): blocks of 4096 elements added in
    order, each block over 8 running lane sums (element i of the full groups
    to lane i % 8, then the tail to lanes 0, 1, ...) combined pairwise."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    total = 0.0
    for start in range(0, x.size, _BLOCK):
        sq = np.square(x[start:start + _BLOCK])
        nfull = sq.size - sq.size % _LANES
        lanes = np.zeros(_LANES)
        if nfull:
            # cumsum is sequential by definition: lane by lane, in order.
            lanes = np.cumsum(sq[:nfull].reshape(-1, _LANES), axis=0)[-1].copy()
        lanes[:sq.size - nfull] += sq[nfull:]
        total += float(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
                       + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])))
    return total


def lamb_step(param: Buffers, grad: Buffers, exp_avg: Buffers, exp_avg_sq: Buffers, *,
              step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-6, weight_decay: float = 0.0, maximize: bool = False) -> None:
    """LAMB (You et al. 2019, Algorithm 2; optax.lamb): Adam moments with bias
    correction, a per-tensor trust ratio ||p|| / ||u|| (1 when either is 0)."""
    # The bias corrections as products with their reciprocals (as the kernel).
    inv_bias_correction1 = 1 / (1 - beta1**step)
    inv_bias_correction2 = 1 / (1 - beta2**step)
    for p, g, m, v in _tensors(param, grad, exp_avg, exp_avg_sq):
        p, g, m, v = map(_flat, (p, g, m, v))
        dt = p.dtype.type
        g = -g if maximize else g
        m[...] = dt(beta1) * m + dt(1 - beta1) * g
        v[...] = dt(beta2) * v + dt(1 - beta2) * g * g
        u = (m * dt(inv_bias_correction1)) / (np.sqrt(v * dt(inv_bias_correction2)) + dt(eps))
        if weight_decay != 0:
            u = u + dt(weight_decay) * p
        p_norm = np.sqrt(_sum_squares_blocked(p))
        u_norm = np.sqrt(_sum_squares_blocked(u))
        ratio = 1.0 if (p_norm == 0 or u_norm == 0) else p_norm / u_norm
        p += dt(-(lr * ratio)) * u


# ---- gradient utilities --------------------------------------------------------

def _array_list(arrays: Any) -> list[NDArray[Any]]:
    if hasattr(arrays, "__next__"):
        arrays = list(arrays)
    if isinstance(arrays, (list, tuple)):
        return [_flat(a) for a in arrays]
    return [_flat(arrays)]


def _check_norm_type(norm_type: float) -> float:
    p = float(norm_type)
    if not p > 0:
        raise ValueError(f"norm_type must be a positive number or inf, got {norm_type!r}")
    return p


def global_norm(arrays: ArrayOrIterable, norm_type: float = 2.0) -> float:
    """Norm of all elements as one vector, in float64, scaled by max(abs(x))
    (no overflow or underflow)."""
    p = _check_norm_type(norm_type)
    xs = [np.abs(a.astype(np.float64)) for a in _array_list(arrays) if a.size]
    if not xs:
        return 0.0
    m = float(np.max([np.max(x) for x in xs]))      # NaN if any (Python's max drops it)
    if p == np.inf or not 0 < m < np.inf:     # max, 0, inf, or NaN (np.max propagates it)
        return m
    total = sum(float(np.sum((x / m) ** p)) for x in xs)
    try:
        return m * total ** (1.0 / p)
    except OverflowError:                     # a tiny p: the norm is past the float range
        return np.inf


def clip_grad_norm_(grads: ArrayOrIterable, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    total = global_norm(grads, norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {float(norm_type)} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable this "
            "error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`")
    coef = float(max_norm) / (total + 1e-6)
    coef = 1.0 if coef > 1.0 else coef        # NaN stays NaN, as torch.clamp
    if coef != 1.0:
        for g in _array_list(grads):
            g *= g.dtype.type(coef)
    return total


def clip_grad_value_(grads: ArrayOrIterable, clip_value: float) -> None:
    c = float(clip_value)
    for g in _array_list(grads):
        if np.isnan(c):
            g[...] = np.nan
            continue
        hi = g.dtype.type(c)
        # torch's clamp_min then clamp_max, signed zeros included (np.maximum /
        # np.minimum may return either zero); NaN in g stays NaN
        g[...] = np.where(g < -hi, -hi, g)
        g[...] = np.where(g > hi, hi, g)


def all_finite(arrays: ArrayOrIterable) -> bool:
    return all(bool(np.isfinite(a).all()) for a in _array_list(arrays))


def unscale_(grads: ArrayOrIterable, inv_scale: float) -> bool:
    """torch._amp_foreach_non_finite_check_and_unscale_ on CPU: the check is
    on the values before scaling; inv_scale == 1 leaves them untouched."""
    found = not all_finite(grads)
    inv = float(inv_scale)
    if inv != 1.0:
        for g in _array_list(grads):
            g *= g.dtype.type(inv)
    return found


def _document_twins() -> None:
    # Each twin's docstring is its native function's (the same Parameters and
    # Returns, rendered from the same source), with the twin's own remarks,
    # if any, as Notes.
    from optcore import _docstrings, _kernel_docs, _spec
    docs = dict(_docstrings.DOCS)
    for kernel in _spec.KERNELS:
        docs.update((w["name"], w["doc"]) for w in _kernel_docs.wrapper_docstrings(kernel))
    for name in __all__:
        if name in _rows.__all__ or name == "adafactor_step":
            continue                    # documented in its own module
        function = globals()[name]
        function.__doc__ = _kernel_docs.twin_docstring(docs[name], name, function.__doc__)


from optcore import _reference_rows as _rows  # noqa: E402  (the row-sparse twins)
from optcore._reference_muon import muon_apply, muon_momentum  # noqa: E402

muon_momentum.__module__ = muon_apply.__module__ = __name__

sparse_adam_rows, adagrad_rows, sgd_rows = (
    _rows.sparse_adam_rows, _rows.adagrad_rows, _rows.sgd_rows)
for _twin in (sparse_adam_rows, adagrad_rows, sgd_rows):
    _twin.__module__ = __name__

from optcore._reference_adafactor import adafactor_step  # noqa: E402

adafactor_step.__module__ = __name__


def _precision_twins() -> None:
    # The tiled kernels' twins take master_param, rounding, compensation and
    # seed (optcore._reference_precision: widen, the float32 rule, round).
    from optcore import _reference_precision, _spec
    for kernel in _spec.KERNELS:
        if kernel.tiled:
            for name in (kernel.name, *kernel.aliases):
                globals()[name] = _reference_precision.tiled_twin(name)(globals()[name])


_precision_twins()
_document_twins()
