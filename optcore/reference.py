"""Pure-NumPy reference implementations, name for name with the fast API.

Written from torch.optim's documented update rules, one NumPy operation per
step of the rule and in the buffer's dtype (scalars are cast to it, as torch
does), so that it is readable and exact. Tests hold the Cython kernels to it;
benchmarks use it as the baseline. Buffers are updated in place; every buffer
argument is one array or a list of arrays.
"""

import numpy as np

__all__ = [
    "sgd_step",
    "adam_step",
    "adamw_step",
    "mse_loss",
    "mse_grad",
    "mse_loss_grad",
    "linear_mse_grad",
]


def _tensors(*buffers):
    """Zip the buffer arguments of a call into per-tensor tuples."""
    if isinstance(buffers[0], (list, tuple)):
        n = len(buffers[0])
        cols = [b if isinstance(b, (list, tuple)) else [b] * n for b in buffers]
        return list(zip(*cols))
    return [buffers]


def _flat(a):
    return None if a is None else np.asarray(a).reshape(-1)


def sgd_step(param, grad, momentum_buffer=None, *, step, lr, momentum=0.0,
             dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False):
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


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9,
              beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
              amsgrad=False, max_exp_avg_sq=None, maximize=False):
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    step_size = lr / bias_correction1
    for p, g, m, v, vmax in _tensors(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
        p, g, m, v, vmax = map(_flat, (p, g, m, v, vmax))
        dt = p.dtype.type
        g = -g if maximize else g
        if weight_decay != 0:
            if decoupled_weight_decay:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p
        # exp_avg.lerp_(grad, 1 - beta1), with torch.lerp's two-sided formula
        w = dt(1 - beta1)
        if w < 0.5:
            m += w * (g - m)
        else:
            m[...] = g - (g - m) * (dt(1) - w)
        v *= beta2
        v += (1 - beta2) * g * g
        if amsgrad:
            np.maximum(vmax, v, out=vmax)
            denom = np.sqrt(vmax) / bias_correction2_sqrt + eps
        else:
            denom = np.sqrt(v) / bias_correction2_sqrt + eps
        p += -step_size * m / denom


def adamw_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9,
               beta2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=False,
               max_exp_avg_sq=None, maximize=False):
    adam_step(param, grad, exp_avg, exp_avg_sq, step=step, lr=lr, beta1=beta1,
              beta2=beta2, eps=eps, weight_decay=weight_decay,
              decoupled_weight_decay=True, amsgrad=amsgrad,
              max_exp_avg_sq=max_exp_avg_sq, maximize=maximize)


def _check_reduction(reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def mse_loss(pred, target, reduction="mean"):
    _check_reduction(reduction)
    d = np.asarray(pred) - np.asarray(target)
    if reduction == "none":
        return d * d
    total = float(np.sum(np.square(d.astype(np.float64))))
    if reduction == "sum":
        return total
    return total / d.size if d.size else float("nan")


def mse_grad(pred, target, *, reduction="mean", out=None):
    _check_reduction(reduction)
    pred = np.asarray(pred)
    d = pred - np.asarray(target)
    scale = 2.0 / d.size if (reduction == "mean" and d.size) else 2.0
    g = scale * d
    if out is None:
        return g
    np.copyto(out, g.reshape(np.shape(out)))
    return out


def mse_loss_grad(pred, target, *, reduction="mean", out=None):
    return mse_loss(pred, target, reduction), mse_grad(pred, target,
                                                       reduction=reduction, out=out)


def linear_mse_grad(X, y, w, b=None, *, reduction="mean"):
    """Loss and gradients of the linear model ``pred = X @ w + b`` under MSE."""
    X, y, w = np.asarray(X), np.asarray(y), np.asarray(w)
    pred = X @ w
    if b is not None:
        pred = pred + b
    loss = mse_loss(pred, y, reduction="sum" if reduction == "sum" else "mean")
    r = mse_grad(pred, y, reduction=reduction)
    grad_w = X.T @ r
    if b is None:
        return loss, grad_w, None
    # one bias shared by every output, or one per output
    g = r.sum() if np.size(b) == 1 else r.sum(axis=0)
    return loss, grad_w, np.asarray(g).astype(pred.dtype).reshape(np.shape(b))
