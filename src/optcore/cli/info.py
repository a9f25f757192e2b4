"""``python -m optcore info``: the build and runtime configuration."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "info", help="print the build and runtime configuration (for bug reports)",
        description="Print optcore's version, compiler and flags, OpenMP runtime, "
                    "instruction-set variants built and loaded, and thread settings.")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from optcore import show_config
    show_config()
    return 0
