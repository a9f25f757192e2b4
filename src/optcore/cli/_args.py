"""Argument types of the command line: each checks its value while argparse
parses, so that a bad value stops the command with argparse's own message
(naming the option, exit status 2) before any work is done."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable
from typing import TypeVar


def _int(text: str, what: str) -> int:
    text = text.strip()
    try:
        if text.startswith("2**") or text.startswith("2^"):
            return 2 ** int(text[3 if text.startswith("2**") else 2:])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} must be integers (2**k accepted), got {text!r}") from None


def int_list(what: str, minimum: int = 1) -> Callable[[str], list[int]]:
    """A type for comma-separated integers (``2**k`` or ``2^k`` accepted),
    each at least ``minimum``; ``what`` names them in messages."""
    def parse(text: str) -> list[int]:
        values = [_int(part, what) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"no {what} given")
        for v in values:
            if v < minimum:
                raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {v}")
        return values
    parse.__name__ = what           # argparse's fallback messages name the type
    return parse


def name_list(what: str,
              known: Callable[[], Iterable[str]]) -> Callable[[str], list[str]]:
    """A type for comma-separated names, each one of ``known`` (a callable
    returning them, so that the list is made only when the option is used)."""
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        choices = list(known())
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, bad)) or '(none given)'}; "
                f"choose from {', '.join(choices)}")
        return names
    parse.__name__ = what
    return parse


T = TypeVar("T")


def _number(text: str, convert: Callable[[str], T], noun: str) -> T:
    """``convert(text)``, or argparse's error "must be <noun>, got ..."."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None


def positive_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def seed(text: str) -> int:
    """A NumPy seed: numpy.random.default_rng takes integers >= 0."""
    value = _number(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (a NumPy seed), got {value}")
    return value


def output_file(suffix: str | None = None) -> Callable[[str], str]:
    """A type for a file to write: its directory must exist and be writable.
    With ``suffix`` (e.g. ".png") a name without one gets it appended (the
    file written is the returned path); a name with another one is refused."""
    def parse(text: str) -> str:
        path = text
        if suffix is not None:
            ext = os.path.splitext(path)[1]
            if not ext:
                path += suffix
            elif ext.lower() != suffix:
                raise argparse.ArgumentTypeError(
                    f"{text!r}: the file must end in {suffix}")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise argparse.ArgumentTypeError(f"{text!r}: directory {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{text!r}: directory {folder} is not writable")
        if os.path.isdir(path):
            raise argparse.ArgumentTypeError(f"{text!r} is a directory")
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"{text!r} is not writable")
        return path
    parse.__name__ = "file"
    return parse
