"""Every ```python block of the README and of docs/*.md runs as written.

A page is read as a tutorial: its blocks run in order in one namespace, in a
temporary working directory (examples may write files). A block that imports
an optional dependency (torch, numba) needs it: skipped when it is missing,
failed in CI (tests/support.py)."""

import pathlib
import re

import pytest

from support import require_module, require_torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
PAGES = [p for p in PAGES if "_build" not in p.parts]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
OPTIONAL = {"torch": require_torch, "numba": lambda: require_module("numba"),
            "mpi4py": lambda: require_module("mpi4py")}


def _blocks():
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield page, line, match.group(1)


BLOCKS = list(_blocks())
_namespaces: dict = {}


def test_the_pages_have_examples():
    assert any(page.name == "README.md" for page, _, _ in BLOCKS)


@pytest.mark.parametrize("page,line,code", BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in BLOCKS])
def test_example_runs(page, line, code, tmp_path, monkeypatch):
    for name, require in OPTIONAL.items():
        if re.search(rf"^\s*(import|from) {name}\b", code, re.M):
            require()
    monkeypatch.chdir(tmp_path)
    # the page's earlier blocks ran in this namespace (tests run in file order)
    namespace = _namespaces.setdefault(page, {"__name__": f"example_{page.stem}"})
    exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)


def test_documented_torch_deviation_bounds():
    """The README's bounds on optcore.torch's distance from torch.optim hold
    for the command shown beside them (benchmarks/deviation.py --api torch)."""
    require_torch()
    import numpy as np
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import deviation
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- deviation bounds: optimizer float32 float64 -->", 1)[1]
    bounds = {}
    for row in re.findall(r"^\s*\| (\w+) \| ([0-9.e+-]+) \| ([0-9.e+-]+) \|$", table, re.M):
        bounds[row[0]] = {np.float32: float(row[1]), np.float64: float(row[2])}
    entries = {e.torch_class: e for e in deviation.TORCH_TWINS}
    assert set(bounds) == set(entries)
    import torch
    default_dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, by_dtype in bounds.items():
            for dtype, bound in by_dtype.items():
                deviation._torch_scalars(dtype)
                worst = max(deviation.torch_class(entries[name], dtype, seed, 100)
                            for seed in range(10))
                assert worst <= bound, (name, np.dtype(dtype).name, worst, bound)
    finally:
        torch.set_default_dtype(default_dtype)
        torch.set_num_threads(threads)
