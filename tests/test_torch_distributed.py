"""optcore.torch inside torch.distributed's engines: FSDP2, DDP, ZeroRedundancyOptimizer.

Each test spawns its ranks (tests/torch_distributed_worker.py) as processes
talking gloo over 127.0.0.1 only, and bounds them with a timeout: a hang
fails the test. What each rank checks is the worker's docstring.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from support import require_torch

pytestmark = pytest.mark.torch

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_distributed_worker.py")
TIMEOUT = 150     # seconds for one group of ranks (4 ranks share 2 cores)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario, world, outdir, timeout=TIMEOUT, pg_timeout=60):
    """Run the ranks of ``scenario``; returns {rank: its report}. Kills the
    ranks and fails if they are not all done within ``timeout``."""
    require_torch()
    import optcore
    root = os.path.dirname(os.path.dirname(os.path.abspath(optcore.__file__)))
    tests = os.path.dirname(WORKER)
    env = dict(os.environ)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), GLOO_SOCKET_IFNAME="lo",
               OMP_NUM_THREADS="1", OPTCORE_NUM_THREADS="1", OPTCORE_PG_TIMEOUT=str(pg_timeout),
               PYTHONPATH=os.pathsep.join([root, tests] + [p for p in env.get(
                   "PYTHONPATH", "").split(os.pathsep) if p]))
    procs = [subprocess.Popen([sys.executable, WORKER, scenario, str(rank), str(world),
                               str(outdir)], env=env, cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for rank in range(world)]
    outputs = {}
    try:
        for rank, proc in enumerate(procs):
            outputs[rank] = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.communicate()
        pytest.fail(f"{scenario} on {world} processes did not finish within {timeout} s")
    reports = {}
    for rank, proc in enumerate(procs):
        path = os.path.join(outdir, f"rank{rank}.json")
        assert os.path.exists(path), f"rank {rank} wrote no report:\n{outputs[rank]}"
        with open(path) as f:
            reports[rank] = json.load(f)
        reports[rank]["output"] = outputs[rank]
        reports[rank]["returncode"] = proc.returncode
    return reports


def assert_all_passed(reports):
    for rank, report in reports.items():
        assert report["code"] == 0 and report["returncode"] == 0, (
            f"rank {rank}: {report['seen']}\n{report['output']}")


TRAINED = ["FSDP2 reshard_after_forward=True AdamW",
           "FSDP2 reshard_after_forward=False Adagrad",
           "FSDP2 reshard_after_forward=False SGD",
           "FSDP2 reshard_after_forward=True AdamW param_dtype=torch.bfloat16",
           "FSDP2 reshard_after_forward=True AdamW torch.bfloat16 parameters "
           "{'master_weights': True}",
           "FSDP2 reshard_after_forward=True AdamW torch.bfloat16 parameters "
           "{'rounding': 'kahan'}",
           "DDP AdamW", "ZeroRedundancyOptimizer AdamW", "LAMB refused",
           "int8 and stochastic refused", "refused"]


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    """The 2-process training run, which also saves the checkpoint."""
    outdir = tmp_path_factory.mktemp("train2")
    reports = launch("train", 2, outdir)
    return outdir, reports


def test_engines_on_two_processes(checkpoint_dir):
    _, reports = checkpoint_dir
    assert_all_passed(reports)
    for report in reports.values():
        assert report["seen"] == [TRAINED[0], "saved", *TRAINED[1:]]


def test_engines_on_four_processes(tmp_path):
    reports = launch("train", 4, tmp_path)
    assert_all_passed(reports)
    for report in reports.values():
        assert report["seen"] == TRAINED


@pytest.mark.parametrize("world", [1, 4])
def test_checkpoint_saved_on_two_loads_resharded(checkpoint_dir, world, tmp_path):
    outdir, train_reports = checkpoint_dir
    assert_all_passed(train_reports)
    os.symlink(os.path.join(outdir, "checkpoint"), tmp_path / "checkpoint")
    reports = launch("load", world, tmp_path)
    assert_all_passed(reports)
    for report in reports.values():
        assert report["seen"] == [f"loaded on {world}"]


def test_bad_input_on_one_rank_raises_on_every_rank_and_never_hangs(tmp_path):
    # The ranks agree before any write: a bad gradient, a missing one or a
    # raising closure on one rank is the same ValueError on all of them.
    reports = launch("fault", 2, tmp_path, timeout=120, pg_timeout=30)
    assert_all_passed(reports)
    for report in reports.values():
        seen = report["seen"]
        assert [s.split(":")[0] for s in seen] == [
            "bad gradient", "missing gradient", "closure", "finished"], seen
        assert "param_groups[0]['params'][3]" in seen[0], seen
