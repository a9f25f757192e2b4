"""optcore.distributed over MPI: mpirun with 1, 2 and 4 processes on this
machine (127.0.0.1 only), each run under a timeout so that a hang fails.

The rank side is tests/distributed_mpi_worker.py. Needs Open MPI's mpirun and
mpi4py: skipped when missing, failed in CI (OPTCORE_REQUIRE_OPTIONAL=1)."""

import os
import shutil
import subprocess
import sys

import pytest

import optcore
from support import REQUIRE_OPTIONAL, require_module

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "distributed_mpi_worker.py")
TIMEOUT = 300
# Loopback only; shared memory (vader) and self within the machine.
LOCAL_ONLY = ["--mca", "btl", "self,vader,tcp", "--mca", "btl_tcp_if_include", "lo",
              "--mca", "oob_tcp_if_include", "lo"]


def _mpirun():
    require_module("mpi4py")
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        if REQUIRE_OPTIONAL:
            pytest.fail("mpirun is required in CI but missing (apt-get install openmpi-bin)")
        pytest.skip("mpirun not installed")
    return mpirun


def launch(n, *args, expect_ok=True):
    """Run the worker on n processes; its output, after checking the exit."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(optcore.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    # as root in CI containers; a no-op otherwise
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    cmd = [_mpirun(), "--allow-run-as-root", "--oversubscribe", "-n", str(n), *LOCAL_ONLY,
           "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS",
           sys.executable, "-m", "mpi4py", WORKER, *args]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mpirun -n {n} {' '.join(args)} hung (no exit in {TIMEOUT} s):\n"
                    f"{exc.stdout}\n{exc.stderr}")
    out = done.stdout + done.stderr
    if expect_ok:
        assert done.returncode == 0, f"mpirun -n {n} {' '.join(args)} failed:\n{out}"
        for rank in range(n):
            assert f"rank {rank} of {n}: {args[0]} ok" in done.stdout, out
    return done


@pytest.mark.parametrize("n", [1, 2, 4])
def test_bitwise_equal_to_single_process(n):
    launch(n, "exact")


@pytest.mark.parametrize("n", [2, 4])
def test_faults_raise_the_same_error_on_every_rank(n):
    launch(n, "faults")


@pytest.mark.parametrize("saved,loaded", [(2, 1), (1, 2), (2, 4)])
def test_checkpoint_loads_into_another_world_size(saved, loaded, tmp_path):
    path = str(tmp_path / "zero.pkl")
    launch(saved, "save", path)
    launch(loaded, "load", path)


def test_a_rank_dying_outside_the_optimizer_ends_the_job():
    done = launch(2, "abort", expect_ok=False)
    assert done.returncode != 0
    assert "a rank dies before its step" in done.stdout + done.stderr


def test_docstring_examples_run_on_two_ranks():
    launch(2, "doctest")


def test_optcore_imports_without_mpi4py():
    code = ("import sys, optcore, optcore.distributed; "
            "assert 'mpi4py' not in sys.modules; print('ok')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(optcore.__file__)))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=root))
    assert done.stdout.strip() == "ok", done.stderr
