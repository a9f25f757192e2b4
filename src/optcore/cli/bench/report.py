"""The bench's report: text (or Markdown) tables of every section, and the
JSON file of every measurement."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from optcore.cli.bench.runner import pow2
from optcore.cli.bench.timing import CEILING_LIMIT

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from optcore._typing import JSONDict, StrPath
    from optcore.cli.bench.cases import Kernel


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.2f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


class MarkdownOut:
    """A stream wrapper under which the report's tables come out as Markdown."""
    markdown = True

    def __init__(self, stream: SupportsWrite[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        self.stream.write(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          out: SupportsWrite[str]) -> None:
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


COMPARED = (("reference", "x ref"), ("torch", "x torch"),
            ("torch-foreach", "x foreach"), ("torch-fused", "x fused"),
            ("deepspeed", "x deepspeed"))


def fmt_pct(row: JSONDict) -> str:
    """optcore's % of the ceiling; "?" marks a disturbed row, and a figure
    above CEILING_LIMIT is never printed as if it were one."""
    pct = row["pct_ceiling"].get("optcore")
    if pct is None:
        return "-"
    reliable = row.get("reliable", True)
    if pct > 100 * CEILING_LIMIT:
        return f">{100 * CEILING_LIMIT:.0f}%?"
    return f"{pct:.0f}%" + ("" if reliable else "?")


def _kernel_rows(rows: Iterable[JSONDict],
                 first_col: Callable[[JSONDict], str]) -> list[list[object]]:
    out: list[list[object]] = []
    for r in rows:
        t = r["median_s"].get("optcore")
        out.append([first_col(r), r["threads"], fmt_time(t),
                    f"{r['gbs'].get('optcore', 0):.1f}", fmt_pct(r),
                    f"{r['ceiling_gbs']:.1f}" if r["ceiling_gbs"] else "-"]
                   + [fmt_x(r["speedup"].get(k)) for k, _ in COMPARED])
    return out


def footnote(rows: Iterable[JSONDict], out: SupportsWrite[str]) -> None:
    """The note under a table with disturbed rows."""
    bad = [r for r in rows if not r.get("reliable", True)]
    if not bad:
        return
    most = max(r.get("attempts", 1) for r in bad)
    kinds = sorted({f.split(":")[0] for r in bad for f in r.get("flags", [])})
    out.write(f"  ? disturbed: {len(bad)} row(s) unreliable after up to {most} "
              f"measurement(s) ({', '.join(kinds)}); see \"flags\" in the JSON\n")


def print_report(results: JSONDict, kernels: Iterable[Kernel],
                 out: SupportsWrite[str] | None = None) -> None:
    out = sys.stdout if out is None else out
    m = results["machine"]
    out.write(f"optcore {m['optcore']} bench: {m['cpu']}, {m['cores']} cores, "
              f"{m.get('memory_gib', '?')} GiB; kernels variant {m['variant']}, "
              f"OpenMP {'on' if m['openmp'] else 'off'}, parallel threshold "
              f"{m['parallel_threshold']}; OMP_PROC_BIND={m.get('omp_proc_bind')}, "
              f"OMP_PLACES={m.get('omp_places')}; numpy {m['numpy']}"
              + (f", torch {m['torch']}" if "torch" in m else ", torch not installed")
              + "\n")
    load = m.get("load_average")
    if load and m.get("cores") and load[0] > m["cores"]:
        out.write(f"WARNING: the machine was loaded (load average {load[0]:.1f} on "
                  f"{m['cores']} cores when the run began): expect disturbed rows.\n")
    out.write("Times are medians per call; GB/s counts each kernel's bytes per "
              "element; % ceil is the native bandwidth kernel with the same traffic "
              "(best of 1..threads, measured side by side) over the kernel's time; "
              "N x = other's time / optcore's; ? marks a row disturbed by other load "
              "(spread repetitions, a ceiling that moved during the row, a parallel "
              "pass far slower than one thread's, or a figure above the ceiling), "
              "re-measured and still unreliable.\n")
    headers = ["n", "thr", "optcore", "GB/s", "% ceil", "ceil GB/s"] + \
        [h for _, h in COMPARED]
    for kernel in kernels:
        for dtype in ("float32", "float64"):
            rows = [r for r in results["kernels"]
                    if r["kernel"] == kernel.name and r["dtype"] == dtype]
            if not rows:
                continue
            out.write(f"\n{kernel.name} ({kernel.func}), {dtype}: {kernel.describe()}\n")
            table(headers, _kernel_rows(rows, lambda r: pow2(r["n"])), out)
            footnote(rows, out)
    if results["multi"]:
        out.write("\nmulti-tensor: one call over all tensors of a case\n")
        for c, t, n, about in sorted({(r["case"], r["tensors"], r["n"], r["about"])
                                      for r in results["multi"]}):
            out.write(f"  {c}: {about}; {t} tensors, {n / 1e6:.2f} M elements\n")
        rows = results["multi"]
        table(["kernel / dtype / case"] + headers[1:],
              _kernel_rows(rows, lambda r: f"{r['kernel']} {r['dtype']} {r['case']}"),
              out)
        footnote(rows, out)
    if results["overhead"]:
        out.write("\nper-call cost, float32, one thread: a call at 1024 elements, at 1 "
                  "element, and the native pass over 1024 elements without Python\n")
        rows = []
        for r in results["overhead"]:
            med = r["median_s"]
            flag = "" if r.get("reliable", True) else "?"
            rows.append([r["kernel"], fmt_time(med.get("optcore")) + flag,
                         fmt_time(r["optcore_n1_s"]), fmt_time(r["native_pass_s"])]
                        + [fmt_time(med.get(k)) for k, _ in COMPARED])
        table(["kernel", "optcore n=1024", "optcore n=1", "native pass"]
              + [k for k, _ in COMPARED], rows, out)
        footnote(results["overhead"], out)
    th = results["threshold"]
    if th:
        _print_threshold(th, out)
    if results.get("busy"):
        from optcore.cli.bench.busy import print_busy
        print_busy(results["busy"], out)
    if results.get("steps"):
        from optcore.cli.bench.steps import print_steps
        print_steps(results["steps"], out)
    if results.get("precision"):
        from optcore.cli.bench.precision import print_precision
        print_precision(results["precision"], out)


def _print_threshold(th: JSONDict, out: SupportsWrite[str]) -> None:
    out.write(f"\nsingle-thread threshold: an empty OpenMP region of {th['threads']} "
              f"threads costs {fmt_time(th['fork_join_s'])} back to back, "
              f"{fmt_time(th['fork_join_cold_s'])} after 20 ms idle; time per "
              f"call, float32, 1 thread / {th['threads']} threads (forced parallel)\n")
    sizes = th["kernels"][0]["sizes"] if th["kernels"] else []
    rows, disturbed = [], 0
    for i, n in enumerate(sizes):
        row = [n]
        for k in th["kernels"]:
            flag = "?" if k.get("flags") and k["flags"][i] else ""
            disturbed += bool(flag)
            row.append(f"{fmt_time(k['single_s'][i])} / "
                       f"{fmt_time(k['parallel_s'][i])}{flag}")
        rows.append(row)
    table(["n"] + [k["kernel"] for k in th["kernels"]], rows, out)
    if disturbed:
        out.write(f"  ? disturbed: {disturbed} parallel time(s) with spread repetitions "
                  "or a descheduled thread; see \"flags\" in the JSON\n")
    for k in th["kernels"]:
        out.write(f"  {k['kernel']}: {th['threads']} threads win from n = "
                  f"{k['crossover']}\n")
    out.write(f"  threshold losing least over all of them: {th['recommended']} "
              f"(current: {th['current']})\n")


def write_json(results: JSONDict, path: StrPath) -> None:
    with open(path, "w") as f:
        json.dump(results, f, separators=(",", ":"))
