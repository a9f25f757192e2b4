"""Every ```python block of the README and of docs/*.md runs as written.

A page is read as a tutorial: its blocks run in order in one namespace, in a
temporary working directory (examples may write files). A block that imports
an optional dependency (torch, numba) needs it: skipped when it is missing,
failed in CI (tests/support.py)."""

import pathlib
import re
import sys

import numpy as np
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


def _deviation_module():
    require_torch()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import deviation
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return deviation


def test_documented_torch_deviation_bounds():
    """docs/torch.md's bounds on optcore.torch's distance from torch.optim hold
    for the command shown beside them (benchmarks/deviation.py --api torch),
    and so does the figure given for RMSprop's other seeds."""
    deviation = _deviation_module()
    text = (ROOT / "docs" / "torch.md").read_text()
    table = text.split("<!-- deviation bounds: optimizer float32 float64 -->", 1)[1]
    bounds = {}
    for row in re.findall(r"^\s*\| (\w+) \| ([0-9.e+-]+) \| ([0-9.e+-]+) \|$", table, re.M):
        bounds[row[0]] = {np.float32: float(row[1]), np.float64: float(row[2])}
    entries = {e.torch_class: e for e in deviation.TORCH_TWINS}
    assert set(bounds) == set(entries)
    for name, by_dtype in bounds.items():
        for dtype, bound in by_dtype.items():
            runs = deviation.deviations("torch", entries[name], dtype)
            assert max(runs) <= bound, (name, np.dtype(dtype).name, max(runs), bound)
            if (name, dtype) == ("RMSprop", np.float32):
                others = float(re.search(r"other nine seeds stay under (\d(?:\.\d+)?e-\d+)", text)[1])
                assert sorted(runs)[-2] < others, sorted(runs)


def test_documented_functional_deviation_bound():
    """docs/functional.md's bound on the kernels' distance from torch.optim
    holds for `benchmarks/deviation.py --api functional`, and docs/torch.md
    quotes the same bound."""
    deviation = _deviation_module()
    pattern = r"at most ([0-9.e+-]+) in float32 and ([0-9.e+-]+) in float64"
    f32, f64 = map(float, re.search(pattern, (ROOT / "docs" / "functional.md").read_text()).groups())
    quoted = re.search(r"stay\s+within ([0-9.e+-]+) \(float32\) and ([0-9.e+-]+) \(float64\)",
                       (ROOT / "docs" / "torch.md").read_text())
    assert tuple(map(float, quoted.groups())) == (f32, f64)
    for entry in deviation.TORCH_TWINS:
        for dtype, bound in ((np.float32, f32), (np.float64, f64)):
            worst = max(deviation.deviations("functional", entry, dtype))
            assert worst <= bound, (entry.torch_class, np.dtype(dtype).name, worst, bound)


def test_api_reference_lists_every_public_name():
    """docs/api.md names each public object, so a new one cannot be left out
    of the reference (its docstring is then validated by the docs build)."""
    import inspect

    import optcore
    import optcore.distributed
    text = (ROOT / "docs" / "api.md").read_text()
    names = [n for n in optcore.__all__ if not inspect.ismodule(getattr(optcore, n))]
    names += optcore.distributed.__all__
    missing = [n for n in names if not re.search(rf"\b{re.escape(n)}\b", text)]
    assert not missing, f"not in docs/api.md: {missing}"


def test_getting_started_gives_the_readme_set_up_commands():
    """The set-up commands CI runs (the README's) are the ones the guide shows."""
    def commands(text):
        return re.findall(r"```bash\n(.*?)```", text, re.S)
    readme = (ROOT / "README.md").read_text().split("## Set-up on a fresh machine", 1)[1]
    readme = readme.split("\n## ", 1)[0]
    guide = (ROOT / "docs" / "getting-started.md").read_text()
    assert commands(readme) and commands(readme) == commands(guide)[:len(commands(readme))]


def test_readme_optimizer_table_matches_the_package():
    """Each cell of the README's optimizer table names an object that exists,
    "not yet" one that does not, and every torch.optim optimizer has a row."""
    torch = require_torch()
    import inspect

    import optcore
    import optcore.torch as ot
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- optimizer table: optimizer functional numpy torch -->", 1)[1]
    rows = re.findall(r"^\| (\w+)[^|]* \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", table, re.M)
    torch_classes = {n for n, c in vars(torch.optim).items() if inspect.isclass(c)
                     and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer}
    assert torch_classes <= {r[0] for r in rows}
    for name, *cells in rows:
        if name == "optimizer":                  # the header
            continue
        # the function, the NumPy class, the torch class: where each would be
        targets = [(optcore, f"{name.lower()}_step"), (optcore, name), (ot, name)]
        for (module, missing_name), cell in zip(targets, cells):
            cell = cell.strip()
            if cell == "not yet" or cell.startswith("none"):
                assert not hasattr(module, missing_name), (name, module.__name__, missing_name)
            else:
                assert hasattr(module, cell.strip("`")), (name, module.__name__, cell)
