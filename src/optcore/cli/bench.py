"""``python -m optcore bench``: kernels against the machine's bandwidth ceiling,
the NumPy reference, torch.optim and DeepSpeed.

Sections (all in one run, written to ``--json``):
  ceiling    native OpenMP kernels with each kernel's memory traffic
             (optcore.kernels.bandwidth): the limit a kernel is judged against
  kernels    each kernel x dtype x size x threads: median time, effective GB/s
             (bytes per element stated per kernel), % of the ceiling, speed-ups
  multi      multi-tensor calls: 100 tensors x 1024, and a transformer's mix
  overhead   per-call cost at 1024 elements (and at 1), against the native pass
  threshold  the OpenMP fork/join cost and the size from which 2+ threads win,
             which sets optcore.get_parallel_threshold()

Inputs are random (never zero), built before timing. Each row's implementations
and its ceiling are measured side by side: each warms up, then rounds take one
sample of every one in turn (each sample times enough calls to dwarf the
timer's resolution), so that load from elsewhere on the machine touches them
alike; results are medians. Adding a kernel is one entry in KERNELS.
"""

import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, Optional

import numpy as np

import optcore
from optcore import reference
from optcore.kernels import bandwidth

FULL_SIZES = tuple(2 ** k for k in range(10, 27))
QUICK_SIZES = (2 ** 10, 2 ** 14, 2 ** 18, 2 ** 21)
STEP = 10                # the step count passed to every call (bias corrections on)
IMPLS = ("optcore", "reference", "torch", "torch-foreach", "torch-fused", "deepspeed")
TORCH_IMPLS = {"torch": {"foreach": False}, "torch-foreach": {"foreach": True},
               "torch-fused": {"fused": True}}


# ---- the kernel table ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Kernel:
    """One benchmarked kernel.

    ``func`` names the function in ``optcore`` and ``optcore.reference``;
    ``buffers`` its array arguments in order; ``traffic`` the bandwidth patterns
    of its passes over the data (optcore.kernels.bandwidth.PATTERNS), which fix
    its bytes per element and its ceiling. ``call`` says how it is called:
      "step"   func(*buffers, step=STEP, **kwargs)       (optimizers)
      "loss"   func(pred, target, out=out, **kwargs)     (buffers: pred, target, out)
      "grads"  func(list_of_grads, **kwargs)             (gradient utilities)
    ``torch`` is a torch.optim class name (for "step") or a function
    (torch, grads, variant_kwargs) -> callable or None; ``deepspeed`` takes the
    DeepSpeedCPUAdam mode ("adam" / "adamw").
    """
    name: str
    func: str
    traffic: tuple
    buffers: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    positive: tuple = ()
    call: str = "step"
    torch: object = None
    torch_kwargs: dict = dataclasses.field(default_factory=dict)
    deepspeed: Optional[str] = None
    multi: bool = True

    def available(self):
        return hasattr(optcore, self.func) and hasattr(reference, self.func)

    def bytes_per_element(self, itemsize):
        return sum(bandwidth.bytes_per_element(p, itemsize) for p in self.traffic)

    def describe(self):
        reads = writes = 0
        for p in self.traffic:
            r, w, _ = bandwidth.PATTERNS[p]
            reads, writes = reads + r, writes + w
        passes = f" in {len(self.traffic)} passes" if len(self.traffic) > 1 else ""
        return (f"{self.bytes_per_element(4)} B/element in float32, "
                f"{self.bytes_per_element(8)} in float64: {reads} reads + "
                f"{writes} writes{passes}")


def _torch_norm(torch, grads, variant):
    if "fused" in variant or not hasattr(torch.nn.utils, "get_total_norm"):
        return None
    return lambda: torch.nn.utils.get_total_norm(grads, 2.0, foreach=variant["foreach"])


def _torch_clip_norm(torch, grads, variant):
    if "fused" in variant:
        return None
    params = [torch.empty(0)] * 0
    for g in grads:
        p = torch.empty_like(g)
        p.grad = g
        params.append(p)
    return lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=variant["foreach"])


def _torch_clip_value(torch, grads, variant):
    if "fused" in variant:
        return None
    params = []
    for g in grads:
        p = torch.empty_like(g)
        p.grad = g
        params.append(p)
    return lambda: torch.nn.utils.clip_grad_value_(params, 1.0, foreach=variant["foreach"])


def _torch_all_finite(torch, grads, variant):
    if variant != {"foreach": False}:
        return None
    return lambda: all(bool(torch.isfinite(g).all()) for g in grads)


def _torch_unscale(torch, grads, variant):
    # GradScaler's own kernel (a foreach kernel in torch).
    if variant != {"foreach": True}:
        return None
    found = torch.zeros(1, dtype=torch.float32)
    inv = torch.ones(1, dtype=torch.float32)
    return lambda: torch._amp_foreach_non_finite_check_and_unscale_(grads, found, inv)


def _torch_mse(torch, tensors, variant):
    # torch's own loss and gradient kernels: F.mse_loss and its backward op.
    if variant != {"foreach": False}:
        return None
    (pred,), (target,), _ = tensors
    one = torch.ones((), dtype=pred.dtype)

    def call():
        loss = torch.nn.functional.mse_loss(pred, target)
        return loss, torch.ops.aten.mse_loss_backward(one, pred, target, 1)
    return call


_ADAM = ("param", "grad", "exp_avg", "exp_avg_sq")

KERNELS = (
    Kernel("adam", "adam_step", ("4r3w",), _ADAM, dict(lr=1e-3),
           positive=("exp_avg_sq",), torch="Adam", torch_kwargs=dict(lr=1e-3),
           deepspeed="adam"),
    Kernel("adamw", "adamw_step", ("4r3w",), _ADAM, dict(lr=1e-3, weight_decay=1e-2),
           positive=("exp_avg_sq",), torch="AdamW",
           torch_kwargs=dict(lr=1e-3, weight_decay=1e-2), deepspeed="adamw"),
    Kernel("sgd_momentum", "sgd_step", ("3r2w",), ("param", "grad", "momentum_buffer"),
           dict(lr=1e-2, momentum=0.9), torch="SGD",
           torch_kwargs=dict(lr=1e-2, momentum=0.9)),
    Kernel("rmsprop", "rmsprop_step", ("3r2w",), ("param", "grad", "square_avg"),
           dict(lr=1e-2), positive=("square_avg",), torch="RMSprop",
           torch_kwargs=dict(lr=1e-2)),
    Kernel("adagrad", "adagrad_step", ("3r2w",), ("param", "grad", "state_sum"),
           dict(lr=1e-2), positive=("state_sum",), torch="Adagrad",
           torch_kwargs=dict(lr=1e-2)),
    Kernel("adadelta", "adadelta_step", ("4r3w",),
           ("param", "grad", "square_avg", "acc_delta"), dict(lr=1.0),
           positive=("square_avg", "acc_delta"), torch="Adadelta",
           torch_kwargs=dict(lr=1.0)),
    Kernel("adamax", "adamax_step", ("4r3w",), ("param", "grad", "exp_avg", "exp_inf"),
           dict(lr=2e-3), positive=("exp_inf",), torch="Adamax",
           torch_kwargs=dict(lr=2e-3)),
    Kernel("nadam", "nadam_step", ("4r3w",), _ADAM, dict(lr=2e-3, mu_product=0.9),
           positive=("exp_avg_sq",), torch="NAdam", torch_kwargs=dict(lr=2e-3)),
    Kernel("radam", "radam_step", ("4r3w",), _ADAM, dict(lr=1e-3),
           positive=("exp_avg_sq",), torch="RAdam", torch_kwargs=dict(lr=1e-3)),
    Kernel("lion", "lion_step", ("3r2w",), ("param", "grad", "exp_avg"), dict(lr=1e-4)),
    # LAMB needs the norms of the parameter and of the update before writing:
    # one pass for the moments and norms, one for the parameter.
    Kernel("lamb", "lamb_step", ("4r2w", "3r1w"), _ADAM, dict(lr=1e-3),
           positive=("exp_avg_sq",)),
    Kernel("mse_loss_grad", "mse_loss_grad", ("triad",), ("pred", "target", "out"),
           call="loss", multi=False, torch=_torch_mse),
    Kernel("global_norm", "global_norm", ("1r",), ("grad",), call="grads",
           torch=_torch_norm),
    Kernel("clip_grad_norm_", "clip_grad_norm_", ("1r", "1r1w"), ("grad",),
           dict(max_norm=1.0), call="grads", torch=_torch_clip_norm),
    Kernel("clip_grad_value_", "clip_grad_value_", ("1r1w",), ("grad",),
           dict(clip_value=1.0), call="grads", torch=_torch_clip_value),
    Kernel("all_finite", "all_finite", ("1r",), ("grad",), call="grads",
           torch=_torch_all_finite),
    Kernel("unscale_", "unscale_", ("1r1w",), ("grad",), dict(inv_scale=1.0),
           call="grads", torch=_torch_unscale),
)


def available_kernels():
    """The KERNELS entries whose function exists in optcore and the reference."""
    return [k for k in KERNELS if k.available()]


# ---- inputs and calls ------------------------------------------------------------

def random_array(rng, n, dtype, positive=False):
    """Random, never-zero data."""
    if positive:
        return rng.uniform(0.1, 1.0, n).astype(dtype)
    a = rng.standard_normal(n, dtype=np.dtype(dtype).type)
    a[a == 0] = 0.5
    return a


def make_inputs(kernel, sizes, dtype, seed=0):
    """{buffer name: list of arrays, one per size in ``sizes``}."""
    rng = np.random.default_rng(seed)
    return {b: [random_array(rng, n, dtype, b in kernel.positive) for n in sizes]
            for b in kernel.buffers}


def _source_call(fname, nargs, kwargs, lists, call):
    # A literal call, as a user writes it: no **kwargs unpacking in the loop.
    args = [f"a{i}" + ("" if lists else "[0]") for i in range(nargs)]
    kw = [f"{k}={v!r}" for k, v in kwargs.items()]
    if call == "step":
        kw.insert(0, f"step={STEP}")
        text = f"{fname}({', '.join(args + kw)})"
    elif call == "loss":
        text = f"{fname}({args[0]}, {args[1]}, {', '.join([f'out={args[2]}'] + kw)})"
    else:   # grads: one list of arrays
        text = f"{fname}({', '.join([f'a0' if lists else '[a0[0]]'] + kw)})"
    return f"lambda: {text}"


def make_call(kernel, impl, inputs, lists=False, torch=None):
    """A zero-argument callable running one call of ``kernel`` by ``impl`` on
    ``inputs`` (from make_inputs; ``lists``: one multi-tensor call over all
    arrays, else the first array alone), or None when ``impl`` lacks it."""
    arrays = [inputs[b] for b in kernel.buffers]
    if impl in ("optcore", "reference"):
        module = optcore if impl == "optcore" else reference
        fn = getattr(module, kernel.func)
        namespace = {"f": fn}
        namespace.update({f"a{i}": a for i, a in enumerate(arrays)})
        return eval(_source_call("f", len(arrays), kernel.kwargs, lists, kernel.call),
                    namespace)
    if torch is None:
        return None
    chosen = arrays if lists else [a[:1] for a in arrays]
    if impl == "deepspeed":
        return _deepspeed_call(kernel, chosen, torch)
    variant = TORCH_IMPLS[impl]
    if kernel.torch is None:
        return None
    if kernel.call == "loss":
        return kernel.torch(torch, [[torch.from_numpy(a) for a in c] for c in chosen],
                            variant)
    if callable(kernel.torch):
        grads = [torch.from_numpy(g) for g in chosen[0]]
        return kernel.torch(torch, grads, variant)
    params = []
    for p, g in zip(chosen[0], chosen[1]):
        t = torch.from_numpy(p)
        t.grad = torch.from_numpy(g)
        params.append(t)
    try:
        opt = getattr(torch.optim, kernel.torch)(params, **kernel.torch_kwargs, **variant)
        opt.step()                           # creates the state; may refuse a dtype
    except (RuntimeError, TypeError, ValueError):
        return None
    return opt.step


def _deepspeed_call(kernel, chosen, torch):
    if kernel.deepspeed is None or chosen[0][0].dtype != np.float32:
        return None
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception:           # not installed, or its native op does not build
        return None
    params = []
    for p, g in zip(chosen[0], chosen[1]):
        t = torch.from_numpy(p)
        t.grad = torch.from_numpy(g)
        params.append(t)
    try:
        opt = DeepSpeedCPUAdam(params, adamw_mode=kernel.deepspeed == "adamw",
                               **kernel.torch_kwargs)
        opt.step()
    except Exception:
        return None
    return opt.step


def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# ---- timing ----------------------------------------------------------------------

@dataclasses.dataclass
class Timing:
    budget: float = 0.25           # seconds of samples per measurement
    sample: float = 0.002          # seconds per sample (calls are repeated to fill it)
    min_repeat: int = 5
    max_repeat: int = 31


def timer(fn):
    """A timed callable for measure_side_by_side: ``timed(number)`` runs
    ``fn`` ``number`` times and returns the seconds per call."""
    clock = time.perf_counter_ns

    def timed(number):
        t = clock()
        for _ in range(number):
            fn()
        return (clock() - t) * 1e-9 / number
    return timed


def pattern_timer(pattern, buffers, threads):
    """A timed callable for a bandwidth pattern, timed natively (no Python
    in the timed region)."""
    return lambda number: bandwidth.run(pattern, buffers, threads, number, 1)[0]


def measure_side_by_side(timers, timing):
    """Samples of seconds per call for each timed callable, taken side by side.

    Each one warms up and gets its own number of calls per sample (enough to
    fill ``timing.sample``); then every round takes one sample of each, in an
    order rotated from round to round, so that a change of load on the machine
    touches all of them alike and their ratios stay fair. Returns name ->
    samples (the median is the result)."""
    names = list(timers)
    numbers, cost = {}, 0.0
    for name in names:
        timed = timers[name]
        est = timed(1)
        if est < 0.05:
            # Warm-up: caches, branch predictors, OpenMP threads, lazy state
            # (a slow call has warmed up in its first run).
            deadline = time.perf_counter() + min(0.02, 4 * est)
            while time.perf_counter() < deadline:
                timed(1)
            est = min(est, timed(1))
        est = max(est, 1e-8)
        numbers[name] = max(1, int(timing.sample / est))
        cost += est * numbers[name]
    rounds = int(min(timing.max_repeat,
                     max(timing.min_repeat, timing.budget * len(names) / cost)))
    samples = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(timers[name](numbers[name]))
    return samples


def measure(fn, timing):
    """Seconds per call of ``fn``, one value per sample."""
    return measure_side_by_side({"fn": timer(fn)}, timing)["fn"]


class Threads:
    """Set optcore's (and torch's) thread count; restore on exit."""

    def __init__(self, n, torch=None):
        self.n, self.torch = n, torch

    def __enter__(self):
        optcore.set_num_threads(self.n)
        if self.torch is not None:
            self.old_torch = self.torch.get_num_threads()
            self.torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        optcore.set_num_threads(None)
        if self.torch is not None:
            self.torch.set_num_threads(self.old_torch)


class Progress:
    """One status line on stderr (rewritten in place on a terminal)."""

    def __init__(self, total, stream=None, enabled=True):
        self.total, self.done = max(total, 1), 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.last = ""

    def step(self, text):
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

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ---- the run ---------------------------------------------------------------------

def _median(samples):
    return statistics.median(samples) if samples else None


def machine_info():
    info = {
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
        from threadpoolctl import threadpool_info
        info["threadpools"] = [
            {k: d.get(k) for k in ("user_api", "internal_api", "version",
                                   "architecture", "num_threads")}
            for d in threadpool_info()]
    except Exception:       # optional; any failure only loses this note
        pass
    return info


def _variant():
    from optcore import kernels
    return getattr(kernels, "VARIANT", "baseline")


class Bench:
    def __init__(self, kernels, sizes, dtypes, threads, timing, torch, sections,
                 progress=True, multi_cases=None, threshold_sizes=None,
                 multi_dtypes=None):
        self.kernels, self.sizes, self.dtypes = kernels, sizes, dtypes
        self.multi_cases = multi_cases or MULTI_CASES
        self.multi_dtypes = list(dtypes) if multi_dtypes is None else multi_dtypes
        self.threshold_sizes = threshold_sizes or THRESHOLD_SIZES
        self.threads, self.timing, self.torch = threads, timing, torch
        self.sections = sections
        self.progress_enabled = progress
        self.results = {"machine": machine_info(), "ceiling": [], "kernels": [],
                        "multi": [], "overhead": [], "threshold": {}}
        if torch is not None:
            self.results["machine"]["torch"] = torch.__version__

    # -- counting, for the progress line
    def _impls(self, kernel):
        names = ["optcore"]
        if self.torch is not None:
            names += list(TORCH_IMPLS)
            if kernel.deepspeed:
                names.append("deepspeed")
        return names

    def _count(self):
        """Measurement groups the run will make (for the progress line)."""
        total = 0
        if "kernels" in self.sections:
            total += len(self.dtypes) * len(self.sizes) * len(self.kernels) * \
                len(self.threads)
        if "multi" in self.sections:
            total += len(self.multi_dtypes) * len(self.multi_cases) * \
                len([k for k in self.kernels if k.multi]) * len(self.threads)
        if "overhead" in self.sections:
            total += len(self.kernels)
        if "threshold" in self.sections and max(self.threads) > 1:
            total += 1 + len([k for k in self.kernels if k.call != "grads"]) * \
                len(self.threshold_sizes)
        return total

    def run(self):
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
        finally:
            self.progress.close()
        return self.results

    # -- side-by-side groups
    def _group(self, kernel, inputs, lists, dtype, n, threads, label):
        """Every implementation and the ceiling patterns at ``threads`` (and 1)
        thread(s), measured side by side; returns (times, ceiling seconds)."""
        bufs = {p: bandwidth.make_buffers(p, n, dtype) for p in kernel.traffic}
        with Threads(threads, self.torch):
            timers = {}
            for impl in self._impls(kernel) + ["reference"]:
                fn = make_call(kernel, impl, inputs, lists=lists, torch=self.torch)
                if fn is not None:
                    timers[impl] = timer(fn)
            for p in kernel.traffic:
                for t in sorted({1, threads}):
                    timers[f"ceiling {p} {t}"] = pattern_timer(p, bufs[p], t)
            samples = measure_side_by_side(timers, self.timing)
            del timers
        itemsize = np.dtype(dtype).itemsize
        ceiling = 0.0
        for p in kernel.traffic:
            best = None
            for t in sorted({1, threads}):
                sm = samples.pop(f"ceiling {p} {t}")
                med = _median(sm)
                best = med if best is None else min(best, med)
                nbytes = bandwidth.bytes_per_element(p, itemsize)
                self.results["ceiling"].append({
                    "pattern": p, "dtype": np.dtype(dtype).name, "n": n, "threads": t,
                    "beside": kernel.name, "bytes_per_element": nbytes,
                    "median_s": med, "samples": sm, "gbs": nbytes * n / med / 1e9})
            ceiling += best
        self.progress.step(f"{label} threads={threads}")
        return samples, ceiling

    def _row(self, section, kernel, dtype, n, threads, times, ceiling_s, **extra):
        itemsize = np.dtype(dtype).itemsize
        nbytes = kernel.bytes_per_element(itemsize) * n
        med = {k: _median(v) for k, v in times.items() if v}
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
               if base else {}}
        row.update(extra)
        self.results[section].append(row)
        return row

    # -- kernels x sizes
    def _kernels(self):
        for dtype in self.dtypes:
            for n in self.sizes:
                for kernel in self.kernels:
                    inputs = make_inputs(kernel, [n], dtype, seed=n)
                    label = f"{kernel.name} {np.dtype(dtype).name} n={_pow2(n)}"
                    for t in self.threads:
                        times, ceiling = self._group(kernel, inputs, False, dtype, n, t,
                                                     label)
                        self._row("kernels", kernel, dtype, n, t, times, ceiling)
                    del inputs

    # -- multi-tensor
    def _multi(self):
        for dtype in self.multi_dtypes:
            for case, sizes, about in self.multi_cases:
                total = sum(sizes)
                for kernel in [k for k in self.kernels if k.multi]:
                    inputs = make_inputs(kernel, sizes, dtype, seed=len(sizes))
                    label = f"{kernel.name} {np.dtype(dtype).name} {case}"
                    for t in self.threads:
                        times, ceiling = self._group(kernel, inputs, True, dtype, total,
                                                     t, label)
                        self._row("multi", kernel, dtype, total, t, times, ceiling,
                                  case=case, tensors=len(sizes), about=about)
                    del inputs

    # -- per-call overhead
    def _overhead(self):
        n = 1024
        for kernel in self.kernels:
            inputs = make_inputs(kernel, [n, 1], np.float32, seed=1)
            tiny = {b: [a[1]] for b, a in inputs.items()}
            with Threads(1):
                one = measure(make_call(kernel, "optcore", tiny), self.timing)
            times, ceiling = self._group(kernel, {b: a[:1] for b, a in inputs.items()},
                                         False, np.float32, n, 1,
                                         f"overhead {kernel.name}")
            self._row("overhead", kernel, np.float32, n, 1, times, ceiling,
                      optcore_n1_s=_median(one), native_pass_s=ceiling)

    # -- the single-thread threshold
    def _threshold(self):
        nt = max(self.threads)
        fork = bandwidth.fork_join(nt, max(20, int(8000 * self.timing.budget)),
                                   self.timing.max_repeat)
        # After an idle spell OpenMP's workers sleep, and waking them costs more
        # (a training loop calls the optimizer between long forward passes).
        cold = []
        for _ in range(max(3, min(11, self.timing.max_repeat))):
            time.sleep(0.02)
            cold += bandwidth.fork_join(nt, 1, 1)
        self.progress.step(f"threshold fork/join threads={nt}")
        out = {"threads": nt, "fork_join_s": _median(fork), "fork_join_samples": fork,
               "fork_join_cold_s": _median(cold), "fork_join_cold_samples": cold,
               "current": optcore.get_parallel_threshold(), "kernels": []}
        for kernel in [k for k in self.kernels if k.call != "grads"]:
            inputs = make_inputs(kernel, self.threshold_sizes, np.float32, seed=2)
            single, parallel = [], []
            for i, n in enumerate(self.threshold_sizes):
                fn = make_call(kernel, "optcore", {b: [a[i]] for b, a in inputs.items()})
                samples = measure_side_by_side(
                    {"single": _with_threads(fn, 1, None),
                     "parallel": _with_threads(fn, nt, 0)}, self.timing)
                single.append(_median(samples["single"]))
                parallel.append(_median(samples["parallel"]))
                self.progress.step(f"threshold {kernel.name} n={n}")
            out["kernels"].append({
                "kernel": kernel.name, "sizes": list(self.threshold_sizes),
                "single_s": single, "parallel_s": parallel,
                "crossover": crossover(self.threshold_sizes, single, parallel)})
        out["recommended"] = recommend_threshold(
            self.threshold_sizes, [(k["single_s"], k["parallel_s"]) for k in out["kernels"]])
        self.results["threshold"] = out


def _with_threads(fn, threads, threshold):
    """A timed callable running ``fn`` with ``threads`` threads and, unless
    None, the parallel threshold set to ``threshold`` (restored after)."""
    inner = timer(fn)

    def timed(number):
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


THRESHOLD_SIZES = tuple(sorted({int(2 ** (k / 2)) // 16 * 16 for k in range(20, 37)}))
QUICK_THRESHOLD_SIZES = tuple(2 ** k for k in range(10, 19))


def crossover(sizes, single, parallel, share=0.8):
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


def recommend_threshold(sizes, timings):
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


def transformer_sizes(d=384, layers=6, vocab=8192, context=256):
    """Parameter sizes of a small GPT-style transformer (the "mix" case):
    embeddings, then per layer two layer norms, attention (qkv, projection) and
    an MLP (4x), each weight with its bias."""
    sizes = [vocab * d, context * d]
    for _ in range(layers):
        sizes += [d, d, d * 3 * d, 3 * d, d * d, d, d, d, d * 4 * d, 4 * d, 4 * d * d, d]
    sizes += [d, d]
    return sizes


# ---- output ----------------------------------------------------------------------

MULTI_CASES = (
    ("100x1024", [1024] * 100, "100 tensors x 1024"),
    ("mix", transformer_sizes(), "a GPT-style transformer: 6 layers, d=384, vocab 8192"),
)
QUICK_MULTI_CASES = (
    MULTI_CASES[0],
    ("mix", transformer_sizes(d=256, layers=4, vocab=4096, context=128),
     "a GPT-style transformer: 4 layers, d=256, vocab 4096"),
)


def _pow2(n):
    k = math.log2(n) if n > 0 else -1
    return f"2^{int(k)}" if k == int(k) else str(n)


def _fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.2f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _fmt_x(v):
    return "-" if v is None else f"{v:.2f}x"


class MarkdownOut:
    """A stream wrapper under which the report's tables come out as Markdown."""
    markdown = True

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        self.stream.write(text)


def _table(headers, rows, out):
    if getattr(out, "markdown", False):
        out.write("\n| " + " | ".join(str(h) for h in headers) + " |\n|"
                  + "|".join("---:" for _ in headers) + "|\n")
        for r in rows:
            out.write("| " + " | ".join(str(c) for c in r) + " |\n")
        out.write("\n")
        return
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = "  ".join(str(h).rjust(w) for h, w in zip(headers, widths))
    out.write(line + "\n" + "-" * len(line) + "\n")
    for r in rows:
        out.write("  ".join(str(c).rjust(w) for c, w in zip(r, widths)) + "\n")


_COMPARED = (("reference", "x ref"), ("torch", "x torch"),
             ("torch-foreach", "x foreach"), ("torch-fused", "x fused"),
             ("deepspeed", "x deepspeed"))


def _kernel_rows(rows, first_col):
    out = []
    for r in rows:
        t = r["median_s"].get("optcore")
        out.append([first_col(r), r["threads"], _fmt_time(t),
                    f"{r['gbs'].get('optcore', 0):.1f}",
                    f"{r['pct_ceiling'].get('optcore', 0):.0f}%",
                    f"{r['ceiling_gbs']:.1f}" if r["ceiling_gbs"] else "-"]
                   + [_fmt_x(r["speedup"].get(k)) for k, _ in _COMPARED])
    return out


def print_report(results, kernels, out=None):
    out = sys.stdout if out is None else out
    m = results["machine"]
    out.write(f"optcore {m['optcore']} bench: {m['cpu']}, {m['cores']} cores, "
              f"{m.get('memory_gib', '?')} GiB; kernels variant {m['variant']}, "
              f"OpenMP {'on' if m['openmp'] else 'off'}, parallel threshold "
              f"{m['parallel_threshold']}; OMP_PROC_BIND={m.get('omp_proc_bind')}, "
              f"OMP_PLACES={m.get('omp_places')}; numpy {m['numpy']}"
              + (f", torch {m['torch']}" if "torch" in m else ", torch not installed")
              + "\n")
    out.write("Times are medians per call; GB/s counts each kernel's bytes per "
              "element; % ceil is the native bandwidth kernel with the same traffic "
              "(best of 1..threads, measured side by side) over the kernel's time; "
              "N x = other's time / optcore's.\n")
    headers = ["n", "thr", "optcore", "GB/s", "% ceil", "ceil GB/s"] + \
        [h for _, h in _COMPARED]
    by_kernel = {k.name: k for k in kernels}
    for kernel in kernels:
        for dtype in ("float32", "float64"):
            rows = [r for r in results["kernels"]
                    if r["kernel"] == kernel.name and r["dtype"] == dtype]
            if not rows:
                continue
            out.write(f"\n{kernel.name} ({kernel.func}), {dtype}: {kernel.describe()}\n")
            _table(headers, _kernel_rows(rows, lambda r: _pow2(r["n"])), out)
    if results["multi"]:
        out.write("\nmulti-tensor: one call over all tensors of a case\n")
        for c, t, n, about in sorted({(r["case"], r["tensors"], r["n"], r["about"])
                                      for r in results["multi"]}):
            out.write(f"  {c}: {about}; {t} tensors, {n / 1e6:.2f} M elements\n")
        rows = results["multi"]
        _table(["kernel / dtype / case"] + headers[1:],
               _kernel_rows(rows, lambda r: f"{r['kernel']} {r['dtype']} {r['case']}"),
               out)
    if results["overhead"]:
        out.write("\nper-call cost, float32, one thread: a call at 1024 elements, at 1 "
                  "element, and the native pass over 1024 elements without Python\n")
        rows = []
        for r in results["overhead"]:
            med = r["median_s"]
            rows.append([r["kernel"], _fmt_time(med.get("optcore")),
                         _fmt_time(r["optcore_n1_s"]), _fmt_time(r["native_pass_s"])]
                        + [_fmt_time(med.get(k)) for k, _ in _COMPARED])
        _table(["kernel", "optcore n=1024", "optcore n=1", "native pass"]
               + [k for k, _ in _COMPARED], rows, out)
    th = results["threshold"]
    if th:
        out.write(f"\nsingle-thread threshold: an empty OpenMP region of {th['threads']} "
                  f"threads costs {_fmt_time(th['fork_join_s'])} back to back, "
                  f"{_fmt_time(th['fork_join_cold_s'])} after 20 ms idle; time per "
                  f"call, float32, 1 thread / {th['threads']} threads (forced parallel)\n")
        sizes = th["kernels"][0]["sizes"] if th["kernels"] else []
        rows = []
        for i, n in enumerate(sizes):
            row = [n]
            for k in th["kernels"]:
                row.append(f"{_fmt_time(k['single_s'][i])} / "
                           f"{_fmt_time(k['parallel_s'][i])}")
            rows.append(row)
        _table(["n"] + [k["kernel"] for k in th["kernels"]], rows, out)
        for k in th["kernels"]:
            out.write(f"  {k['kernel']}: {th['threads']} threads win from n = "
                      f"{k['crossover']}\n")
        out.write(f"  threshold losing least over all of them: {th['recommended']} "
                  f"(current: {th['current']})\n")
    del by_kernel


def _find(rows, **want):
    for r in rows:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def scorecard(results):
    """The performance goals, checked against this run's medians: a list of
    (goal, measured, met) where met is True/False (None: not measured)."""
    rows, tmax = results["kernels"], max([r["threads"] for r in results["kernels"]] or [1])
    out = []

    def pct(r, dtype_ok=True):
        return r["pct_ceiling"].get("optcore") if r else None

    for n in (2 ** 24, 2 ** 26):
        r = _find(rows, kernel="adam", dtype="float32", n=n, threads=tmax)
        if r:
            out.append((f"adam f32 2^{n.bit_length() - 1}: >= 90% of ceiling",
                        f"{pct(r):.0f}%", pct(r) >= 90))
            fused = r["speedup"].get("torch-fused")
            out.append((f"adam f32 2^{n.bit_length() - 1}: >= 1.15x torch fused",
                        _fmt_x(fused), None if fused is None else fused >= 1.15))
            ref = r["speedup"].get("reference")
            out.append((f"adam f32 2^{n.bit_length() - 1}: >= 8x reference",
                        _fmt_x(ref), ref >= 8))
        for name in ("sgd_momentum", "mse_loss_grad"):
            r = _find(rows, kernel=name, dtype="float32", n=n, threads=tmax)
            if r:
                out.append((f"{name} f32 2^{n.bit_length() - 1}: >= 90% of ceiling",
                            f"{pct(r):.0f}%", pct(r) >= 90))
        for name in ("adam", "sgd_momentum", "mse_loss_grad"):
            r32 = _find(rows, kernel=name, dtype="float32", n=n, threads=tmax)
            r64 = _find(rows, kernel=name, dtype="float64", n=n, threads=tmax)
            if r32 and r64:
                a, b = pct(r32), pct(r64)
                out.append((f"{name} f64 2^{n.bit_length() - 1}: % of ceiling within 10% "
                            f"of f32's", f"{b:.0f}% vs {a:.0f}%", b >= 0.9 * a))
    for n in (2 ** 16, 2 ** 20):
        r = _find(rows, kernel="adam", dtype="float32", n=n, threads=tmax)
        fused = r["speedup"].get("torch-fused") if r else None
        if r:
            out.append((f"adam f32 2^{n.bit_length() - 1}: >= 1.5x torch fused",
                        _fmt_x(fused), None if fused is None else fused >= 1.5))
    r = _find(results["overhead"], kernel="adam")
    if r:
        t = r["median_s"]["optcore"]
        out.append(("adam f32 1024 elements, one call: <= 2 us", _fmt_time(t), t <= 2e-6))
    r = _find(results["multi"], kernel="adam", dtype="float32", case="100x1024",
              threads=tmax)
    if r:
        t = r["median_s"]["optcore"]
        out.append(("adam f32 100 x 1024, one multi-tensor call: <= 100 us",
                    _fmt_time(t), t <= 100e-6))
    r1 = _find(rows, kernel="adam", dtype="float32", n=2 ** 20, threads=1)
    r2 = _find(rows, kernel="adam", dtype="float32", n=2 ** 20, threads=tmax)
    if r1 and r2 and tmax > 1:
        x = r1["median_s"]["optcore"] / r2["median_s"]["optcore"]
        out.append((f"adam f32 2^20: {tmax} threads >= 1.7x one thread", _fmt_x(x),
                    x >= 1.7))
    return out


def print_scorecard(results, out=None):
    out = sys.stdout if out is None else out
    card = scorecard(results)
    if not card:
        return
    out.write("\ngoals (medians of this run)\n")
    _table(["goal", "measured", "met"],
           [[g, m, {True: "yes", False: "NO", None: "-"}[ok]] for g, m, ok in card], out)


def write_plot(results, kernels, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["kernels"]
    if not rows:
        return
    dtype = "float32" if any(r["dtype"] == "float32" for r in rows) else "float64"
    names = [k.name for k in kernels if any(r["kernel"] == k.name for r in rows)]
    ncols = min(3, len(names))
    nrows = (len(names) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4 * nrows),
                             squeeze=False)
    tmax = max(r["threads"] for r in rows)
    for ax, name in zip(axes.flat, names):
        sel = [r for r in rows if r["kernel"] == name and r["dtype"] == dtype]
        for label, threads, key, style in (
                ("ceiling", tmax, "ceiling", "k--"),
                (f"optcore {tmax} thr", tmax, "optcore", "C0-o"),
                ("optcore 1 thr", 1, "optcore", "C0:"),
                ("reference", tmax, "reference", "C1-"),
                ("torch foreach=False", tmax, "torch", "C2-"),
                ("torch foreach=True", tmax, "torch-foreach", "C3-"),
                ("torch fused=True", tmax, "torch-fused", "C4-"),
                ("DeepSpeedCPUAdam", tmax, "deepspeed", "C5-")):
            pts = [r for r in sel if r["threads"] == threads]
            if key == "ceiling":
                xy = [(r["n"], r["ceiling_gbs"]) for r in pts if r["ceiling_gbs"]]
            else:
                xy = [(r["n"], r["gbs"][key]) for r in pts if key in r["gbs"]]
            if xy:
                xs, ys = zip(*xy)
                ax.plot(xs, ys, style, label=label, markersize=3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{name} ({dtype})")
        ax.set_xlabel("elements")
        ax.set_ylabel("effective GB/s")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    m = results["machine"]
    fig.suptitle(f"optcore bench: {m['cpu']}, {m['cores']} cores, variant {m['variant']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- command line ------------------------------------------------------------------

def _int_list(text):
    out = []
    for part in text.split(","):
        part = part.strip()
        if part.startswith("2**") or part.startswith("2^"):
            out.append(2 ** int(part[3 if part.startswith("2**") else 2:]))
        elif part:
            out.append(int(part))
    return out


SECTIONS = ("kernels", "multi", "overhead", "threshold")


def add_parser(sub):
    p = sub.add_parser(
        "bench", help="measure the kernels against the bandwidth ceiling, the "
        "reference and torch.optim",
        description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"sizes {', '.join(_pow2(n) for n in QUICK_SIZES)}, shorter "
                   "measurements (under two minutes)")
    p.add_argument("--sizes", type=_int_list,
                   help="comma-separated element counts (2**k accepted); default "
                   "2**10..2**26")
    p.add_argument("--kernels", help="comma-separated kernel names (default: all of "
                   + ", ".join(k.name for k in KERNELS) + " that optcore has)")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--threads", type=_int_list,
                   help="thread counts (default: 1 and all)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"any of {', '.join(SECTIONS)}")
    p.add_argument("--budget", type=float,
                   help="seconds of samples per measurement (default 0.25, quick 0.03)")
    p.add_argument("--no-torch", action="store_true", help="skip torch even if installed")
    p.add_argument("--json", metavar="FILE", help="write every measurement as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="GB/s against size per implementation (needs matplotlib)")
    p.add_argument("--markdown", metavar="FILE", help="also write the report as Markdown")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(run=run)
    return p


def run(args):
    kernels = available_kernels()
    if args.kernels:
        wanted = [k.strip() for k in args.kernels.split(",") if k.strip()]
        known = {k.name: k for k in kernels}
        missing = [w for w in wanted if w not in known]
        if missing:
            print(f"bench: unknown or unavailable kernel(s) {missing}; available: "
                  f"{sorted(known)}", file=sys.stderr)
            return 2
        kernels = [known[w] for w in wanted]
    sizes = args.sizes or (list(QUICK_SIZES) if args.quick else list(FULL_SIZES))
    dtypes = [np.dtype(d.strip()).type for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in (np.float32, np.float64):
            print(f"bench: dtype {np.dtype(d).name} is not float32/float64",
                  file=sys.stderr)
            return 2
    all_threads = optcore.get_num_threads()
    threads = args.threads or sorted({1, all_threads})
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        print(f"bench: unknown section(s) {bad}; known: {list(SECTIONS)}",
              file=sys.stderr)
        return 2
    timing = Timing()
    if args.quick:
        timing = Timing(budget=0.03, sample=0.001, min_repeat=3, max_repeat=11)
    if args.budget is not None:
        timing.budget = args.budget
    torch = None if args.no_torch else import_torch()
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("bench: --plot needs matplotlib (pip install 'optcore[plot]')",
                  file=sys.stderr)
            return 2
    bench = Bench(kernels, sizes, dtypes, threads, timing, torch, sections,
                  progress=not args.quiet,
                  multi_cases=QUICK_MULTI_CASES if args.quick else MULTI_CASES,
                  threshold_sizes=QUICK_THRESHOLD_SIZES if args.quick else THRESHOLD_SIZES,
                  # quick: multi-tensor calls in float32 only
                  multi_dtypes=dtypes[:1] if args.quick else None)
    started = time.perf_counter()
    results = bench.run()
    results["config"] = {"sizes": sizes, "dtypes": [np.dtype(d).name for d in dtypes],
                         "threads": threads, "sections": sections,
                         "kernels": [k.name for k in kernels],
                         "budget_s": timing.budget, "quick": bool(args.quick),
                         "seconds": time.perf_counter() - started,
                         "command": " ".join(["python -m optcore"] + sys.argv[1:])}
    print_report(results, kernels)
    print_scorecard(results)
    if args.markdown:
        with open(args.markdown, "w") as f:
            print_report(results, kernels, MarkdownOut(f))
            print_scorecard(results, MarkdownOut(f))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, separators=(",", ":"))
    if args.plot:
        write_plot(results, kernels, args.plot)
    return 0
