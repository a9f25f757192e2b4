"""Command line: ``python -m optcore {demo,bench}``."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m optcore",
        description="optcore: optimizer-step kernels in Cython + OpenMP.")
    sub = parser.add_subparsers(dest="command", required=True)
    from optcore.cli import demo
    demo.add_parser(sub)
    from optcore.cli import bench
    bench.add_parser(sub)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
