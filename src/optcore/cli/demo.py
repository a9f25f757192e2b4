"""``python -m optcore demo``: train the linear model and the MLP with optcore's
kernels and with the NumPy reference; print final losses and times.

The problems and training loops live in ``optcore.cli.demo_training``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from optcore.cli import _args, demo_training

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from optcore._typing import StrPath
    from optcore.cli.demo_training import Problem, Run

QUICK_SCALE = 0.25
PLOT_TITLES = {"linear": "linear model 10 -> 1", "mlp": "MLP 10 -> ReLU(10) -> 1"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo", help="train small models with optcore vs the NumPy reference",
        description=(
            "Train a linear model (10 -> 1) with full-batch GD, SGD, mini-batch GD and "
            "Adam, and an MLP (10 -> ReLU(10) -> 1) with Adam, on synthetic data under "
            "MSE. Each run is done twice from the same initial weights: with optcore's "
            "kernels and with optcore.reference (pure NumPy)."))
    p.add_argument("--seed", type=_args.seed, default=0, metavar="N",
                   help="seed of data, weights and batches, >= 0 (default 0)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--scale", type=_args.positive_float, default=1.0, metavar="S",
                       help="multiply every method's step count by S > 0 (default 1)")
    steps.add_argument("--quick", action="store_const", dest="scale", const=QUICK_SCALE,
                       help=f"a quarter of the steps (--scale {QUICK_SCALE})")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of data and parameters (default float32)")
    p.add_argument("--plot", metavar="FILE.png", type=_args.output_file(".png"),
                   help="save the loss curves (needs matplotlib; .png is appended to a "
                   "name without it)")
    p.add_argument("--torch", action="store_true",
                   help="train the MLP as a torch.nn.Module with torch.optim.Adam and "
                        "optcore.torch.Adam instead (needs torch)")
    p.add_argument("--precision", action="store_true",
                   help="train the MLP and a 1M-parameter MLP with every storage of the "
                        "Adam step (float32, bfloat16 and int8 states, bfloat16 params "
                        "with a master copy, stochastic rounding or Kahan compensation) "
                        "and compare the final losses")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.plot:
        _figure_class()               # fail before training, not after
    if args.torch:
        from optcore.cli import demo_torch
        return demo_torch.run(args)
    if args.precision:
        from optcore.cli import demo_precision
        return demo_precision.run(args)
    started = time.perf_counter()
    problems = demo_training.make_problems(args.seed, dtype=np.dtype(args.dtype))
    runs = demo_training.run_all(problems, scale=args.scale, seed=args.seed)
    X = problems["linear"].X
    print(f"optcore demo: {X.shape[0]} samples x {X.shape[1]} features, {args.dtype}, "
          f"seed {args.seed}; label noise variance {problems['linear'].noise_var:g} "
          "(the lowest expected MSE)\n")
    print("\n".join(format_table(runs)))
    if args.plot:
        plot(runs, problems, args.plot)
        print(f"\nloss curves written to {args.plot}")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


def format_table(runs: Sequence[Run]) -> list[str]:
    """Lines of an aligned table: one row per method, a final-MSE and a time
    column per backend (a backend without a run of that method shows "-")."""
    backends = list(dict.fromkeys(r.backend for r in runs))
    rows: dict[tuple[str, str], dict[str, Run]] = {}
    for r in runs:
        rows.setdefault((r.method.model, r.method.name), {})[r.backend] = r
    name_w = max(len(name) for _, name in rows)
    w = max(10, *(len(b) for b in backends))

    def cells(by_backend: Mapping[str, Run], value: Callable[[Run], str]) -> str:
        return " ".join(f"{value(by_backend[b]):>{w}}" if b in by_backend else f"{'-':>{w}}"
                        for b in backends)

    left = f"{'model':<7} {'method':<{name_w}} {'steps':>6}"
    names = " ".join(f"{b:>{w}}" for b in backends)
    lines = [f"{'':<{len(left)}}  {'final MSE':^{len(names)}}  {'time [ms]':^{len(names)}}",
             f"{left}  {names}  {names}"]
    lines.append("-" * len(lines[-1]))
    for (model, name), by_backend in rows.items():
        steps = next(iter(by_backend.values())).method.steps
        lines.append(f"{model:<7} {name:<{name_w}} {steps:>6}  "
                     f"{cells(by_backend, lambda r: f'{r.final_loss:.4e}')}  "
                     f"{cells(by_backend, lambda r: f'{r.seconds * 1e3:.1f}')}")
    return [line.rstrip() for line in lines]


def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SystemExit("optcore demo: --plot needs matplotlib "
                         "(pip install matplotlib, or optcore[plot])") from None
    return Figure


def plot(runs: Sequence[Run], problems: Mapping[str, Problem], path: StrPath) -> None:
    """One panel per model: full-data MSE against step, a color per method and
    a line style per backend (drawn over each other: they coincide)."""
    fig = _figure_class()(figsize=(11, 4.5), layout="constrained")
    models = list(dict.fromkeys(r.method.model for r in runs))
    backends = list(dict.fromkeys(r.backend for r in runs))
    # the first backend thick and colored, the others thin black over it
    dashes = ("-", "--", "-.", ":")
    styles = {b: dict(linestyle=dashes[i % 4], linewidth=3.0, alpha=0.7) if i == 0 else
              dict(linestyle=dashes[i % 4], linewidth=1.0, color="black")
              for i, b in enumerate(backends)}
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        colors: dict[str, str] = {}
        for r in runs:
            if r.method.model == model:
                new = r.method.name not in colors
                color = colors.setdefault(r.method.name, f"C{len(colors)}")
                ax.plot(r.curve_steps, r.curve_loss, label=r.method.name if new else None,
                        **{"color": color, **styles[r.backend]})
        for b in backends:
            ax.plot([], [], label=b, **{"color": "gray", **styles[b]})
        ax.axhline(problems[model].noise_var, color="black", linestyle=":",
                   linewidth=1, label="noise variance")
        ax.set(xscale="symlog", xlim=(0, None), yscale="log", xlabel="step",
               ylabel="training MSE", title=PLOT_TITLES.get(model, model))
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
