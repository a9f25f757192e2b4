"""The version of optcore, defined here once (pyproject.toml reads it)."""

__version__ = "0.2.0"
