"""build_tools/generate.py: golden output for a small fixed spec, determinism on
the real spec, and the generated files are git-ignored and untracked.

To refresh the golden files after an intended template change:
    OPTCORE_REGEN_GOLDEN=1 python -m pytest tests/test_generator.py
(then review the diff of tests/data/generator/).
"""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "data", "generator")
REAL_SPEC = os.path.join(ROOT, "src", "optcore", "_spec.py")

# A two-kernel spec: buffers always and conditionally needed (positional and
# keyword-only), checked / unchecked / flag / required hyperparameters, an
# alias with a fixed flag and another default, a double result, a multi form
# with its own result type, and a kernel without multi forms and with a
# hand-written wrapper and _run.
FAKE_SPEC = '''
import importlib.util, sys
_s = importlib.util.spec_from_file_location("_fake_spec_base", {real!r})
_base = importlib.util.module_from_spec(_s)
sys.modules["_fake_spec_base"] = _base
_s.loader.exec_module(_base)
Buffer, Hyper, Kernel, Need = _base.Buffer, _base.Hyper, _base.Kernel, _base.Need
REQUIRED, DTYPES, CHECKS = _base.REQUIRED, _base.DTYPES, _base.CHECKS

KERNELS = (
    Kernel(
        "toy_step", "toy",
        (Buffer("param"), Buffer("grad", "read"),
         Buffer("vel", needed=Need("mom", "positive"), state_key="vel", doc="velocity"),
         Buffer("peak", needed=Need("track"), state_key="peak", doc="peak",
                keyword=True)),
        (Hyper("step", "step"), Hyper("lr", "double", 0.5, "nonneg", "learning rate"),
         Hyper("mom", "double", 0.0, "unit", "mom value", doc="momentum"),
         Hyper("shift", "double", REQUIRED, doc="shift"),
         Hyper("beta", "double", 0.9, "beta", "beta parameter", index=0,
               doc="coefficient"),
         Hyper("track", "bint", False, doc="track the peak"), Hyper("maximize", "bint", False)),
        "One toy step in place.",
        details="Two paragraphs:\\nthe second one.",
        c_notes="a note for the C API.",
        aliases={{"toyw_step": {{"track": True, "defaults": {{"lr": 0.25}}}}}},
        alias_docs={{"toyw_step": "The toy step that tracks."}}),
    Kernel(
        "acc_step", "acc",
        (Buffer("param"), Buffer("acc", state_key="acc", doc="accumulator")),
        (Hyper("step", "step"), Hyper("rate", "double", 1.0, "nonneg", "rate value", doc="rate")),
        "One accumulating step; returns a number.",
        returns="double", multi_returns="int", multi=True),
    Kernel(
        "one_step", "one",
        (Buffer("param"),),
        (Hyper("step", "step"),),
        "A single-tensor kernel.", multi=False, wrapper="hand", run="hand"),
)
'''


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _generator():
    path = os.path.join(ROOT, "build_tools", "generate.py")
    spec = importlib.util.spec_from_file_location("_optcore_generate_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_files(tmp_path):
    spec_path = tmp_path / "fake_spec.py"
    spec_path.write_text(FAKE_SPEC.format(real=REAL_SPEC))
    generate = _generator()
    out = tmp_path / "out"
    written = generate.generate(str(spec_path), str(out))
    return generate, spec_path, out, written


def test_golden_output_of_a_fixed_spec(tmp_path):
    _, _, out, written = _fake_files(tmp_path)
    produced = {os.path.relpath(p, out): _read(p) for p in written}
    if os.environ.get("OPTCORE_REGEN_GOLDEN") == "1":
        for rel, text in produced.items():
            path = os.path.join(GOLDEN, rel + ".golden")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    expected = {}
    for folder, _, names in os.walk(GOLDEN):
        for name in names:
            path = os.path.join(folder, name)
            expected[os.path.relpath(path, GOLDEN)[:-len(".golden")]] = _read(path)
    assert sorted(produced) == sorted(expected)
    for rel in expected:
        assert produced[rel] == expected[rel], f"{rel} differs from its golden file"


def test_only_changed_files_are_rewritten(tmp_path):
    generate, spec_path, out, written = _fake_files(tmp_path)
    assert written
    assert generate.generate(str(spec_path), str(out)) == []
    victim = written[0]
    with open(victim, "a", encoding="utf-8") as f:
        f.write("# edited\n")
    assert generate.generate(str(spec_path), str(out)) == [victim]


def test_real_spec_renders_identically_twice():
    generate = _generator()
    first = generate.render(generate.load_spec(REAL_SPEC))
    second = generate.render(generate.load_spec(REAL_SPEC))
    assert first == second
    assert "kernels/adam.pxd" in first and "_numba_signatures.py" in first


def test_script_runs(tmp_path):
    spec_path = tmp_path / "fake_spec.py"
    spec_path.write_text(FAKE_SPEC.format(real=REAL_SPEC))
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "build_tools", "generate.py"),
         "--spec", str(spec_path), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, check=True)
    assert "toy.pxd" in result.stdout
    assert (tmp_path / "out" / "kernels" / "_toy_api.pxi").exists()


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, ".git"))
                    and not os.path.isfile(os.path.join(ROOT, ".git")),
                    reason="not a git checkout")
def test_generated_files_are_ignored_and_untracked():
    generate = _generator()
    paths = [os.path.join("src", "optcore", rel)
             for rel in generate.render(generate.load_spec(REAL_SPEC))]
    ignored = _git("check-ignore", "--no-index", *paths)
    assert sorted(ignored.stdout.split()) == sorted(paths)
    tracked = _git("ls-files", "--", *paths)
    assert tracked.stdout.split() == []
    # and the hand-written neighbours are not ignored
    hand = [os.path.join("src", "optcore", "kernels", name)
            for name in ("_checks.pxd", "_adam_common.pxd", "mse.pxd", "grad_utils.pxd",
                         "_buffers.pxd", "_runtime.pxd", "_math.pxd", "mse.pyi",
                         "_checks.pyi", "_bound.pxd", "_bound.pyi", "adam.pyx")]
    assert _git("check-ignore", "--no-index", *hand).stdout.split() == []
