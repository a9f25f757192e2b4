"""optcore.show_config / build_info and ``python -m optcore info``: the
build record is present and consistent with what was loaded."""

import importlib.metadata
import io
import os

import pytest

import optcore
from optcore import kernels

from support import run_python


def test_version_is_the_installed_distributions():
    try:
        dist = importlib.metadata.distribution("optcore")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    imported = os.path.realpath(optcore.__file__)
    if dist is None or os.path.realpath(dist.locate_file("optcore/__init__.py")) != imported:
        pytest.skip("the optcore imported is a source tree, not an installed distribution")
    assert dist.version == optcore.__version__


def test_build_record_matches_the_loaded_kernels():
    info = optcore.build_info()
    build, run = info["build"], info["runtime"]
    assert build, "the build wrote no record (src/optcore/_build_info.py)"
    assert run["variant"] == kernels.VARIANT
    assert run["variant"] in build["variants"]
    assert set(kernels.built_variants()) <= set(build["variants"])
    assert build["openmp"] == optcore.openmp_enabled() == run["openmp_enabled"]
    assert "-ffp-contract=off" in build["compile_args"]
    if run["openmp_enabled"]:
        assert run["openmp_runtime"], "OpenMP enabled but no runtime library is mapped"
    assert run["num_threads"] == optcore.get_num_threads()


def test_show_config_names_every_field():
    out = io.StringIO()
    optcore.show_config(file=out)
    text = out.getvalue()
    assert text.startswith(f"optcore {optcore.__version__}\n")
    for field in ("compiler:", "compile args:", "openmp flags:", "variants built:",
                  "python:", "numpy:", "platform:", "variant loaded:", "openmp:",
                  "openmp runtime:", "threads:", "parallel threshold:", "environment:"):
        assert field in text, field
    assert f"variant loaded:     {kernels.VARIANT}" in text


def test_info_command():
    proc = run_python(["-m", "optcore", "info"], capture_output=True, text=True,
                      timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "variant loaded:" in proc.stdout
    assert "OMP_NUM_THREADS=1" in proc.stdout
