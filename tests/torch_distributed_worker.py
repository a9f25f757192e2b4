"""One rank of the torch.distributed tests (tests/test_torch_distributed.py).

    python torch_distributed_worker.py SCENARIO RANK WORLD OUTDIR

MASTER_ADDR (127.0.0.1) and MASTER_PORT come from the environment; the
process group is gloo over the loopback. Scenarios:

- ``train``: FSDP2 ``fully_shard`` (reshard_after_forward True and False,
  and a bfloat16 ``MixedPrecisionPolicy``),
  DDP and ZeroRedundancyOptimizer, each with an optcore.torch optimizer and
  side by side with the torch.optim class on the same data; after every step
  the parameters are within TORCH_RTOL of torch's and equal, bit for bit, a
  single-process optcore step on the same averaged gradients. The FSDP2 run
  clips with torch's clip_grad_norm_ and, given a checkpoint directory, saves
  model and optimizer with torch.distributed.checkpoint (and rank 0 the
  single-process reference) there.
- ``load``: loads that checkpoint on this world size (resharding), checks the
  state bit for bit and that the next step equals the reference's.
- ``fault``: a bad gradient on rank 1, a missing one on rank 0, a closure
  that raises on rank 1: each step raises the same error on every rank and
  changes nothing; the run then goes on in step with the other ranks.

Every rank writes OUTDIR/rank<R>.json (what it saw) and exits 0 only if all
of its checks passed.
"""

import json
import os
import sys
import traceback
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

import optcore.torch
from support import TORCH_RTOL, assert_same_bits

STEPS = 3
LR = 0.05


def model_for(seed):
    # 6 and 3 rows: uneven shards on 4 ranks (one rank holds an empty shard)
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))


def batch(rank, step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(5, 8, generator=g), torch.randn(5, 3, generator=g)


def loss_of(model, rank, step):
    x, y = batch(rank, step)
    dtype = next(model.parameters()).dtype        # a bfloat16 model takes bfloat16 data
    return torch.nn.functional.mse_loss(model(x.to(dtype)), y.to(dtype))


def full(t):
    return t.full_tensor() if isinstance(t, DTensor) else t


def shard(model, mesh, reshard, mp=None):
    extra = {} if mp is None else {"mp_policy": mp}
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh, reshard_after_forward=reshard, **extra)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard, **extra)
    return model


class Reference:
    """A single-process optcore optimizer over plain copies of the full
    parameters, stepped on the gradients the distributed run averaged."""

    def __init__(self, model, cls, **options):
        self.params = [torch.nn.Parameter(full(p).detach().clone()) for p in model.parameters()]
        self.opt = cls(self.params, **options)

    def step(self, grads):
        for p, g in zip(self.params, grads):
            p.grad = g.detach().clone()
        self.opt.step()


def _numpy(t):
    t = full(t).detach()
    return t.view(torch.int16).numpy() if t.dtype is torch.bfloat16 else t.numpy()


def check_params(model, torch_model, ref, what, atol=TORCH_RTOL[np.float32]):
    for i, (p, q, r) in enumerate(zip(model.parameters(), torch_model.parameters(), ref.params)):
        assert_same_bits(_numpy(p), _numpy(r), f"{what}: parameter {i} vs single-process")
        mine, theirs = full(p).detach().float().numpy(), full(q).detach().float().numpy()
        scale = float(np.max(np.abs(theirs)))
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=atol * scale,
                                   err_msg=f"{what}: parameter {i} vs torch.optim")


#: bfloat16 parameters: optcore.torch (float32 math, one rounding per step,
#: or a float32 master) against torch.optim (bfloat16 ops) after STEPS steps,
#: relative to the largest parameter
BF16_ATOL = 2.0 ** -5


def run_fsdp(rank, world, mesh, reshard, cls, torch_cls, options, clip, seen, save=None,
             mp=None, dtype=torch.float32, storage=None):
    """``storage``: optcore.torch's low-precision options (torch.optim's run
    takes ``options`` only)."""
    model = shard(model_for(0).to(dtype), mesh, reshard, mp)
    torch_model = shard(model_for(0).to(dtype), mesh, reshard, mp)
    opt = cls(model.parameters(), **options, **(storage or {}))
    torch_opt = torch_cls(torch_model.parameters(), **options)
    ref = Reference(model, cls, **options, **(storage or {}))
    what = f"FSDP2 reshard_after_forward={reshard} {cls.__name__}"
    if mp is not None:
        what += f" param_dtype={mp.param_dtype}"
    if dtype is not torch.float32:
        what += f" {dtype} parameters {storage}"
    atol = TORCH_RTOL[np.float32] if dtype is torch.float32 else BF16_ATOL
    for step in range(STEPS):
        for m in (model, torch_model):
            loss_of(m, rank, step).backward()
        if clip:
            for m in (model, torch_model):
                torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm=0.05)
        grads = [full(p.grad) for p in model.parameters()]
        opt.step()
        torch_opt.step()
        ref.step(grads)
        opt.zero_grad()
        torch_opt.zero_grad()
        check_params(model, torch_model, ref, f"{what} step {step}", atol)
    for i, p in enumerate(model.parameters()):
        for key in ("master_param", "compensation"):
            r = ref.opt.state[ref.params[i]]
            assert (key in opt.state[p]) == (key in r), key
            if key in r:
                assert_same_bits(_numpy(opt.state[p][key]), _numpy(r[key]), f"{what}: {key}")
        for key, t in opt.state[p].items():
            if key == "step":
                assert not isinstance(t, DTensor), key
                continue
            assert isinstance(t, DTensor), (key, type(t))
            assert t.device_mesh == p.device_mesh and t.placements == p.placements, key
            assert t.to_local().shape == p.to_local().shape, key
    seen.append(what)
    if save is not None:
        from torch.distributed.checkpoint.state_dict import (get_model_state_dict,
                                                             get_optimizer_state_dict)
        import torch.distributed.checkpoint as dcp
        dcp.save({"model": get_model_state_dict(model),
                  "optim": get_optimizer_state_dict(model, opt)}, checkpoint_id=save)
        if rank == 0:
            torch.save({"params": [p.detach() for p in ref.params],
                        "optim": ref.opt.state_dict()}, os.path.join(save, "reference.pt"))
        dist.barrier()
        seen.append("saved")


def run_ddp(rank, world, zero, cls, torch_cls, options, seen):
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.distributed.optim import ZeroRedundancyOptimizer
    model, torch_model = DDP(model_for(1)), DDP(model_for(1))
    if zero:
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, **options)
        torch_opt = ZeroRedundancyOptimizer(torch_model.parameters(),
                                            optimizer_class=torch_cls, **options)
    else:
        opt, torch_opt = cls(model.parameters(), **options), torch_cls(torch_model.parameters(),
                                                                       **options)
    ref = Reference(model, cls, **options)
    what = f"{'ZeroRedundancyOptimizer' if zero else 'DDP'} {cls.__name__}"
    for step in range(STEPS):
        for m in (model, torch_model):
            loss_of(m, rank, step).backward()
        grads = [p.grad for p in model.parameters()]
        ref.step(grads)
        opt.step()
        torch_opt.step()
        opt.zero_grad()
        torch_opt.zero_grad()
        check_params(model, torch_model, ref, f"{what} step {step}")
    if zero:
        opt.consolidate_state_dict(to=0)
        if rank == 0:
            sd = opt.state_dict()
            for i, r in enumerate(ref.params):
                for key, t in ref.opt.state[r].items():
                    assert_same_bits(sd["state"][i][key].numpy(), t.numpy(),
                                     f"{what}: consolidated state[{i}][{key!r}]")
    seen.append(what)


def train(rank, world, outdir, seen):
    mesh = init_device_mesh("cpu", (world,))
    adamw = dict(lr=LR, weight_decay=0.1)
    save = os.path.join(outdir, "checkpoint") if world == 2 else None
    run_fsdp(rank, world, mesh, True, optcore.torch.AdamW, torch.optim.AdamW, adamw, True,
             seen, save)
    run_fsdp(rank, world, mesh, False, optcore.torch.Adagrad, torch.optim.Adagrad,
             dict(lr=LR, initial_accumulator_value=0.1), False, seen)
    run_fsdp(rank, world, mesh, False, optcore.torch.SGD, torch.optim.SGD,
             dict(lr=LR, momentum=0.9, nesterov=True), False, seen)
    # bfloat16 compute, float32 gradient reduction: the optimizer steps the
    # float32 shards FSDP2 keeps
    bf16 = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    run_fsdp(rank, world, mesh, True, optcore.torch.AdamW, torch.optim.AdamW, adamw, False,
             seen, mp=bf16)
    # bfloat16 parameters, stepped in float32 through a float32 master copy
    # or Kahan-compensated: both elementwise, DTensors laid out as the shards
    for storage in (dict(master_weights=True), dict(rounding="kahan")):
        run_fsdp(rank, world, mesh, True, optcore.torch.AdamW, torch.optim.AdamW, adamw,
                 False, seen, dtype=torch.bfloat16, storage=storage)
    run_ddp(rank, world, False, optcore.torch.AdamW, torch.optim.AdamW, adamw, seen)
    run_ddp(rank, world, True, optcore.torch.AdamW, torch.optim.AdamW, adamw, seen)
    refusals(rank, mesh, seen)


def refusals(rank, mesh, seen):
    """What a DTensor step refuses, with the error each raises."""
    from torch.distributed.tensor import Replicate
    model = shard(model_for(0), mesh, True)
    # LAMB's trust ratio needs whole-tensor norms: a shard is refused
    try:
        optcore.torch.LAMB(model.parameters())
    except ValueError as exc:
        assert "per-tensor norms" in str(exc), exc
        seen.append("LAMB refused")
    # int8 block scales and stochastic rounding's random bits are indexed by
    # position in the whole tensor: a shard is refused when it joins the
    # optimizer, naming the option
    bf16 = shard(model_for(0).to(torch.bfloat16), mesh, True)
    for storage in (dict(state_dtype="int8"), dict(rounding="stochastic")):
        try:
            optcore.torch.AdamW(bf16.parameters(), lr=LR, **storage)
        except TypeError as exc:
            assert "is a DTensor" in str(exc) and next(iter(storage.values())) in str(exc), exc
        else:
            raise AssertionError(f"a DTensor parameter was taken with {storage}")
    seen.append("int8 and stochastic refused")
    opt = optcore.torch.AdamW(model.parameters(), lr=LR)
    loss_of(model, rank, 0).backward()
    p = next(model.parameters())
    good = p.grad
    # a gradient laid out otherwise than its parameter
    p.grad = DTensor.from_local(torch.zeros(p.shape), p.device_mesh, [Replicate()],
                                run_check=False)
    try:
        opt.step()
    except ValueError as exc:
        assert "device mesh and placements" in str(exc), exc
    else:
        raise AssertionError("a replicated grad of a sharded parameter was accepted")
    assert not opt.state
    p.grad = good
    opt.step()
    # state that is not a DTensor (it would not be saved as the parameter's shard)
    opt.state[p]["exp_avg"] = opt.state[p]["exp_avg"].to_local().clone()
    try:
        opt.step()
    except TypeError as exc:
        assert "must be a DTensor" in str(exc), exc
    else:
        raise AssertionError("a plain state tensor of a DTensor parameter was accepted")
    seen.append("refused")


def load(rank, world, outdir, seen):
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict, get_optimizer_state_dict, set_model_state_dict,
        set_optimizer_state_dict)
    import torch.distributed.checkpoint as dcp
    mesh = init_device_mesh("cpu", (world,))
    checkpoint = os.path.join(outdir, "checkpoint")
    model = shard(model_for(7), mesh, True)          # other weights: the load must set them
    options = dict(lr=LR, weight_decay=0.1)
    opt = optcore.torch.AdamW(model.parameters(), **options)
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(state, checkpoint_id=checkpoint)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])
    expected = torch.load(os.path.join(checkpoint, "reference.pt"))
    ref_model = model_for(7)
    ref = Reference(ref_model, optcore.torch.AdamW, **options)
    with torch.no_grad():
        for r, saved in zip(ref.params, expected["params"]):
            r.copy_(saved)
    ref.opt.load_state_dict(expected["optim"])
    for i, (p, r) in enumerate(zip(model.parameters(), ref.params)):
        assert_same_bits(full(p).detach().numpy(), r.detach().numpy(), f"loaded parameter {i}")
        for key, t in ref.opt.state[r].items():
            mine = opt.state[p][key]
            if key != "step":
                assert isinstance(mine, DTensor) and mine.placements == p.placements, key
            assert_same_bits(full(mine).numpy(), t.numpy(), f"loaded state[{i}][{key!r}]")
    loss_of(model, rank, STEPS).backward()
    grads = [full(p.grad) for p in model.parameters()]
    opt.step()
    ref.step(grads)
    for i, (p, r) in enumerate(zip(model.parameters(), ref.params)):
        assert_same_bits(full(p).detach().numpy(), r.detach().numpy(),
                         f"parameter {i} after a step from the loaded state")
    seen.append(f"loaded on {world}")


def fault(rank, world, outdir, seen):
    """Bad input on one rank: each refused step raises the same error on
    every rank and changes nothing anywhere; the ranks stay in step and the
    run goes on once the input is mended."""
    mesh = init_device_mesh("cpu", (world,))
    model = shard(model_for(0), mesh, True)
    opt = optcore.torch.AdamW(model.parameters(), lr=LR)
    params = list(model.parameters())

    def snapshot():
        return [(q.to_local().detach().clone(),
                 {k: (v.to_local() if isinstance(v, DTensor) else v).detach().clone()
                  for k, v in opt.state[q].items()}) for q in params]

    def refused(what, match, closure=None):
        before = snapshot()
        try:
            opt.step(closure)
        except ValueError as exc:
            assert match in str(exc), exc
            seen.append(f"{what}: {exc}")
        else:
            raise AssertionError(f"{what}: the step was not refused")
        for i, (q, (saved, state)) in enumerate(zip(params, before)):
            assert_same_bits(q.to_local().detach().numpy(), saved.numpy(), f"param {i}")
            for k, v in opt.state[q].items():
                v = v.to_local() if isinstance(v, DTensor) else v
                assert_same_bits(v.detach().numpy(), state[k].numpy(), f"state[{i}][{k!r}]")

    for step in range(STEPS + 1):
        loss_of(model, rank, step).backward()
        p = params[-1]
        good = p.grad
        if step == 1:
            # rank 1: the last grad with its global shape and layout, but a
            # local shard one element too long
            if rank == 1:
                local = good.to_local()
                p.grad = DTensor.from_local(torch.zeros(local.numel() + 1), mesh, p.placements,
                                            run_check=False, shape=p.shape, stride=p.stride())
            refused("bad gradient", "refused on rank 1, so no rank stepped")
        elif step == 2:
            if rank == 0:
                p.grad = None                                  # a missing gradient
            refused("missing gradient", "gradients for different parameters")
        elif step == 3:
            def closure():
                if rank == 1:
                    raise ValueError("the loss is not finite")  # e.g. the user's check
                return torch.tensor(0.0)
            refused("closure", "refused on rank 1, so no rank stepped: the loss is not "
                               "finite", closure)
        p.grad = good
        opt.step()
        opt.zero_grad()
    # the ranks stayed in step: a last collective, and the same parameters
    # as a run that never saw the faults
    ref_model = shard(model_for(0), mesh, True)
    ref = optcore.torch.AdamW(ref_model.parameters(), lr=LR)
    for step in range(STEPS + 1):
        loss_of(ref_model, rank, step).backward()
        ref.step()
        ref.zero_grad()
    for i, (q, r) in enumerate(zip(params, ref_model.parameters())):
        assert_same_bits(full(q).detach().numpy(), full(r).detach().numpy(),
                         f"parameter {i} after the refused steps")
    seen.append("finished")


def main():
    scenario, rank, world, outdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=float(os.environ.get("OPTCORE_PG_TIMEOUT",
                                                                           "60"))))
    seen = []
    code = 0
    try:
        {"train": train, "load": load, "fault": fault}[scenario](rank, world, outdir, seen)
    except SystemExit as exc:
        code = int(exc.code)
    except BaseException:
        seen.append(traceback.format_exc())
        code = 1
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "code": code, "seen": seen}, f)
    if scenario == "fault" or code:
        # A failed group cannot be torn down collectively: leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    # Every rank is done before the group is torn down; then leave without
    # the interpreter's teardown, where gloo's threads may still be stopping
    # (seen on a loaded machine: "terminate called without an active
    # exception" after the report was written).
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
