"""The native kernels: one Cython module per family, each with a `.pxd` that
other Cython code can `cimport` (see optcore.get_include())."""
