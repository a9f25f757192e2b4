"""What a bug report needs: how this optcore was built and how it runs."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, TextIO

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OMP_PROC_BIND",
                     "OMP_DYNAMIC", "OPTCORE_VARIANT")


def _openmp_runtimes() -> list[str]:
    """The OpenMP runtime libraries mapped into this process (Linux), or []."""
    found: set[str] = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                name = os.path.basename(path)
                if name.startswith(("libgomp", "libomp", "libiomp")):
                    found.add(path)
    except OSError:
        pass
    return sorted(found)


def build_info() -> dict[str, Any]:
    """How this copy of optcore was built and how it runs, as a dict.

    Returns
    -------
    dict
        ``version``; ``build``: compiler, compile flags, OpenMP flags and the
        instruction-set variants built (recorded by the build; empty when the
        record is missing); ``runtime``: Python, NumPy, the platform, the
        variant loaded, whether OpenMP is enabled and which runtime library is
        loaded, and the thread settings.

    See Also
    --------
    show_config : the same, printed.

    Examples
    --------
    >>> info = optcore.build_info()
    >>> info["runtime"]["variant"] in info["build"]["variants"]
    True
    """
    import numpy

    import optcore
    from optcore import kernels
    try:
        from optcore._build_info import BUILD
    except ImportError:     # a tree compiled before the build recorded itself
        BUILD = {}
    return {
        "version": optcore.__version__,
        "build": dict(BUILD),
        "runtime": {
            "python": sys.version.split()[0],
            "numpy": numpy.__version__,
            "platform": platform.platform(),
            "machine": platform.machine(),
            "variant": kernels.VARIANT,
            "supported_variants": kernels.supported_variants(),
            "openmp_enabled": optcore.openmp_enabled(),
            "openmp_runtime": _openmp_runtimes(),
            "num_threads": optcore.get_num_threads(),
            "parallel_threshold": optcore.get_parallel_threshold(),
            "cpu_count": os.cpu_count(),
            "environment": {k: os.environ[k] for k in _THREAD_VARIABLES
                            if k in os.environ},
        },
    }


def show_config(file: TextIO | None = None) -> None:
    """Print how this copy of optcore was built and how it runs.

    Version, compiler and flags, OpenMP (enabled, runtime library loaded),
    the instruction-set variants built and the one loaded, and the thread
    settings: what a bug report needs. ``python -m optcore info`` prints the
    same.

    Parameters
    ----------
    file : file-like, optional
        Where to write (default: ``sys.stdout``).

    See Also
    --------
    build_info : the same as a dict.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> optcore.show_config(file=out)
    >>> out.getvalue().startswith("optcore ")
    True
    """
    out = sys.stdout if file is None else file
    info = build_info()
    build, run = info["build"], info["runtime"]
    unknown = "unknown (no build record)"

    def line(key: str, value: object) -> None:
        print(f"  {key + ':':<20}{value}", file=out)

    print(f"optcore {info['version']}", file=out)
    print("build", file=out)
    line("compiler", build.get("compiler_version", unknown))
    line("compile args", " ".join(build.get("compile_args", [])) or unknown)
    line("openmp flags", " ".join(build.get("openmp_compile_args", [])) or "none")
    line("variants built", ", ".join(build.get("variants", [])) or unknown)
    line("cython", build.get("cython", unknown))
    line("numpy (build)", build.get("numpy_build", unknown))
    print("runtime", file=out)
    line("python", run["python"])
    line("numpy", run["numpy"])
    line("platform", run["platform"])
    line("variant loaded", run["variant"])
    line("cpu runs", ", ".join(run["supported_variants"]))
    line("openmp", "enabled" if run["openmp_enabled"] else "disabled (single-threaded build)")
    line("openmp runtime", ", ".join(run["openmp_runtime"]) or "none loaded")
    line("threads", f"{run['num_threads']} (of {run['cpu_count']} CPUs)")
    line("parallel threshold", f"{run['parallel_threshold']} elements")
    env = run["environment"]
    line("environment", ", ".join(f"{k}={v}" for k, v in env.items()) or "(none set)")
