"""Build the optcore Cython extensions.

Environment switches:
  OPTCORE_DEBUG=1          bounds checks, wraparound and -O0 -g (debugging)
  OPTCORE_SANITIZE=1       -fsanitize=address,undefined (implies OPTCORE_DEBUG)
  OPTCORE_FAIL_NO_OPENMP=1 fail instead of building single-threaded
  OPTCORE_NO_OPENMP=1      build single-threaded on purpose
  OPTCORE_BUILD_VARIANTS=none|x86_64_v3,...  instruction-set variants to build
                           besides the baseline (default: all the compiler
                           accepts; see build_tools/variants.py)
"""

import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_tools.build_info import build_info, write_build_info  # noqa: E402
from build_tools.generate import generate  # noqa: E402
from build_tools.openmp_helpers import openmp_or_warn  # noqa: E402
from build_tools.variants import (remove_stale, selected_variants,  # noqa: E402
                                  variant_extensions)

SANITIZE = os.environ.get("OPTCORE_SANITIZE") == "1"
DEBUG = SANITIZE or os.environ.get("OPTCORE_DEBUG") == "1"

# The mechanical layers of the step kernels (.pxd, _<module>_api.pxi, .pyi,
# kernels/__init__.pxd, _numba_signatures.py) from src/optcore/_spec.py; only
# changed files are rewritten, so cythonize's dependency check stays incremental.
generate()

# One source per kernel family under src/optcore/kernels; every .pyx is one extension.
KERNEL_MODULES = sorted(
    os.path.splitext(name)[0]
    for name in os.listdir(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                        "src", "optcore", "kernels"))
    if name.endswith(".pyx")
)

omp_cflags, omp_ldflags = openmp_or_warn()

compile_args = [
    # -fno-math-errno lets sqrt vectorise; no -ffast-math (NaN/Inf must behave).
    # -ffp-contract=off: no FMA contraction, so results are bitwise identical for
    # any thread count and any instruction-set variant, and match NumPy's.
    "-fno-math-errno",
    "-ffp-contract=off",
    "-Wno-unused-function",
    "-Wno-unreachable-code",
]
link_args = []
if DEBUG:
    compile_args += ["-O0", "-g"]
else:
    compile_args += ["-O3"]
if SANITIZE:
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    compile_args += san
    link_args += san

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

extensions = [
    Extension(
        f"optcore.kernels.{name}",
        [f"src/optcore/kernels/{name}.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args + omp_cflags,
        extra_link_args=link_args + omp_ldflags,
    )
    for name in KERNEL_MODULES
]

ext_modules = cythonize(
    extensions,
    compiler_directives=directives,
    annotate=os.environ.get("OPTCORE_ANNOTATE") == "1",
)
# The same generated C again per instruction-set variant (AVX2, AVX-512 ...),
# chosen at import by optcore.kernels from the CPU's features.
variants = [] if DEBUG else selected_variants()
remove_stale(variants, root=os.path.dirname(os.path.abspath(__file__)))
ext_modules += variant_extensions(ext_modules, variants, "build")

write_build_info(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "src", "optcore", "_build_info.py"),
                 build_info(compile_args, omp_cflags, omp_ldflags, variants))

setup(ext_modules=ext_modules)
