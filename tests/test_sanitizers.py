"""Runs only inside `.ci/sanitize` (OPTCORE_SANITIZED=1): the sanitizer setup
must report a real out-of-bounds write in a kernel, so a clean sanitizer run
means something."""

import os
import subprocess
import sys

import pytest

SMOKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "memcheck_smoke.py")


@pytest.mark.skipif(os.environ.get("OPTCORE_SANITIZED") != "1",
                    reason="only under .ci/sanitize (ASan-instrumented build)")
def test_asan_reports_an_overflow_in_a_kernel():
    proc = subprocess.run([sys.executable, SMOKE, "--overflow"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "heap-buffer-overflow" in proc.stderr, proc.stderr[-3000:]
    assert "sgd" in proc.stderr                      # reported inside the kernel
