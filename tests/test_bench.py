"""The bench command, the bandwidth ceiling kernels, and the instruction-set
variants of the kernels (dispatch, and identical bits across variants and
thread counts). Timings are produced here but never asserted."""

import argparse
import hashlib
import json
import os
import textwrap

import numpy as np
import pytest

import optcore
from optcore import kernels as kernels_pkg
from optcore.cli import bench
from optcore.kernels import bandwidth

from support import DTYPES, run_python


# ---- ceiling kernels ------------------------------------------------------------

def _expected(pattern, bufs, s):
    """What one pass of ``pattern`` computes, in NumPy."""
    out = [b.copy() for b in bufs]
    dt = bufs[0].dtype.type
    s = dt(s)
    if pattern in ("4r3w", "3r2w", "5r4w"):
        t = bufs[-1]
        for i in range(len(bufs) - 1):
            out[i] = bufs[i] * s + t
    elif pattern == "2r1w":
        out[0] = bufs[0] * s + bufs[1]
    elif pattern == "1r1w":
        out[0] = bufs[0] * s + s
    elif pattern == "triad":
        out[0] = bufs[1] + s * bufs[2]
    elif pattern == "4r2w":
        t = bufs[2] + bufs[3]
        out[0], out[1] = bufs[0] * s + t, bufs[1] * s + t
    elif pattern == "3r1w":
        out[0] = bufs[0] * s + (bufs[1] + bufs[2])
    return out


@pytest.mark.parametrize("pattern", sorted(bandwidth.PATTERNS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 17, 1000, 70001])
def test_ceiling_pattern_computes_its_update(pattern, dtype, threads, n):
    bufs = bandwidth.make_buffers(pattern, n, dtype, seed=n)
    assert all((b != 0).all() for b in bufs)
    expected = _expected(pattern, bufs, 0.5)
    times = bandwidth.run(pattern, bufs, num_threads=threads, number=1, repeat=1)
    assert len(times) == 1 and times[0] >= 0
    for got, want in zip(bufs, expected):
        np.testing.assert_array_equal(got, want)


def test_ceiling_bytes_and_repeats():
    assert bandwidth.bytes_per_element("4r3w", 4) == 28
    assert bandwidth.bytes_per_element("triad", 4) == 12
    assert bandwidth.bytes_per_element("3r2w", 8) == 40
    bufs = bandwidth.make_buffers("4r3w", 4096)
    times = bandwidth.run("4r3w", bufs, 2, number=3, repeat=4)
    assert len(times) == 4 and all(np.isfinite(times)) and min(times) > 0
    assert all(np.isfinite(b).all() for b in bufs)     # contraction: stays bounded
    fork = bandwidth.fork_join(2, number=10, repeat=3)
    assert len(fork) == 3 and min(fork) >= 0


def test_ceiling_rejects_bad_buffers():
    with pytest.raises(ValueError):
        bandwidth.run("4r3w", bandwidth.make_buffers("3r2w", 8))
    with pytest.raises(TypeError):
        bandwidth.run("1r", [np.ones(8, np.int32)])
    with pytest.raises(KeyError):
        bandwidth.run("nope", [np.ones(8)])


# ---- the kernel table -------------------------------------------------------------

def test_kernel_table_is_consistent():
    names = [k.name for k in bench.KERNELS]
    assert len(names) == len(set(names))
    for k in bench.KERNELS:
        assert all(p in bandwidth.PATTERNS for p in k.traffic), k.name
        assert set(k.positive) <= set(k.buffers)
        assert k.call in ("step", "loss", "grads")
    avail = {k.name for k in bench.available_kernels()}
    assert {"adam", "adamw", "sgd_momentum", "mse_loss_grad"} <= avail


@pytest.mark.parametrize("kernel", bench.available_kernels(), ids=lambda k: k.name)
@pytest.mark.parametrize("dtype", DTYPES)
def test_table_calls_match_reference(kernel, dtype):
    # The bench calls optcore and the reference the same way: one call of each
    # on copies of the same inputs gives the same result.
    inputs = bench.make_inputs(kernel, [1000, 33], dtype, seed=3)
    copy = {b: [a.copy() for a in arrs] for b, arrs in inputs.items()}
    for lists in (False, True) if kernel.multi else (False,):
        got = bench.make_call(kernel, "optcore", inputs, lists=lists)()
        want = bench.make_call(kernel, "reference", copy, lists=lists)()
        for b in kernel.buffers:
            for x, y in zip(inputs[b], copy[b]):
                np.testing.assert_allclose(x, y, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                           atol=1e-6, err_msg=f"{kernel.name} {b}")
        if kernel.call == "loss":
            assert got[0] == pytest.approx(want[0], rel=1e-5)


def test_torch_calls_are_built_when_torch_is_there(torch):
    kernel = next(k for k in bench.KERNELS if k.name == "adam")
    inputs = bench.make_inputs(kernel, [64], np.float32)
    for impl in bench.TORCH_IMPLS:
        fn = bench.make_call(kernel, impl, inputs, torch=torch)
        assert fn is not None, impl
        before = inputs["param"][0].copy()
        fn()
        assert not np.array_equal(before, inputs["param"][0])   # zero-copy update


# ---- the command ---------------------------------------------------------------------

def _run_cli(argv):
    parser = argparse.ArgumentParser(prog="python -m optcore")
    sub = parser.add_subparsers(dest="command", required=True)
    bench.add_parser(sub)
    args = parser.parse_args(argv)
    return args.run(args)


def test_bench_command_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = _run_cli(["bench", "--sizes", "64,2**12", "--dtypes", "float32",
                     "--threads", "1,2", "--budget", "0.002", "--no-torch",
                     "--kernels", "adam,sgd_momentum,mse_loss_grad",
                     "--sections", "kernels,overhead", "--json", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "adam (adam_step), float32: 28 B/element" in text
    assert "sgd_momentum (sgd_step), float32: 20 B/element" in text
    assert "% ceil" in text and "x ref" in text and "per-call cost" in text
    assert "[" in captured.err          # progress on stderr
    data = json.loads(out.read_text())
    assert data["machine"]["variant"] == kernels_pkg.VARIANT
    rows = data["kernels"]
    assert {(r["kernel"], r["n"], r["threads"]) for r in rows} == {
        (k, n, t) for k in ("adam", "sgd_momentum", "mse_loss_grad")
        for n in (64, 4096) for t in (1, 2)}
    for r in rows:
        assert r["median_s"]["optcore"] > 0 and r["median_s"]["reference"] > 0
        assert r["ceiling_s"] > 0 and r["gbs"]["optcore"] > 0
        assert r["speedup"]["reference"] > 0
        assert len(r["samples"]["optcore"]) >= 3
    assert {r["kernel"] for r in data["overhead"]} == {"adam", "sgd_momentum",
                                                       "mse_loss_grad"}
    assert data["config"]["sizes"] == [64, 4096]


def test_bench_multi_and_threshold_sections():
    kernels = [k for k in bench.available_kernels() if k.name in ("adam", "mse_loss_grad")]
    b = bench.Bench(kernels, [256], [np.float32], [1, 2],
                    bench.Timing(budget=0.001, sample=0.0002), None,
                    ["multi", "threshold"], progress=False,
                    multi_cases=(("3x100", [100, 100, 100], "three tensors"),),
                    threshold_sizes=(64, 128, 70000))
    res = b.run()
    multi = res["multi"]
    assert [(r["kernel"], r["threads"], r["n"], r["tensors"]) for r in multi] == [
        ("adam", 1, 300, 3), ("adam", 2, 300, 3)]      # mse has no multi-tensor form
    th = res["threshold"]
    assert th["fork_join_s"] > 0 and th["current"] == optcore.get_parallel_threshold()
    assert [k["kernel"] for k in th["kernels"]] == ["adam", "mse_loss_grad"]
    assert all(len(k["single_s"]) == 3 for k in th["kernels"])
    assert optcore.get_parallel_threshold() == th["current"]      # restored


def test_bench_busy_section(capsys):
    # The section starts its own busy process, times each case and stops it;
    # the report and the scorecard show its two figures. (No timing asserted.)
    kernels = [k for k in bench.available_kernels() if k.name == "adam"]
    b = bench.Bench(kernels, [256], [np.float32], [1, 2],
                    bench.Timing(budget=0.001, sample=0.0002), None, ["busy"],
                    progress=False)
    res = b.run()
    busy = res["busy"]
    assert busy["threads"] == 2 and busy["busy_cores"] == 1
    for load in ("idle", "busy"):
        assert [(r["threads"], r["dynamic"]) for r in busy[load]] == [
            (1, True), (2, False), (2, True)]
        assert all(r["calls"] == 200 and r["mean_s"] > 0 and r["p90_s"] >= r["median_s"]
                   for r in busy[load])
    assert optcore.get_dynamic_threads() and optcore.get_num_threads() >= 1   # restored
    # the load's processes run during the block and have ended after it
    from optcore.cli.bench.busy import busy_cores
    with busy_cores(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)
    from optcore.cli.bench.report import print_report
    print_report(res, kernels)
    bench.print_scorecard(res)
    text = capsys.readouterr().out
    assert "busy machine: adam" in text
    assert "a core busy: 2-thread mean <= 1.2x 1-thread mean" in text
    assert "idle: 2-thread mean >= 1.7x faster than 1 thread" in text


def test_bench_steps_section(torch, capsys):
    # Small-model steps: every row of both cases, and the four goals.
    kernels = [k for k in bench.available_kernels() if k.name == "adam"]
    b = bench.Bench(kernels, [256], [np.float32], [1], bench.Timing(budget=0.001), torch,
                    ["steps"], progress=False)
    res = b.run()
    cases = res["steps"]["cases"]
    assert set(cases) == {"seed MLP", "seed MLP, new lr each step", "100x64"}
    for t in cases.values():
        assert set(t) == {"functional", "numpy", "optcore.torch", "torch-fused"}
        assert all(v > 0 for v in t.values())
    assert optcore.get_num_threads() >= 1
    from optcore.cli.bench.report import print_report
    print_report(res, kernels)
    bench.print_scorecard(res)
    text = capsys.readouterr().out
    assert "small models: one Adam step" in text
    assert text.count("optcore.torch.Adam.step, ") == 2 and "<= 3.00 us" in text


def test_bench_precision_section(torch, capsys):
    # Every storage case and torch's fused peers, the bytes and the goals.
    from optcore.cli.bench.precision import CASES, state_bytes, traffic
    kernels = [k for k in bench.available_kernels() if k.name == "adam"]
    b = bench.Bench(kernels, [256], [np.float32], [2], bench.Timing(budget=0.001), torch,
                    ["precision"], progress=False, precision_size=3 * 4096 + 5)
    res = b.run()
    times = res["precision"]["times"]
    assert set(CASES) | {"torch fused fp32", "torch fused bf16"} <= set(times)
    assert all(t > 0 for t in times.values())
    assert traffic(*CASES["fp32"]) == 28 and traffic(*CASES["bf16 params, grads, states"]) == 14
    assert state_bytes("float32", "int8", False, "nearest") < 2.1
    from optcore.cli.bench.report import print_report
    print_report(res, kernels)
    bench.print_scorecard(res)
    text = capsys.readouterr().out
    assert "precision: one AdamW step" in text
    assert "AdamW int8 states: >= 1.55x optcore fp32" in text


def test_crossover():
    assert bench.crossover([1, 2, 4, 8], [1, 2, 4, 8], [3, 3, 3, 3]) == 4
    assert bench.crossover([1, 2, 4, 8], [1, 5, 1, 8], [3, 3, 3, 3]) == 8
    assert bench.crossover([1, 2], [1, 1], [2, 2]) is None
    # one noisy point among many wins does not move the crossover
    sizes = list(range(1, 12))
    single = [float(n) for n in sizes]
    parallel = [3.0] * 11
    parallel[9] = 100.0
    assert bench.crossover(sizes, single, parallel) == 4


def test_recommend_threshold():
    sizes = [1, 2, 4, 8, 16]
    single = [1.0, 2.0, 4.0, 8.0, 16.0]
    # fork cost 3: parallel = 3 + n / 2 wins from n = 8
    parallel = [3 + n / 2 for n in sizes]
    assert bench.recommend_threshold(sizes, [(single, parallel)]) == 8
    # a kernel that wins from 4 and one from 16: a threshold between them
    fast = [2 + n / 2 for n in sizes]
    slow = [6 + n / 2 for n in sizes]
    assert bench.recommend_threshold(sizes, [(single, fast), (single, slow)]) in (4, 8, 16)


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    kernels = [k for k in bench.available_kernels() if k.name == "sgd_momentum"]
    b = bench.Bench(kernels, [64, 128], [np.float32], [1],
                    bench.Timing(budget=0.001, sample=0.0002), None, ["kernels"],
                    progress=False)
    path = tmp_path / "bench.png"
    bench.write_plot(b.run(), kernels, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_unknown_kernel(capsys):
    with pytest.raises(SystemExit) as exc:
        _run_cli(["bench", "--kernels", "nope", "--no-torch"])
    assert exc.value.code == 2
    assert "argument --kernels: unknown kernel 'nope'" in capsys.readouterr().err


def test_step_cases_follow_the_kernel_spec():
    # Buffers, their order and the multi-tensor form come from optcore._spec:
    # a buffer needed only under an option is there when the case sets it.
    from optcore import _spec
    cases = {k.name: k for k in bench.KERNELS}
    assert cases["adam"].buffers == ("param", "grad", "exp_avg", "exp_avg_sq")
    assert cases["sgd_momentum"].buffers == ("param", "grad", "momentum_buffer")
    assert cases["sgd_momentum"].keyword_buffers == ("momentum_buffer",)
    assert cases["rmsprop"].buffers == ("param", "grad", "square_avg")
    assert cases["adamw"].func == "adamw_step" and cases["adamw"].torch == "AdamW"
    assert cases["adamw"].torch_kwargs["weight_decay"] == 1e-2
    assert cases["adam"].torch_kwargs["betas"] == (0.9, 0.999)
    for k in bench.KERNELS:
        if k.call == "step":
            spec = next(s for s in _spec.KERNELS if s.name == k.func or k.func in s.aliases)
            assert set(k.buffers) <= {b.name for b in spec.buffers}
            assert k.multi == spec.multi


# ---- instruction-set variants -------------------------------------------------------

def test_variant_dispatch():
    supported = kernels_pkg.supported_variants()
    built = kernels_pkg.built_variants()
    assert supported[-1] == "baseline" and "baseline" in built
    best = next(v for v in supported if v in built)
    if not os.environ.get("OPTCORE_VARIANT"):
        assert kernels_pkg.VARIANT == best
    import optcore.kernels.adam as adam_mod
    folder = os.path.dirname(adam_mod.__file__)
    if kernels_pkg.VARIANT == "baseline":
        assert os.path.basename(folder) == "kernels"
    else:
        assert os.path.basename(folder) == kernels_pkg.VARIANT


_HASH_SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import optcore, optcore.kernels
    from optcore.cli import bench
    sizes = [1, 7, 8, 9, 17, 1023, 1025, 70001]
    for threads in (1, 2):
        h = hashlib.sha256()
        optcore.set_num_threads(threads)
        for kernel in bench.available_kernels():
            for dtype in (np.float32, np.float64):
                for lists in (False, True) if kernel.multi else (False,):
                    inputs = bench.make_inputs(kernel, sizes, dtype, seed=11)
                    fn = bench.make_call(kernel, "optcore", inputs, lists=lists)
                    for _ in range(3):
                        r = fn()
                        h.update(repr(r if not isinstance(r, tuple) else r[0]).encode())
                    for b in kernel.buffers:
                        for a in inputs[b]:
                            h.update(a.tobytes())
        print(optcore.kernels.VARIANT, threads, h.hexdigest())
""")


def test_variants_give_identical_bits():
    """Every built variant this CPU runs computes the same bits as the
    baseline, for every kernel, dtype, size and 1 or 2 threads."""
    runnable = [v for v in kernels_pkg.supported_variants()
                if v in kernels_pkg.built_variants()]
    if len(runnable) < 2:
        pytest.skip(f"only {runnable} built/supported here")
    results = {}
    for variant in runnable:
        env = dict(os.environ, OPTCORE_VARIANT=variant)
        proc = run_python(["-c", _HASH_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        lines = [line.split() for line in proc.stdout.strip().splitlines()]
        assert [line[0] for line in lines] == [variant, variant]   # really loaded
        results[variant] = [line[2] for line in lines]
    base = results["baseline"]
    assert base[0] == base[1], "1 and 2 threads differ"
    for variant, digests in results.items():
        assert digests == base, f"{variant} differs from baseline"


def test_forcing_an_unbuilt_variant_fails_clearly():
    env = dict(os.environ, OPTCORE_VARIANT="x86_64_v9")
    proc = run_python(["-c", "import optcore"], env=env, capture_output=True,
                      text=True, timeout=120)
    assert proc.returncode != 0
    assert "OPTCORE_VARIANT='x86_64_v9'" in proc.stderr
