"""Sphinx configuration of optcore's documentation (built by .ci/docs)."""

import optcore

project = "optcore"
copyright = "2026, optcore developers"
release = optcore.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autosummary_generate = False
numpydoc_show_class_members = False
html_theme = "alabaster"
