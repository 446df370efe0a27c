"""Simulated clients: a model, a private batch and a training protocol produce an Observation.

``fedsgd`` shares one mean gradient (McMahan et al., 2017, FedSGD); ``fedavg`` runs ``steps`` local SGD steps
and shares the weight delta (FedAvg). The private batch is returned apart, as ``GroundTruth``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.observation import GroundTruth, LocalTraining, ModelSpec, Observation


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
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, training: LocalTraining
) -> dict[str, torch.Tensor]:
    """Run ``training.steps`` plain SGD steps in place on consecutive mini-batches; return the weight delta."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    n = inputs.shape[0]
    for step in range(training.steps):
        idx = torch.arange(step * training.batch_size, (step + 1) * training.batch_size) % n
        grads = batch_gradient(model, inputs[idx], labels[idx])
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
) -> tuple[Observation, GroundTruth]:
    """One client's round: build (or take) the server's model, train on the private batch, observe the update.

    ``inputs`` are pixels in [0, 1]; the client normalises them with ``mean``/``std`` before the model.
    The weights in the Observation are those *before* the client's step, as the server sent them.
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
    if protocol == "fedsgd":
        update, kind = batch_gradient(model, x, y), "gradient"
        local_training = None
    elif protocol == "fedavg":
        if local_training is None:
            raise ValueError("protocol 'fedavg' needs local_training (steps, lr, batch_size)")
        work = model_spec.build().to(device)
        work.load_state_dict(model.state_dict())
        work.train(model_mode == "train")
        update, kind = local_sgd(work, x, y, local_training), "weight_delta"
    else:
        raise ValueError(f"protocol must be 'fedsgd' or 'fedavg', got {protocol!r}")
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
