"""The malicious server of the threat model: which model it sends, and what it keeps to itself.

An honest-but-curious server sends the model it trains and only looks at the updates. A malicious server
(Fowl et al. 2022, "Robbing the Fed") changes the model first: here it puts an imprint block in front of the
base model (``gradleak.models.imprint``). The client runs the modified model unaware and returns an update;
secure aggregation does not help, since the block works on the sum of many clients' updates as well.

``MaliciousServer`` holds the two halves of that situation:

- what is *sent*: the model spec (rebuildable by registry name, so captures work) and the weights. This is
  everything the client sees, and what goes into the ``Observation``;
- what is *kept*: the ``ImprintSecret``, the meaning of the block's parameters (which layer is the trap,
  the measurement direction, the bin thresholds) and how the server calibrated them. The parameter values
  are in the weights the server sent, so the attack can re-derive the secret from an Observation with
  ``ImprintSecret.from_observation``; what the server keeps private is that those parameters are a trap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradleak.client_step import client_step, make_observation, make_truth, normalize
from gradleak.errors import CaptureError, ConfigError
from gradleak.models.imprint import ImprintBlock
from gradleak.observation import GroundTruth, ModelSpec, Observation

IMPRINT_LAYER = "block.imprint"


@dataclass(frozen=True)
class ImprintSecret:
    """The server's knowledge of its imprint block: ``layer`` (module name), ``measurement`` ``(D,)`` and the
    ascending ``thresholds`` ``(bins,)``; unit ``j`` fires for samples with ``measurement . x > thresholds[j]``.
    ``order`` maps ascending bins to the block's rows."""

    layer: str
    measurement: torch.Tensor
    thresholds: torch.Tensor
    order: torch.Tensor

    @property
    def bins(self) -> int:
        return int(self.thresholds.numel())

    @classmethod
    def from_weights(cls, weights: dict[str, torch.Tensor], layer: str = IMPRINT_LAYER) -> ImprintSecret:
        """Read the secret from the weights the server sent; errors name the missing or malformed tensor."""
        for key in (f"{layer}.weight", f"{layer}.bias"):
            if key not in weights:
                raise CaptureError(f"weights have no {key!r}: the model holds no imprint block at {layer!r}")
        weight, bias = weights[f"{layer}.weight"].double(), weights[f"{layer}.bias"].double()
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise CaptureError(
                f"{layer!r} must be a linear layer, got weight {tuple(weight.shape)}, bias {tuple(bias.shape)}"
            )
        measurement = weight[0]
        if not torch.allclose(weight, measurement.expand_as(weight), rtol=1e-6, atol=1e-9):
            key = f"{layer}.weight"
            raise CaptureError(f"the rows of {key!r} differ: not an imprint block (one shared measurement)")
        order = torch.argsort(-bias)  # threshold t_j = -b_j, ascending
        return cls(layer, measurement, -bias[order], order)

    @classmethod
    def from_observation(cls, obs: Observation, layer: str = IMPRINT_LAYER) -> ImprintSecret:
        return cls.from_weights(obs.weights, layer)


@dataclass(frozen=True)
class MaliciousServer:
    """A dishonest server's round: the model it sends (``model_spec`` + ``weights``) and its ``secret``."""

    model_spec: ModelSpec
    weights: dict[str, torch.Tensor]
    secret: ImprintSecret
    calibration: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        """The modified model, as the victim receives and runs it."""
        model = self.model_spec.build()
        model.load_state_dict(self.weights)
        return model


def calibrate_statistic(
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    input_shape: tuple[int, int, int] | None = None,
    seed: int = 0,
    measurement: str = "random",
) -> tuple[float, float]:
    """Mean and standard deviation of the block's statistic on public ``images`` (pixels in [0, 1]): the server's
    estimate of its distribution, from which the bins get equal mass (Fowl et al. 2022 use public data the same
    way). The measurement is the one an imprint block with this ``seed`` uses."""
    shape = input_shape or tuple(int(s) for s in images.shape[1:])
    block = ImprintBlock(shape, bins=2, seed=seed, measurement=measurement)  # type: ignore[arg-type]
    stats = normalize(images.float(), mean, std).flatten(1) @ block.imprint.weight[0]
    return float(stats.mean().detach()), float(stats.std().detach())


def imprint_server(
    base: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    base_kwargs: dict[str, Any] | None = None,
    bins: int = 128,
    seed: int = 0,
    measurement: str = "random",
    public_images: torch.Tensor | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> MaliciousServer:
    """Build the imprint model a malicious server sends. With ``public_images`` (and the normalisation ``mean``
    and ``std``) the bins are calibrated on them; otherwise they assume a statistic ~ N(0, 1), which a unit random
    direction of normalised pixels roughly follows. The base model's weights come from the global RNG."""
    calibration: dict[str, Any] = {"source": "N(0, 1) prior"}
    stat_mean, stat_std = 0.0, 1.0
    if public_images is not None:
        if mean is None or std is None:
            raise ConfigError("calibrating on public images needs the normalisation mean and std")
        stat_mean, stat_std = calibrate_statistic(
            public_images, mean, std, input_shape=(in_channels, image_size, image_size), seed=seed,
            measurement=measurement,
        )
        calibration = {"source": "public images", "count": int(public_images.shape[0])}
    calibration.update(statistic_mean=stat_mean, statistic_std=stat_std)
    spec = ModelSpec("imprint", {
        "in_channels": in_channels, "num_classes": num_classes, "image_size": image_size, "base": base,
        "base_kwargs": dict(base_kwargs or {}), "bins": bins, "seed": seed, "measurement": measurement,
        "statistic_mean": stat_mean, "statistic_std": stat_std,
    })
    model = spec.build()
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return MaliciousServer(spec, weights, ImprintSecret.from_weights(weights), calibration)


def simulate_aggregate(
    model_spec: ModelSpec,
    client_batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    model: nn.Module | None = None,
    reduce: str = "sum",
    model_mode: str = "train",
    device: torch.device | str = "cpu",
    info: dict[str, Any] | None = None,
) -> tuple[Observation, GroundTruth]:
    """One FedSGD round of several clients seen only as an aggregate: what a server behind secure aggregation gets.

    Each client computes its mean cross-entropy gradient on its own batch (``client_step``) with the same
    server model; the Observation's update is their ``reduce``: ``"sum"`` (what secure aggregation reveals) or
    ``"mean"`` (with equal batch sizes, the mean gradient of all images). ``batch_size`` is the total number of
    images and the ground truth holds every client's batch, in client order: an attack on the aggregate is asked
    for all of them. (``defenses.secure_aggregation`` models the other case, a target client hidden in a sum.)
    """
    if not client_batches:
        raise ConfigError("simulate_aggregate needs at least one client batch")
    if reduce not in ("sum", "mean"):
        raise ConfigError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    model = model if model is not None else model_spec.build()
    observations = [
        client_step(model_spec, x, y, num_classes=num_classes, mean=mean, std=std, model=model,
                    model_mode=model_mode, device=device)[0]  # type: ignore[arg-type]
        for x, y in client_batches
    ]
    total = {k: torch.stack([o.update[k] for o in observations]).sum(0) for k in observations[0].update}
    if reduce == "mean":
        total = {k: v / len(observations) for k, v in total.items()}
    sizes = [int(x.shape[0]) for x, _ in client_batches]
    first = observations[0]
    obs = make_observation(
        model_spec, first.weights, total, inputs=first.inputs, task=first.task, batch_size=sum(sizes),
        model_mode=first.model_mode,
        info={**(info or {}), "aggregate": reduce, "clients": len(sizes), "client_batch_sizes": sizes},
    )
    truth = make_truth(torch.cat([x for x, _ in client_batches]).float(),
                       torch.cat([y for _, y in client_batches]).long(), first.inputs)
    return obs, truth
