"""``--plot``: effective GB/s against size, one panel per kernel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optcore._typing import JSONDict, StrPath
    from optcore.cli.bench.cases import Kernel

# (label, threads: "max" or 1, implementation or "ceiling", line style)
CURVES = (
    ("ceiling", "max", "ceiling", "k--"),
    ("optcore {tmax} thr", "max", "optcore", "C0-o"),
    ("optcore 1 thr", 1, "optcore", "C0:"),
    ("reference", "max", "reference", "C1-"),
    ("torch foreach=False", "max", "torch", "C2-"),
    ("torch foreach=True", "max", "torch-foreach", "C3-"),
    ("torch fused=True", "max", "torch-fused", "C4-"),
    ("DeepSpeedCPUAdam", "max", "deepspeed", "C5-"),
)


def write_plot(results: JSONDict, kernels: Sequence[Kernel], path: StrPath) -> None:
    """One panel per kernel (float32 when measured): GB/s of each
    implementation and of the ceiling; disturbed rows are drawn hollow."""
    from matplotlib.figure import Figure

    rows = results["kernels"]
    if not rows:
        return
    dtype = "float32" if any(r["dtype"] == "float32" for r in rows) else "float64"
    names = [k.name for k in kernels if any(r["kernel"] == k.name for r in rows)]
    ncols = min(3, len(names))
    nrows = (len(names) + ncols - 1) // ncols
    # constrained layout places the figure title above the panels' titles
    fig = Figure(figsize=(5.5 * ncols, 4 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    tmax = max(r["threads"] for r in rows)
    for ax, name in zip(axes.flat, names):
        sel = [r for r in rows if r["kernel"] == name and r["dtype"] == dtype]
        for label, threads, key, style in CURVES:
            pts = [r for r in sel if r["threads"] == (tmax if threads == "max" else threads)]
            if key == "ceiling":
                xy = [(r["n"], r["ceiling_gbs"]) for r in pts if r["ceiling_gbs"]]
            else:
                xy = [(r["n"], r["gbs"][key]) for r in pts if key in r["gbs"]]
            if xy:
                xs, ys = zip(*xy)
                ax.plot(xs, ys, style, label=label.format(tmax=tmax), markersize=3)
            if key == "optcore" and threads == "max":
                bad = [(r["n"], r["gbs"][key]) for r in pts
                       if key in r["gbs"] and not r.get("reliable", True)]
                if bad:
                    xs, ys = zip(*bad)
                    ax.plot(xs, ys, "o", mfc="white", mec="C0", markersize=6,
                            label="disturbed (?)")
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
    fig.savefig(path, dpi=110)
