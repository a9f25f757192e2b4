"""``python -m optcore demo``: it runs, its models learn, and optcore's kernels
and the NumPy reference train to the same losses."""

import os
import subprocess
import sys

import numpy as np
import pytest

import optcore
from optcore.cli import main
from optcore.cli import demo, demo_training

from support import DTYPES, run_python

METHOD_NAMES = [m.name for m in demo_training.METHODS]

# Both backends start from the same weights, see the same batches and evaluate
# every update operation by operation in the same order, so their parameters
# normally stay bitwise equal and only the loss sums differ (double
# accumulation in another order: ~1e-16). The bound leaves room for a few
# rounding differences per step growing over the run (the linear problems
# contract them; the MLP's ReLU could flip on a borderline unit).
AGREE_RTOL = {np.float32: 1e-4, np.float64: 1e-9}


@pytest.fixture(scope="module", params=DTYPES, ids=lambda d: np.dtype(d).name)
def trained(request):
    """The demo's problems and runs at full length (about a second)."""
    problems = demo_training.make_problems(seed=0, dtype=request.param)
    return request.param, problems, demo_training.run_all(problems, seed=0)


def _runs_by(runs, backend):
    return {(r.method.model, r.method.name): r for r in runs if r.backend == backend}


def test_every_method_runs_with_both_backends(trained):
    _, _, runs = trained
    assert [(r.method.name, r.backend) for r in runs] == [
        (name, backend) for name in METHOD_NAMES for backend in ("optcore", "reference")]
    for r in runs:
        assert r.curve_steps[0] == 0 and r.curve_steps[-1] == r.method.steps
        assert len(r.curve_loss) == len(r.curve_steps)
        assert r.final_loss == r.curve_loss[-1]
        assert r.seconds > 0


def test_linear_model_reaches_the_noise_floor(trained):
    # Fitting 11 parameters to 2000 samples leaves about the label noise's
    # variance; the step counts and learning rates get every method within a few
    # percent of it (the constant-rate stochastic ones jitter ~20% above).
    _, problems, runs = trained
    noise = problems["linear"].noise_var
    for r in _runs_by(runs, "optcore").values():
        if r.method.model == "linear":
            assert r.curve_loss[0] > 100 * noise, r.method.name
            assert 0.8 * noise < r.final_loss < 1.5 * noise, r.method.name


def test_mlp_learns_the_nonlinear_target(trained):
    # The target is exactly representable by the MLP, so Adam gets it near the
    # noise floor, far below the loss of the initial weights.
    _, problems, runs = trained
    (r,) = [r for r in _runs_by(runs, "optcore").values() if r.method.model == "mlp"]
    assert r.final_loss < r.curve_loss[0] / 50
    assert r.final_loss < 2 * problems["mlp"].noise_var


def test_optcore_and_reference_train_alike(trained):
    dtype, _, runs = trained
    fast, ref = _runs_by(runs, "optcore"), _runs_by(runs, "reference")
    assert fast.keys() == ref.keys()
    for key in fast:
        np.testing.assert_array_equal(fast[key].curve_steps, ref[key].curve_steps)
        np.testing.assert_allclose(fast[key].curve_loss, ref[key].curve_loss,
                                   rtol=AGREE_RTOL[dtype], err_msg=str(key))


def test_training_does_not_touch_the_problem():
    problems = demo_training.make_problems(seed=3)
    before = [p.copy() for p in problems["mlp"].init_params]
    method = demo_training.scaled(demo_training.METHODS[-1], 0.01)
    demo_training.train(method, problems["mlp"], optcore)
    for a, b in zip(before, problems["mlp"].init_params):
        np.testing.assert_array_equal(a, b)


def test_scaled_step_counts():
    gd = demo_training.METHODS[0]
    assert demo_training.scaled(gd, 0.25).steps == round(gd.steps / 4)
    assert demo_training.scaled(gd, 1e-9).steps == 1


def _check_output(out, dtype="float32"):
    assert f"{dtype}, seed 0" in out
    assert "final MSE" in out and "time [ms]" in out
    for name in METHOD_NAMES:
        assert name in out
    assert out.count("optcore") >= 2 and "reference" in out


def test_cli_in_process(capsys):
    assert main(["demo", "--quick", "--dtype", "float64"]) == 0
    _check_output(capsys.readouterr().out, "float64")


def test_cli_subprocess():
    # `python -m optcore` with the optcore these tests import
    done = run_python(["-m", "optcore", "demo", "--quick"], capture_output=True,
                      text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _check_output(done.stdout)


def test_cli_rejects_a_nonpositive_scale(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--scale", "0"])
    assert exc.value.code == 2
    assert "argument --scale: must be a finite number > 0" in capsys.readouterr().err


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "loss.png"
    assert main(["demo", "--quick", "--plot", str(path)]) == 0
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert str(path) in capsys.readouterr().out


def test_plot_without_matplotlib_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    path = tmp_path / "loss.png"
    with pytest.raises(SystemExit, match="--plot needs matplotlib"):
        main(["demo", "--quick", "--plot", str(path)])
    assert capsys.readouterr().out == ""
    assert not path.exists()


def test_table_takes_any_backends():
    # A backend that trained only some methods (e.g. a torch run of the MLP)
    # gets its own columns, "-" where it has no run.
    problems = demo_training.make_problems(seed=0)
    gd, adam_mlp = (demo_training.scaled(m, 0.01) for m in
                    (demo_training.METHODS[0], demo_training.METHODS[-1]))
    runs = [demo_training.train(gd, problems["linear"], optcore),
            demo_training.train(adam_mlp, problems["mlp"], optcore)]
    extra = demo_training.train(adam_mlp, problems["mlp"], optcore.reference)
    extra.backend = "torch.optim"
    lines = demo.format_table(runs + [extra])
    assert "torch.optim" in lines[1]
    assert len({len(line) for line in lines[1:]}) == 1        # aligned
    gd_row = next(line for line in lines if gd.name in line)
    loss_fast, loss_torch, time_fast, time_torch = gd_row.split()[-4:]
    assert (loss_torch, time_torch) == ("-", "-")
    assert float(loss_fast) == pytest.approx(runs[0].final_loss, rel=1e-4)
    assert float(time_fast) >= 0


def test_precision_demo_trains_every_storage(capsys):
    # A few steps of each model with every storage: the table has a row per
    # storage, every loss is finite, and no storage is far from float32 states.
    from optcore.cli import demo_precision
    assert main(["demo", "--precision", "--scale", "0.02"]) == 0
    text = capsys.readouterr().out
    for label in demo_precision.VARIANTS:
        assert label in text
    # the seed MLP learns with every storage, near the float32-state run
    model = demo_precision._seed_mlp(0, 0.02)
    base = demo_precision.train(model, demo_precision.VARIANTS["fp32 states"], 0)
    assert base[-1] < base[0]
    for label, variant in demo_precision.VARIANTS.items():
        curve = demo_precision.train(model, variant, 0)
        assert all(np.isfinite(curve)), label
        assert abs(curve[-1] - base[-1]) <= 0.1 * base[-1], label
    # the 1M-parameter model steps with every storage (its tensors are quantized)
    wide = demo_precision._wide_mlp(0, 0.005)
    for label, variant in demo_precision.VARIANTS.items():
        assert all(np.isfinite(demo_precision.train(wide, variant, 0))), label
