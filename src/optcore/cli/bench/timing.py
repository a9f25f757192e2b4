"""Timing: side-by-side sampling, thread settings, and the checks that tell
a trustworthy measurement from one disturbed by other load on the machine."""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import optcore
from optcore.kernels import bandwidth

if TYPE_CHECKING:
    from optcore._typing import FloatArray, Samples, TimedCall

    Result = TypeVar("Result")


@dataclasses.dataclass
class Timing:
    budget: float = 0.25           # seconds of samples per measurement
    sample: float = 0.002          # seconds per sample (calls are repeated to fill it)
    min_repeat: int = 5
    warmup: float = 0.02           # seconds of warm-up calls per callable, at most
    max_repeat: int = 31
    retries: int = 2               # re-measurements of a row found disturbed
    retry_budget: float = 120.0    # seconds of re-measurement in a whole run, at most


def timer(fn: Callable[[], object]) -> TimedCall:
    """A timed callable for measure_side_by_side: ``timed(number)`` runs
    ``fn`` ``number`` times and returns the seconds per call."""
    clock = time.perf_counter_ns

    def timed(number: int) -> float:
        t = clock()
        for _ in range(number):
            fn()
        return (clock() - t) * 1e-9 / number
    return timed


def pattern_timer(pattern: str, buffers: list[FloatArray], threads: int) -> TimedCall:
    """A timed callable for a bandwidth pattern, timed natively (no Python
    in the timed region)."""
    return lambda number: bandwidth.run(pattern, buffers, threads, number, 1)[0]


def measure_side_by_side(timers: Mapping[str, TimedCall],
                         timing: Timing) -> dict[str, Samples]:
    """Samples of seconds per call for each timed callable, taken side by side.

    Each one warms up and gets its own number of calls per sample (enough to
    fill ``timing.sample``); then every round takes one sample of each, in an
    order rotated from round to round, so that a change of load on the machine
    touches all of them alike and their ratios stay fair. Returns name ->
    samples in the order taken (the median is the result)."""
    names = list(timers)
    numbers: dict[str, int]
    numbers, cost = {}, 0.0
    for name in names:
        timed = timers[name]
        est = timed(1)
        if est < 0.05:
            # Warm-up: caches, branch predictors, OpenMP threads, lazy state
            # (a slow call has warmed up in its first run).
            deadline = time.perf_counter() + min(timing.warmup, 4 * est)
            while time.perf_counter() < deadline:
                timed(1)
            est = min(est, timed(1))
        est = max(est, 1e-8)
        numbers[name] = max(1, int(timing.sample / est))
        cost += est * numbers[name]
    rounds = int(min(timing.max_repeat,
                     max(timing.min_repeat, timing.budget * len(names) / cost)))
    samples: dict[str, Samples] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(timers[name](numbers[name]))
    return samples


def measure(fn: Callable[[], object], timing: Timing) -> Samples:
    """Seconds per call of ``fn``, one value per sample."""
    return measure_side_by_side({"fn": timer(fn)}, timing)["fn"]


# None for no samples; typed Any (not float | None) because the bench takes the
# median of samples it has just taken (never empty) and computes with it.
def median(samples: Sequence[float]) -> Any:
    return statistics.median(samples) if samples else None


# ---- interference ----------------------------------------------------------------
# Another process taking a core stretches some samples (a parallel region then
# waits a whole time slice for its second thread): the repetitions spread, the
# ceiling measured early in a row and late in it disagree, or a kernel seems to
# beat the bandwidth ceiling. Such a row is re-measured, and if it stays so,
# reported with a "?" and its reasons instead of as a clean figure.

#: IQR / median of a measurement's samples above which it is disturbed.
SPREAD_LIMIT = 0.25
#: Ratio between the ceiling's first-half and second-half medians (either way)
#: above which the load changed during the row.
DRIFT_LIMIT = 1.25
#: Fraction of the ceiling above which a figure is impossible: the kernel
#: cannot move its bytes faster than the native pass with the same traffic.
CEILING_LIMIT = 1.10


def spread(samples: Sequence[float]) -> float:
    """Interquartile range over median of ``samples`` (0 for fewer than 3)."""
    if len(samples) < 3:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    med = statistics.median(samples)
    return (q3 - q1) / med if med > 0 else 0.0


def drift(samples: Sequence[float]) -> float:
    """Ratio (>= 1) between the medians of the first and the second half of
    samples taken in order: how much the load changed while they were taken."""
    if len(samples) < 4:
        return 1.0
    half = len(samples) // 2
    a, b = statistics.median(samples[:half]), statistics.median(samples[-half:])
    if min(a, b) <= 0:
        return 1.0
    return max(a, b) / min(a, b)


#: A parallel pass slower than this many times the one-thread pass, plus
#: DESCHEDULED_SLACK seconds (far above an idle fork/join, far below a time
#: slice), waited for a thread the scheduler had taken off its core.
DESCHEDULED_RATIO = 2.0
DESCHEDULED_SLACK = 50e-6


def descheduled(single_s: float, parallel_s: float) -> bool:
    """Whether a parallel time, against the one-thread time of the same work,
    shows a thread that lost its core (steady samples, so no spread shows it)."""
    return parallel_s > DESCHEDULED_RATIO * single_s + DESCHEDULED_SLACK


def disturbances(times: Mapping[str, Sequence[float]],
                 ceiling_samples: Mapping[str, Sequence[float]], ceiling_s: float | None,
                 spread_limit: float = SPREAD_LIMIT, drift_limit: float = DRIFT_LIMIT,
                 ceiling_limit: float = CEILING_LIMIT,
                 parallel: Iterable[tuple[str, float, float]] = ()) -> list[str]:
    """Why a row's figures cannot be trusted (an empty list: they can).

    ``times``: implementation -> samples; ``ceiling_samples``: pattern label ->
    samples of the ceiling passes, in the order taken; ``ceiling_s``: the
    ceiling's time per call. Only optcore's samples and the ceiling are
    checked: they make the row's headline figures (% of the ceiling, speed-ups).
    ``parallel``: (label, one-thread seconds, parallel seconds) of one pass."""
    reasons: list[str] = []
    for label, single_s, parallel_s in parallel:
        if descheduled(single_s, parallel_s):
            reasons.append(f"descheduled: {label} {parallel_s / single_s:.0f}x slower "
                           "in parallel than on one thread")
    ours = times.get("optcore") or []
    s = spread(ours)
    if s > spread_limit:
        reasons.append(f"spread: optcore IQR/median {s:.2f} > {spread_limit:.2f}")
    for label, sm in ceiling_samples.items():
        s = spread(sm)
        if s > spread_limit:
            reasons.append(f"spread: ceiling {label} IQR/median {s:.2f} > "
                           f"{spread_limit:.2f}")
        d = drift(sm)
        if d > drift_limit:
            reasons.append(f"drift: ceiling {label} first/second half {d:.2f}x > "
                           f"{drift_limit:.2f}x")
    med = median(ours)
    if med and ceiling_s and ceiling_s / med > ceiling_limit:
        reasons.append(f"above ceiling: {100 * ceiling_s / med:.0f}% > "
                       f"{100 * ceiling_limit:.0f}%")
    return reasons


def measure_trusted(measure_once: Callable[[], Result],
                    check: Callable[[Result], list[str]],
                    retries: int) -> tuple[Result, list[str], int]:
    """Run ``measure_once()`` and re-run it (at most ``retries`` more times)
    while ``check(result)`` finds reasons to distrust it. Returns (the result
    with the fewest reasons, its reasons, the number of attempts)."""
    # set by the first attempt (there is always one)
    best: Any
    best_reasons: Any
    best, best_reasons, attempts = None, None, 0
    for attempts in range(1, retries + 2):
        result = measure_once()
        reasons = check(result)
        if best_reasons is None or len(reasons) < len(best_reasons):
            best, best_reasons = result, reasons
        if not reasons:
            break
    return best, best_reasons, attempts


# ---- threads and progress --------------------------------------------------------

class Threads:
    """Set optcore's (and torch's) thread count; restore on exit."""

    def __init__(self, n: int | None, torch: ModuleType | None = None) -> None:
        self.n, self.torch = n, torch

    def __enter__(self) -> None:
        optcore.set_num_threads(self.n)
        if self.torch is not None:
            self.old_torch = self.torch.get_num_threads()
            self.torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        optcore.set_num_threads(None)
        if self.torch is not None:
            self.torch.set_num_threads(self.old_torch)


def with_threads(fn: Callable[[], object], threads: int,
                 threshold: int | None) -> TimedCall:
    """A timed callable running ``fn`` with ``threads`` threads and, unless
    None, the parallel threshold set to ``threshold`` (restored after)."""
    inner = timer(fn)

    def timed(number: int) -> float:
        old = optcore.get_parallel_threshold()
        optcore.set_num_threads(threads)
        if threshold is not None:
            optcore.set_parallel_threshold(threshold)
        try:
            return inner(number)
        finally:
            optcore.set_parallel_threshold(old)
            optcore.set_num_threads(None)
    return timed


class Progress:
    """One status line on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int, stream: TextIO | None = None,
                 enabled: bool = True) -> None:
        self.total, self.done = max(total, 1), 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.last = ""

    def step(self, text: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        line = f"[{self.done:4d}/{self.total}] {elapsed:6.1f}s  {text}"
        if self.tty:
            pad = max(0, len(self.last) - len(line))
            self.stream.write("\r" + line + " " * pad)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = line

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
