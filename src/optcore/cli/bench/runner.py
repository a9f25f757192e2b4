"""The run: every section's measurements, gathered into one results dict
(what ``--json`` writes)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

import optcore
from optcore.kernels import bandwidth

from optcore.cli.bench.cases import (MULTI_CASES, THRESHOLD_SIZES, TORCH_IMPLS,
                                     make_call, make_inputs)
from optcore.cli.bench.timing import (Progress, Threads, disturbances, measure,
                                      measure_side_by_side, measure_trusted, median,
                                      pattern_timer, timer, with_threads)

if TYPE_CHECKING:
    from optcore._typing import FloatArray, FloatDType, JSONDict, Samples, TimedCall
    from optcore.cli.bench.cases import Kernel, MultiCase
    from optcore.cli.bench.timing import Timing

    # one side-by-side measurement: (samples per implementation and ceiling
    # pass, ceiling seconds, the chosen ceiling passes' samples, (label,
    # one-thread seconds, parallel seconds) of each parallel ceiling pass)
    Group = tuple[dict[str, Samples], float, dict[str, Samples],
                  list[tuple[str, float, float]]]
    # a row's measurement: (samples per implementation, ceiling seconds,
    # reasons to distrust them, attempts)
    Measured = tuple[dict[str, Samples], float, list[str], int]


def pow2(n: int) -> str:
    """``2^k`` for a power of two, else the number."""
    k = n.bit_length() - 1 if n > 0 else -1
    return f"2^{k}" if n > 0 and n == 1 << k else str(n)


def machine_info() -> JSONDict:
    info: JSONDict = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "optcore": optcore.__version__,
        "variant": _variant(),
        "openmp": optcore.openmp_enabled(),
        "threads": optcore.get_num_threads(),
        "parallel_threshold": optcore.get_parallel_threshold(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["memory_gib"] = round(int(line.split()[1]) / 2 ** 20, 1)
                    break
    except OSError:
        pass
    # NumPy's BLAS does not run in these kernels, but note how it was set up
    # (OPENBLAS_CORETYPE pins an older OpenBLAS kernel on some machines).
    info["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE")
    # Thread placement: on a busy machine the scheduler may put both threads
    # of a parallel region on one core (a region then waits a whole time
    # slice); OMP_PROC_BIND=spread OMP_PLACES=cores pins them apart, for
    # optcore's and torch's OpenMP alike.
    info["omp_proc_bind"] = os.environ.get("OMP_PROC_BIND")
    info["omp_places"] = os.environ.get("OMP_PLACES")
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info
        info["threadpools"] = [
            {k: d.get(k) for k in ("user_api", "internal_api", "version",
                                   "architecture", "num_threads")}
            for d in threadpool_info()]
    except Exception:       # optional; any failure only loses this note
        pass
    return info


def _variant() -> str:
    from optcore import kernels
    return getattr(kernels, "VARIANT", "baseline")


class Bench:
    def __init__(self, kernels: Sequence[Kernel], sizes: Sequence[int],
                 dtypes: Sequence[FloatDType], threads: Sequence[int], timing: Timing,
                 torch: ModuleType | None, sections: Sequence[str], progress: bool = True,
                 multi_cases: Sequence[MultiCase] | None = None,
                 threshold_sizes: Sequence[int] | None = None,
                 multi_dtypes: Sequence[FloatDType] | None = None,
                 multi_threads: Sequence[int] | None = None,
                 precision_size: int = 2 ** 24) -> None:
        self.kernels, self.sizes, self.dtypes = kernels, sizes, dtypes
        self.precision_size = precision_size
        self.multi_cases = multi_cases or MULTI_CASES
        self.multi_dtypes = list(dtypes) if multi_dtypes is None else multi_dtypes
        self.multi_threads = list(threads) if multi_threads is None else multi_threads
        self.threshold_sizes = threshold_sizes or THRESHOLD_SIZES
        self.threads, self.timing, self.torch = threads, timing, torch
        self.sections = sections
        self.progress_enabled = progress
        self.retry_seconds = 0.0       # spent re-measuring disturbed rows
        self.results: JSONDict = {"machine": machine_info(), "ceiling": [], "kernels": [],
                        "multi": [], "overhead": [], "threshold": {}, "busy": {}, "steps": {},
                        "precision": {}}
        if torch is not None:
            self.results["machine"]["torch"] = torch.__version__

    # -- counting, for the progress line
    def _impls(self, kernel: Kernel) -> list[str]:
        names = ["optcore"]
        if self.torch is not None:
            names += list(TORCH_IMPLS)
            if kernel.deepspeed:
                names.append("deepspeed")
        return names

    def _count(self) -> int:
        """Measurement groups the run will make (for the progress line)."""
        total = 0
        if "kernels" in self.sections:
            total += len(self.dtypes) * len(self.sizes) * len(self.kernels) * \
                len(self.threads)
        if "multi" in self.sections:
            total += len(self.multi_dtypes) * len(self.multi_cases) * \
                len([k for k in self.kernels if k.multi]) * len(self.multi_threads)
        if "overhead" in self.sections:
            total += len(self.kernels)
        if "threshold" in self.sections and max(self.threads) > 1:
            total += 1 + len([k for k in self.kernels if k.call != "grads"]) * \
                len(self.threshold_sizes)
        if "busy" in self.sections and max(self.threads) > 1:
            total += 1
        if "steps" in self.sections:
            total += 1
        if "precision" in self.sections:
            total += 1
        return total

    def run(self) -> JSONDict:
        self.progress = Progress(self._count(), enabled=self.progress_enabled)
        try:
            if "kernels" in self.sections:
                self._kernels()
            if "multi" in self.sections:
                self._multi()
            if "overhead" in self.sections:
                self._overhead()
            if "threshold" in self.sections and max(self.threads) > 1:
                self._threshold()
            if "busy" in self.sections and max(self.threads) > 1:
                from optcore.cli.bench.busy import measure_busy   # (imports report)
                calls = max(200, int(8000 * self.timing.budget))
                self.results["busy"] = measure_busy(max(self.threads), calls)
                self.progress.step("busy machine")
            if "steps" in self.sections:
                from optcore.cli.bench.steps import measure_steps   # (imports report)
                self.results["steps"] = measure_steps(
                    self.torch, max(200, int(80000 * self.timing.budget)))
                self.progress.step("small-model steps")
            if "precision" in self.sections:
                from optcore.cli.bench.precision import measure_precision
                self.results["precision"] = measure_precision(
                    self.torch, max(self.threads), self.precision_size)
                self.progress.step("precision")
        finally:
            self.progress.close()
        return self.results

    # -- side-by-side groups
    def _measure_group(self, kernel: Kernel, inputs: Mapping[str, Sequence[FloatArray]],
                       lists: bool, dtype: FloatDType, n: int, threads: int) -> Group:
        """One side-by-side measurement of every implementation and the
        ceiling patterns at ``threads`` (and 1) thread(s)."""
        bufs = {p: bandwidth.make_buffers(p, n, dtype) for p in kernel.traffic}
        with Threads(threads, self.torch):
            timers: dict[str, TimedCall] = {}
            for impl in self._impls(kernel) + ["reference"]:
                fn = make_call(kernel, impl, inputs, lists=lists, torch=self.torch)
                if fn is not None:
                    timers[impl] = timer(fn)
            for p in kernel.traffic:
                for t in sorted({1, threads}):
                    timers[f"ceiling {p} {t}"] = pattern_timer(p, bufs[p], t)
            samples = measure_side_by_side(timers, self.timing)
            del timers
        chosen: dict[str, Samples]
        parallel: list[tuple[str, float, float]]
        ceiling_s, chosen, parallel = 0.0, {}, []
        for p in kernel.traffic:
            if threads > 1:
                parallel.append((f"ceiling {p} at {threads} threads",
                                 median(samples[f"ceiling {p} 1"]),
                                 median(samples[f"ceiling {p} {threads}"])))
            # the ceiling of a pattern: the faster of 1 and ``threads`` threads
            label = min((f"ceiling {p} {t}" for t in sorted({1, threads})),
                        key=lambda k: median(samples[k]))
            chosen[label] = samples[label]
            ceiling_s += median(samples[label])
        return samples, ceiling_s, chosen, parallel

    def _group(self, kernel: Kernel, inputs: Mapping[str, Sequence[FloatArray]],
               lists: bool, dtype: FloatDType, n: int, threads: int,
               label: str) -> Measured:
        """The side-by-side measurement, re-taken (``timing.retries`` times at
        most) while disturbed; returns (times, ceiling seconds, reasons to
        distrust them, attempts)."""
        def check(result: Group) -> list[str]:
            samples, ceiling_s, chosen, parallel = result
            return disturbances(samples, chosen, ceiling_s, parallel=parallel)

        # Re-measuring is bounded per row and over the run: on a machine loaded
        # throughout, every row is disturbed and retries cannot help.
        retries = self.timing.retries
        if self.retry_seconds >= self.timing.retry_budget:
            retries = 0
        started = time.perf_counter()
        (samples, ceiling_s, _, _), reasons, attempts = measure_trusted(
            lambda: self._measure_group(kernel, inputs, lists, dtype, n, threads),
            check, retries)
        if attempts > 1:
            self.retry_seconds += (time.perf_counter() - started) * (attempts - 1) / attempts
        itemsize = np.dtype(dtype).itemsize
        for p in kernel.traffic:
            for t in sorted({1, threads}):
                sm = samples.pop(f"ceiling {p} {t}")
                med = median(sm)
                nbytes = bandwidth.bytes_per_element(p, itemsize)
                self.results["ceiling"].append({
                    "pattern": p, "dtype": np.dtype(dtype).name, "n": n, "threads": t,
                    "beside": kernel.name, "bytes_per_element": nbytes,
                    "median_s": med, "samples": sm, "gbs": nbytes * n / med / 1e9})
        self.progress.step(f"{label} threads={threads}"
                           + (f" (disturbed, {attempts} attempts)" if reasons else ""))
        return samples, ceiling_s, reasons, attempts

    def _row(self, section: str, kernel: Kernel, dtype: FloatDType, n: int, threads: int,
             measured: Measured, **extra: Any) -> JSONDict:
        times, ceiling_s, reasons, attempts = measured
        itemsize = np.dtype(dtype).itemsize
        nbytes = kernel.bytes_per_element(itemsize) * n
        med = {k: median(v) for k, v in times.items() if v}
        base = med.get("optcore")
        row = {"kernel": kernel.name, "dtype": np.dtype(dtype).name, "n": n,
               "threads": threads, "bytes_per_element": kernel.bytes_per_element(itemsize),
               "ceiling_s": ceiling_s,
               "ceiling_gbs": nbytes / ceiling_s / 1e9 if ceiling_s else None,
               "median_s": med, "samples": times,
               "gbs": {k: nbytes / v / 1e9 for k, v in med.items()},
               "pct_ceiling": {k: 100.0 * ceiling_s / v for k, v in med.items()}
               if ceiling_s else {},
               "speedup": {k: v / base for k, v in med.items() if k != "optcore"}
               if base else {},
               # interference: why the figures are not to be trusted (empty:
               # they are) and how many measurements were taken
               "reliable": not reasons, "flags": list(reasons), "attempts": attempts}
        row.update(extra)
        self.results[section].append(row)
        return row

    # -- kernels x sizes
    def _kernels(self) -> None:
        for dtype in self.dtypes:
            for n in self.sizes:
                for kernel in self.kernels:
                    inputs = make_inputs(kernel, [n], dtype, seed=n)
                    label = f"{kernel.name} {np.dtype(dtype).name} n={pow2(n)}"
                    for t in self.threads:
                        self._row("kernels", kernel, dtype, n, t,
                                  self._group(kernel, inputs, False, dtype, n, t, label))
                    del inputs

    # -- multi-tensor
    def _multi(self) -> None:
        for dtype in self.multi_dtypes:
            for case, sizes, about in self.multi_cases:
                total = sum(sizes)
                for kernel in [k for k in self.kernels if k.multi]:
                    inputs = make_inputs(kernel, sizes, dtype, seed=len(sizes))
                    label = f"{kernel.name} {np.dtype(dtype).name} {case}"
                    for t in self.multi_threads:
                        self._row("multi", kernel, dtype, total, t,
                                  self._group(kernel, inputs, True, dtype, total, t, label),
                                  case=case, tensors=len(sizes), about=about)
                    del inputs

    # -- per-call overhead
    def _overhead(self) -> None:
        n = 1024
        for kernel in self.kernels:
            inputs = make_inputs(kernel, [n, 1], np.float32, seed=1)
            tiny = {b: [a[1]] for b, a in inputs.items()}
            with Threads(1):
                one = measure(make_call(kernel, "optcore", tiny), self.timing)
            measured = self._group(kernel, {b: a[:1] for b, a in inputs.items()},
                                   False, np.float32, n, 1, f"overhead {kernel.name}")
            self._row("overhead", kernel, np.float32, n, 1, measured,
                      optcore_n1_s=median(one), native_pass_s=measured[1])

    # -- the single-thread threshold
    def _threshold(self) -> None:
        nt = max(self.threads)
        fork = bandwidth.fork_join(nt, max(20, int(8000 * self.timing.budget)),
                                   self.timing.max_repeat)
        # After an idle spell OpenMP's workers sleep, and waking them costs more
        # (a training loop calls the optimizer between long forward passes).
        cold: list[float] = []
        for _ in range(max(3, min(11, self.timing.max_repeat))):
            time.sleep(0.02)
            cold += bandwidth.fork_join(nt, 1, 1)
        self.progress.step(f"threshold fork/join threads={nt}")
        out: JSONDict = {"threads": nt,
 "fork_join_s": median(fork), "fork_join_samples": fork,
               "fork_join_cold_s": median(cold), "fork_join_cold_samples": cold,
               "current": optcore.get_parallel_threshold(), "kernels": []}
        for kernel in [k for k in self.kernels if k.call != "grads"]:
            inputs = make_inputs(kernel, self.threshold_sizes, np.float32, seed=2)
            single: list[float]
            parallel: list[float]
            flags: list[list[str]]
            single, parallel, flags = [], [], []
            for i, n in enumerate(self.threshold_sizes):
                fn = make_call(kernel, "optcore", {b: [a[i]] for b, a in inputs.items()})
                samples = measure_side_by_side(
                    {"single": with_threads(fn, 1, None),
                     "parallel": with_threads(fn, nt, 0)}, self.timing)
                single.append(median(samples["single"]))
                parallel.append(median(samples["parallel"]))
                flags.append(disturbances(
                    {"optcore": samples["parallel"]}, {}, None,
                    parallel=[(f"{kernel.name} at {nt} threads", single[-1], parallel[-1])]))
                self.progress.step(f"threshold {kernel.name} n={n}")
            out["kernels"].append({
                "kernel": kernel.name, "sizes": list(self.threshold_sizes),
                "single_s": single, "parallel_s": parallel, "flags": flags,
                "crossover": crossover(self.threshold_sizes, single, parallel)})
        out["recommended"] = recommend_threshold(
            self.threshold_sizes, [(k["single_s"], k["parallel_s"]) for k in out["kernels"]])
        self.results["threshold"] = out


def crossover(sizes: Sequence[int], single: Sequence[float], parallel: Sequence[float],
              share: float = 0.8) -> int | None:
    """Smallest size from which the parallel time beats the single-thread time
    at no fewer than ``share`` of the measured sizes from there up (a lone
    noisy point does not move it); None if there is no such size."""
    wins = [p < s for s, p in zip(single, parallel)]
    best = None
    for i in range(len(sizes) - 1, -1, -1):
        tail = wins[i:]
        if wins[i] and sum(tail) >= share * len(tail):
            best = sizes[i]
    return best


def recommend_threshold(sizes: Sequence[int],
                        timings: Sequence[tuple[Sequence[float], Sequence[float]]]
                        ) -> int | None:
    """The threshold (one of ``sizes``) that loses least against the better of
    one thread and all threads, summed over kernels and sizes: each element of
    ``timings`` is (single-thread times, parallel times) of one kernel.
    Calls below the threshold run on one thread."""
    best, best_loss = None, None
    for i, threshold in enumerate(sizes):
        loss = 0.0
        for single, parallel in timings:
            for j in range(len(sizes)):
                chosen = single[j] if j < i else parallel[j]
                loss += chosen / min(single[j], parallel[j]) - 1.0
        if best_loss is None or loss < best_loss:
            best, best_loss = threshold, loss
    return best


__all__ = ["Bench", "crossover", "machine_info", "pow2", "recommend_threshold"]
