"""Every measured figure in the docs comes from the output of the command shown
beside it.

Timings cannot be re-measured in a test (the machines are shared and noisy), so
the pages quote a recorded run whose whole output is committed under
benchmarks/results/, and these tests check the quotes against that output. The
deterministic figures (losses, drift from torch) are re-computed instead:
tests/test_doc_examples.py for the drift bounds, the demo test below for the
losses.
"""

import os
import pathlib
import platform
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"


def _table_rows(text):
    return [line for line in text.splitlines()
            if line.startswith("|") and not set(line) <= set("|-: ")]


def test_performance_tables_are_the_recorded_bench_output():
    page = (DOCS / "performance.md").read_text()
    recorded = (RESULTS / "bench.md").read_text().splitlines()
    header = recorded[0]
    assert header in page, "performance.md must quote the recorded run's header line"
    rows = _table_rows(page)
    assert len(rows) > 20
    # each quoted row is a row of the recorded report, in a table of the same
    # header (the line above the first quoted row of each table)
    missing = [row for row in rows if row not in recorded]
    assert not missing, "rows not in benchmarks/results/bench.md:\n" + "\n".join(missing)


def test_performance_prose_figures_are_in_the_tables():
    """Figures in the running text (not derived ratios, which say how they are
    derived) are ones the quoted tables show."""
    page = (DOCS / "performance.md").read_text()
    tables = "\n".join(_table_rows(page))
    prose = "\n".join(line for line in page.splitlines()
                      if not line.startswith(("|", "    ")) and "derived" not in line)
    figures = re.findall(r"\b\d+(?:\.\d+)?(?:%|x| us| ms)", prose.replace("×", "x"))
    assert figures
    absent = [f for f in figures if f not in tables]
    assert not absent, f"figures in performance.md's text but not in its tables: {absent}"


def test_embedding_costs_are_the_recorded_output():
    page = (DOCS / "embedding.md").read_text()
    recorded = (RESULTS / "bench_embedding.txt").read_text()
    quoted = re.findall(r"(\d+\.\d+) µs", page)
    assert len(quoted) == 3
    for figure in quoted:
        assert re.search(rf"\b{re.escape(figure)} us\b", recorded), (figure, recorded)


def test_demo_losses_are_the_commands_output():
    """The final losses in getting-started.md are the demo's (fixed seed: they
    do not depend on the machine); the times beside them are one run's."""
    page = (DOCS / "getting-started.md").read_text()
    quoted = re.findall(r"^\s+(linear|mlp)\s+(.+?)\s+(\d+)\s+(\S+e-\d+)\s+(\S+e-\d+)\s",
                        page, re.M)
    assert len(quoted) == 5
    # The MLP's matrix products are NumPy's (OpenBLAS), whose kernel depends
    # on the CPU: the page quotes OpenBLAS's AVX2 kernel, chosen here on x86-64.
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell")
    out = subprocess.run([sys.executable, "-m", "optcore", "demo"], capture_output=True,
                         text=True, check=True, timeout=600, env=env).stdout
    exact = platform.machine() in ("x86_64", "AMD64")
    for model, method, steps, ours, ref in quoted:
        line = re.search(rf"^\s*{model}\s+{re.escape(method)}\s+{steps}\s+(\S+)\s+(\S+)\s",
                         out, re.M)
        assert line, (model, method, out)
        got_ours, got_ref = line.groups()
        assert got_ours == got_ref, (model, method, line.groups())   # the same steps
        if exact or model == "linear":
            assert (got_ours, got_ref) == (ours, ref), (model, method, line.groups())
        else:
            assert float(got_ours) == pytest.approx(float(ours), rel=1e-2)


def test_distributed_step_tables_are_the_recorded_output():
    page = (DOCS / "distributed.md").read_text()
    section = page.split("## Performance", 1)[1].split("\n## ", 1)[0]
    recorded = [(RESULTS / name).read_text().splitlines()
                for name in ("distributed_step.txt", "distributed_step_50m.txt")]
    for lines in recorded:
        assert lines[0] in section, "distributed.md must quote each run's header line"
    assert "shared" in section and "medians" in section
    rows = _table_rows(section)
    assert len(rows) >= 10
    missing = [row for row in rows if not any(row in lines for lines in recorded)]
    assert not missing, ("rows not in benchmarks/results/distributed_step*.txt:\n"
                         + "\n".join(missing))


def test_performance_page_quotes_the_current_report():
    """The quoted tables are the ones benchmarks/quote_bench.py renders from the
    recorded report (run it after recording a new one)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import quote_bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    page = (DOCS / "performance.md").read_text()
    assert quote_bench.render(page, (RESULTS / "bench.md").read_text()) == page


def test_fsdp_step_table_is_the_recorded_output():
    page = (DOCS / "torch.md").read_text()
    section = page.split("## Distributed: FSDP2", 1)[1].split("\n## ", 1)[0]
    recorded = (RESULTS / "fsdp_step.txt").read_text().splitlines()
    assert recorded[0] in section, "torch.md must quote the recorded run's header line"
    assert "shared" in section and "median" in section
    rows = _table_rows(section)
    assert len(rows) == 4                        # the header and the three optimizers
    missing = [row for row in rows if row not in recorded]
    assert not missing, "rows not in benchmarks/results/fsdp_step.txt:\n" + "\n".join(missing)
    # figures in the running text are ones the quoted table shows
    prose = "\n".join(line for line in section.splitlines() if not line.startswith("|"))
    figures = re.findall(r"\b\d+\.\d+(?:x| ms)", prose)
    tables = "\n".join(rows)
    absent = [f for f in figures if f.removesuffix(" ms") not in tables]
    assert not absent, f"figures in torch.md's text but not in its table: {absent}"
