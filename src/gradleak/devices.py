"""The ``--device`` a user names, checked once before any work: a clear error for a device torch does not know
or this machine does not have, instead of a traceback from the first tensor moved there."""

from __future__ import annotations

import torch

from gradleak.errors import ConfigError

KNOWN = ("cpu", "cuda", "mps")


def check_device(name: object, flag: str = "--device") -> torch.device:
    """``name`` as a ``torch.device`` that exists here (``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{flag} must name a device (cpu, cuda, cuda:N, mps), got {name!r}")
    try:
        device = torch.device(name.strip())
    except (RuntimeError, ValueError):
        raise ConfigError(f"{flag} {name!r} is not a device torch knows; use cpu, cuda, cuda:N or mps") from None
    if device.type not in KNOWN:
        raise ConfigError(f"{flag} {name!r}: gradleak runs on {', '.join(KNOWN)}, not {device.type}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"{flag} {name!r}: CUDA is not available here ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{flag} {name!r}: this machine has {count} CUDA device(s), numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{flag} {name!r}: Apple MPS is not available here; use --device cpu")
    return device


__all__ = ["check_device"]
