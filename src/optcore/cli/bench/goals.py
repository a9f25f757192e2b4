"""The performance goals, as data, and the scorecard checking a run's
medians against them."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from optcore.cli.bench.report import fmt_time, fmt_x, table

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from optcore._typing import JSONDict

    #: one line of the scorecard: (goal, measured, met, reliable)
    ScoreLine = tuple[str, str, bool | None, bool]


@dataclasses.dataclass(frozen=True)
class Goal:
    """One goal. ``measure`` says what is compared with the bound:

    "pct"      % of the ceiling of ``kernel`` (float32, all threads) at each size
    "speedup"  ``vs``'s time over optcore's, same row
    "f64"      float64's % of the ceiling over float32's
    "overhead" optcore's time per call at 1024 elements, one thread
    "multi"    optcore's time per multi-tensor call of the case ``case``
    "scaling"  one thread's time over all threads' at each size
    "busy"     with a core kept busy, the mean all-threads call over the mean
               one-thread call (busy section)
    "idle"     in the busy section's idle run, the one-thread mean over the
               all-threads mean
    "step"     small-model section, case ``case``: ``kernel``'s row's time per
               step, or, with ``vs``, its time over row ``vs``'s
    "precision" precision section: row ``vs``'s time over row ``case``'s (a
               speed-up of ``case``); ``kernel`` "state" instead bounds the
               state bytes per parameter of ``case``
    """
    measure: str
    kernel: str
    bound: float
    at_most: bool = False          # the bound is an upper one (a time)
    sizes: tuple[int, ...] = ()
    vs: str = ""
    case: str = ""


_LARGE = (2 ** 24, 2 ** 26)

GOALS = (
    Goal("pct", "adam", 90, sizes=_LARGE),
    Goal("speedup", "adam", 1.15, sizes=_LARGE, vs="torch-fused"),
    Goal("speedup", "adam", 8, sizes=_LARGE, vs="reference"),
    Goal("pct", "sgd_momentum", 90, sizes=_LARGE),
    Goal("pct", "mse_loss_grad", 90, sizes=_LARGE),
    Goal("f64", "adam", 0.9, sizes=_LARGE),
    Goal("f64", "sgd_momentum", 0.9, sizes=_LARGE),
    Goal("f64", "mse_loss_grad", 0.9, sizes=_LARGE),
    Goal("speedup", "adam", 1.5, sizes=(2 ** 16, 2 ** 20), vs="torch-fused"),
    Goal("overhead", "adam", 2e-6, at_most=True),
    Goal("multi", "adam", 100e-6, at_most=True, case="100x1024"),
    Goal("scaling", "adam", 1.7, sizes=(2 ** 20,)),
    Goal("busy", "adam", 1.2, at_most=True),
    Goal("idle", "adam", 1.7),
    Goal("step", "numpy", 3e-6, at_most=True, case="seed MLP"),
    Goal("step", "numpy", 2, at_most=True, case="100x64", vs="functional"),
    Goal("step", "optcore.torch", 0.5, at_most=True, case="seed MLP", vs="torch-fused"),
    Goal("step", "optcore.torch", 0.5, at_most=True, case="100x64", vs="torch-fused"),
    Goal("precision", "adamw", 1.3, case="bf16 states", vs="fp32"),
    Goal("precision", "adamw", 1.55, case="int8 states", vs="fp32"),
    Goal("precision", "state", 2.1, at_most=True, case="int8 states"),
    Goal("precision", "adamw", 1.8, case="bf16 params, grads, states", vs="fp32"),
    Goal("precision", "adamw", 1.35, case="bf16 params, grads, states", vs="torch fused bf16"),
    Goal("precision", "adamw", 0.9, case="bf16 params + fp32 master", vs="fp32"),
    Goal("precision", "adamw", 1.3, case="bf16 params + fp32 master",
         vs="DeepSpeedCPUAdam fp32 + bf16 copy"),
    Goal("precision", "adamw", 30, case="int8 states", vs="bitsandbytes AdamW8bit"),
    Goal("precision", "adamw", 30, case="int8 states", vs="torchao AdamW8bit"),
)

_VS_NAME = {"torch-fused": "torch fused", "reference": "reference"}


def _find(rows: Iterable[JSONDict], **want: Any) -> JSONDict | None:
    for r in rows:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def _reliable(*rows: JSONDict) -> bool:
    return all(r.get("reliable", True) for r in rows)


def _check(goal: Goal, value: float | None) -> bool | None:
    if value is None:
        return None
    return value <= goal.bound if goal.at_most else value >= goal.bound


def evaluate(goal: Goal, results: JSONDict) -> list[ScoreLine]:
    """(goal text, measured text, met, reliable) for each size the run has;
    met is None when the run measured it without the comparison (e.g. no torch)."""
    rows, tmax = results["kernels"], max([r["threads"] for r in results["kernels"]] or [1])
    out: list[ScoreLine] = []
    name = f"{goal.kernel} f32"
    for n in goal.sizes:
        at = f"{name} 2^{n.bit_length() - 1}"
        r = _find(rows, kernel=goal.kernel, dtype="float32", n=n, threads=tmax)
        if r is None:
            continue
        if goal.measure == "pct":
            v = r["pct_ceiling"].get("optcore")
            out.append((f"{at}: >= {goal.bound:g}% of ceiling", f"{v:.0f}%",
                        _check(goal, v), _reliable(r)))
        elif goal.measure == "speedup":
            v = r["speedup"].get(goal.vs)
            out.append((f"{at}: >= {goal.bound:g}x {_VS_NAME.get(goal.vs, goal.vs)}",
                        fmt_x(v), _check(goal, v), _reliable(r)))
        elif goal.measure == "f64":
            r64 = _find(rows, kernel=goal.kernel, dtype="float64", n=n, threads=tmax)
            if r64 is None:
                continue
            a, b = r["pct_ceiling"]["optcore"], r64["pct_ceiling"]["optcore"]
            out.append((f"{goal.kernel} f64 2^{n.bit_length() - 1}: % of ceiling within "
                        f"{100 * (1 - goal.bound):.0f}% of f32's", f"{b:.0f}% vs {a:.0f}%",
                        b >= goal.bound * a, _reliable(r, r64)))
        elif goal.measure == "scaling":
            r1 = _find(rows, kernel=goal.kernel, dtype="float32", n=n, threads=1)
            if r1 is None or tmax == 1:
                continue
            x = r1["median_s"]["optcore"] / r["median_s"]["optcore"]
            out.append((f"{at}: {tmax} threads >= {goal.bound:g}x one thread", fmt_x(x),
                        _check(goal, x), _reliable(r, r1)))
    if goal.measure == "overhead":
        r = _find(results["overhead"], kernel=goal.kernel)
        if r:
            t = r["median_s"]["optcore"]
            out.append((f"{name} 1024 elements, one call: <= {fmt_time(goal.bound)}",
                        fmt_time(t), _check(goal, t), _reliable(r)))
    elif goal.measure in ("busy", "idle") and results.get("busy"):
        from optcore.cli.bench.busy import ratios
        section = results["busy"]
        r = ratios(section)
        nt, at = section["threads"], f"{name} 2^{section['n'].bit_length() - 1}"
        if goal.measure == "busy":
            out.append((f"{at}, a core busy: {nt}-thread mean <= {goal.bound:g}x "
                        "1-thread mean", f"{r['busy_over_single']:.2f}x",
                        _check(goal, r["busy_over_single"]), True))
        else:
            out.append((f"{at}, idle: {nt}-thread mean >= {goal.bound:g}x faster than "
                        "1 thread", fmt_x(r["idle_speedup"]),
                        _check(goal, r["idle_speedup"]), True))
    elif goal.measure == "step" and results.get("steps"):
        t = results["steps"]["cases"].get(goal.case, {})
        label = {"numpy": "optcore.Adam.step", "optcore.torch": "optcore.torch.Adam.step"}
        if goal.kernel in t and not goal.vs:
            out.append((f"{label[goal.kernel]}, {goal.case}: <= {fmt_time(goal.bound)}",
                        fmt_time(t[goal.kernel]), _check(goal, t[goal.kernel]), True))
        elif goal.kernel in t and goal.vs in t:
            x = t[goal.kernel] / t[goal.vs]
            vs = {"functional": "the functional call", "torch-fused": "torch Adam fused"}
            out.append((f"{label[goal.kernel]}, {goal.case}: <= {goal.bound:g}x "
                        f"{vs[goal.vs]}", f"{x:.2f}x", _check(goal, x), True))
    elif goal.measure == "precision" and results.get("precision"):
        from optcore.cli.bench.precision import CASES, state_bytes
        t = results["precision"]["times"]
        if goal.kernel == "state" and goal.case in CASES:
            param, _, state, master, rounding = CASES[goal.case]
            b = state_bytes(param, state, master, rounding)
            out.append((f"AdamW {goal.case}: state <= {goal.bound:g} B/param", f"{b:.2f}",
                        _check(goal, b), True))
        elif goal.case in t and goal.vs in t:
            x = t[goal.vs] / t[goal.case]
            peer = "optcore fp32" if goal.vs == "fp32" else goal.vs
            out.append((f"AdamW {goal.case}: >= {goal.bound:g}x {peer}", f"{x:.2f}x",
                        _check(goal, x), True))
    elif goal.measure == "multi":
        r = _find(results["multi"], kernel=goal.kernel, dtype="float32", case=goal.case,
                  threads=tmax)
        if r:
            t = r["median_s"]["optcore"]
            out.append((f"{name} {goal.case.replace('x', ' x ')}, one multi-tensor call: "
                        f"<= {fmt_time(goal.bound)}", fmt_time(t), _check(goal, t),
                        _reliable(r)))
    return out


def scorecard(results: JSONDict, goals: Iterable[Goal] = GOALS) -> list[ScoreLine]:
    """The goals checked against this run's medians: a list of (goal, measured,
    met, reliable); met is True/False (None: not measured), reliable False when
    a row it rests on was disturbed."""
    return [line for goal in goals for line in evaluate(goal, results)]


def print_scorecard(results: JSONDict, out: SupportsWrite[str] | None = None) -> None:
    out = sys.stdout if out is None else out
    card = scorecard(results)
    if not card:
        return
    out.write("\ngoals (medians of this run)\n")
    table(["goal", "measured", "met"],
          [[g, m, {True: "yes", False: "NO", None: "-"}[ok] + ("" if sure else "?")]
           for g, m, ok, sure in card], out)
    if not all(sure for *_, sure in card):
        out.write("  ? measured on a disturbed row (see the tables above)\n")
