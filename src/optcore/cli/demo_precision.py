"""``python -m optcore demo --precision``: the same training with every storage
of the optimizer step, side by side.

Two models, trained with Adam through the functional kernels: the demo's MLP
(10 -> ReLU(10) -> 1, full batch) and a wider one of about 1M parameters
(64 -> ReLU(1024) -> ReLU(896) -> 1, mini-batches of 256) on a teacher
network's targets. Each is trained from the same initial weights with
float32 states, bfloat16 states, int8 states, bfloat16 params with a float32
master copy, bfloat16 params with stochastic rounding and bfloat16 params
with Kahan compensation. The forward and backward passes run in float32 (the
low-precision params widened), and their gradients are rounded to the
params' dtype, as a bfloat16 model's autograd would hand them over.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import optcore
from optcore.cli.demo_training import MLP, make_problems
from optcore.precision import MIN_QUANTIZED_SIZE, QuantizedState, bfloat16_array

#: label -> (param dtype, state dtype, master, rounding)
VARIANTS: dict[str, tuple[str, str, bool, str]] = {
    "fp32 states": ("float32", "float32", False, "nearest"),
    "bf16 states": ("float32", "bfloat16", False, "nearest"),
    "int8 states": ("float32", "int8", False, "nearest"),
    "bf16 params + fp32 master": ("bfloat16", "float32", True, "nearest"),
    "bf16 params, stochastic": ("bfloat16", "bfloat16", False, "stochastic"),
    "bf16 params, Kahan": ("bfloat16", "bfloat16", False, "kahan"),
}


@dataclass(frozen=True)
class Model:
    name: str
    X: np.ndarray
    y: np.ndarray
    init: tuple[np.ndarray, ...]
    lr: float
    steps: int
    batch: int | None
    loss_grad: Callable[[Sequence[np.ndarray], np.ndarray, np.ndarray],
                        tuple[float, list[np.ndarray]]]
    predict: Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray]


def _wide_mlp(seed: int, scale: float) -> Model:
    """64 -> ReLU(1024) -> ReLU(896) -> 1 (about 1M parameters), teacher targets."""
    rng = np.random.default_rng(seed + 1)
    sizes = (64, 1024, 896, 1)
    X = rng.standard_normal((4096, sizes[0])).astype(np.float32)
    teacher = [rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(sizes, sizes[1:])]
    h = X.astype(np.float64)
    for W in teacher[:-1]:
        h = np.maximum(h @ W.T, 0)
    y = ((h @ teacher[-1].T)[:, 0] + rng.normal(0, 0.05, len(X))).astype(np.float32)
    init: list[np.ndarray] = []
    for i, o in zip(sizes, sizes[1:]):
        bound = 1 / np.sqrt(i)
        init += [rng.uniform(-bound, bound, (o, i)).astype(np.float32),
                 rng.uniform(-bound, bound, o).astype(np.float32)]

    def predict(params: Sequence[np.ndarray], X: np.ndarray) -> np.ndarray:
        h = X
        for k in range(0, len(params) - 2, 2):
            h = np.maximum(h @ params[k].T + params[k + 1], 0)
        return h @ params[-2][0] + params[-1]

    def loss_grad(params: Sequence[np.ndarray], X: np.ndarray,
                  y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        acts, pres, h = [X], [], X
        for k in range(0, len(params) - 2, 2):
            pre = h @ params[k].T + params[k + 1]
            h = np.maximum(pre, 0)
            pres.append(pre)
            acts.append(h)
        pred = h @ params[-2][0] + params[-1]
        loss, g = optcore.mse_loss_grad(pred, y)
        grads = [np.empty(0)] * len(params)
        grads[-2], grads[-1] = (g @ h)[None, :], g.sum(keepdims=True)
        back = np.multiply.outer(g, params[-2][0])
        for k in range(len(pres) - 1, -1, -1):
            back[pres[k] <= 0] = 0
            grads[2 * k] = back.T @ acts[k]
            grads[2 * k + 1] = back.sum(axis=0)
            if k:
                back = back @ params[2 * k]
        return float(loss), [np.ascontiguousarray(gr, dtype=np.float32) for gr in grads]

    return Model("MLP 64 -> 1024 -> 896 -> 1", X, y, tuple(init), 1e-3,
                 max(1, round(400 * scale)), 256, loss_grad, predict)


def _seed_mlp(seed: int, scale: float) -> Model:
    problem = make_problems(seed)["mlp"]

    def loss_grad(params: Sequence[np.ndarray], X: np.ndarray,
                  y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        return MLP.loss_grad(optcore, params, X, y)

    return Model("MLP 10 -> ReLU(10) -> 1", problem.X, problem.y, problem.init_params,
                 0.03, max(1, round(2000 * scale)), None, loss_grad, MLP.predict)


def _low(x: np.ndarray, dtype: str) -> Any:
    return bfloat16_array(x) if dtype == "bfloat16" else x.astype(dtype)


def _state(p: np.ndarray, state: str, signed: bool) -> Any:
    if state == "int8" and p.size >= MIN_QUANTIZED_SIZE:
        return QuantizedState.zeros(p.shape, signed=signed)
    return np.zeros(p.shape, np.float32 if state == "int8" else _low(p, state).dtype)


def train(model: Model, variant: tuple[str, str, bool, str], seed: int) -> list[float]:
    """Losses over the whole set: before training and after every tenth of it."""
    param_dtype, state, master, rounding = variant
    params = [_low(p, param_dtype) for p in model.init]
    masters = [p.astype(np.float32) for p in model.init] if master else None
    m = [_state(p, state, True) for p in model.init]
    v = [_state(p, state, False) for p in model.init]
    comp = [np.zeros_like(p) for p in params] if rounding == "kahan" else None
    rng = np.random.default_rng(seed)

    def full_loss() -> float:
        wide = [p.astype(np.float32) for p in params]
        return float(optcore.mse_loss(model.predict(wide, model.X), model.y))

    curve = [full_loss()]
    every = max(1, model.steps // 10)
    for step in range(1, model.steps + 1):
        if model.batch is None:
            X, y = model.X, model.y
        else:
            idx = rng.integers(0, len(model.X), model.batch)
            X, y = model.X[idx], model.y[idx]
        _, grads = model.loss_grad([p.astype(np.float32) for p in params], X, y)
        grads = [_low(g, param_dtype) for g in grads]
        # one call per storage kind: an argument is all QuantizedState or none
        groups: dict[bool, list[int]] = {}
        for j, s in enumerate(m):
            groups.setdefault(isinstance(s, QuantizedState), []).append(j)
        for js in groups.values():
            pick: Callable[[Any], Any] = lambda xs: [xs[j] for j in js]  # noqa: E731
            optcore.adam_step(pick(params), pick(grads), pick(m), pick(v), step=step,
                              lr=model.lr, rounding=rounding, seed=seed,
                              master_param=pick(masters) if masters else None,
                              compensation=pick(comp) if comp else None)
        if step % every == 0 or step == model.steps:
            curve.append(full_loss())
    return curve


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    models = [_seed_mlp(args.seed, args.scale), _wide_mlp(args.seed, args.scale)]
    curves: dict[str, dict[str, list[float]]] = {}
    for model in models:
        nparams = sum(p.size for p in model.init)
        print(f"{model.name}: {nparams} parameters, Adam lr {model.lr:g}, "
              f"{model.steps} steps" + (f" of batch {model.batch}" if model.batch else
                                        " (full batch)"))
        curves[model.name] = {label: train(model, variant, args.seed)
                              for label, variant in VARIANTS.items()}
    print()
    head = ["storage"] + [m.name for m in models]
    rows = [[label] + [_cell(curves[m.name][label][-1], curves[m.name]["fp32 states"][-1])
                       for m in models] for label in VARIANTS]
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nfinal MSE over the whole training set; in brackets: relative to fp32 states")
    if args.plot:
        _plot(curves, models, args.plot)
        print(f"loss curves written to {args.plot}")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


def _cell(loss: float, base: float) -> str:
    return f"{loss:.4e} ({(loss - base) / base:+.2%})"


def _plot(curves: dict[str, dict[str, list[float]]], models: Sequence[Model],
          path: str) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5 * len(models), 4))
    for i, model in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        for label, curve in curves[model.name].items():
            ax.plot(np.linspace(0, model.steps, len(curve)), curve, label=label)
        ax.set_yscale("log")
        ax.set_title(model.name)
        ax.set_xlabel("step")
        ax.set_ylabel("MSE")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
