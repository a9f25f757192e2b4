"""Build the embedding example against an installed optcore:

    python setup.py build_ext --inplace
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

import optcore

setup(
    name="adam_loop",
    ext_modules=cythonize(
        [Extension("adam_loop", ["adam_loop.pyx"],
                   extra_compile_args=["-O3", "-fopenmp"],
                   extra_link_args=["-fopenmp"])],
        include_path=[optcore.get_include()],
    ),
)
