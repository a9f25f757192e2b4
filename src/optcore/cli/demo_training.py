"""The demo's problems and training loops (used by ``python -m optcore demo``).

Two regression problems on synthetic data drawn from a fixed seed: a linear
model 10 -> 1 and an MLP 10 -> ReLU(10) -> 1, both under MSE. Each training
loop is written once and takes the module that provides the kernels:
``optcore`` (Cython) or ``optcore.reference`` (NumPy), which share names and
signatures. Both start from the same initial weights and see the same batches,
so their losses agree closely and their times compare the kernels.

A run of another kind (e.g. a torch.nn model with torch.optim on the same
``Problem``, from its ``init_params``, laid out as torch.nn.Linear's) only has
to return a ``Run`` with its own ``backend`` name; it goes beside ``train``, and
the table and plot of ``optcore.cli.demo`` take any backends.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

import optcore
import optcore.reference

if TYPE_CHECKING:
    from numpy.typing import DTypeLike, NDArray

    from optcore._typing import FloatArray

    # the optimizer step of one run: (gradients, step count) -> None
    Update = Callable[[list[FloatArray], int], None]

BACKENDS = (optcore, optcore.reference)

# Full-data loss recorded at up to this many steps (the plotted curve).
CURVE_POINTS = 100


@dataclass(frozen=True)
class Method:
    """One training configuration: which model, optimizer and batch size."""
    model: str             # "linear" or "mlp"
    name: str              # shown in the table
    optimizer: str         # "sgd" (plain gradient step) or "adam"
    lr: float
    batch: int | None      # samples per step; None = the whole training set
    steps: int


METHODS = (
    Method("linear", "full-batch GD", "sgd", lr=0.1, batch=None, steps=200),
    Method("linear", "SGD (batch 1)", "sgd", lr=0.01, batch=1, steps=4000),
    Method("linear", "mini-batch GD (batch 32)", "sgd", lr=0.05, batch=32, steps=1000),
    Method("linear", "Adam (batch 32)", "adam", lr=0.03, batch=32, steps=1000),
    Method("mlp", "Adam (full batch)", "adam", lr=0.03, batch=None, steps=2000),
)


@dataclass(frozen=True)
class Problem:
    """Training data and the initial weights every run of it starts from."""
    model: str
    X: np.ndarray            # (samples, features)
    y: np.ndarray            # (samples,)
    init_params: tuple[FloatArray, ...]   # copied by each run, never written
    noise_var: float         # variance of the label noise: the floor of the MSE


@dataclass
class Run:
    """The outcome of training one method with one backend."""
    method: Method
    backend: str             # "optcore", "reference", ...
    final_loss: float        # MSE over the whole training set after the last step
    seconds: float           # training time, loss-curve evaluations excluded
    curve_steps: np.ndarray = field(repr=False)
    curve_loss: np.ndarray = field(repr=False)


# --- models -----------------------------------------------------------------
# Parameters are lists of C-contiguous arrays in the problem's dtype, laid out
# as torch.nn.Linear does (weight: (out, in)) where a layer has a matrix.

class LinearModel:
    """pred = X @ w + b, with w (features,) and b (1,)."""

    @staticmethod
    def init_params(rng: np.random.Generator, features: int,
                    dtype: DTypeLike) -> tuple[FloatArray, ...]:
        w = rng.normal(0.0, 0.1, features)
        return (w.astype(dtype), np.zeros(1, dtype))

    @staticmethod
    def predict(params: Sequence[FloatArray], X: FloatArray) -> FloatArray:
        w, b = params
        return X @ w + b

    @staticmethod
    def loss_grad(kernels: ModuleType, params: Sequence[FloatArray], X: FloatArray,
                  y: FloatArray) -> tuple[float, list[FloatArray]]:
        w, b = params
        loss, grad_w, grad_b = kernels.linear_mse_grad(X, y, w, b)
        return loss, [grad_w, grad_b]


class MLP:
    """pred = relu(X @ W1.T + b1) @ W2.T + b2: W1 (hidden, features), b1
    (hidden,), W2 (1, hidden), b2 (1,)."""

    hidden = 10

    @classmethod
    def init_params(cls, rng: np.random.Generator, features: int,
                    dtype: DTypeLike) -> tuple[FloatArray, ...]:
        # torch.nn.Linear's default: uniform in +-1/sqrt(fan_in)
        def uniform(fan_in: int, shape: int | tuple[int, ...]) -> FloatArray:
            bound = 1.0 / np.sqrt(fan_in)
            return rng.uniform(-bound, bound, shape).astype(dtype)
        h = cls.hidden
        return (uniform(features, (h, features)), uniform(features, h),
                uniform(h, (1, h)), uniform(h, 1))

    @staticmethod
    def predict(params: Sequence[FloatArray], X: FloatArray) -> FloatArray:
        W1, b1, W2, b2 = params
        hidden = np.maximum(X @ W1.T + b1, 0)
        return hidden @ W2[0] + b2

    @staticmethod
    def loss_grad(kernels: ModuleType, params: Sequence[FloatArray], X: FloatArray,
                  y: FloatArray) -> tuple[float, list[FloatArray]]:
        W1, b1, W2, b2 = params
        pre = X @ W1.T + b1
        hidden = np.maximum(pre, 0)
        pred = hidden @ W2[0] + b2
        loss, g = kernels.mse_loss_grad(pred, y)          # g = dL/dpred, (n,)
        grad_hidden = np.multiply.outer(g, W2[0])
        grad_hidden[pre <= 0] = 0
        return loss, [grad_hidden.T @ X, grad_hidden.sum(axis=0),
                      (g @ hidden)[None, :], g.sum(keepdims=True)]


MODELS: dict[str, type[LinearModel] | type[MLP]] = {"linear": LinearModel, "mlp": MLP}


# --- data ---------------------------------------------------------------------

def make_problems(seed: int = 0, samples: int = 2000, features: int = 10,
                  noise_std: float = 0.1, dtype: DTypeLike = np.float32
                  ) -> dict[str, Problem]:
    """The two problems, drawn from ``seed``: ``{"linear": Problem, "mlp": Problem}``.

    Linear: y = X @ w_true + b_true + noise. MLP: a mildly nonlinear target,
    y = X @ v + |X @ u| + b_true + noise (v, u of norm ~1), which an MLP
    represents exactly with two hidden units per term (z = relu(z) - relu(-z),
    |z| = relu(z) + relu(-z)).
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    problems: dict[str, Problem] = {}
    for model in ("linear", "mlp"):
        X = rng.standard_normal((samples, features))
        w_true = rng.standard_normal(features)
        b_true = rng.normal(0.0, 1.0)
        noise = rng.normal(0.0, noise_std, samples)
        if model == "linear":
            y = X @ w_true + b_true + noise
        else:
            u = rng.standard_normal(features) / np.sqrt(features)
            y = X @ (w_true / np.sqrt(features)) + np.abs(X @ u) + b_true + noise
        params = MODELS[model].init_params(rng, features, dtype)
        problems[model] = Problem(model, X.astype(dtype), y.astype(dtype),
                                  params, noise_std ** 2)
    return problems


def batches(X: FloatArray, y: FloatArray, batch: int | None,
            rng: np.random.Generator) -> Iterator[tuple[FloatArray, FloatArray]]:
    """Endless (X, y) batches: the whole set, or contiguous slices of a fresh
    shuffle each epoch (a trailing partial batch is dropped)."""
    while True:
        if batch is None:
            yield X, y
            continue
        order = rng.permutation(len(X))
        Xs, ys = X[order], y[order]
        for k in range(0, len(X) - batch + 1, batch):
            yield Xs[k:k + batch], ys[k:k + batch]


def make_update(kernels: ModuleType, method: Method, params: list[FloatArray]) -> Update:
    """The optimizer step for ``params``: one multi-tensor kernel call."""
    if method.optimizer == "sgd":
        def update(grads: list[FloatArray], step: int) -> None:
            kernels.sgd_step(params, grads, step=step, lr=method.lr)
    elif method.optimizer == "adam":
        exp_avg = [np.zeros_like(p) for p in params]
        exp_avg_sq = [np.zeros_like(p) for p in params]

        def update(grads: list[FloatArray], step: int) -> None:
            kernels.adam_step(params, grads, exp_avg, exp_avg_sq, step=step, lr=method.lr)
    else:
        raise ValueError(f"unknown optimizer {method.optimizer!r}")
    return update


# --- training -----------------------------------------------------------------

def curve_points(steps: int) -> NDArray[np.int_]:
    """Steps (0 = before training) at which the full-data loss is recorded:
    log-spaced, as the curves are plotted on a log step axis."""
    return np.unique(np.r_[0, np.geomspace(1, steps, CURVE_POINTS).round().astype(int)])


def backend_name(kernels: ModuleType) -> str:
    """"optcore" or "reference"."""
    return kernels.__name__.removeprefix("optcore.")


def train(method: Method, problem: Problem, kernels: ModuleType, *,
          seed: int = 0) -> Run:
    """Train ``problem`` with ``method``, taking every loss gradient and
    update from ``kernels`` (``optcore`` or ``optcore.reference``)."""
    model = MODELS[method.model]
    params = [p.copy() for p in problem.init_params]
    update = make_update(kernels, method, params)
    data = batches(problem.X, problem.y, method.batch, np.random.default_rng(seed))

    def full_loss() -> float:
        return kernels.mse_loss(model.predict(params, problem.X), problem.y)

    record = set(curve_points(method.steps).tolist())
    curve = [full_loss()]
    seconds = 0.0
    start = time.perf_counter()
    for step in range(1, method.steps + 1):
        X, y = next(data)
        _, grads = model.loss_grad(kernels, params, X, y)
        update(grads, step)
        if step in record:
            seconds += time.perf_counter() - start
            curve.append(full_loss())
            start = time.perf_counter()
    return Run(method, backend_name(kernels), curve[-1], seconds,
               curve_points(method.steps), np.array(curve))


def scaled(method: Method, scale: float) -> Method:
    """``method`` with its step count multiplied by ``scale`` (at least 1)."""
    return dataclasses.replace(method, steps=max(1, round(method.steps * scale)))


def run_all(problems: Mapping[str, Problem], *, scale: float = 1.0, seed: int = 0,
            methods: Iterable[Method] = METHODS,
            backends: Iterable[ModuleType] = BACKENDS) -> list[Run]:
    """Every method with every backend, in table order: a list of ``Run``."""
    runs: list[Run] = []
    for method in methods:
        method = scaled(method, scale)
        for kernels in backends:
            runs.append(train(method, problems[method.model], kernels, seed=seed))
    return runs
