"""Optimizer-step time of optcore.distributed.ZeroOptimizer (stage 1, AdamW)
against torch's ZeroRedundancyOptimizer(torch.optim.AdamW) on gloo, and of
the single-process optcore.AdamW and torch.optim.AdamW, on one model, one
thread per process; with the communication/compute split and the optimizer
state per process.

    python benchmarks/distributed_step.py [--elements 4194304] [--repeat 20]
        [--worlds 1,2,4] [--out benchmarks/results/distributed_step.txt]

The script launches itself: ``mpirun -n N`` for optcore, N processes joined
over ``tcp://127.0.0.1`` for torch. Each figure is the median over the
repeats of the slowest process's time. A step is the whole optimizer step
of data-parallel training after the backward pass: the gradient average
over the processes, the update, and the parameters made whole again on
every process. For torch that is an all-reduce of the gradients (what DDP
does during the backward pass) followed by ZeroRedundancyOptimizer.step
(the local AdamW step and the broadcast of the parameters).

Communication is the time spent in the collectives (with the wait for the
slowest process), compute the rest of the step."""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
LOCAL_ONLY = ["--mca", "btl", "self,vader,tcp", "--mca", "btl_tcp_if_include", "lo",
              "--mca", "oob_tcp_if_include", "lo"]


ORDER = ["optcore.AdamW, one process", "torch.optim.AdamW, one process",
         "torch.optim.AdamW(fused=True), one process", "optcore ZeroOptimizer stage 1",
         "optcore ZeroOptimizer stage 1, flat_params/flat_grads",
         "torch ZeroRedundancyOptimizer(AdamW), gloo"]


def model_sizes(elements):
    """A model-like mix: three large matrices, a fourth, one small vector."""
    return [elements // 4] * 3 + [elements - 3 * (elements // 4) - 1000, 1000]


def model(elements):
    rng = np.random.default_rng(0)
    sizes = model_sizes(elements)
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    return params, grads


def run_optcore(args):
    from mpi4py import MPI

    import optcore
    from optcore.distributed import ZeroOptimizer, zero

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    params, grads = model(args.elements)
    spent = [0.0]

    class TimedComm:
        """The communicator, the time in its data-moving collectives counted."""

        def __getattr__(self, name):
            return getattr(comm, name)

        def Alltoallv(self, *a):
            t = MPI.Wtime()
            comm.Alltoallv(*a)
            spent[0] += MPI.Wtime() - t

        def Isend(self, *a, **k):
            t = MPI.Wtime()
            request = comm.Isend(*a, **k)
            spent[0] += MPI.Wtime() - t
            return request

        def Irecv(self, *a, **k):
            t = MPI.Wtime()
            request = comm.Irecv(*a, **k)
            spent[0] += MPI.Wtime() - t
            return request

    def timed_wait(requests):
        t = MPI.Wtime()
        MPI.Request.Waitall(requests)
        spent[0] += MPI.Wtime() - t

    real_allgather = zero.allgather_in_place

    def timed_allgather(c, flat):
        t = MPI.Wtime()
        real_allgather(c, flat)
        spent[0] += MPI.Wtime() - t

    zero.allgather_in_place = timed_allgather
    rows = []
    if world == 1:
        plain = optcore.AdamW([p.copy() for p in params], lr=1e-3)
        rows.append(measure(comm, "optcore.AdamW, one process", lambda: plain.step(grads),
                            spent, args.repeat, plain_nbytes(plain)))
    for mode in ("copy", "flat"):
        opt = ZeroOptimizer(optcore.AdamW, [p.copy() for p in params], comm, stage=1,
                            lr=1e-3)
        for avg in opt._averagers:
            avg.comm, avg.wait = TimedComm(), timed_wait
        step_grads = grads
        if mode == "flat":
            opt.flat_params()
            step_grads = opt.flat_grads()
            for view, g in zip(step_grads, grads):
                view[...] = g
        label = ("optcore ZeroOptimizer stage 1" if mode == "copy" else
                 "optcore ZeroOptimizer stage 1, flat_params/flat_grads")
        rows.append(measure(comm, label, lambda: opt.step(step_grads), spent, args.repeat,
                            lambda: opt.state_nbytes))
    if rank == 0:
        print(json.dumps(rows))


def plain_nbytes(opt):
    return lambda: sum(v.nbytes for st in opt.state.values() for v in st.values()
                       if isinstance(v, np.ndarray))


def measure(comm, label, step, spent, repeat, nbytes):
    """Median step and communication time (slowest rank), state per rank."""
    from mpi4py import MPI
    step()                                   # the first step allocates the state
    steps, comms = [], []
    for _ in range(repeat):
        comm.Barrier()
        spent[0] = 0.0
        t = MPI.Wtime()
        step()
        dt = MPI.Wtime() - t
        steps.append(comm.allreduce(dt, op=MPI.MAX))
        comms.append(comm.allreduce(spent[0], op=MPI.MAX))
    return {"engine": label, "world": comm.Get_size(), "step": float(np.median(steps)),
            "comm": float(np.median(comms)), "state": max(comm.allgather(nbytes()))}


def run_torch(args):
    import torch
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    torch.set_num_threads(1)
    rank, world = args.rank, args.world
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}",
                            rank=rank, world_size=world)
    params, grads = model(args.elements)
    rows = []

    def slowest(x):
        t = torch.tensor([x], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def bench(label, make, with_allreduce):
        ps = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
        flat_grad = torch.from_numpy(np.concatenate(grads))
        views = flat_grad.split([p.numel() for p in ps])
        for p, g in zip(ps, views):
            p.grad = g
        opt = make(ps)
        local = getattr(opt, "optim", opt)
        spent = [0.0]
        local_step = local.step

        def timed_local_step(*a, **k):
            t = time.perf_counter()
            out = local_step(*a, **k)
            spent[0] += time.perf_counter() - t
            return out

        local.step = timed_local_step

        def step():
            if with_allreduce:
                t = time.perf_counter()
                dist.all_reduce(flat_grad)      # the same gradients on every process
                spent[1] += time.perf_counter() - t
                flat_grad.div_(world)
            t = time.perf_counter()
            opt.step()
            spent[2] += time.perf_counter() - t

        spent += [0.0, 0.0]
        step()
        steps, comms = [], []
        for _ in range(args.repeat):
            dist.barrier()
            spent[:] = [0.0, 0.0, 0.0]
            t = time.perf_counter()
            step()
            dt = time.perf_counter() - t
            steps.append(slowest(dt))
            # the all-reduce, and the step outside the local update (the broadcast)
            comms.append(slowest(spent[1] + spent[2] - spent[0]))
        state = sum(v.numel() * v.element_size() for st in local.state.values()
                    for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
        states = [None] * world
        dist.all_gather_object(states, state)
        rows.append({"engine": label, "world": world, "step": float(np.median(steps)),
                     "comm": float(np.median(comms)), "state": max(states)})

    if world == 1:
        bench("torch.optim.AdamW, one process",
              lambda ps: torch.optim.AdamW(ps, lr=1e-3), False)
        bench("torch.optim.AdamW(fused=True), one process",
              lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True), False)
    bench("torch ZeroRedundancyOptimizer(AdamW), gloo",
          lambda ps: ZeroRedundancyOptimizer(ps, optimizer_class=torch.optim.AdamW, lr=1e-3),
          True)
    if rank == 0:
        print(json.dumps(rows))
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"),
                                           os.environ.get("PYTHONPATH", "")]))
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    common = ["--elements", str(args.elements), "--repeat", str(args.repeat)]
    rows = []
    for world in args.worlds:
        cmd = [shutil.which("mpirun") or "mpirun", "--allow-run-as-root", "--oversubscribe",
               "-n", str(world), *LOCAL_ONLY, "-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS",
               sys.executable, "-m", "mpi4py", HERE, "--worker", "optcore", *common]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                             timeout=1200).stdout
        rows += json.loads(out.strip().splitlines()[-1])
        port = free_port()
        procs = [subprocess.Popen([sys.executable, HERE, "--worker", "torch", *common,
                                   "--rank", str(r), "--world", str(world),
                                   "--port", str(port)],
                                  env=env, stdout=subprocess.PIPE, text=True)
                 for r in range(world)]
        outs = [p.communicate(timeout=1200)[0] for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError(f"torch at world {world} failed")
        rows += json.loads(outs[0].strip().splitlines()[-1])
    return rows


def report(args, rows):
    import torch

    from mpi4py import MPI
    one_process = 2 * args.elements * 4          # AdamW: two float32 moments
    lines = [f"AdamW optimizer step, {args.elements} float32 parameters in "
             f"{len(model_sizes(args.elements))} tensors, 1 thread per process, median of "
             f"{args.repeat} steps (slowest process); torch {torch.__version__}, "
             f"{MPI.Get_library_version().split(',')[0].strip()}",
             f"load average at the start: {args.load}", "",
             "| engine | processes | step (ms) | communication (ms) | compute (ms) | "
             "state per process (MB) | of one process's |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["world"], ORDER.index(r["engine"]))):
        lines.append(f"| {r['engine']} | {r['world']} | {r['step'] * 1e3:.2f} | "
                     f"{r['comm'] * 1e3:.2f} | {(r['step'] - r['comm']) * 1e3:.2f} | "
                     f"{r['state'] / 1e6:.1f} | {r['state'] / one_process:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--elements", type=int, default=1 << 22)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--worlds", default="1,2,4")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", choices=["optcore", "torch"])
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.worker == "optcore":
        return run_optcore(args)
    if args.worker == "torch":
        return run_torch(args)
    args.worlds = [int(w) for w in args.worlds.split(",")]
    args.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(args, launch(args))
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
