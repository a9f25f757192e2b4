"""Checkpoints: ``save(obj, path)`` / ``load(path, into=None)``.

A checkpoint stores one state_dict -- the result of ``obj.state_dict()``, or a
state_dict given directly: nested dicts, lists and tuples of NumPy arrays (and
CPU torch tensors), Python and NumPy numbers, strings, bytes, bools and None.
Nothing is pickled, so loading a file runs no code from it.

File layout (all integers little-endian)::

    MAGIC (8 bytes) | zero padding to 64
    array data, each array's bytes in C order, starting on a 64-byte boundary
    index: UTF-8 JSON {format, version, kind, tree, arrays: [{dtype, shape,
           offset, nbytes, sha256}]}
    index length (u64) | SHA-256 of every byte before it (32) | END (8 bytes)

Saving writes a temporary file in the destination's directory, fsyncs it,
renames it over the destination (``os.replace``, atomic on POSIX and Windows)
and fsyncs the directory: a crash at any point leaves either the old file or
the new one, never a mix. Loading reads the file once, checks the end marker,
the whole-file digest and each array's digest, and raises CheckpointError on a
truncated, corrupted, foreign or newer-format file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import io
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from optcore._typing import StrPath

__all__ = ["save", "load", "CheckpointError", "FORMAT_VERSION"]

MAGIC = b"OPTCKPT\x00"
END = b"OPTCEND\x00"
FORMAT_VERSION = 1
ALIGN = 64
_TRAILER = 8 + 32 + 8
_DATA_START = ALIGN
# NumPy kinds stored as raw bytes: bool, signed/unsigned ints, floats, complex.
_KINDS = "biufc"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted.

    Raised by `load` for a file that is truncated, corrupted, not a checkpoint,
    written by a newer format, or not matching ``into`` (another optimizer
    class, other parameter groups or sizes). A subclass of `ValueError`.

    See Also
    --------
    optcore.load : Reads a checkpoint and raises this error.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "bad.ckpt")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"not a checkpoint")
    >>> try:
    ...     optcore.load(path)
    ... except optcore.CheckpointError:
    ...     print("refused")
    refused
    """


# ---- encoding the tree ------------------------------------------------------

def _is_torch_tensor(x: object) -> bool:
    mod = type(x).__module__
    return mod.startswith("torch") and type(x).__name__ in ("Tensor", "Parameter")


class _Encoder:
    def __init__(self) -> None:
        self.arrays: list[NDArray[Any]] = []   # contiguous ndarrays, in file order
        self._active: set[int] = set()         # ids on the current path (cycle check)

    def encode(self, x: Any, path: str) -> dict[str, Any]:
        # NumPy scalars first: np.float64 and np.complex128 subclass float/complex.
        if isinstance(x, np.generic):
            dt = self._dtype(x.dtype, path)
            return {"t": "npscalar", "dtype": dt.str,
                    "v": np.asarray(x, dtype=dt).tobytes().hex()}
        if x is None:
            return {"t": "none"}
        if isinstance(x, bool):
            return {"t": "bool", "v": x}
        if isinstance(x, int):
            return {"t": "int", "v": str(int(x))}
        if isinstance(x, float):
            return {"t": "float", "v": struct.pack("<d", x).hex()}
        if isinstance(x, complex):
            return {"t": "complex", "v": struct.pack("<dd", x.real, x.imag).hex()}
        if isinstance(x, str):
            return {"t": "str", "v": x}
        if isinstance(x, (bytes, bytearray)):
            return {"t": "bytes", "v": bytes(x).hex()}
        if isinstance(x, np.ndarray):
            return {"t": "array", "i": self._array(x, path)}
        if _is_torch_tensor(x):
            if x.device.type != "cpu":
                x = x.cpu()
            try:
                arr = x.detach().resolve_conj().resolve_neg().numpy()
            except (TypeError, RuntimeError) as exc:
                raise TypeError(f"{path}: cannot store torch tensor of dtype {x.dtype} "
                                f"({exc})") from None
            return {"t": "tensor", "i": self._array(arr, path),
                    "requires_grad": bool(x.requires_grad)}
        if isinstance(x, (dict, list, tuple)):
            if id(x) in self._active:
                raise ValueError(f"{path}: the state contains a reference cycle")
            self._active.add(id(x))
            try:
                if isinstance(x, dict):
                    items = [[self.encode(k, f"{path} key {k!r}"),
                              self.encode(v, f"{path}[{k!r}]")] for k, v in x.items()]
                    return {"t": "dict", "v": items}
                kind = "list" if isinstance(x, list) else "tuple"
                return {"t": kind, "v": [self.encode(v, f"{path}[{i}]")
                                         for i, v in enumerate(x)]}
            finally:
                self._active.discard(id(x))
        raise TypeError(
            f"{path}: cannot store an object of type {type(x).__module__}."
            f"{type(x).__qualname__} in a checkpoint (arrays, numbers, strings, bytes, "
            f"bools, None, dicts, lists and tuples only; nothing is pickled)")

    @staticmethod
    def _dtype(dt: np.dtype[Any], path: str) -> np.dtype[Any]:
        if dt.kind not in _KINDS or dt.fields is not None or dt.subdtype is not None:
            raise TypeError(f"{path}: cannot store dtype {dt} in a checkpoint "
                            f"(numeric and bool dtypes only; nothing is pickled)")
        return dt

    def _array(self, a: NDArray[Any], path: str) -> int:
        self._dtype(a.dtype, path)
        # (not ascontiguousarray: it turns a 0-d array into a 1-d one)
        self.arrays.append(a if a.flags.c_contiguous else a.copy(order="C"))
        return len(self.arrays) - 1


def _decode(node: dict[str, Any], arrays: Sequence[NDArray[Any] | None]) -> Any:
    t = node["t"]
    if t == "none":
        return None
    if t == "bool":
        return bool(node["v"])
    if t == "int":
        return int(node["v"])
    if t == "float":
        return struct.unpack("<d", bytes.fromhex(node["v"]))[0]
    if t == "complex":
        re_, im = struct.unpack("<dd", bytes.fromhex(node["v"]))
        return complex(re_, im)
    if t == "str":
        return str(node["v"])
    if t == "bytes":
        return bytes.fromhex(node["v"])
    if t == "npscalar":
        dt = _parse_dtype(node["dtype"])
        return np.frombuffer(bytes.fromhex(node["v"]), dtype=dt)[0].copy()
    if t == "array":
        return arrays[node["i"]]
    if t == "tensor":
        try:
            import torch                     # only when the checkpoint holds tensors
        except ImportError:
            raise CheckpointError("the checkpoint holds torch tensors; loading it "
                                  "needs torch") from None
        out = torch.from_numpy(arrays[node["i"]])
        if node.get("requires_grad"):
            out.requires_grad_(True)
        return out
    if t == "dict":
        return {_decode(k, arrays): _decode(v, arrays)
                for k, v in node["v"]}
    if t == "list":
        return [_decode(v, arrays) for v in node["v"]]
    if t == "tuple":
        return tuple(_decode(v, arrays) for v in node["v"])
    raise CheckpointError(f"unknown node type {t!r}")


# ---- save -----------------------------------------------------------------------

def _kind_of(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def save(obj: Any, path: StrPath) -> None:
    """Write a state_dict to a checkpoint file, atomically.

    ``obj``'s ``state_dict()`` (or ``obj`` itself when it is a state_dict) is
    written to a temporary file that then replaces ``path``: an interrupted
    save leaves the previous file. Every value is checked before the file is
    created. Nothing is pickled.

    Parameters
    ----------
    obj : object
        An object with a ``state_dict()`` method (an optimizer), or a
        state_dict: nested dicts, lists and tuples of NumPy arrays, CPU torch
        tensors, numbers, strings, bytes, bools and None.
    path : str or os.PathLike
        The file to write (replaced if it exists).

    Returns
    -------
    None
        The file is written.

    Raises
    ------
    TypeError
        A value of an unsupported type, named by where it is in the state_dict.

    See Also
    --------
    optcore.load : Reads the file back.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "state.ckpt")
    >>> optcore.save({"step": 3, "w": np.arange(3, dtype=np.float32)}, path)
    >>> optcore.load(path)["w"]
    array([0., 1., 2.], dtype=float32)
    """
    if callable(getattr(obj, "state_dict", None)):
        state, kind = obj.state_dict(), _kind_of(obj)
    else:
        state, kind = obj, None
    enc = _Encoder()
    tree = enc.encode(state, "state_dict")

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    offsets: list[int]
    offsets, pos = [], _DATA_START
    for a in enc.arrays:
        pos = -(-pos // ALIGN) * ALIGN
        offsets.append(pos)
        pos += a.nbytes
    entries = []
    for a, off in zip(enc.arrays, offsets):
        entries.append({"dtype": a.dtype.str, "shape": list(a.shape), "offset": off,
                        "nbytes": a.nbytes, "sha256": hashlib.sha256(_bytes_of(a)).hexdigest()})
    index = json.dumps({"format": "optcore-checkpoint", "version": FORMAT_VERSION,
                        "kind": kind, "arrays": entries, "tree": tree},
                       separators=(",", ":"), allow_nan=False).encode("utf-8")

    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}-"
                                  f"{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            digest = hashlib.sha256()
            written = 0

            def put(chunk: bytes | memoryview) -> None:
                nonlocal written
                digest.update(chunk)
                f.write(chunk)
                written += len(chunk)

            put(MAGIC + bytes(_DATA_START - len(MAGIC)))
            for a, off in zip(enc.arrays, offsets):
                put(bytes(off - written))
                put(_bytes_of(a))
            put(index)
            put(struct.pack("<Q", len(index)))
            f.write(digest.digest() + END)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _bytes_of(a: NDArray[Any]) -> memoryview:
    # numpy's stubs give ndarray a __buffer__ only for Python >= 3.12 (we target 3.11)
    return memoryview(a.reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def _fsync_dir(directory: str) -> None:
    # Make the rename itself durable (POSIX); not possible on Windows.
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- load -----------------------------------------------------------------------

_DTYPE_RE = re.compile(r"[<>|=]?[biufc][0-9]{1,2}")


def _parse_dtype(text: object) -> np.dtype[Any]:
    # Only plain numeric dtype strings ("<f4", "|b1"): nothing else is parsed.
    if not isinstance(text, str) or not _DTYPE_RE.fullmatch(text):
        raise ValueError(f"bad dtype {text!r}")
    dt = np.dtype(text)
    if dt.kind not in _KINDS:
        raise ValueError(f"bad dtype {text!r}")
    return dt


def _read_exact(f: io.BufferedIOBase, view: memoryview, path: str, what: str) -> None:
    got = f.readinto(view) if len(view) else 0
    if got != len(view):
        raise CheckpointError(f"checkpoint {path!r} is truncated ({what} is incomplete)")


def load(path: StrPath, *, into: Any = None) -> Any:
    """Read a checkpoint and return its state_dict.

    The end marker, the whole-file digest and every array's digest are checked.
    With ``into``, the state is first checked against it (same optimizer
    class, same parameter groups and sizes) and then given to
    ``into.load_state_dict``; nothing is changed if the check fails.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by `save`.
    into : object, optional
        An optimizer (anything with ``load_state_dict``) to load the state into.

    Returns
    -------
    dict or object
        The state_dict as it was saved (NumPy arrays for arrays and tensors).

    Raises
    ------
    CheckpointError
        A truncated, corrupted, foreign, newer-format or mismatched file.

    See Also
    --------
    optcore.save : Writes the file.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "state.ckpt")
    >>> w = np.ones(2, dtype=np.float32)
    >>> opt = optcore.SGD([w], lr=0.1, momentum=0.9)
    >>> optcore.save(opt, path)
    >>> sorted(optcore.load(path, into=optcore.SGD([w], lr=0.1, momentum=0.9)))
    ['param_groups', 'state']
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(len(MAGIC))
        if head != MAGIC:
            raise CheckpointError(f"{path!r} is not an optcore checkpoint")
        if size < _DATA_START + 8 + _TRAILER:
            raise CheckpointError(f"checkpoint {path!r} is truncated ({size} bytes)")
        f.seek(size - _TRAILER)
        trailer = f.read(_TRAILER)
        index_len = struct.unpack("<Q", trailer[:8])[0]
        stored_digest, end = trailer[8:40], trailer[40:]
        index_off = size - _TRAILER - index_len
        if end != END or not (_DATA_START <= index_off <= size - _TRAILER):
            raise CheckpointError(
                f"checkpoint {path!r} is truncated or corrupted (no valid end marker)")
        f.seek(index_off)
        index_bytes = f.read(index_len)
        try:
            index = json.loads(index_bytes.decode("utf-8"))
            version = index["version"]
            entries = index["arrays"]
            if index.get("format") != "optcore-checkpoint":
                raise ValueError("format")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise CheckpointError(f"checkpoint {path!r} is corrupted (unreadable index)") from None
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path!r} has format version {version}; this optcore reads "
                f"versions up to {FORMAT_VERSION} (upgrade optcore)")

        # One pass over the data: every byte goes through the whole-file digest.
        digest = hashlib.sha256()
        f.seek(0)
        pos = 0
        arrays: list[NDArray[Any] | None] = []
        try:
            order = sorted(range(len(entries)), key=lambda i: entries[i]["offset"])
            arrays = [None] * len(entries)
            for i in order:
                e = entries[i]
                dt = _parse_dtype(e["dtype"])
                shape = tuple(int(s) for s in e["shape"])
                off, nbytes = int(e["offset"]), int(e["nbytes"])
                if off < pos or off + nbytes > index_off or \
                        nbytes != dt.itemsize * int(np.prod(shape, dtype=np.int64)):
                    raise ValueError("layout")
                gap = bytearray(off - pos)
                _read_exact(f, memoryview(gap), path, "the data")
                digest.update(gap)
                a = np.empty(shape, dtype=dt)
                view = _bytes_of(a)
                _read_exact(f, view, path, f"array {i}")
                digest.update(view)
                if hashlib.sha256(view).hexdigest() != e["sha256"]:
                    raise CheckpointError(
                        f"checkpoint {path!r} is corrupted (array {i}, {dt} {shape}, "
                        f"fails its checksum)")
                arrays[i] = a
                pos = off + nbytes
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"checkpoint {path!r} is corrupted (bad array table)") from None
        rest = bytearray(index_off - pos)
        _read_exact(f, memoryview(rest), path, "the data")
        digest.update(rest)
        digest.update(index_bytes)
        digest.update(trailer[:8])
        if digest.digest() != stored_digest:
            raise CheckpointError(f"checkpoint {path!r} is corrupted (checksum mismatch)")

    try:
        state = _decode(index["tree"], arrays)
    except (KeyError, TypeError, ValueError, IndexError, struct.error) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path!r} is corrupted (bad tree)") from None
    if into is not None:
        _check_matches(state, index.get("kind"), into, path)
        into.load_state_dict(state)
    return state


def _check_matches(state: Any, kind: str | None, into: Any, path: str) -> None:
    """Refuse a checkpoint of another optimizer class or another model."""
    if kind is not None:
        saved = kind.rsplit(".", 1)[-1]
        if saved != type(into).__name__:
            raise CheckpointError(
                f"checkpoint {path!r} holds the state of an optimizer of class "
                f"{saved}, not of class {type(into).__name__}")
    groups = getattr(into, "param_groups", None)
    if not (isinstance(state, dict) and "param_groups" in state and groups is not None):
        return
    saved_counts = [len(g.get("params", ())) for g in state["param_groups"]]
    counts = [len(g["params"]) for g in groups]
    if saved_counts != counts:
        raise CheckpointError(
            f"checkpoint {path!r} has parameter groups of sizes {saved_counts}, the "
            f"optimizer has {counts}")
    params: dict[Any, Any] = {}     # saved parameter id -> the optimizer's parameter
    for sg, g in zip(state["param_groups"], groups):
        params.update(zip(sg["params"], g["params"]))
    for key, entry in (state.get("state") or {}).items():
        p = params.get(key)
        if p is None or not isinstance(entry, dict):
            continue
        for name, value in entry.items():
            vsize = getattr(value, "shape", None)
            if vsize is None or len(vsize) == 0:
                continue
            pshape = tuple(getattr(p, "shape", np.shape(p)))
            if int(np.prod(vsize)) != int(np.prod(pshape)):
                raise CheckpointError(
                    f"checkpoint {path!r}: state[{key!r}][{name!r}] has shape "
                    f"{tuple(vsize)} but the optimizer's parameter {key!r} has shape "
                    f"{pshape}")
