"""Simulated clients: a model, a private batch and a training protocol produce an Observation.

``fedsgd`` shares one mean gradient (McMahan et al., 2017, FedSGD); ``fedavg`` runs ``steps`` local SGD steps
and shares the weight delta (FedAvg). The private batch is returned apart, as ``GroundTruth``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.observation import GroundTruth, LocalTraining, ModelSpec, Observation

if TYPE_CHECKING:
    from gradleak.defenses.base import Defense


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


def batch_gradient(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean cross-entropy gradient of ``model`` on normalised ``inputs``, keyed by parameter name."""
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    loss = F.cross_entropy(model(inputs), labels)
    grads = torch.autograd.grad(loss, params)
    return {n: g.detach() for n, g in zip(names, grads)}


def local_sgd(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    training: LocalTraining,
    step_gradient: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``training.steps`` SGD steps in place on consecutive mini-batches; return the weight delta.
    ``step_gradient`` (default ``batch_gradient``) is the gradient of one step, e.g. a DP-SGD defense's."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    n = inputs.shape[0]
    step_gradient = step_gradient or batch_gradient
    for step in range(training.steps):
        idx = torch.arange(step * training.batch_size, (step + 1) * training.batch_size) % n
        grads = step_gradient(model, inputs[idx], labels[idx])
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in grads:
                    p -= training.lr * grads[name]
    return {name: (p.detach() - before[name]) for name, p in model.named_parameters()}


def simulate(
    model_spec: ModelSpec,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    protocol: Literal["fedsgd", "fedavg"] = "fedsgd",
    local_training: LocalTraining | None = None,
    model: nn.Module | None = None,
    model_mode: Literal["train", "eval"] = "train",
    leak_labels: bool = False,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    info: dict[str, Any] | None = None,
    defense: Defense | None = None,
    population: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[Observation, GroundTruth]:
    """One client's round: build (or take) the server's model, train on the private batch, observe the update.

    ``inputs`` are pixels in [0, 1]; the client normalises them with ``mean``/``std`` before the model.
    The weights in the Observation are those *before* the client's step, as the server sent them.
    ``defense`` (see ``gradleak.defenses``) changes the client's step and/or what it shares, through
    ``defenses.defended_update``, the same code path as training with the defense; its randomness is seeded
    by ``seed``. ``population`` (pixels, labels) holds other clients' data, drawn by secure aggregation.
    """
    if seed is not None:
        torch.manual_seed(seed)
    if model is None:
        model = model_spec.build()
    model = model.to(device)
    model.train(model_mode == "train")
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    x = normalize(inputs.to(device), mean, std)
    y = labels.to(device)
    if protocol not in ("fedsgd", "fedavg"):
        raise ValueError(f"protocol must be 'fedsgd' or 'fedavg', got {protocol!r}")
    if protocol == "fedavg" and local_training is None:
        raise ValueError("protocol 'fedavg' needs local_training (steps, lr, batch_size)")
    from gradleak.defenses.base import defended_update

    generator = torch.Generator(device=torch.device(device)).manual_seed(0 if seed is None else seed)

    def step_gradient(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        if defense is None:
            return batch_gradient(m, xb, yb)
        return defense.step_gradient(m, xb, yb, generator=generator)

    def protocol_update(xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        if protocol == "fedsgd":
            return step_gradient(model, xb, yb)
        assert local_training is not None
        work = model_spec.build().to(device)
        work.load_state_dict(model.state_dict())
        work.train(model_mode == "train")
        return local_sgd(work, xb, yb, local_training, step_gradient)

    def draw_others(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if population is None or len(population[0]) < n:
            have = 0 if population is None else len(population[0])
            raise ValueError(f"the population holds {have} other examples, {n} are needed")
        idx = torch.randperm(len(population[0]), generator=gen, device=gen.device)[:n].cpu()
        return normalize(population[0][idx].to(device), mean, std), population[1][idx].to(device)

    update = defended_update(
        defense, model, x, y, generator=generator, update_of=protocol_update,
        draw_others=draw_others if population is not None else None,
    )
    kind = "gradient" if protocol == "fedsgd" else "weight_delta"
    if protocol == "fedsgd":
        local_training = None
    if defense is not None:
        info = {**(info or {}), "defense": {"name": defense.name, "settings": defense.settings()}}
    obs = Observation(
        model_spec=model_spec,
        weights=weights,
        update={k: v.cpu() for k, v in update.items()},
        input_shape=tuple(int(s) for s in inputs.shape[1:]),  # type: ignore[arg-type]
        batch_size=int(inputs.shape[0]),
        num_classes=num_classes,
        mean=tuple(mean),
        std=tuple(std),
        update_kind=kind,  # type: ignore[arg-type]
        local_training=local_training,
        labels=labels.cpu().clone() if leak_labels else None,
        model_mode=model_mode,
        info=dict(info or {}),
    )
    return obs, GroundTruth(inputs.detach().cpu().clone(), labels.detach().cpu().clone())
