"""The small-model section: one Adam step over few, small tensors, where the
step is bookkeeping more than arithmetic.

Three cases: the seed's MLP (10 -> ReLU(10) -> 1: 4 tensors, 121 elements),
the same with a new learning rate before every step (as a scheduler sets it),
and 100 tensors of 64 elements. Rows: the functional ``optcore.adam_step`` over the
arrays (the floor), the NumPy class ``optcore.Adam.step``, and, with torch,
``optcore.torch.Adam.step`` and ``torch.optim.Adam(fused=True).step``. One
thread; medians over batches of steps taken in turns, so that a change of the
machine's load hits every row alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

import optcore

from optcore.cli.bench.report import fmt_time, table

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from optcore._typing import JSONDict

SEED_MLP = [(10, 10), (10,), (1, 10), (1,)]
CASES: dict[str, list[tuple[int, ...]]] = {
    "seed MLP": SEED_MLP, "seed MLP, new lr each step": SEED_MLP, "100x64": [(64,)] * 100}
#: the cases whose learning rate changes before every step
SCHEDULED = frozenset({"seed MLP, new lr each step"})
ROWS = ("functional", "numpy", "optcore.torch", "torch-fused")


def _steps(shapes: list[tuple[int, ...]], torch: ModuleType | None,
           scheduled: bool = False) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(a.shape).astype(np.float32) * 1e-2 for a in arrays]
    params = [a.copy() for a in arrays]
    m, v = [np.zeros_like(a) for a in arrays], [np.zeros_like(a) for a in arrays]
    count = [0]
    # a decaying schedule's values, one per step (new float objects each time)
    rates = [2e-3 * 0.999 ** k for k in range(1000)] if scheduled else [1e-3]

    def functional() -> None:
        count[0] += 1
        optcore.adam_step(params, grads, m, v, step=count[0],
                          lr=rates[count[0] % len(rates)])

    def stepping(opt: Any, *args: Any) -> Callable[[], object]:
        group, turn = opt.param_groups[0], [0]
        if not scheduled:
            return lambda: opt.step(*args)

        def step() -> None:
            turn[0] += 1
            group["lr"] = rates[turn[0] % len(rates)]
            opt.step(*args)
        return step

    numpy_opt = optcore.Adam([a.copy() for a in arrays], lr=rates[0])
    out: dict[str, Callable[[], object]] = {
        "functional": functional, "numpy": stepping(numpy_opt, grads)}
    if torch is not None:
        import optcore.torch as ot
        makers: dict[str, Callable[[list[Any]], Any]] = {
            "optcore.torch": lambda ps: ot.Adam(ps, lr=rates[0]),
            "torch-fused": lambda ps: torch.optim.Adam(ps, lr=rates[0], fused=True)}
        for label, make in makers.items():
            ps = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
            for p, g in zip(ps, grads):
                p.grad = torch.from_numpy(g.copy())
            out[label] = stepping(make(ps))
    return out


def measure_steps(torch: ModuleType | None, repeat: int) -> JSONDict:
    """Median seconds per step of each row, per case, on one thread."""
    old_torch = torch.get_num_threads() if torch is not None else None
    optcore.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    out: JSONDict = {"repeat": repeat, "cases": {}}
    try:
        for case, shapes in CASES.items():
            steps = _steps(shapes, torch, case in SCHEDULED)
            for fn in steps.values():          # warm-up (and the first step's state)
                for _ in range(50):
                    fn()
            batch, clock = 10, time.perf_counter
            times: dict[str, list[float]] = {label: [] for label in steps}
            for _ in range(max(1, repeat // batch)):
                for label, fn in steps.items():
                    t = clock()
                    for _ in range(batch):
                        fn()
                    times[label].append((clock() - t) / batch)
            out["cases"][case] = {label: statistics.median(t) for label, t in times.items()}
    finally:
        optcore.set_num_threads(None)
        if torch is not None and old_torch is not None:
            torch.set_num_threads(old_torch)
    return out


def print_steps(section: JSONDict, out: SupportsWrite[str]) -> None:
    out.write("\nsmall models: one Adam step, float32, one thread (median per step)\n")
    rows = []
    for case, t in section["cases"].items():
        rows.append([case] + [fmt_time(t.get(label)) for label in ROWS])
    table(["case", "functional", "optcore.Adam", "optcore.torch.Adam",
           "torch Adam fused"], rows, out)


__all__ = ["CASES", "SCHEDULED", "measure_steps", "print_steps"]
