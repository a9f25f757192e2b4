"""Records how optcore was built, for ``optcore.show_config()``.

setup.py calls :func:`write_build_info` before compiling; it writes
``src/optcore/_build_info.py`` (git-ignored, shipped in wheels), a module
holding one dict of plain values, so that a bug report can say which
compiler, flags, OpenMP runtime and instruction-set variants a build has.
"""

from __future__ import annotations

import platform
import pprint
import subprocess
import sysconfig

import Cython
import numpy

from build_tools.openmp_helpers import compiler_command


def _compiler_version(cc: list[str]) -> str:
    try:
        out = subprocess.run(cc + ["--version"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


def build_info(compile_args: list[str], openmp_cflags: list[str],
               openmp_ldflags: list[str], variants: list[str]) -> dict[str, object]:
    cc = compiler_command()
    return {
        "compiler": " ".join(cc),
        "compiler_version": _compiler_version(cc),
        "compile_args": list(compile_args),
        "openmp": bool(openmp_cflags),
        "openmp_compile_args": list(openmp_cflags),
        "openmp_link_args": list(openmp_ldflags),
        "variants": ["baseline"] + list(variants),
        "cython": Cython.__version__,
        "numpy_build": numpy.__version__,
        "machine": platform.machine(),
        "platform": sysconfig.get_platform(),
    }


def write_build_info(path: str, info: dict[str, object]) -> None:
    text = ('"""How this copy of optcore was built (written by build_tools/build_info.py)."""\n\n'
            f"BUILD = {pprint.pformat(info, width=88, sort_dicts=False)}\n")
    try:
        with open(path) as f:
            if f.read() == text:
                return              # unchanged: keep the timestamp
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)
