"""Per-call cost of an Adam step on 1024 float32 elements: from Cython
(cimport, the examples/cython module), from numba (optcore.numba), and through
the Python API. Medians over repeated timed batches, one run.

    python benchmarks/bench_embedding.py
"""

import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import optcore

N = 1024
CALLS = 20_000
REPEATS = 15
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _build_cython_example(tmp):
    for name in ("adam_loop.pyx", "setup.py"):
        shutil.copy(EXAMPLES / "cython" / name, Path(tmp) / name)
    env = dict(os.environ, PYTHONPATH=optcore.get_include())
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp,
                   env=env, check=True, capture_output=True)
    so = next(Path(tmp).glob("adam_loop*.so"))
    spec = importlib.util.spec_from_file_location("adam_loop", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _median_per_call(run):
    run()  # warm-up (and numba compilation)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) / CALLS)
    return statistics.median(times)


def main():
    rng = np.random.default_rng(0)
    p, g, m = (rng.standard_normal(N).astype(np.float32) for _ in range(3))
    v = rng.uniform(0.1, 1.0, N).astype(np.float32)
    results = {}

    def python_api():
        step = optcore.adam_step
        for s in range(1, CALLS + 1):
            step(p, g, m, v, step=s)

    results["Python API (optcore.adam_step)"] = _median_per_call(python_api)

    with tempfile.TemporaryDirectory() as tmp:
        adam_loop = _build_cython_example(tmp)
        results["Cython (cimport, nogil loop)"] = _median_per_call(
            lambda: adam_loop.adam_repeat(p, g, m, v, CALLS))

    try:
        import numba

        from optcore.numba import adam_step_f32
    except ImportError:
        numba = None
    if numba is not None:
        @numba.njit
        def numba_loop(p, g, m, v, calls):
            for s in range(1, calls + 1):
                adam_step_f32(p.ctypes, g.ctypes, m.ctypes, v.ctypes, v.ctypes, p.size, s,
                              1e-3, 0.9, 0.999, 1e-8, 0.0, 0, 0, 0, 1)

        results["numba (@njit, optcore.numba)"] = _median_per_call(
            lambda: numba_loop(p, g, m, v, CALLS))

    print(f"Adam step, {N} float32 elements, median per call ({REPEATS} x {CALLS} calls)")
    for name, t in results.items():
        print(f"  {name:34s} {t * 1e6:8.3f} us")


if __name__ == "__main__":
    main()
