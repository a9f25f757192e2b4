"""`python -m optcore demo --torch` (optcore.cli.demo_torch)."""

import pytest

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_demo_torch_curves_coincide(torch, capsys, dtype):
    from optcore.cli import main
    rc = main(["demo", "--torch", "--scale", "0.05", "--dtype", dtype])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "the loss curves coincide" in out
    for backend in ("optcore", "torch.optim", "torch fused", "optcore.torch"):
        assert f" {backend} " in out
    assert "optimizer.step() median" in out
    assert "100 steps" in out


def test_demo_torch_plot(torch, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from optcore.cli import main
    path = tmp_path / "curves.png"
    assert main(["demo", "--torch", "--scale", "0.01", "--plot", str(path)]) == 0
    assert path.stat().st_size > 1000
    assert f"loss curves written to {path}" in capsys.readouterr().out
