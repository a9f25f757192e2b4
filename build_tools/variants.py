"""Instruction-set variants of the kernel extensions.

Every module in optcore/kernels is compiled once for the baseline of the
target (x86-64: SSE2) into ``optcore/kernels/``, and, on x86-64 with GCC or
Clang, once more per variant below into ``optcore/kernels/_isa/<variant>/``
from the same Cython-generated C with ``-march`` raised. At import,
``optcore.kernels`` puts the best variant this CPU supports (optcore.kernels._cpu)
first on the package's ``__path__``, so a portable wheel runs AVX2/AVX-512 code
where the CPU has it. The flags keep ``-ffp-contract=off`` (no FMA contraction):
every variant computes every element with the same IEEE operations, so results
are bitwise identical across variants (tests/test_bench.py checks it).

OPTCORE_BUILD_VARIANTS=none (or a comma-separated subset of the names) limits
the variants built, e.g. for a quicker debug build.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Collection, Iterable, Sequence

from setuptools import Extension

# name -> extra compile flags. optcore.kernels._cpu.supported_variants() knows
# the same names and the CPU features each needs.
VARIANTS: dict[str, list[str]] = {
    "x86_64_v3": ["-march=x86-64-v3", "-mtune=generic"],
    # 512-bit vectors: GCC's generic tuning would otherwise stay at 256 bits.
    "x86_64_v4": ["-march=x86-64-v4", "-mtune=generic", "-mprefer-vector-width=512"],
}

# Modules that choose the variant run before it is chosen: baseline only.
BASELINE_ONLY = {"_cpu"}

ISA_DIR = os.path.join("src", "optcore", "kernels", "_isa")


def _compiler_accepts(flags: Sequence[str]) -> bool:
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if shutil.which(cc[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write("int optcore_probe(float *x, int n) {"
                    " for (int i = 0; i < n; i++) x[i] *= 2.0f; return 0; }\n")
        try:
            subprocess.run([*cc, *flags, "-c", src, "-o", os.path.join(tmp, "t.o")],
                           check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
    return True


def selected_variants() -> list[str]:
    """Variant names to build here: x86-64 with a GCC-compatible compiler only."""
    if sys.platform == "win32" or platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    # the variable's text, then its names
    wanted: str | list[str] | None
    wanted = os.environ.get("OPTCORE_BUILD_VARIANTS")
    names = list(VARIANTS)
    if wanted is not None:
        wanted = [w.strip() for w in wanted.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in VARIANTS and w != "none"]
        if unknown:
            raise ValueError(f"OPTCORE_BUILD_VARIANTS: unknown variant(s) {unknown}; "
                             f"known: {sorted(VARIANTS)} or 'none'")
        names = [n for n in names if n in wanted]
    accepted = []
    for name in names:
        if _compiler_accepts(VARIANTS[name]):
            accepted.append(name)
        else:
            print(f"optcore: the compiler does not accept {VARIANTS[name]}; "
                  f"variant {name} is not built", file=sys.stderr)
    return accepted


def remove_stale(keep: Collection[str], root: str = ".") -> None:
    """Delete in-place builds of variants not built now, so that an old variant
    module can never be loaded in place of freshly built baseline code."""
    isa = os.path.join(root, ISA_DIR)
    if not os.path.isdir(isa):
        return
    for name in os.listdir(isa):
        if name not in keep:
            shutil.rmtree(os.path.join(isa, name), ignore_errors=True)


def variant_extensions(extensions: Iterable[Extension], names: Iterable[str],
                       build_dir: str) -> list[Extension]:
    """One extension per (variant, kernel module), compiled from the C that
    Cython generated for the baseline extension (call after cythonize).

    The variant's source is a one-line wrapper that includes that C file, so
    its object file gets a path of its own (parallel builds do not collide).
    """
    out = []
    for name in names:
        flags = VARIANTS[name]
        wrap_dir = os.path.join(build_dir, "optcore_isa", name)
        os.makedirs(wrap_dir, exist_ok=True)
        # `build_ext --inplace` copies into this folder but does not create it.
        os.makedirs(os.path.join(ISA_DIR, name), exist_ok=True)
        for ext in extensions:
            module = ext.name.rsplit(".", 1)[1]
            if module in BASELINE_ONLY:
                continue
            (c_source,) = ext.sources
            wrapper = os.path.join(wrap_dir, module + ".c")
            text = (f"/* optcore.kernels.{module} compiled for {name} */\n"
                    f"#include \"{os.path.abspath(c_source)}\"\n")
            # Rewrite only on change, so unchanged modules are not recompiled.
            if not os.path.exists(wrapper) or open(wrapper).read() != text:
                with open(wrapper, "w") as f:
                    f.write(text)
            out.append(Extension(
                f"optcore.kernels._isa.{name}.{module}",
                [wrapper],
                include_dirs=list(ext.include_dirs),
                define_macros=list(ext.define_macros),
                extra_compile_args=list(ext.extra_compile_args) + flags,
                extra_link_args=list(ext.extra_link_args),
                depends=[c_source],
            ))
    return out
