"""The precision section: one AdamW step over one large tensor for every
storage combination (param, grad and state dtypes, fp32 master, rounding),
with the bytes each moves, its speed as a fraction of the machine's
bandwidth measured in the same run, its state bytes per parameter and its
speed-up over optcore's float32 step; the peers side by side where installed
(torch's fused AdamW on float32 and bfloat16, DeepSpeedCPUAdam, bitsandbytes'
and torchao's 8-bit AdamW).

Medians of steps taken in turns, so that a change of the machine's load hits
every row alike.
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
from optcore.kernels import bandwidth
from optcore.precision import QBLOCK, QuantizedState

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from optcore._typing import JSONDict

#: label -> (param, grad, state, master, rounding)
CASES: dict[str, tuple[str, str, str, bool, str]] = {
    "fp32": ("float32", "float32", "float32", False, "nearest"),
    "bf16 states": ("float32", "float32", "bfloat16", False, "nearest"),
    "int8 states": ("float32", "float32", "int8", False, "nearest"),
    "bf16 params, grads, states": ("bfloat16", "bfloat16", "bfloat16", False, "nearest"),
    "bf16 params + fp32 master": ("bfloat16", "bfloat16", "float32", True, "nearest"),
    "bf16 params, int8 states": ("bfloat16", "bfloat16", "int8", False, "nearest"),
    "bf16 stochastic rounding": ("bfloat16", "bfloat16", "bfloat16", False, "stochastic"),
    "bf16 Kahan": ("bfloat16", "bfloat16", "bfloat16", False, "kahan"),
    "fp16 params + fp32 master": ("float16", "float16", "float32", True, "nearest"),
}
_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "int8": 1.0 + 4.0 / QBLOCK}


def traffic(param: str, grad: str, state: str, master: bool, rounding: str) -> float:
    """Bytes per parameter an AdamW step moves (reads + writes)."""
    b = _BYTES
    moved = b[grad] + 4 * b[state]                      # grad read; m, v read and written
    moved += (2 * 4 + b[param]) if master else 2 * b[param]
    if rounding == "kahan":
        moved += 2 * b[param]
    return moved


def state_bytes(param: str, state: str, master: bool, rounding: str) -> float:
    """Optimizer state bytes per parameter."""
    return 2 * _BYTES[state] + (4 if master else 0) + (_BYTES[param] if rounding == "kahan" else 0)


def _array(rng: np.random.Generator, n: int, dtype: str, scale: float = 1.0) -> Any:
    x = (rng.uniform(0.5, 1.5, n) * scale).astype(np.float32)
    if dtype == "bfloat16":
        from optcore.precision import bfloat16_array
        return bfloat16_array(x)
    return x.astype(dtype)


def _optcore_step(n: int, case: tuple[str, str, str, bool, str]) -> Callable[[], object]:
    param, grad, state, master, rounding = case
    rng = np.random.default_rng(0)
    p, g = _array(rng, n, param), _array(rng, n, grad, 1e-3)
    if state == "int8":
        m: Any = QuantizedState.from_float(rng.uniform(-1e-4, 1e-4, n), signed=True)
        v: Any = QuantizedState.from_float(rng.uniform(1e-9, 1e-8, n), signed=False)
    else:
        m, v = _array(rng, n, state, 1e-4), _array(rng, n, state, 1e-8)
    kw: dict[str, Any] = {"rounding": rounding}
    if master:
        kw["master_param"] = np.asarray(p, dtype=np.float32).copy()
    if rounding == "kahan":
        kw["compensation"] = np.zeros_like(p)
    count = [10]

    def step() -> None:
        count[0] += 1
        optcore.adamw_step(p, g, m, v, step=count[0], lr=1e-3, **kw)
    return step


def _peers(torch: ModuleType, n: int) -> dict[str, Callable[[], object]]:
    """The peers' AdamW steps on the same size (those that are installed)."""
    out: dict[str, Callable[[], object]] = {}

    def tensors(dtype: Any) -> list[Any]:
        p = torch.nn.Parameter(torch.rand(n, dtype=torch.float32).to(dtype))
        p.grad = (torch.rand(n) * 1e-3).to(dtype)
        return [p]

    for label, dtype in (("torch fused fp32", torch.float32),
                         ("torch fused bf16", torch.bfloat16)):
        opt = torch.optim.AdamW(tensors(dtype), lr=1e-3, fused=True)
        out[label] = opt.step
    makers: dict[str, Callable[[], Any]] = {}

    def deepspeed() -> Any:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        return DeepSpeedCPUAdam(tensors(torch.float32), lr=1e-3)

    def bnb() -> Any:
        import bitsandbytes
        return bitsandbytes.optim.AdamW8bit(tensors(torch.float32), lr=1e-3)

    def torchao() -> Any:
        from torchao.optim import AdamW8bit
        return AdamW8bit(tensors(torch.float32), lr=1e-3)

    class DeepSpeedHalfCopy:
        """DeepSpeedCPUAdam's fp32 step, then the bfloat16 copy of the
        parameters a ZeRO-Offload step writes for the model: the peer of
        optcore's bf16 params with an fp32 master."""

        def __init__(self) -> None:
            self.opt = deepspeed()
            self.masters = [p for g in self.opt.param_groups for p in g["params"]]
            self.halves = [p.detach().to(torch.bfloat16) for p in self.masters]

        def step(self) -> None:
            self.opt.step()
            for half, master in zip(self.halves, self.masters):
                half.copy_(master)

    makers = {"DeepSpeedCPUAdam fp32": deepspeed,
              "DeepSpeedCPUAdam fp32 + bf16 copy": DeepSpeedHalfCopy,
              "bitsandbytes AdamW8bit": bnb, "torchao AdamW8bit": torchao}
    for label, make in makers.items():
        try:
            opt = make()
            opt.step()              # a peer that cannot step here is left out
        except Exception:           # not installed, or its op does not build here
            continue
        out[label] = opt.step
    return out


def measure_precision(torch: ModuleType | None, threads: int, n: int = 2 ** 24,
                      repeat: int = 7) -> JSONDict:
    """Median seconds per step of every case and peer, and the bandwidth
    ceiling (float32 Adam's pattern, 4 reads and 3 writes) in the same run."""
    optcore.set_num_threads(threads)
    old = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        steps: dict[str, Callable[[], object]] = {
            label: _optcore_step(n, case) for label, case in CASES.items()}
        if torch is not None:
            steps.update(_peers(torch, n))
        bufs = bandwidth.make_buffers("4r3w", n)
        steps["ceiling"] = lambda: bandwidth.run("4r3w", bufs, threads)
        for fn in steps.values():           # warm-up (and the peers' state)
            fn()
        times: dict[str, list[float]] = {label: [] for label in steps}
        for _ in range(repeat):
            for label, fn in steps.items():
                t = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t)
    finally:
        optcore.set_num_threads(None)
        if torch is not None and old is not None:
            torch.set_num_threads(old)
    medians = {label: statistics.median(t) for label, t in times.items()}
    ceiling = medians.pop("ceiling")
    return {"n": n, "threads": threads, "repeat": repeat,
            "ceiling_gbs": 28 * n / ceiling / 1e9, "times": medians}


def print_precision(section: JSONDict, out: SupportsWrite[str]) -> None:
    n, times = section["n"], section["times"]
    base = times.get("fp32")
    out.write(f"\nprecision: one AdamW step, {n} parameters, {section['threads']} "
              f"thread(s) (median of {section['repeat']}); ceiling "
              f"{section['ceiling_gbs']:.1f} GB/s (4 reads, 3 writes of float32)\n")
    rows = []
    for label, t in times.items():
        if label in CASES:
            param, grad, state, master, rounding = CASES[label]
            moved = traffic(param, grad, state, master, rounding)
            gbs = moved * n / t / 1e9
            rows.append([label, fmt_time(t), f"{moved:.1f}", f"{gbs:.1f}",
                         f"{100 * gbs / section['ceiling_gbs']:.0f}%",
                         f"{state_bytes(param, state, master, rounding):.2f}",
                         f"{base / t:.2f}x" if base else "-"])
        else:
            rows.append([label, fmt_time(t), "", "", "", "", f"{base / t:.2f}x" if base else "-"])
    table(["case", "time", "B/param", "GB/s", "of ceiling", "state B/param",
           "vs optcore fp32"], rows, out)


__all__ = ["CASES", "traffic", "state_bytes", "measure_precision", "print_precision"]
