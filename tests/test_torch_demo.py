"""`python -m optcore demo --torch` (optcore.cli.demo_torch)."""

import argparse

import pytest

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_demo_torch_curves_coincide(torch, capsys, dtype):
    from optcore.cli import demo_torch
    rc = demo_torch.main(["--steps", "150", "--samples", "200", "--dtype", dtype])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "The loss curves coincide" in out
    for label in ("torch.optim.Adam", "torch Adam(fused=True)", "optcore.torch.Adam"):
        assert label in out
    assert "loss@150" in out


def test_demo_torch_run_takes_a_foreign_namespace(torch, capsys):
    """The `demo` subcommand hands over its own parsed arguments; options it
    lacks fall back to the torch demo's defaults."""
    from optcore.cli import demo_torch
    rc = demo_torch.run(argparse.Namespace(torch=True, steps=40, samples=None))
    assert rc == 0
    assert "40 steps on 1000 synthetic samples" in capsys.readouterr().out
