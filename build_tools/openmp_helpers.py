"""Build-time detection of OpenMP support.

A tiny program that starts a parallel region is compiled and linked with the
candidate flags. If that fails, optcore is built single-threaded (the kernels
still work; ``prange`` becomes a plain loop) and a loud warning is printed,
unless OPTCORE_FAIL_NO_OPENMP=1 asks for a hard error.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import warnings

OPENMP_TEST_PROGRAM = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d %d\\n", n, omp_get_max_threads());
        return n > 0 ? 0 : 1;
    }
    """
)


def openmp_flags() -> tuple[list[str], list[str]]:
    """Compile and link flags that enable OpenMP for the default compiler."""
    if sys.platform == "darwin":
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    if sys.platform == "win32":
        return ["/openmp"], []
    return ["-fopenmp"], ["-fopenmp"]


def compiler_command() -> list[str]:
    """The C compiler the build uses, as a command (``$CC`` or Python's)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def _env_flags(*names: str) -> list[str]:
    return [flag for name in names for flag in shlex.split(os.environ.get(name, ""))]


def check_openmp_support() -> tuple[list[str], list[str]] | None:
    """Return (compile_args, link_args) when OpenMP works, else None."""
    if os.environ.get("OPTCORE_NO_OPENMP") == "1":
        return None
    cc = compiler_command()
    if shutil.which(cc[0]) is None:
        return None
    cflags, ldflags = openmp_flags()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "test_openmp.c")
        exe = os.path.join(tmp, "test_openmp")
        with open(src, "w") as f:
            f.write(OPENMP_TEST_PROGRAM)
        try:
            subprocess.run(
                # the flags the real build gets from the environment too (e.g.
                # macOS: -I/-L of Homebrew's libomp)
                [*cc, *_env_flags("CPPFLAGS", "CFLAGS"), *cflags, src, "-o", exe,
                 *_env_flags("LDFLAGS"), *ldflags],
                check=True, capture_output=True, timeout=120,
            )
            subprocess.run([exe], check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    return cflags, ldflags


def openmp_or_warn() -> tuple[list[str], list[str]]:
    """OpenMP flags, or ([], []) with a warning (an error if required)."""
    found = check_openmp_support()
    if found is not None:
        return found
    message = (
        "\n" + "*" * 72 + "\n"
        "optcore: the compiler could not build an OpenMP program.\n"
        "optcore will be built WITHOUT OpenMP: every kernel runs on one thread.\n"
        "Install an OpenMP runtime (e.g. libgomp / libomp) and rebuild for\n"
        "parallel kernels, or set OPTCORE_FAIL_NO_OPENMP=1 to make this an error.\n"
        + "*" * 72
    )
    if os.environ.get("OPTCORE_FAIL_NO_OPENMP") == "1":
        raise RuntimeError(message)
    warnings.warn(message, stacklevel=2)
    print(message, file=sys.stderr)
    return [], []
