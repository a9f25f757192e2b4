"""``python -m optcore bench``'s options and what the command does with them."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

import optcore
from optcore.cli import _args
from optcore.cli.bench.cases import (KERNELS, MULTI_CASES, QUICK_MULTI_CASES,
                                     QUICK_SIZES, QUICK_THRESHOLD_SIZES, FULL_SIZES,
                                     THRESHOLD_SIZES, available_kernels, import_torch)
from optcore.cli.bench.goals import print_scorecard
from optcore.cli.bench.report import MarkdownOut, print_report, write_json
from optcore.cli.bench.runner import Bench, pow2
from optcore.cli.bench import timing as timing_mod
from optcore.cli.bench.timing import Timing

SECTIONS = ("kernels", "multi", "overhead", "threshold", "busy", "steps", "precision")
DTYPES = ("float32", "float64")

#: --quick: two sizes (those of the scorecard's mid-size goals), short
#: measurements, one re-measurement of a disturbed row (5 s of them at most),
#: multi-tensor calls in float32 at the largest thread count only.
QUICK_TIMING: dict[str, Any] = dict(
budget=0.01, sample=0.0005, min_repeat=5, max_repeat=5,
                    warmup=0.005, retries=1, retry_budget=5.0)

DESCRIPTION = ("Measure optcore's kernels against the machine's bandwidth ceiling, "
               "the NumPy reference, torch.optim and DeepSpeed.")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="measure the kernels against the bandwidth ceiling, the "
        "reference and torch.optim", description=DESCRIPTION)
    p.add_argument("--quick", action="store_true",
                   help=f"sizes {', '.join(pow2(n) for n in QUICK_SIZES)}, shorter "
                   "measurements (under two minutes)")
    p.add_argument("--sizes", type=_args.int_list("sizes"), metavar="N[,N...]",
                   help="comma-separated element counts >= 1 (2**k accepted); default "
                   "2**10..2**26")
    p.add_argument("--kernels", metavar="NAME[,NAME...]",
                   type=_args.name_list("kernel", lambda: [k.name for k in
                                                           available_kernels()]),
                   help="comma-separated kernel names (default: all of "
                   + ", ".join(k.name for k in KERNELS) + " that optcore has)")
    p.add_argument("--dtypes", metavar="DTYPE[,DTYPE...]", default=list(DTYPES),
                   type=_args.name_list("dtype", lambda: DTYPES),
                   help="float32 and/or float64 (default both)")
    p.add_argument("--threads", type=_args.int_list("thread counts"), metavar="T[,T...]",
                   help="thread counts >= 1 (default: 1 and all)")
    p.add_argument("--sections", metavar="NAME[,NAME...]", default=list(SECTIONS),
                   type=_args.name_list("section", lambda: SECTIONS),
                   help=f"any of {', '.join(SECTIONS)} (default all)")
    p.add_argument("--budget", type=_args.positive_float, metavar="SECONDS",
                   help="seconds of samples per measurement, > 0 (default 0.25, "
                   f"quick {QUICK_TIMING['budget']})")
    p.add_argument("--no-torch", action="store_true", help="skip torch even if installed")
    p.add_argument("--json", metavar="FILE", type=_args.output_file(),
                   help="write every measurement as JSON")
    p.add_argument("--plot", metavar="FILE.png", type=_args.output_file(".png"),
                   help="GB/s against size per implementation (needs matplotlib; "
                   ".png is appended to a name without it)")
    p.add_argument("--markdown", metavar="FILE", type=_args.output_file(),
                   help="also write the report as Markdown")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    known = {k.name: k for k in available_kernels()}
    kernels = [known[w] for w in args.kernels] if args.kernels else list(known.values())
    sizes = args.sizes or (list(QUICK_SIZES) if args.quick else list(FULL_SIZES))
    dtypes = [np.dtype(d).type for d in dict.fromkeys(args.dtypes)]
    threads = args.threads or sorted({1, optcore.get_num_threads()})
    sections = list(dict.fromkeys(args.sections))
    timing = Timing(**QUICK_TIMING) if args.quick else Timing()
    if args.budget is not None:
        timing.budget = args.budget
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("optcore bench: --plot needs matplotlib (pip install 'optcore[plot]')",
                  file=sys.stderr)
            return 2
    torch = None if args.no_torch else import_torch()
    bench = Bench(kernels, sizes, dtypes, threads, timing, torch, sections,
                  progress=not args.quiet,
                  multi_cases=QUICK_MULTI_CASES if args.quick else MULTI_CASES,
                  threshold_sizes=QUICK_THRESHOLD_SIZES if args.quick else THRESHOLD_SIZES,
                  multi_dtypes=dtypes[:1] if args.quick else None,
                  multi_threads=[max(threads)] if args.quick else None,
                  precision_size=2 ** 20 if args.quick else 2 ** 24)
    started = time.perf_counter()
    results = bench.run()
    results["config"] = {"sizes": sizes, "dtypes": [np.dtype(d).name for d in dtypes],
                         "threads": threads, "sections": sections,
                         "kernels": [k.name for k in kernels],
                         "budget_s": timing.budget, "quick": bool(args.quick),
                         "retries": timing.retries,
                         "retry_seconds": bench.retry_seconds,
                         "disturbed_rows": sum(not r["reliable"] for s in
                                               ("kernels", "multi", "overhead")
                                               for r in results[s]),
                         "interference": {"spread_limit": timing_mod.SPREAD_LIMIT,
                                          "drift_limit": timing_mod.DRIFT_LIMIT,
                                          "ceiling_limit": timing_mod.CEILING_LIMIT},
                         "seconds": time.perf_counter() - started,
                         "command": " ".join(["python -m optcore"] + sys.argv[1:])}
    print_report(results, kernels)
    print_scorecard(results)
    if args.markdown:
        with open(args.markdown, "w") as f:
            print_report(results, kernels, MarkdownOut(f))
            print_scorecard(results, MarkdownOut(f))
        print(f"\nMarkdown report written to {args.markdown}")
    if args.json:
        write_json(results, args.json)
        print(f"measurements written to {args.json}")
    if args.plot:
        from optcore.cli.bench.plot import write_plot
        write_plot(results, kernels, args.plot)
        print(f"plot written to {args.plot}")
    return 0
