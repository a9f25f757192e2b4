"""Time two optcore builds side by side: the same kernels, sizes and thread
count, each build in its own process, the processes taking turns so that both
see the same machine load. Prints the median time per call of each build and
their ratio (new / old; 1.00 is unchanged).

    python benchmarks/compare_builds.py --old /path/to/site-packages --new src

``--old`` and ``--new`` are folders that contain an ``optcore`` package
(an installed one, or an in-place build under ``src``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

# (kernel, state buffers) timed; sizes and dtype from the command line.
CASES = {
    "adam_step": 2, "adamw_step": 2, "sgd_step": 1, "rmsprop_step": 1,
    "adagrad_step": 1, "adadelta_step": 2, "adamax_step": 2, "nadam_step": 2,
    "radam_step": 2, "lion_step": 1, "lamb_step": 2,
}

_CHILD = r"""
import json, sys, time
import numpy as np
import optcore
cases, sizes, dtype, threads, budget = json.loads(sys.argv[1])
optcore.set_num_threads(threads)
out = {}
for name, nstate in cases.items():
    fn = getattr(optcore, name)
    for n in sizes:
        rng = np.random.default_rng(0)
        p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
        st = [np.abs(rng.standard_normal(n)).astype(dtype) for _ in range(nstate)]
        kw = dict(step=1)
        if name == "sgd_step":
            kw.update(lr=0.01, momentum=0.9)
        if name == "nadam_step":
            kw.update(mu_product=1.0)
        call = lambda: fn(p, g, *st, **kw)
        call()
        t0 = time.perf_counter()
        call()
        reps = max(1, int(budget / max(time.perf_counter() - t0, 1e-7)))
        samples = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(reps):
                call()
            samples.append((time.perf_counter() - t0) / reps)
        out[f"{name}/{n}"] = sorted(samples)[len(samples) // 2]
print(json.dumps(out))
"""


def run(folder: str, config: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(folder))
    done = subprocess.run([sys.executable, "-c", _CHILD, config], env=env, cwd="/",
                          capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="folder holding the old optcore")
    parser.add_argument("--new", required=True, help="folder holding the new optcore")
    parser.add_argument("--sizes", default="1024,65536,1048576,16777216")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="turns of each build")
    parser.add_argument("--budget", type=float, default=0.02,
                        help="seconds per sample")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    config = json.dumps([CASES, sizes, args.dtype, args.threads, args.budget])
    times: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for _ in range(args.rounds):
        for which, folder in (("old", args.old), ("new", args.new)):
            for key, t in run(folder, config).items():
                times[which].setdefault(key, []).append(t)
    print(f"{'kernel/size':28s} {'old':>12s} {'new':>12s} {'new/old':>8s}")
    ratios = []
    for key in times["old"]:
        old = statistics.median(times["old"][key])
        new = statistics.median(times["new"][key])
        ratios.append(new / old)
        print(f"{key:28s} {old * 1e6:10.2f}us {new * 1e6:10.2f}us {new / old:8.3f}")
    print(f"median ratio new/old over {len(ratios)} rows: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
