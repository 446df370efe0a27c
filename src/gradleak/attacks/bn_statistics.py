"""The client's own BatchNorm batch statistics, read off the running-statistics change its update carries.

A client that trains in train mode moves every BatchNorm layer's running statistics towards the statistics of
the batches it forwarded, and a client that sends its state dict (FedAvg as Flower's PyTorch examples run it)
hands the server that move (``Observation.buffer_update``). With momentum ``f`` (PyTorch's ``momentum``; for
``momentum=None``, ``1 / (num_batches_tracked + 1)`` at each pass), one forward pass gives exactly

    batch_mean = old_mean + delta_mean / f,    batch_var = old_var + delta_var / f    (unbiased variance),

and ``k`` passes (``k`` local steps) give their weighted mix ``old + delta / (1 - prod_s (1 - f_s))`` with step
``s`` weighted ``f_s prod_{t>s} (1 - f_t)`` (normalised): what the unrolled FedAvg simulation compares its own
steps' statistics with. These are the statistics GradInversion (Yin et al. 2021) and Hatamizadeh et al. (2022)
match: those of the client's forward pass, not the running statistics of the model the server sent (which hold
the statistics of other clients' data, or the defaults 0 and 1 in a model that never trained). Computed in
float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradleak.observation import Observation


@dataclass(frozen=True)
class CarriedStatistics:
    """Per BatchNorm module (by name): the client's ``(mean, unbiased var)`` over its forward passes (float64),
    mixed over the passes with ``step_weights`` (one per forward pass, summing to 1; ``(1.0,)`` for one pass)."""

    statistics: dict[str, tuple[torch.Tensor, torch.Tensor]]
    step_weights: tuple[float, ...]


def forward_passes(obs: Observation) -> int:
    """Train-mode forward passes behind the update: one gradient (FedSGD), or ``local_training.steps``."""
    return 1 if obs.update_kind == "gradient" or obs.local_training is None else obs.local_training.steps


def carried_statistics(obs: Observation, model: nn.Module | None = None) -> CarriedStatistics | None:
    """The client's batch statistics at every BatchNorm layer whose ``running_mean`` and ``running_var`` change
    the update carries, or ``None`` when it carries none or the model ran in eval mode (its running statistics
    did not move). ``model``: the observation's model with the server's weights (built when not given)."""
    carried = obs.buffer_update
    if not carried or obs.model_mode != "train":
        return None
    model = model if model is not None else obs.build_model()
    passes = forward_passes(obs)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    weights: tuple[float, ...] = (1.0,)
    for name, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.running_mean is None:
            continue
        prefix = f"{name}." if name else ""
        d_mean, d_var = carried.get(prefix + "running_mean"), carried.get(prefix + "running_var")
        if d_mean is None or d_var is None:
            continue
        factors = _factors(module, passes)
        decay = 1.0
        for f in factors:
            decay *= 1.0 - f
        later = [1.0] * passes  # prod_{t > s} (1 - f_t)
        for s in range(passes - 2, -1, -1):
            later[s] = later[s + 1] * (1.0 - factors[s + 1])
        weights = tuple(f * w / (1.0 - decay) for f, w in zip(factors, later))
        old_mean = module.running_mean.detach().double().cpu()
        old_var = module.running_var.detach().double().cpu()
        out[name] = (old_mean + d_mean.double() / (1.0 - decay), old_var + d_var.double() / (1.0 - decay))
    return CarriedStatistics(out, weights) if out else None


def _factors(module: nn.modules.batchnorm._BatchNorm, passes: int) -> list[float]:
    """The averaging factor of each forward pass (PyTorch's ``exponential_average_factor``)."""
    if module.momentum is not None:
        return [float(module.momentum)] * passes
    tracked = int(module.num_batches_tracked) if module.num_batches_tracked is not None else 0
    return [1.0 / (tracked + s + 1) for s in range(passes)]
