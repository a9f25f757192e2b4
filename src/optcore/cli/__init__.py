"""Command line: ``python -m optcore {demo,bench,info}``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def make_parser() -> argparse.ArgumentParser:
    import optcore
    parser = argparse.ArgumentParser(
        prog="python -m optcore",
        description="optcore: optimizer-step kernels in Cython + OpenMP.")
    parser.add_argument("--version", action="version",
                        version=f"optcore {optcore.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    from optcore.cli import demo
    demo.add_parser(sub)
    from optcore.cli import bench
    bench.add_parser(sub)
    from optcore.cli import info
    info.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
