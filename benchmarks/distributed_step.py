"""Step time of optcore.distributed.ZeroOptimizer, split into communication
and compute, and the optimizer state per rank. Run under mpirun:

    mpirun -n 2 python benchmarks/distributed_step.py [--elements 4194304]
        [--stage 1] [--class AdamW] [--repeat 20]

Rank 0 prints the medians (the step of the slowest rank, per repeat)."""

import argparse
import time

import numpy as np
from mpi4py import MPI

import optcore
from optcore.distributed import ZeroOptimizer
from optcore.distributed import _collective, zero

parser = argparse.ArgumentParser()
parser.add_argument("--elements", type=int, default=1 << 22)
parser.add_argument("--stage", type=int, default=1)
parser.add_argument("--class", dest="cls", default="AdamW")
parser.add_argument("--repeat", type=int, default=20)
args = parser.parse_args()

comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()
rng = np.random.default_rng(0)
# a model-like mix: a few large matrices and small vectors
sizes = [args.elements // 4] * 3 + [args.elements - 3 * (args.elements // 4) - 1000, 1000]
params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
opt = ZeroOptimizer(getattr(optcore, args.cls), params, comm, stage=args.stage, lr=1e-3)

# communication time: wrap the two data-moving collectives
spent = {"comm": 0.0}


def timed(fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent["comm"] += time.perf_counter() - t
    return wrapper


for avg in opt._averagers:
    avg.comm = type("TimedComm", (), {"Alltoall": staticmethod(timed(comm.Alltoall))})()
zero.allgather_in_place = timed(_collective.allgather_in_place)

opt.step(grads)                                     # first step allocates the state
steps, comms = [], []
for _ in range(args.repeat):
    comm.Barrier()
    spent["comm"] = 0.0
    t = time.perf_counter()
    opt.step(grads)
    dt = time.perf_counter() - t
    steps.append(comm.allreduce(dt, op=MPI.MAX))
    comms.append(comm.allreduce(spent["comm"], op=MPI.MAX))
state = comm.allgather(opt.state_nbytes)
if rank == 0:
    whole = sum(sizes) * 4 * len([k for k in opt.optimizer.state[0] if k != "step"])
    print(f"{args.cls} stage {args.stage}, world {world}, {sum(sizes)} parameters: "
          f"step {np.median(steps) * 1e3:.2f} ms (communication "
          f"{np.median(comms) * 1e3:.2f} ms), state per rank {max(state)} bytes "
          f"({max(state) / whole:.3f} of one process's {whole})")
