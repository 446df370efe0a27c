"""Upper bounds on what a file from a stranger can make gradleak allocate.

A capture's metadata names a batch size, an input shape and model settings; a loader reads sizes from a file.
Each becomes memory before any attack runs, so each is bounded here, once, with an error that names the field
and the way to lift the bound (``--allow-large`` on the command line, ``allow_large()`` in Python) for real
large work. The defaults hold GPT-2-small-sized models and ImageNet-sized batches with room to spare.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gradleak.errors import CaptureError, GradleakError


@dataclass(frozen=True)
class Limits:
    batch_size: int = 4096
    #: elements of one input (pixels x channels, tokens, features)
    input_elements: int = 3 * 1024 * 1024
    #: elements of one whole batch of inputs
    batch_elements: int = 64 * 1024 * 1024
    num_classes: int = 1_000_000
    vocab_size: int = 1_000_000
    seq_len: int = 32_768
    #: parameters of a model built from a capture's settings (counted on the meta device before allocating)
    parameters: int = 2_000_000_000
    local_steps: int = 100_000
    #: layers of a model built from a config (each is Python objects even on the meta device: 1e6 layers run away)
    layers: int = 256
    #: pixels x channels of a whole dataset a loader reads into memory (2 GiB of float32)
    dataset_elements: int = 512 * 1024 * 1024


_DEFAULT = Limits()
_current = _DEFAULT
_UNLIMITED = Limits(*(10**15 for _ in range(len(Limits.__dataclass_fields__))))


def limits() -> Limits:
    """The bounds in force."""
    return _current


def set_limits(new: Limits | None = None, **changes: int) -> None:
    """Replace the bounds for this process (``None`` restores the defaults)."""
    global _current
    _current = replace(new or _DEFAULT, **changes)


@contextmanager
def allow_large() -> Iterator[None]:
    """Lift every bound inside the block (what ``--allow-large`` does for a whole command)."""
    global _current
    before, _current = _current, _UNLIMITED
    try:
        yield
    finally:
        _current = before


def check(field: str, value: int, what: str) -> None:
    """Raise ``CaptureError`` when ``value`` exceeds the bound ``field``; ``what`` names it for the user."""
    bound = getattr(_current, field)
    if value > bound:
        raise CaptureError(f"{what} is {value}, above the limit of {bound}; pass --allow-large (or use "
                           f"gradleak.limits.allow_large()) if this is real large work")


#: nesting depth of any JSON gradleak reads from a file (real metadata and configs nest 4 or 5 levels); deeper
#: input would end in a ``RecursionError`` inside ``json`` or in code that walks the result
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects in JSON ``text``, counted without parsing (no recursion)."""
    depth = deepest = 0
    for bracket in _JSON_BRACKETS.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_json(text: str | bytes, where: str, error: type[GradleakError] = CaptureError) -> Any:
    """JSON from a file gradleak did not write: the one place it is parsed, so that depth, malformed text and
    Python's own limits (``RecursionError``, integers over 4300 digits) are one ``error`` naming ``where``."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{where}: JSON nested {depth} levels deep, more than the {MAX_JSON_DEPTH} allowed")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (RecursionError, ValueError) as exc:
        raise error(f"{where}: JSON cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") \
            from None


def read_json_file(path: str | Path, where: str | None = None, error: type[GradleakError] = CaptureError) -> Any:
    """``parse_json`` of a file's text; a missing or unreadable file is the same one-line ``error``."""
    path = Path(path)
    where = where or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{where}: cannot be read ({exc.strerror or exc})") from None
    return parse_json(data, where, error)
