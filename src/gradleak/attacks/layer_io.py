"""What one module of a model reads or writes, with the forward pass stopped right there.

Analytic attacks recover a layer's inputs (SPEAR on a CNN's fully connected layer) or test candidates against a
layer's span (DAGER's second layer); both need a module's input or output for given model inputs, and nothing
after it. The model's own forward runs, so masks and embeddings are built as the model builds them; a hook ends it
once the module has run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gradleak.errors import ConfigError


class _Reached(Exception):
    """Raised by the hook once the module's input or output is captured."""


def module_io(model: nn.Module, module: nn.Module, *args: Any, output: bool = False, **kwargs: Any) -> torch.Tensor:
    """What ``module`` reads (its first positional input) or, with ``output``, what it returns (the first element
    of a tuple) when ``model(*args, **kwargs)`` runs; the forward stops at the module."""
    captured: list[torch.Tensor] = []

    def read(_m: nn.Module, inputs: tuple[Any, ...]) -> None:
        captured.append(inputs[0])
        raise _Reached

    def wrote(_m: nn.Module, _inputs: Any, out: Any) -> None:
        captured.append(out[0] if isinstance(out, tuple) else out)
        raise _Reached

    handle = module.register_forward_hook(wrote) if output else module.register_forward_pre_hook(read)
    try:
        model(*args, **kwargs)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ConfigError("the layer did not run in the model's forward pass")
    return captured[0]
