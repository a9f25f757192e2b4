"""Render the mechanical layers of the step kernels from src/optcore/_spec.py.

For every kernel of the spec: ``kernels/<module>.pxd`` (the C API),
``kernels/_<module>_call.pxi`` (the common cimports and the ``Buffers`` struct
of the call's pointers, ``include``d at the top of the hand-written
``<module>.pyx``), ``kernels/_<module>_api.pxi`` (``_run``, segment entry
points, the C-API forwarding functions and the Python wrapper, ``include``d at
its end) and ``kernels/<module>.pyi``; for all of them
``kernels/__init__.pxd``, ``optcore/_numba_signatures.py``, ``optcore/_kernels.py``
(the Python functions ``optcore`` re-exports) and ``optcore/numba.pyi``. The templates
are in build_tools/templates (Cython's bundled Tempita). Generated files are
git-ignored; setup.py calls ``generate()`` before cythonize and only files whose
text changed are rewritten, so builds stay incremental.

    python build_tools/generate.py [--spec PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import sys
import textwrap
from types import ModuleType
from typing import Any

from Cython import Tempita

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
DEFAULT_SPEC = os.path.join(ROOT, "src", "optcore", "_spec.py")
DEFAULT_OUT = os.path.join(ROOT, "src", "optcore")
KERNEL_DOCS = os.path.join(ROOT, "src", "optcore", "_kernel_docs.py")

#: Hand-written C APIs that kernels/__init__.pxd re-exports: (module, names).
EXTRA_CIMPORTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mse", ("mse_loss_grad_f32", "mse_loss_grad_f64")),
    ("grad_utils", ("global_norm_f32", "global_norm_f64", "clip_grad_norm_f32",
                    "clip_grad_norm_f64", "clip_grad_value_f32", "clip_grad_value_f64",
                    "all_finite_f32", "all_finite_f64", "unscale_f32", "unscale_f64")),
)

#: Hyperparameter C types: spec ctype -> (C type, numba code, stub type).
CTYPES = {"double": ("double", "D", "float"), "bint": ("bint", "I", "bool"),
          "step": ("long long", "STEP", "int")}
RESULTS = {"void": (None, "None"), "double": ("D", "float"), "int": ("I", "int")}
WIDTH = 88


def load_spec(path: str = DEFAULT_SPEC) -> ModuleType:
    """The spec module, loaded from its file (nothing of optcore is imported)."""
    name = "_optcore_spec_for_build"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module      # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


# -- text helpers used by the templates -----------------------------------------

def wrap_call(head: str, args: list[str], tail: str, indent: int | None = None) -> str:
    """``head(arg, arg, ...)tail`` wrapped at WIDTH, continuation lines aligned
    after the opening parenthesis (or ``indent`` spaces)."""
    pad = " " * (len(head) + 1 if indent is None else indent)
    lines, line = [], head + "("
    for i, arg in enumerate(args):
        piece = arg + (", " if i < len(args) - 1 else ")" + tail)
        if len(line) + len(piece.rstrip()) > WIDTH and line.strip():
            lines.append(line.rstrip())
            line = pad
        line += piece
    if not args:
        line += ")" + tail
    lines.append(line)
    return "\n".join(lines)


def comment(text: str, prefix: str = "# ") -> str:
    """``text`` as comment lines (its own line breaks kept)."""
    return "\n".join((prefix + line).rstrip() for line in text.splitlines())


def bullet(text: str) -> str:
    """``text`` (line breaks not kept) as one ``# - `` comment item."""
    lines = textwrap.wrap(" ".join(text.split()), WIDTH - 6, break_on_hyphens=False)
    return "\n".join(("# - " if i == 0 else "#   ") + line for i, line in enumerate(lines))


def c_args(kernel: Any, ctype: str, multi: bool) -> list[str]:
    stars = "**" if multi else "*"
    args = [f"{'const ' if b.role == 'read' else ''}{ctype}{stars} {b.name}"
            for b in kernel.buffers]
    args += (["const Py_ssize_t* sizes", "Py_ssize_t ntensors"] if multi
             else ["Py_ssize_t n"])
    args += [f"{CTYPES[h.ctype][0]} {h.name}" for h in kernel.hypers]
    return args + ["int num_threads"]


def c_return(kernel: Any, multi: bool) -> str:
    return (kernel.multi_returns or kernel.returns) if multi else kernel.returns


def c_name(kernel: Any, suffix: str, multi: bool) -> str:
    return f"{kernel.name}{'_multi' if multi else ''}_{suffix}"


def c_decl(kernel: Any, dtype: tuple[str, str, str], multi: bool, tail: str) -> str:
    suffix, ctype, _ = dtype
    head = f"cdef {c_return(kernel, multi)} {c_name(kernel, suffix, multi)}"
    return wrap_call(head, c_args(kernel, ctype, multi), " noexcept nogil" + tail)


def c_forward(kernel: Any, dtype: tuple[str, str, str], multi: bool) -> str:
    """The body of a C-API function: forward to the module's ``_run``."""
    suffix = dtype[0]
    ref = "" if multi else "&"
    args = [f"<void**>{ref}{b.name}" for b in kernel.buffers]
    args += ["sizes", "ntensors"] if multi else ["&n", "1"]
    args += [h.name for h in kernel.hypers] + ["num_threads", f"_segment_{suffix}"]
    if kernel.tiled:
        args += ["NULL", "PARTITION_ALIGN"]
    ret = c_return(kernel, multi)
    if ret == kernel.returns and ret != "void":
        return wrap_call("    return _run", args, "")
    body = wrap_call("    _run", args, "")
    if ret != "void":            # a result the kernel no longer produces
        body += "\n    return 0"
    return body


def c_names(kernel: Any) -> list[str]:
    forms = ("_f32", "_f64", "_multi_f32", "_multi_f64") if kernel.multi else ("_f32", "_f64")
    return [kernel.name + form for form in forms]


def run_decl(kernel: Any) -> str:
    """The signature line(s) of a kernel's ``_run`` (the multi form's
    arguments, then the segment function)."""
    args = [f"void** {b.name}" for b in kernel.buffers]
    args += ["const Py_ssize_t* sizes", "Py_ssize_t ntensors"]
    args += [f"{CTYPES[h.ctype][0]} {h.name}" for h in kernel.hypers]
    args += ["int num_threads", "segment_fn fn"]
    if kernel.tiled:
        args += ["const Storage* storage", "Py_ssize_t align"]
    return wrap_call(f"cdef inline {kernel.returns} _run", args, " noexcept nogil:")


def set_buffers(kernel: Any) -> str:
    """``_run``'s assignments of the buffer pointers (NULL when a needed
    buffer's condition does not hold)."""
    lines = []
    for b in kernel.buffers:
        value = f"{b.name} if {b.needed.cython()} else NULL" if b.needed else b.name
        lines.append(f"    c.bufs.{b.name} = {value}")
    if kernel.tiled:
        lines.append("    c.bufs.storage = storage")
    return "\n".join(lines)


def prepare_call(kernel: Any, head: str) -> str:
    return wrap_call(head, ["&c"] + [h.name for h in kernel.hypers], "")


def segment_call(kernel: Any, ctype: str) -> str:
    """The segment entry point's call of the ``.pyx``'s ``_<module>_segment``:
    the call, the tensor index, the slice's length, then every buffer's slice
    (NULL for a needed buffer that is not used), one a line."""
    head = f"    _{kernel.module}_segment("
    pad = " " * len(head)
    lines = [head + "c, t, stop - start,"]
    for i, b in enumerate(kernel.buffers):
        tail = "," if i < len(kernel.buffers) - 1 else ")"
        piece = f"<{'const ' if b.role == 'read' else ''}{ctype}*>c.bufs.{b.name}[t] + start"
        if b.needed:
            lines += [f"{pad}({piece}", f"{pad} if c.bufs.{b.name} != NULL else NULL){tail}"]
        else:
            lines.append(pad + piece + tail)
    return "\n".join(lines)


def tiled_segment(kernel: Any) -> str:
    """The body of ``_segment_tiled``: per tile, every buffer as float32
    (widened into a stack tile unless it is float32), the ``.pyx``'s float32
    segment, then the written buffers narrowed back (_storage.pxd)."""
    n = len(kernel.buffers)
    lines = [
        "    cdef const Call* c = <const Call*>ctx",
        "    cdef const Storage* s = c.bufs.storage",
        f"    cdef float tiles[{n + 1}][TILE]     # one per buffer, and the param before",
        "    cdef Py_ssize_t lo = start, m",
    ]
    lines += [f"    cdef float* {b.name}" for b in kernel.buffers]
    lines += [
        "    if stop > s.sizes[t]:",
        "        stop = s.sizes[t]           # the runtime's sizes may be padded",
        "    while lo < stop:",
        "        m = stop - lo if stop - lo < TILE else TILE",
        f"        param = param_load(s, c.bufs.param, t, lo, m, tiles[0], tiles[{n}])",
    ]
    for a, b in enumerate(kernel.buffers[1:], start=1):
        if b.name in kernel.tiled_skips:
            lines.append(f"        {b.name} = NULL              # not read by the segment")
        else:
            lines.append(f"        {b.name} = tile_load(s, {a}, c.bufs.{b.name}, t, lo, m, "
                         f"tiles[{a}])")
    head = f"        _{kernel.module}_segment("
    args = ["c", "t", "m"] + [b.name for b in kernel.buffers]
    lines.append(wrap_call(head.rstrip("("), args, ""))
    lines.append(f"        param_store(s, c.bufs.param, t, lo, m, param, tiles[{n}])")
    for a, b in enumerate(kernel.buffers[1:], start=1):
        if b.role == "write" and b.name not in kernel.tiled_skips:
            lines.append(f"        tile_store(s, {a}, c.bufs.{b.name}, t, lo, m, {b.name})")
    lines.append("        lo += m")
    return "\n".join(lines)


def layout(kernel: Any) -> str:
    """The kernel's buffers for _precision.prepare: (name, written, unsigned
    map, the storages a state takes: Kernel.state_dtypes)."""
    rows = [f"({b.name!r}, {b.role == 'write'}, {b.unsigned}, {tuple(kernel.state_dtypes)!r})"
            for b in kernel.buffers]
    return "(" + ", ".join(rows) + ",)"


def need_text(need: Any) -> str:
    return {"true": "{}", "nonzero": "{} != 0", "positive": "{} > 0"}[
        need.test].format(need.option)


@functools.lru_cache(maxsize=None)
def load_kernel_docs(path: str = KERNEL_DOCS) -> ModuleType:
    """optcore/_kernel_docs.py, loaded from its file (it imports nothing of optcore)."""
    spec = importlib.util.spec_from_file_location("_optcore_kernel_docs_for_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wrappers(kernel: Any) -> list[dict[str, Any]]:
    """The Python wrappers of a kernel, its own and its aliases', with their
    numpydoc docstrings (optcore/_kernel_docs.py)."""
    return load_kernel_docs().wrapper_docstrings(kernel)  # type: ignore[no-any-return]


def python_params(kernel: Any, wrapper: dict[str, Any], stub: bool = False) -> list[str]:
    """The def wrapper's parameters: buffers positional (``needed`` ones
    ``=None``), then keyword-only step and hyperparameters (a ``keyword``
    buffer right after its option)."""
    def buffer(b: Any) -> str:
        if stub:
            return f"{b.name}: _Buffers" + (" | None = None" if b.needed else "")
        return b.name + ("=None" if b.needed else "")

    params = [buffer(b) for b in kernel.buffers if not b.keyword]
    params.append("*")
    precision = []
    if kernel.tiled:
        for name, default in kernel.precision_args.items():
            if stub:
                kind = ("_Buffers | None" if default is None
                        else type(default).__name__)
                precision.append(f"{name}: {kind} = ...")
            else:
                precision.append(f"{name}={default!r}")
    for h in kernel.hypers:
        if h.python and h.name not in wrapper["fixed"]:
            default = wrapper["defaults"].get(h.name, h.default)
            text = h.name
            if stub:
                text += ": " + CTYPES[h.ctype][2]
            if repr(default) != "REQUIRED":
                text += (" = " if stub else "=") + ("..." if stub else repr(default))
            params.append(text)
        params += [buffer(b) for b in kernel.buffers
                   if b.keyword and b.needed and b.needed.option == h.name]
    return params + precision


def check_line(h: Any, wrapper: dict[str, Any], checks: dict[str, str]) -> str:
    """The C value of one hyperparameter, checked (or fixed by an alias)."""
    ctype = CTYPES[h.ctype][0]
    if h.name in wrapper["fixed"]:
        value = wrapper["fixed"][h.name]
        return f"    cdef {ctype} c_{h.name} = {value!r}"
    if not h.python:
        return f"    cdef {ctype} c_{h.name} = {h.default!r}"
    # The common case (a float within bounds, a bool) is decided inline; any
    # other value goes to the shared check, which converts it or raises.
    name, var = h.name, "c_" + h.name
    if h.ctype == "step":
        return f"    cdef long long {var} = _step({name})"
    if h.ctype == "bint":
        return (f"    cdef bint {var} = {name} is True\n"
                f"    if not {var} and {name} is not False:\n"
                f'        {var} = _flag({name}, "{name}")')
    if h.check:
        test = f"type({name}) is float and " + checks[h.check].replace("x", f"<double>{name}")
        slow = wrap_call(f"        {var} = _hyper",
                         [name, f'"{name}"', f'"{h.check}"', f'"{h.what}"', str(h.index)], "")
    else:
        test = f"type({name}) is float"
        slow = f'        {var} = _real({name}, "{name}")'
    return (f"    cdef double {var}\n"
            f"    if {test}:\n"
            f"        {var} = <double>{name}\n"
            f"    else:\n"
            f"{slow}")


def bind_call(kernel: Any, absent: str | None = None) -> str:
    """Bind the buffers with their roles (ABSENT when a needed-buffer's
    condition does not hold, and for buffer ``absent``, passed as None)."""
    roles = []
    for b in kernel.buffers:
        role = "WRITE" if b.role == "write" else "READ"
        if b.name == absent:
            role = "ABSENT"
        roles.append(f"{role} if {b.needed.cython('c_')} else ABSENT" if b.needed else role)
    names = ["None" if b.name == absent else b.name for b in kernel.buffers]
    if kernel.tiled:
        roles += [f"WRITE if {x} is not None else ABSENT" for x in ("master_param", "compensation")]
        names += ["master_param", "compensation"]
    if len(roles) == 1:
        roles[0] += ","          # a one-element tuple
    objects = ", ".join(names) + ("," if len(roles) == 1 else "")
    binder = "bind_mixed" if kernel.tiled else "bind"
    return (wrap_call("    cdef tuple roles = ", roles, "") + "\n"
            + f"    cdef tuple objs = ({objects})\n"
            + f"    cdef BufferSet b = {binder}(_NAMES, objs, roles)")


def run_call(kernel: Any, head: str, tiled: bool = False) -> str:
    """The wrapper's call of ``_run``: the plain one (``fn``), or the tiled
    one (``pr``: the call's _precision.Precision)."""
    args = ["b.data"] + [f"b.data + {i} * k" if i > 1 else "b.data + k"
                         for i in range(1, len(kernel.buffers))]
    args += ["sizes" if tiled else "b.sizes", "k"] + [f"c_{h.name}" for h in kernel.hypers]
    if tiled:
        args += ["0", "_segment_tiled", "&pr.storage", "pr.align"]
    else:
        args += ["0", "fn"] + (["NULL", "PARTITION_ALIGN"] if kernel.tiled else [])
    return wrap_call(head, args, "")


def bindable(kernel: Any) -> bool:
    """Whether a kernel's wrappers get a bound call (_bound.pxd): a generated
    ``_run`` and wrapper, and the gradient as the one input."""
    reads = [b.name for b in kernel.buffers if b.role == "read"]
    return kernel.run == "generated" and kernel.wrapper == "generated" and reads == ["grad"]


def bound_fields(kernel: Any) -> str:
    """The bound call's options as C fields (the step comes with each call)."""
    return "\n".join(f"    cdef {CTYPES[h.ctype][0]} c_{h.name}" for h in kernel.hypers
                     if h.ctype != "step")


def bound_locals(kernel: Any) -> str:
    """launch's local copies of the options, named as the wrapper's."""
    lines = []
    for h in kernel.hypers:
        value = "step" if h.ctype == "step" else f"self.c_{h.name}"
        lines.append(f"        cdef {CTYPES[h.ctype][0]} c_{h.name} = {value}")
    return "\n".join(lines)


def bound_store(kernel: Any) -> str:
    return "\n".join(f"    bound.c_{h.name} = c_{h.name}" for h in kernel.hypers
                     if h.ctype != "step")


def bound_set_lr(kernel: Any, checks: dict[str, str]) -> str:
    """The bound call's ``set_lr`` (a scheduler's new lr without binding the
    buffers again), with the wrapper's check of ``lr``; empty without one."""
    lr = next((h for h in kernel.hypers if h.name == "lr" and h.python), None)
    if lr is None:
        return ""
    test = checks[lr.check].replace("x", "lr") if lr.check else "True"
    return ("\n    cdef bint set_lr(self, double lr) except -1:\n"
            f"        if not ({test}):\n"
            "            return False\n"
            "        self.c_lr = lr\n"
            "        return True")


def input_arg(kernel: Any) -> int:
    return [b.name for b in kernel.buffers].index("grad")


def numba_args(kernel: Any) -> str:
    codes = ["P"] * len(kernel.buffers) + ["N"]
    codes += [CTYPES[h.ctype][1] for h in kernel.hypers] + ["I"]
    return "(" + ", ".join(f'"{c}"' for c in codes) + ")"


def export_names(kernel: Any) -> list[str]:
    """The Python functions of a kernel module: the kernel and its aliases."""
    return [kernel.name, *kernel.aliases]


def docstring(text: str, indent: str) -> str:
    """A triple-quoted docstring, continuation lines indented."""
    lines = text.splitlines() or [""]
    body = "\n".join([lines[0]] + [(indent + line).rstrip() for line in lines[1:]])
    if "" in lines:              # several paragraphs: closing quotes on their own line
        body += "\n" + indent
    return f'{indent}"""{body}"""'


NAMESPACE = dict(segment_call=segment_call, tiled_segment=tiled_segment, layout=layout, run_decl=run_decl, set_buffers=set_buffers, prepare_call=prepare_call,
                 bullet=bullet, c_decl=c_decl, c_names=c_names, c_forward=c_forward, comment=comment,
                 need_text=need_text, wrappers=wrappers, python_params=python_params,
                 check_line=check_line, bind_call=bind_call, run_call=run_call,
                 bindable=bindable, bound_fields=bound_fields, bound_locals=bound_locals,
                 bound_store=bound_store, bound_set_lr=bound_set_lr, input_arg=input_arg,
                 numba_args=numba_args, docstring=docstring, export_names=export_names, wrap_call=wrap_call,
                 RESULTS=RESULTS, EXTRA_CIMPORTS=EXTRA_CIMPORTS)


def _template(name: str) -> Tempita.Template:
    path = os.path.join(TEMPLATES, name)
    with open(path, encoding="utf-8") as f:
        return Tempita.Template(f.read(), name=path)


def render(spec: ModuleType) -> dict[str, str]:
    """Generated text by path relative to the package folder (src/optcore)."""
    out: dict[str, str] = {}
    ns = dict(NAMESPACE, spec=spec, kernels=spec.KERNELS, dtypes=spec.DTYPES)
    for name, target in (("kernel.pxd.tp", "kernels/{}.pxd"),
                         ("kernel_call.pxi.tp", "kernels/_{}_call.pxi"),
                         ("kernel_api.pxi.tp", "kernels/_{}_api.pxi"),
                         ("kernel.pyi.tp", "kernels/{}.pyi")):
        template = _template(name)
        for kernel in spec.KERNELS:
            out[target.format(kernel.module)] = template.substitute(dict(ns, kernel=kernel))
    out["kernels/__init__.pxd"] = _template("__init__.pxd.tp").substitute(ns)
    out["_numba_signatures.py"] = _template("_numba_signatures.py.tp").substitute(ns)
    out["_kernels.py"] = _template("_kernels.py.tp").substitute(ns)
    out["numba.pyi"] = _template("numba.pyi.tp").substitute(ns)
    return out


def write(files: dict[str, str], out_dir: str) -> list[str]:
    """Write ``files`` under ``out_dir``, only those whose text changed (so
    that cythonize sees unchanged files as up to date); returns the paths written."""
    written = []
    for rel, text in sorted(files.items()):
        path = os.path.join(out_dir, rel)
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        except OSError:
            pass
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        written.append(path)
    return written


def generate(spec_path: str = DEFAULT_SPEC, out_dir: str = DEFAULT_OUT) -> list[str]:
    return write(render(load_spec(spec_path)), out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=DEFAULT_SPEC, help="the spec module's file")
    parser.add_argument("--out", default=DEFAULT_OUT, help="the package folder")
    args = parser.parse_args(argv)
    for path in generate(args.spec, args.out):
        print("generated", os.path.relpath(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
