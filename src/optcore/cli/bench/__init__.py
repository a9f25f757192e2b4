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
alike; results are medians. A row whose samples spread, whose ceiling moved
while it was measured, or that seems to beat the ceiling is re-measured and, if
it stays so, marked ``?`` (``"reliable": false`` and its ``"flags"`` in the JSON).

Modules: ``cases`` (the case table, from the kernel spec), ``timing``
(sampling and the interference checks), ``runner`` (the sections), ``report``,
``goals`` (the scorecard's goals as data), ``plot``, ``command`` (the options).
"""

from optcore.cli.bench.cases import (FULL_SIZES, IMPLS, KERNELS, MULTI_CASES,
                                     QUICK_MULTI_CASES, QUICK_SIZES,
                                     QUICK_THRESHOLD_SIZES, STEP, THRESHOLD_SIZES,
                                     TORCH_IMPLS, Kernel, available_kernels,
                                     import_torch, make_call, make_inputs,
                                     random_array, step_case, transformer_sizes)
from optcore.cli.bench.command import SECTIONS, add_parser, run
from optcore.cli.bench.goals import GOALS, Goal, print_scorecard, scorecard
from optcore.cli.bench.plot import write_plot
from optcore.cli.bench.report import MarkdownOut, print_report, write_json
from optcore.cli.bench.runner import (Bench, crossover, machine_info, pow2,
                                      recommend_threshold)
from optcore.cli.bench.timing import (CEILING_LIMIT, DRIFT_LIMIT, SPREAD_LIMIT, Progress,
                                      descheduled,
                                      Threads, Timing, disturbances, drift, measure,
                                      measure_side_by_side, measure_trusted,
                                      pattern_timer, spread, timer)


__all__ = [
    "FULL_SIZES", "IMPLS", "KERNELS", "MULTI_CASES", "QUICK_MULTI_CASES", "QUICK_SIZES",
    "QUICK_THRESHOLD_SIZES", "STEP", "THRESHOLD_SIZES", "TORCH_IMPLS", "Kernel",
    "available_kernels", "import_torch", "make_call", "make_inputs", "random_array",
    "step_case", "transformer_sizes", "SECTIONS", "add_parser", "run", "GOALS", "Goal",
    "print_scorecard", "scorecard", "write_plot", "MarkdownOut", "print_report",
    "write_json", "Bench", "crossover", "machine_info", "pow2", "recommend_threshold",
    "CEILING_LIMIT", "DRIFT_LIMIT", "SPREAD_LIMIT", "Progress", "Threads", "Timing",
    "descheduled", "disturbances", "drift", "measure", "measure_side_by_side", "measure_trusted",
    "pattern_timer", "spread", "timer",
]
