"""``python -m optcore``: the command line (see optcore.cli)."""

from optcore.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
