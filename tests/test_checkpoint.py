"""optcore.save / optcore.load: exact round trips, atomic replacement, and a
CheckpointError for every truncated, corrupted, foreign or mismatched file."""

import glob
import json
import math
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import optcore
from support import run_python
from optcore import CheckpointError
from optcore import checkpoint as ckpt


# ---- helpers --------------------------------------------------------------------

def assert_identical(a, b, path="state"):
    """Same types, same structure, same bits (arrays: dtype, shape, bytes)."""
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype)
        assert np.ascontiguousarray(a).tobytes() == b.tobytes(), path
        assert b.flags.c_contiguous and b.flags.writeable, path
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), (path, a, b)
    elif isinstance(a, complex):
        assert struct.pack("<dd", a.real, a.imag) == struct.pack("<dd", b.real, b.imag)
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), path
        for k in a:
            assert_identical(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    elif type(a).__module__.startswith("torch"):
        assert a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad
        assert a.numpy().tobytes() == b.numpy().tobytes(), path
    else:
        assert a == b, (path, a, b)


def rich_state(rng):
    """Every kind of value a checkpoint stores, with awkward corners."""
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f32[0, 0] = np.nan
    f32[0, 1] = -0.0
    f32[0, 2] = np.inf
    arrays = {
        "f32": f32,
        "f64": rng.standard_normal(17),
        "f16": rng.standard_normal(4).astype(np.float16),
        "i8": np.array([-128, 0, 127], np.int8),
        "u64": np.array([0, 2**64 - 1], np.uint64),
        "bool": np.array([True, False, True]),
        "c64": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        "c128": rng.standard_normal(2) + 1j,
        "big_endian": np.arange(4, dtype=">f4"),
        "scalar0d": np.array(2.5),
        "empty": np.zeros((0, 3), np.float32),
        "longdouble": np.array([1.0, 2.0], np.longdouble),
    }
    return {
        "state": {0: {"step": 3, "exp_avg": f32.copy(), "exp_avg_sq": np.abs(f32)},
                  1: {"momentum_buffer": rng.standard_normal(7)}},
        "param_groups": [{"params": [0, 1], "lr": 1e-3, "betas": (0.9, 0.999),
                          "eps": 1e-8, "amsgrad": False, "foreach": None,
                          "name": "décodeur ✓"}],
        "arrays": arrays,
        "numbers": [0, -1, 2**100, -(2**70), 0.1, -0.0, math.inf, -math.inf, math.nan,
                    5e-324, 1 + 2j, True, False, None],
        "numpy_scalars": [np.float32(np.nan), np.float64(-0.0), np.int64(-5),
                          np.uint8(255), np.bool_(True), np.complex64(1 - 1j)],
        "bytes": b"\x00\xffbinary",
        (1, "tuple key"): "value",
        2.5: "float key",
        None: "none key",
    }


# ---- round trips ------------------------------------------------------------------

def test_round_trip_is_exact(tmp_path, rng):
    state = rich_state(rng)
    path = tmp_path / "state.ckpt"
    optcore.save(state, path)
    assert_identical(state, optcore.load(path))
    # str paths too, and the file is the same bytes when saved again
    optcore.save(state, str(tmp_path / "again.ckpt"))
    assert path.read_bytes() == (tmp_path / "again.ckpt").read_bytes()


def test_round_trip_of_views_and_layouts(tmp_path, rng):
    base = rng.standard_normal((6, 8)).astype(np.float32)
    state = {"strided": base[::2, 1::3], "fortran": np.asfortranarray(base),
             "reversed": base[::-1], "readonly": np.broadcast_to(base[0], (2, 8))}
    optcore.save(state, tmp_path / "v.ckpt")
    out = optcore.load(tmp_path / "v.ckpt")
    for k, v in state.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        np.testing.assert_array_equal(out[k], v)
        assert out[k].flags.c_contiguous and out[k].flags.writeable


def test_large_array_round_trip(tmp_path, rng):
    a = rng.standard_normal(3_000_001).astype(np.float32)
    optcore.save({"a": a}, tmp_path / "big.ckpt")
    out = optcore.load(tmp_path / "big.ckpt")["a"]
    assert out.tobytes() == a.tobytes()
    # arrays start on 64-byte boundaries in the file
    index = _index_of((tmp_path / "big.ckpt").read_bytes())
    assert all(e["offset"] % 64 == 0 for e in index["arrays"])


def test_unsupported_values_are_refused_before_any_file_is_written(tmp_path):
    path = tmp_path / "x.ckpt"
    optcore.save({"ok": 1}, path)
    good = path.read_bytes()

    class Opaque:
        pass

    bad_values = [({"a": [1, Opaque()]}, "Opaque"),
                  ({"obj": np.array([1, "x"], dtype=object)}, "object"),
                  ({"rec": np.zeros(2, dtype=[("a", "f4")])}, "dtype"),
                  ({"s": {1, 2}}, "set"),
                  ({"f": lambda: 0}, "function")]
    for value, word in bad_values:
        with pytest.raises(TypeError, match=word):
            optcore.save(value, path)
    cyclic = {"a": []}
    cyclic["a"].append(cyclic)
    with pytest.raises(ValueError, match="cycle"):
        optcore.save(cyclic, path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["x.ckpt"]          # no temporary left behind


def test_the_error_names_where_the_bad_value_is(tmp_path):
    with pytest.raises(TypeError, match=r"state_dict\['state'\]\[0\]\['buf'\]"):
        optcore.save({"state": {0: {"buf": object()}}}, tmp_path / "x.ckpt")


# ---- damaged files ----------------------------------------------------------------

def _small_checkpoint(tmp_path, rng):
    state = {"state": {0: {"exp_avg": rng.standard_normal(5).astype(np.float32),
                           "step": 4}},
             "param_groups": [{"params": [0], "lr": 0.1}]}
    path = tmp_path / "small.ckpt"
    optcore.save(state, path)
    return path, state


def _index_of(data):
    n = struct.unpack("<Q", data[-48:-40])[0]
    return json.loads(data[-48 - n:-48])


def test_every_truncation_is_detected(tmp_path, rng):
    path, _ = _small_checkpoint(tmp_path, rng)
    data = path.read_bytes()
    cut = tmp_path / "cut.ckpt"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="truncated|corrupted|not an optcore"):
            optcore.load(cut)


def test_every_flipped_byte_is_detected(tmp_path, rng):
    path, _ = _small_checkpoint(tmp_path, rng)
    data = path.read_bytes()
    bad = tmp_path / "bad.ckpt"
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x10
        bad.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError):
            optcore.load(bad)


def test_appended_garbage_and_foreign_files_are_refused(tmp_path, rng):
    path, _ = _small_checkpoint(tmp_path, rng)
    data = path.read_bytes()
    other = tmp_path / "other"
    for content in [data + b"\x00", b"", b"PK\x03\x04 a zip file", os.urandom(4096),
                    b"OPTCKPT\x00" + bytes(200)]:
        other.write_bytes(content)
        with pytest.raises(CheckpointError):
            optcore.load(other)


def _rewrite_index(data, change):
    """A well-formed file whose index was edited (digest recomputed)."""
    import hashlib
    n = struct.unpack("<Q", data[-48:-40])[0]
    head = data[:-48 - n]
    index = json.loads(data[-48 - n:-48])
    change(index)
    new = json.dumps(index).encode()
    body = head + new + struct.pack("<Q", len(new))
    return body + hashlib.sha256(body).digest() + ckpt.END


def test_newer_format_version_is_refused(tmp_path, rng):
    path, state = _small_checkpoint(tmp_path, rng)
    data = path.read_bytes()
    path.write_bytes(_rewrite_index(data, lambda ix: ix.update(version=ckpt.FORMAT_VERSION)))
    assert_identical(optcore.load(path), state)          # the rewrite itself is sound
    path.write_bytes(_rewrite_index(data, lambda ix: ix.update(version=ckpt.FORMAT_VERSION + 1)))
    with pytest.raises(CheckpointError, match="version"):
        optcore.load(path)


def test_tampered_array_table_is_refused(tmp_path, rng):
    path, _ = _small_checkpoint(tmp_path, rng)
    data = path.read_bytes()
    edits = [lambda ix: ix["arrays"][0].update(dtype="<f8"),
             lambda ix: ix["arrays"][0].update(shape=[6]),
             lambda ix: ix["arrays"][0].update(offset=10**12),
             lambda ix: ix["arrays"][0].update(dtype="|O"),
             lambda ix: ix["arrays"][0].update(sha256="0" * 64),
             lambda ix: ix["tree"].update(t="pickle")]
    for edit in edits:
        path.write_bytes(_rewrite_index(data, edit))
        with pytest.raises(CheckpointError):
            optcore.load(path)


# ---- atomic replacement -----------------------------------------------------------

def test_failed_save_keeps_the_previous_checkpoint(tmp_path, rng, monkeypatch):
    path, state = _small_checkpoint(tmp_path, rng)
    new_state = {"x": rng.standard_normal(1000)}
    real_fdopen = os.fdopen

    class FailingFile:
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, b):
            self.writes += 1
            if self.writes == 3:                     # in the middle of the data
                self.f.write(bytes(b)[:7])
                raise OSError(28, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    monkeypatch.setattr(ckpt.os, "fdopen", lambda *a, **k: FailingFile(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="No space"):
        optcore.save(new_state, path)
    monkeypatch.undo()
    assert_identical(optcore.load(path), state)
    assert sorted(os.listdir(tmp_path)) == ["small.ckpt"]


CRASHING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import optcore
    from optcore import checkpoint as ckpt
    real_fdopen = os.fdopen
    class Crash:
        def __init__(self, f): self.f, self.n = f, 0
        def write(self, b):
            self.n += 1
            if self.n == int(sys.argv[2]):
                self.f.write(bytes(b)[: len(b) // 2]); self.f.flush()
                os.kill(os.getpid(), signal.SIGKILL)       # power cut, mid-write
            return self.f.write(b)
        def __getattr__(self, k): return getattr(self.f, k)
        def __enter__(self): return self
        def __exit__(self, *e): return self.f.__exit__(*e)
    ckpt.os.fdopen = lambda *a, **k: Crash(real_fdopen(*a, **k))
    optcore.save({"x": np.full(2_000_000, 7.0)}, sys.argv[1])
""")


@pytest.mark.parametrize("crash_at_write", [1, 3, 4])
def test_killed_save_leaves_the_previous_checkpoint(tmp_path, rng, crash_at_write):
    path, state = _small_checkpoint(tmp_path, rng)
    proc = run_python(["-c", CRASHING_SAVE, str(path), str(crash_at_write)],
                      timeout=120, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert_identical(optcore.load(path), state)
    leftovers = [p for p in glob.glob(str(tmp_path / ".small.ckpt.tmp-*"))]
    assert len(leftovers) == 1                     # the interrupted temporary
    with pytest.raises(CheckpointError):
        optcore.load(leftovers[0])


def test_save_replaces_and_leaves_no_temporary(tmp_path, rng):
    path, _ = _small_checkpoint(tmp_path, rng)
    new = {"y": np.arange(3.0)}
    optcore.save(new, path)
    assert_identical(optcore.load(path), new)
    assert os.listdir(tmp_path) == ["small.ckpt"]


# ---- optimizers: save, load into, resume ------------------------------------------

class TinyAdam:
    """A minimal stateful optimizer over optcore.adam_step with a torch-style
    state_dict (the real classes follow the same protocol)."""

    def __init__(self, params, lr=1e-2):
        self.param_groups = [{"params": list(params), "lr": lr, "betas": (0.9, 0.999)}]
        self.state = {}

    def step(self, grads):
        g = self.param_groups[0]
        for i, (p, grad) in enumerate(zip(g["params"], grads)):
            s = self.state.setdefault(i, {"step": 0, "exp_avg": np.zeros_like(p),
                                          "exp_avg_sq": np.zeros_like(p)})
            s["step"] += 1
            optcore.adam_step(p, grad, s["exp_avg"], s["exp_avg_sq"], step=s["step"],
                              lr=g["lr"], beta1=g["betas"][0], beta2=g["betas"][1])

    def state_dict(self):
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": list(range(len(g["params"])))} for g in self.param_groups]
        return {"state": {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                              for k, v in s.items()} for i, s in self.state.items()},
                "param_groups": groups}

    def load_state_dict(self, sd):
        self.state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                          for k, v in s.items()} for i, s in sd["state"].items()}
        for g, sg in zip(self.param_groups, sd["param_groups"]):
            g.update({k: v for k, v in sg.items() if k != "params"})


class TinySGD(TinyAdam):
    pass


def _params(rng, shapes=((4, 3), (7,))):
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def test_resume_from_checkpoint_is_bitwise_identical(tmp_path, rng):
    params = _params(rng)
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params]
             for _ in range(6)]
    straight = TinyAdam([p.copy() for p in params])
    for g in grads:
        straight.step(g)

    first = TinyAdam([p.copy() for p in params])
    for g in grads[:3]:
        first.step(g)
    optcore.save(first, tmp_path / "opt.ckpt")
    optcore.save({"params": first.param_groups[0]["params"]}, tmp_path / "model.ckpt")

    model = optcore.load(tmp_path / "model.ckpt")["params"]
    resumed = TinyAdam(model, lr=0.5)              # lr comes back from the checkpoint
    sd = optcore.load(tmp_path / "opt.ckpt", into=resumed)
    assert sd["param_groups"][0]["lr"] == 1e-2 == resumed.param_groups[0]["lr"]
    for g in grads[3:]:
        resumed.step(g)
    for a, b in zip(straight.param_groups[0]["params"], resumed.param_groups[0]["params"]):
        assert a.tobytes() == b.tobytes()
    assert_identical(straight.state_dict(), resumed.state_dict())


def test_mismatched_optimizer_or_model_is_refused_untouched(tmp_path, rng):
    opt = TinyAdam(_params(rng))
    opt.step([np.ones_like(p) for p in opt.param_groups[0]["params"]])
    path = tmp_path / "opt.ckpt"
    optcore.save(opt, path)

    cases = [(TinySGD(_params(rng)), "TinyAdam"),                          # another class
             (TinyAdam(_params(rng, ((4, 3),))), "parameter groups"),       # fewer params
             (TinyAdam(_params(rng, ((4, 3), (8,)))), "shape")]             # other sizes
    for target, word in cases:
        before = target.state_dict()
        with pytest.raises(CheckpointError, match=word):
            optcore.load(path, into=target)
        assert_identical(target.state_dict(), before)


def test_torch_optimizer_round_trip(tmp_path, torch):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    opt = torch.optim.Adam(params, lr=1e-2, amsgrad=True)
    for _ in range(3):
        opt.zero_grad()
        sum((p * p).sum() for p in params).backward()
        opt.step()
    path = tmp_path / "torch.ckpt"
    optcore.save(opt, path)
    sd = optcore.load(path)
    assert_identical(opt.state_dict(), sd)

    clone = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = torch.optim.Adam(clone, lr=0.5)
    optcore.load(path, into=resumed)
    for o, ps in ((opt, params), (resumed, clone)):
        o.zero_grad()
        sum((p * p).sum() for p in ps).backward()
        o.step()
    for a, b in zip(params, clone):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="Adam"):
        optcore.load(path, into=torch.optim.SGD(clone, lr=0.1))


# ---- optcore's optimizer classes --------------------------------------------------

from registry import OPTIMIZER_CLASSES  # noqa: E402


@pytest.mark.parametrize("name,kwargs", OPTIMIZER_CLASSES, ids=[c[0] for c in OPTIMIZER_CLASSES])
def test_optimizer_classes_resume_bitwise(name, kwargs, tmp_path, rng):
    cls = getattr(optcore, name)
    params0 = [rng.standard_normal(s).astype(np.float32) for s in ((6, 5), (9,))]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params0]
             for _ in range(6)]
    straight_params = [p.copy() for p in params0]
    straight = cls(straight_params, **kwargs)
    for g in grads:
        straight.step(g)

    first_params = [p.copy() for p in params0]
    first = cls(first_params, **kwargs)
    for g in grads[:3]:
        first.step(g)
    optcore.save(first, tmp_path / "opt.ckpt")
    optcore.save({"params": first_params}, tmp_path / "model.ckpt")

    resumed_params = optcore.load(tmp_path / "model.ckpt")["params"]
    resumed = cls(resumed_params, **kwargs)
    optcore.load(tmp_path / "opt.ckpt", into=resumed)
    assert_identical(first.state_dict(), resumed.state_dict())
    for g in grads[3:]:
        resumed.step(g)
    for a, b in zip(straight_params, resumed_params):
        assert a.tobytes() == b.tobytes(), name
    assert_identical(straight.state_dict(), resumed.state_dict())

    # the checkpoint of this class does not load into another one, or another model
    other = OPTIMIZER_CLASSES[(OPTIMIZER_CLASSES.index((name, kwargs)) + 1) % len(OPTIMIZER_CLASSES)]
    with pytest.raises(CheckpointError):
        optcore.load(tmp_path / "opt.ckpt", into=getattr(optcore, other[0])(
            [p.copy() for p in params0], **other[1]))
    bigger = cls([np.zeros((6, 5), np.float32), np.zeros(10, np.float32)], **kwargs)
    before = bigger.state_dict()
    with pytest.raises(CheckpointError):
        optcore.load(tmp_path / "opt.ckpt", into=bigger)
    assert_identical(bigger.state_dict(), before)


def test_torch_drop_in_checkpoint_moves_to_torch_optim_and_back(tmp_path, torch):
    import optcore.torch as octorch
    torch.manual_seed(1)
    data = [torch.randn(4, 3) for _ in range(6)]

    def run(opt_cls, params, batches):
        opt = opt_cls(params, lr=1e-2, weight_decay=0.01)
        for x in batches:
            opt.zero_grad()
            (params[0] @ x.T).square().sum().backward()
            opt.step()
        return opt

    p_oc = [torch.nn.Parameter(torch.randn(5, 3))]
    optcore.save(run(octorch.AdamW, p_oc, data[:3]), tmp_path / "oc.ckpt")
    # optcore.torch.AdamW's checkpoint into torch.optim.AdamW, which goes on stepping
    p_t = [torch.nn.Parameter(p_oc[0].detach().clone())]
    topt = torch.optim.AdamW(p_t, lr=1e-2, weight_decay=0.01)
    optcore.load(tmp_path / "oc.ckpt", into=topt)
    for x in data[3:]:
        topt.zero_grad()
        (p_t[0] @ x.T).square().sum().backward()
        topt.step()
    # ... and back: torch's checkpoint into optcore.torch.AdamW
    optcore.save(topt, tmp_path / "t.ckpt")
    back = octorch.AdamW([torch.nn.Parameter(p_t[0].detach().clone())], lr=0.5)
    sd = optcore.load(tmp_path / "t.ckpt", into=back)
    assert back.param_groups[0]["lr"] == 1e-2
    assert int(sd["state"][0]["step"]) == 6
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(back.state[back.param_groups[0]["params"][0]][key],
                           topt.state[p_t[0]][key])
