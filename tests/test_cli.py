"""The command line's argument checks (argparse's messages, exit status 2,
before any work), ``--version``, where ``--plot`` writes, and the bench's
interference logic on synthetic samples (no timing is asserted)."""

import io
import os
import time

import pytest

import optcore
from optcore.cli import bench, demo_training, main
from optcore.cli.bench import report, runner

from support import run_python


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the bench or the demo starts measuring or training."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")
    monkeypatch.setattr(runner.Bench, "run", refuse)
    monkeypatch.setattr(demo_training, "run_all", refuse)
    monkeypatch.setattr(demo_training, "make_problems", refuse)


BAD_ARGUMENTS = [
    (["bench", "--sizes", "0"], "--sizes", "must be >= 1"),
    (["bench", "--sizes", "64,-3"], "--sizes", "must be >= 1"),
    (["bench", "--sizes", "2**x"], "--sizes", "integers"),
    (["bench", "--threads", "0"], "--threads", "must be >= 1"),
    (["bench", "--budget", "-1"], "--budget", "> 0"),
    (["bench", "--budget", "0"], "--budget", "> 0"),
    (["bench", "--budget", "nan"], "--budget", "> 0"),
    (["bench", "--kernels", "adam,nope"], "--kernels", "unknown kernel 'nope'"),
    (["bench", "--dtypes", "float16"], "--dtypes", "unknown dtype 'float16'"),
    (["bench", "--sections", "kernels,plots"], "--sections", "unknown section 'plots'"),
    (["bench", "--plot", "/nonexistent/dir/x.png"], "--plot", "does not exist"),
    (["bench", "--json", "/nonexistent/dir/x.json"], "--json", "does not exist"),
    (["bench", "--markdown", "/nonexistent/dir/x.md"], "--markdown", "does not exist"),
    (["bench", "--plot", "x.pdf"], "--plot", "must end in .png"),
    (["demo", "--seed", "-5"], "--seed", "must be >= 0"),
    (["demo", "--seed", "x"], "--seed", "must be an integer"),
    (["demo", "--scale", "0"], "--scale", "> 0"),
    (["demo", "--plot", "/nonexistent/dir/x.png"], "--plot", "does not exist"),
]


@pytest.mark.parametrize("argv,option,message", BAD_ARGUMENTS,
                         ids=[" ".join(a) for a, _, _ in BAD_ARGUMENTS])
def test_bad_argument_exits_2_with_argparse_message(argv, option, message, no_work, capsys):
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err
    assert f"error: argument {option}: " in err and message in err, err
    assert "invalid" not in err and "_int_list" not in err and "<function" not in err


def test_plot_into_an_unwritable_directory_fails_up_front(tmp_path, no_work, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who may write anywhere")
        with pytest.raises(SystemExit) as exc:
            main(["demo", "--plot", str(folder / "x.png")])
        assert exc.value.code == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        folder.chmod(0o700)


def test_plot_to_a_directory_is_refused(tmp_path, no_work, capsys):
    target = tmp_path / "d.png"
    target.mkdir()
    with pytest.raises(SystemExit):
        main(["demo", "--plot", str(target)])
    assert "is a directory" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"optcore {optcore.__version__}"


def test_version_and_bad_argument_from_a_subprocess():
    done = run_python(["-m", "optcore", "--version"], capture_output=True, text=True,
                      timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"optcore {optcore.__version__}"
    started = time.perf_counter()
    done = run_python(["-m", "optcore", "bench", "--sizes", "0"], capture_output=True,
                      text=True, timeout=60)
    assert done.returncode == 2
    assert "argument --sizes: sizes must be >= 1, got 0" in done.stderr
    assert time.perf_counter() - started < 30      # an interpreter start, no bench


def test_demo_plot_without_suffix_reports_the_file_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    name = tmp_path / "curves"
    assert main(["demo", "--scale", "0.02", "--plot", str(name)]) == 0
    written = tmp_path / "curves.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not name.exists()
    assert f"loss curves written to {written}\n" in capsys.readouterr().out


def test_bench_plot_without_suffix_reports_the_file_written(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    name = tmp_path / "bench"
    assert main(["bench", "--sizes", "64", "--dtypes", "float32", "--threads", "1",
                 "--kernels", "sgd_momentum", "--sections", "kernels", "--budget",
                 "0.001", "--no-torch", "--quiet", "--plot", str(name)]) == 0
    written = tmp_path / "bench.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {written}\n" in capsys.readouterr().out


# ---- interference ------------------------------------------------------------------

def test_spread_and_drift():
    assert bench.spread([1.0, 1.0, 1.0, 1.0, 1.0]) == 0.0
    assert bench.spread([1.0, 2.0]) == 0.0                    # too few to judge
    assert bench.spread([1.0, 1.0, 1.0, 3.0, 3.0]) == pytest.approx(2.0)
    assert bench.drift([1.0, 1.1, 1.0, 2.0, 2.1, 2.0]) == pytest.approx(2.0)
    assert bench.drift([2.0, 2.0, 1.0, 1.0]) == pytest.approx(2.0)   # either way
    assert bench.drift([1.0, 1.0, 1.0]) == 1.0


def test_disturbances_of_a_steady_row_are_none():
    times = {"optcore": [1.0, 1.01, 0.99, 1.0, 1.02], "reference": [5, 9, 5, 20, 5]}
    ceiling = {"ceiling 4r3w 2": [0.9, 0.91, 0.9, 0.92, 0.9, 0.91]}
    assert bench.disturbances(times, ceiling, 0.9) == []    # only optcore's spread counts


def test_disturbances_name_their_reasons():
    steady = [1.0, 1.0, 1.01, 0.99, 1.0, 1.0]
    spread = {"optcore": [1.0, 1.0, 3.0, 3.0, 1.0, 3.0]}
    (reason,) = bench.disturbances(spread, {"c": steady}, 0.9)
    assert reason.startswith("spread: optcore")
    moved = {"c": [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]}
    reasons = bench.disturbances({"optcore": steady}, moved, 0.9)
    assert any(r.startswith("drift: ceiling c") for r in reasons)
    # 3.9x the ceiling's speed is impossible: flagged whatever the spread
    (reason,) = bench.disturbances({"optcore": steady}, {"c": steady}, 3.9)
    assert reason.startswith("above ceiling: 390%")
    assert bench.disturbances({"optcore": steady}, {"c": steady}, 1.05) == []


def test_measure_trusted_retries_a_bounded_number_of_times():
    results = iter([["spread"], ["spread", "drift"], [], ["never"]])
    calls = []

    def once():
        calls.append(1)
        return next(results)
    best, reasons, attempts = bench.measure_trusted(once, lambda r: r, retries=5)
    assert (best, reasons, attempts, len(calls)) == ([], [], 3, 3)
    always = bench.measure_trusted(lambda: ["drift"], lambda r: r, retries=2)
    assert always == (["drift"], ["drift"], 3)               # 1 + 2 retries, then kept
    fewest = iter([["a", "b"], ["a"], ["a", "b", "c"]])
    best, reasons, attempts = bench.measure_trusted(lambda: next(fewest), lambda r: r, 2)
    assert best == ["a"] and attempts == 3


def _row(pct, reliable, flags=()):
    return {"kernel": "adam", "dtype": "float32", "n": 2 ** 20, "threads": 2,
            "median_s": {"optcore": 1e-3}, "gbs": {"optcore": 10.0},
            "pct_ceiling": {"optcore": pct}, "ceiling_gbs": 10.0 * pct / 100,
            "speedup": {}, "reliable": reliable, "flags": list(flags), "attempts": 3}


def test_report_never_prints_an_impossible_fraction_as_clean():
    assert report.fmt_pct(_row(95.0, True)) == "95%"
    assert report.fmt_pct(_row(95.0, False, ["spread: x"])) == "95%?"
    assert report.fmt_pct(_row(390.0, False, ["above ceiling: 390%"])) == ">110%?"
    # even a row that somehow passed the checks
    assert report.fmt_pct(_row(390.0, True)) == ">110%?"
    out = io.StringIO()
    report.footnote([_row(95.0, True), _row(390.0, False, ["above ceiling: 390%"])], out)
    assert "? disturbed: 1 row(s) unreliable after up to 3 measurement(s) " \
        "(above ceiling)" in out.getvalue()
    out = io.StringIO()
    report.footnote([_row(95.0, True)], out)
    assert out.getvalue() == ""


def test_scorecard_marks_goals_on_disturbed_rows():
    rows = [dict(_row(95.0, False, ["drift: c"]), n=2 ** 24),
            dict(_row(95.0, True), n=2 ** 26)]
    card = bench.scorecard({"kernels": rows, "multi": [], "overhead": []})
    pct = [c for c in card if "% of ceiling" in c[0]]
    assert [(c[2], c[3]) for c in pct] == [(True, False), (True, True)]
    out = io.StringIO()
    bench.print_scorecard({"kernels": rows, "multi": [], "overhead": []}, out)
    assert "yes?" in out.getvalue() and "disturbed row" in out.getvalue()


def test_bench_rows_record_their_flags(tmp_path):
    kernels = [k for k in bench.available_kernels() if k.name == "sgd_momentum"]
    b = bench.Bench(kernels, [64], [__import__("numpy").float32], [1],
                    bench.Timing(budget=0.001, sample=0.0002, retries=0), None,
                    ["kernels"], progress=False)
    (row,) = b.run()["kernels"]
    assert isinstance(row["reliable"], bool) and isinstance(row["flags"], list)
    assert row["attempts"] == 1 and row["reliable"] == (not row["flags"])


def test_a_descheduled_thread_is_caught_without_spread():
    # Every sample waited a time slice for the second thread: steady, but the
    # parallel pass is far slower than the one-thread pass of the same work.
    steady = [1e-5] * 6
    assert not bench.descheduled(10e-6, 6e-6)        # 2 threads win: fine
    assert not bench.descheduled(1e-7, 3e-6)         # an idle fork/join at tiny sizes
    assert bench.descheduled(10e-6, 4e-3)            # a lost time slice
    (reason,) = bench.disturbances({"optcore": steady}, {"c": steady}, 0.9e-5,
                                   parallel=[("ceiling 4r3w at 2 threads", 1e-5, 4e-3)])
    assert reason.startswith("descheduled: ceiling 4r3w at 2 threads 400x slower")
