"""The source layout: the package lives under src/, so nothing run from the
repository root imports the uncompiled tree, and the README's first command
(`python -m optcore demo`) works there."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import optcore

ROOT = Path(__file__).resolve().parent.parent


def test_no_package_at_repository_root():
    assert not (ROOT / "optcore").exists()
    assert (ROOT / "src" / "optcore" / "__init__.py").is_file()


@pytest.mark.skipif(not (ROOT / "README.md").is_file(), reason="needs the repository")
def test_demo_runs_from_repository_root():
    # The optcore under test must be importable without PYTHONPATH tricks from
    # the root: an installed one, or an in-place build named on PYTHONPATH.
    env = dict(os.environ)
    here = str(Path(optcore.__file__).resolve().parent.parent)
    if not here.startswith(str(ROOT)) or "site-packages" in here:
        env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-m", "optcore", "demo", "--quick"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "optcore" in done.stdout
