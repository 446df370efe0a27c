"""Upper bounds on what a file from a stranger can make gradleak allocate.

A capture's metadata names a batch size, an input shape and model settings; a loader reads sizes from a file.
Each becomes memory before any attack runs, so each is bounded here, once, with an error that names the field
and the way to lift the bound (``--allow-large`` on the command line, ``allow_large()`` in Python) for real
large work. The defaults hold GPT-2-small-sized models and ImageNet-sized batches with room to spare.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from gradleak.errors import CaptureError


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
