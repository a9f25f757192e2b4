"""The native kernels: one Cython module per family, each with a `.pxd` that
other Cython code can `cimport` (see optcore.get_include()).

Each module is built for baseline x86-64 and for higher instruction-set levels
(build_tools/variants.py); this package loads the best variant the CPU runs by
putting its folder first on ``__path__`` before any kernel module is imported.
All variants compute identical bits (no FMA contraction, same operations).
``OPTCORE_VARIANT=baseline`` (or another name) forces a variant.
"""

from __future__ import annotations

import os as _os

from optcore.kernels._cpu import supported_variants as _supported_variants

_HERE = _os.path.dirname(_os.path.abspath(__file__))
_ISA = _os.path.join(_HERE, "_isa")


def _extension_modules(folder: str) -> set[str]:
    """Kernel module names with a compiled extension in ``folder``."""
    try:
        names = _os.listdir(folder)
    except OSError:
        return set()
    return {n.split(".", 1)[0] for n in names
            if n.endswith((".so", ".pyd")) and not n.startswith("_cpu.")}


def built_variants() -> list[str]:
    """Variants whose folder holds every kernel module the baseline has."""
    base = _extension_modules(_HERE)
    found = []
    if _os.path.isdir(_ISA):
        for name in sorted(_os.listdir(_ISA)):
            mods = _extension_modules(_os.path.join(_ISA, name))
            if mods and base <= mods:
                found.append(name)
    return ["baseline"] + found


def _choose() -> str:
    built = built_variants()
    supported = _supported_variants()
    forced = _os.environ.get("OPTCORE_VARIANT", "").strip()
    if forced:
        if forced not in built:
            raise ImportError(f"OPTCORE_VARIANT={forced!r}: built variants are {built}")
        if forced not in supported:
            raise ImportError(f"OPTCORE_VARIANT={forced!r}: this CPU runs only "
                              f"{list(supported)}")
        return forced
    for name in supported:          # best first
        if name in built:
            return name
    return "baseline"


#: The instruction-set variant of the kernels loaded in this process.
VARIANT = _choose()
if VARIANT != "baseline":
    __path__.insert(0, _os.path.join(_ISA, VARIANT))


def supported_variants() -> list[str]:
    """Variants this CPU can run, best first."""
    return _supported_variants()
