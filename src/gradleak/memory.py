"""Memory a run will need, estimated before it starts, against what the machine has free.

``gradleak.limits`` bounds what a file from a stranger can make gradleak allocate; ``--allow-large`` lifts those
bounds for real large work, and then a size the machine cannot hold would end in PyTorch's allocator traceback
minutes later (or at once, asking for terabytes). ``check_memory`` refuses such a run first, in one line naming
both figures. The estimates are deliberately coarse (an order of magnitude, stated where they are made); they
refuse only what cannot fit, never what merely might not.
"""

from __future__ import annotations

import re
from pathlib import Path

from gradleak.errors import ConfigError

#: bytes of one float32 element
FLOAT_BYTES = 4
#: copies of one input element an optimisation attack holds at once: the candidate, its gradient, Adam's two
#: moments, the best candidate so far, and the activations of the model kept for the double backward (a few
#: times the input on LeNet/ConvNet/ResNet stems); 32 is an upper figure, not a measurement of one model
INPUT_FACTOR = 32
#: copies of one parameter: the weights, the shared update, the candidate's gradient and its graph (double
#: backward), the optimiser's or the client's copy
PARAMETER_FACTOR = 6


def available_bytes() -> int | None:
    """Memory the kernel says a new allocation can get (``MemAvailable`` of ``/proc/meminfo``, else psutil);
    ``None`` where neither can say."""
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii")
        match = re.search(r"^MemAvailable:\s+(\d+)\s+kB", text, re.MULTILINE)
        if match:
            return int(match.group(1)) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def format_bytes(n: float) -> str:
    """``17179869184`` -> ``'16.0 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def run_bytes(batch_elements: int, parameters: int, input_factor: int = INPUT_FACTOR) -> int:
    """Estimated peak bytes of a run on ``batch_elements`` input elements (all restarts together) and a model of
    ``parameters``: ``batch_elements x 4 B x input_factor + parameters x 4 B x PARAMETER_FACTOR``."""
    return (batch_elements * input_factor + parameters * PARAMETER_FACTOR) * FLOAT_BYTES


def check_memory(needed: int, what: str) -> None:
    """Refuse (``ConfigError``, one line) when ``needed`` bytes exceed the memory available now."""
    free = available_bytes()
    if free is not None and needed > free:
        raise ConfigError(f"{what} needs about {format_bytes(needed)} of memory, and {format_bytes(free)} is "
                          "available on this machine; make the run smaller or use a larger machine")


_ALLOCATION = re.compile(r"(?:tried to allocate|allocate)\s+(\d+(?:\.\d+)?)\s*(bytes|[KMGT]i?B)", re.IGNORECASE)


def out_of_memory_message(exc: BaseException) -> str | None:
    """One line for an allocation failure (``MemoryError``, ``torch.OutOfMemoryError``, PyTorch's CPU allocator
    ``RuntimeError``: "not enough memory"), naming the size asked for where the message gives it; ``None`` for
    any other exception."""
    text = str(exc)
    oom = isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and ("not enough memory" in text or "out of memory" in text.lower()))
    if not oom:
        return None
    match = _ALLOCATION.search(text)
    asked = ""
    if match:
        value, unit = float(match.group(1)), match.group(2)
        scale = {"bytes": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "gb": 1024**3, "gib": 1024**3,
                 "tb": 1024**4, "tib": 1024**4}[unit.lower()]
        asked = f" asked for {format_bytes(value * scale)}"
    free = available_bytes()
    have = f"; {format_bytes(free)} is available on this machine" if free is not None else ""
    return f"out of memory: an allocation{asked} failed{have}; make the run smaller or use a larger machine"


__all__ = ["available_bytes", "check_memory", "format_bytes", "out_of_memory_message", "run_bytes"]
