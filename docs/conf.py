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
# every documented object's docstring is checked as it is rendered (with -W a
# failed check fails the build): a docstring, a summary, every parameter and
# no unknown one, a Returns section where something is returned, Examples
numpydoc_validation_checks = {"GL08", "SS01", "PR01", "PR02", "RT01", "EX01"}
html_theme = "alabaster"
