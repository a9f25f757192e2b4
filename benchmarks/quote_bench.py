"""Refresh the tables that docs/performance.md quotes from the recorded bench
report (benchmarks/results/bench.md), after a new recorded run.

A quoted table sits between two markers on the page:

    <!-- quote: <caption> | <row pattern> -->
    ...
    <!-- /quote -->

and becomes the header of the first table after the report line that starts
with <caption>, with the rows of that table that match the regular expression
<row pattern>. tests/test_doc_figures.py checks that every quoted row is in
the report.

    python benchmarks/quote_bench.py [--check]
"""

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "performance.md"
REPORT = ROOT / "benchmarks" / "results" / "bench.md"
BLOCK = re.compile(r"(<!-- quote: (?P<caption>.+?) \| (?P<rows>.+?) -->\n)(?P<body>.*?)"
                   r"(?=<!-- /quote -->)", re.S)


def table_after(report_lines, caption):
    """The header, rule and rows of the first table after the caption line."""
    start = next(i for i, line in enumerate(report_lines) if line.startswith(caption))
    rows = []
    for line in report_lines[start + 1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    if len(rows) < 2:
        raise ValueError(f"no table after {caption!r} in {REPORT}")
    return rows


def render(page, report):
    lines = report.splitlines()

    def quote(match):
        header, rule, *rows = table_after(lines, match["caption"])
        chosen = [r for r in rows if re.search(match["rows"], r)]
        if not chosen:
            raise ValueError(f"no row of {match['caption']!r} matches {match['rows']!r}")
        return match.group(1) + "\n".join([header, rule, *chosen]) + "\n"

    text = BLOCK.sub(quote, page)
    first = lines[0]
    return re.sub(r"^    optcore \S+ bench: .*$", lambda _: "    " + first, text, count=1,
                  flags=re.M)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the page is not up to date, write nothing")
    args = parser.parse_args(argv)
    page = PAGE.read_text()
    new = render(page, REPORT.read_text())
    if args.check:
        return int(new != page)
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
