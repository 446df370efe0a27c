"""Simulated clients: a model, a private batch and a training protocol produce an Observation.

``fedsgd`` shares one mean gradient (McMahan et al., 2017, FedSGD); ``fedavg`` runs ``steps`` local SGD steps
and shares the weight delta (FedAvg). The private batch is returned apart, as ``GroundTruth``. Any input kind
(images, token sequences, feature vectors) and task (classification, causal or masked LM) runs through the same
steps: the client's loss is ``Task.loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.errors import ConfigError
from gradleak.inputs import FeatureInput, ImageInput, InputSpec, TokenInput
from gradleak.tasks import Task
from gradleak.observation import GroundTruth, LocalTraining, ModelSpec, Observation

if TYPE_CHECKING:
    from gradleak.defenses.base import Defense


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


def batch_gradient(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None, task: Task | None = None,
    attention_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Gradient of the task's mean loss (default: cross-entropy classification) of ``model`` on model-space
    ``inputs`` (normalised pixels or features, token ids), keyed by parameter name, trainable parameters only."""
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    if task is None:
        loss = F.cross_entropy(model(inputs), labels)
    else:
        loss = task.loss(model, inputs, labels, attention_mask)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: g.detach() for n, g in zip(names, grads) if g is not None}


def describe_inputs(inputs: torch.Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> InputSpec:
    """The input description of a batch when the caller gives none: images (B, C, H, W) or features (B, F)."""
    if inputs.dtype.is_floating_point and inputs.ndim == 4:
        c = int(inputs.shape[1])
        return ImageInput(tuple(int(s) for s in inputs.shape[1:]), tuple(mean or (0.0,) * c),  # type: ignore[arg-type]
                          tuple(std or (1.0,) * c))
    if inputs.dtype.is_floating_point and inputs.ndim == 2:
        return FeatureInput(int(inputs.shape[1]), None if mean is None else tuple(mean),
                            None if std is None else tuple(std))
    raise ValueError(f"cannot tell the input kind of a {inputs.dtype} batch shaped {tuple(inputs.shape)}; pass "
                     f"input_spec (e.g. TokenInput(seq_len, vocab_size, pad_token_id) for token ids)")


def local_sgd(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
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
        grads = step_gradient(model, inputs[idx], None if labels is None else labels[idx])
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in grads:
                    p -= training.lr * grads[name]
    return {name: (p.detach() - before[name]) for name, p in model.named_parameters()}


def simulate(
    model_spec: ModelSpec,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    num_classes: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    input_spec: InputSpec | None = None,
    task: Task | None = None,
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

    ``inputs`` are pixels in [0, 1] (the client normalises them with ``mean``/``std``), feature vectors, or token
    ids with ``input_spec=TokenInput(...)``; ``task`` defaults to classification over ``num_classes``.
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
    spec = input_spec or describe_inputs(inputs, mean, std)
    if task is None:
        if num_classes is None:
            raise ValueError("simulate needs num_classes (classification) or a task")
        task = Task.classification(num_classes)
    if isinstance(spec, TokenInput):
        def to_model(v: torch.Tensor) -> torch.Tensor:
            return v
    else:
        to_model = spec.to_model
    x = to_model(inputs.to(device))
    y = None if labels is None else labels.to(device)
    plain_ce = task.kind == "classification" and not isinstance(spec, TokenInput)
    if protocol not in ("fedsgd", "fedavg"):
        raise ValueError(f"protocol must be 'fedsgd' or 'fedavg', got {protocol!r}")
    if protocol == "fedavg" and local_training is None:
        raise ValueError("protocol 'fedavg' needs local_training (steps, lr, batch_size)")
    from gradleak.defenses.base import Defense, defended_update

    generator = torch.Generator(device=torch.device(device)).manual_seed(0 if seed is None else seed)
    if defense is not None and not plain_ce and type(defense).step_gradient is not Defense.step_gradient:
        # its own training step (DP-SGD) is written for image classification; silently sharing the plain
        # gradient under its name would report a defense that did not run
        raise ConfigError(f"defense {defense.name!r} changes the training step, which simulate runs only for "
                          f"image classification; for text use gradleak.text.victim.text_victim (Opacus DP-SGD)")

    def step_gradient(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        if defense is None or not plain_ce:
            mask = spec.attention_mask(xb) if isinstance(spec, TokenInput) else None
            return batch_gradient(m, xb, yb, None if plain_ce else task, mask)
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
        return to_model(population[0][idx].to(device)), population[1][idx].to(device)

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
        inputs=spec,
        task=task,
        batch_size=int(inputs.shape[0]),
        update_kind=kind,  # type: ignore[arg-type]
        local_training=local_training,
        labels=labels.cpu().clone() if leak_labels and labels is not None else None,
        model_mode=model_mode,
        info=dict(info or {}),
    )
    mask = spec.attention_mask(inputs) if isinstance(spec, TokenInput) else None
    truth = GroundTruth(inputs.detach().cpu().clone(), None if labels is None else labels.detach().cpu().clone(),
                        None if mask is None else mask.cpu())
    return obs, truth
