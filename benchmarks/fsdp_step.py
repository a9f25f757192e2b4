"""Optimizer-step time under FSDP2 (``fully_shard`` on a CPU device mesh, gloo
over 127.0.0.1) of optcore.torch.AdamW, torch.optim.AdamW (default settings)
and torch.optim.AdamW(fused=True), on one model, one thread per process; with
the optimizer state per process.

    python benchmarks/fsdp_step.py [--size 50m|4m] [--world 2] [--repeat 20]
        [--warmup 3] [--out benchmarks/results/fsdp_step.txt]

The model is a stack of square Linear layers (``--size 50m``: 12 of width
2048, 50.36M parameters; ``--size 4m``: 4 of width 1024, 4.20M, a quick run),
each layer and the whole model ``fully_shard``-ed, so every parameter and
gradient is a DTensor sharded over the processes. The script launches its own
processes. The three optimizers each train their own copy of the model
(the same initial weights, the same batches), taking turns step by step in a
rotating order so that changes in the machine's load fall on all three alike.
Each training step is a forward and backward pass (FSDP2's all-gathers and
reduce-scatters happen there) and then ``opt.step()``; only ``opt.step()`` is
timed, after a barrier. The figure is the median over the
repeats of the slowest process's time; the step moves no data between the
processes (each updates its local shards), so it is all compute.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
SIZES = {"50m": (2048, 12), "4m": (1024, 4)}     # width, layers
BATCH = 4
OPTIMIZERS = ["optcore.torch.AdamW", "torch.optim.AdamW", "torch.optim.AdamW(fused=True)"]


def make_optimizer(name, params):
    import torch
    if name == "optcore.torch.AdamW":
        import optcore.torch
        return optcore.torch.AdamW(params, lr=1e-3)
    if name == "torch.optim.AdamW":
        return torch.optim.AdamW(params, lr=1e-3)
    return torch.optim.AdamW(params, lr=1e-3, fused=True)


def local_nbytes(tensor):
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def run_worker(args):
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    rank, world = args.rank, args.world
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}",
                            rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    width, layers = SIZES[args.size]

    def slowest(x):
        t = torch.tensor([x], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    runs = {}
    for name in OPTIMIZERS:
        torch.manual_seed(0)                     # the same model for every optimizer
        model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
        for layer in model:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        runs[name] = (model, make_optimizer(name, list(model.parameters())), [])
    data = torch.Generator().manual_seed(1 + rank)        # each process its own batches
    for i in range(args.warmup + args.repeat):
        x = torch.randn(BATCH, width, generator=data)
        # the optimizers take turns, in a rotating order, so that a change in
        # the machine's load falls on all of them alike
        for name in OPTIMIZERS[i % 3:] + OPTIMIZERS[:i % 3]:
            model, opt, steps = runs[name]
            model(x).square().mean().backward()
            dist.barrier()
            t = time.perf_counter()
            opt.step()
            dt = time.perf_counter() - t
            opt.zero_grad(set_to_none=True)
            if i >= args.warmup:
                steps.append(slowest(dt))
    rows = []
    for name in OPTIMIZERS:
        model, opt, steps = runs[name]
        state = sum(local_nbytes(v) for st in opt.state.values() for v in st.values()
                    if torch.is_tensor(v) and v.dim() > 0)
        states = [None] * world
        dist.all_gather_object(states, state)
        rows.append({"optimizer": name, "step": float(np.median(steps)),
                     "spread": [float(min(steps)), float(max(steps))],
                     "state": max(states),
                     "params": sum(p.numel() for p in model.parameters())})
    if rank == 0:
        print(json.dumps(rows))
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPTCORE_NUM_THREADS="1",
               GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"),
                                           os.environ.get("PYTHONPATH", "")]))
    port = free_port()
    common = ["--size", args.size, "--repeat", str(args.repeat), "--warmup",
              str(args.warmup), "--world", str(args.world), "--port", str(port)]
    procs = [subprocess.Popen([sys.executable, HERE, "--worker", "--rank", str(r), *common],
                              env=env, stdout=subprocess.PIPE, text=True)
             for r in range(args.world)]
    try:
        outs = [p.communicate(timeout=1800)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise
    if any(p.returncode for p in procs):
        raise RuntimeError("a process failed")
    return json.loads(outs[0].strip().splitlines()[-1])


def report(args, rows):
    import torch
    width, layers = SIZES[args.size]
    by_name = {r["optimizer"]: r for r in rows}
    default = by_name["torch.optim.AdamW"]["step"]
    lines = [f"FSDP2 fully_shard AdamW optimizer step, {rows[0]['params']} float32 parameters "
             f"({layers} Linear({width}, {width})), {args.world} processes x 1 thread, gloo on "
             f"127.0.0.1, median of {args.repeat} steps after {args.warmup} (slowest process); "
             f"torch {torch.__version__}",
             f"load average at the start: {args.load}", "",
             "| optimizer | step (ms) | fastest, slowest (ms) | vs torch.optim.AdamW | "
             "state per process (MB) |",
             "|---|---|---|---|---|"]
    for name in OPTIMIZERS:
        r = by_name[name]
        lines.append(f"| {name} | {r['step'] * 1e3:.2f} | {r['spread'][0] * 1e3:.2f}, "
                     f"{r['spread'][1] * 1e3:.2f} | {default / r['step']:.2f}x | "
                     f"{r['state'] / 1e6:.1f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted(SIZES), default="50m")
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args)
    args.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(args, launch(args))
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
