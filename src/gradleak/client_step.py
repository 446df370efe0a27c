"""The one client step: (model, private batch, protocol, defense) -> (Observation, GroundTruth).

A client receives the server's model, trains on its private batch and shares an update: one mean gradient
(FedSGD) or the weight delta of ``steps`` local SGD steps (FedAvg; McMahan et al., 2017). A defense changes the
training step (DP-SGD through Opacus, Abadi et al. 2016) and/or what is shared (noise, clipping, pruning, ...,
secure aggregation), through ``defenses.defended_update``, the code path training with a defense also runs.

Every way gradleak turns a client's step into what the attacker sees goes through this module:

- ``client_step`` runs the step on images, token sequences or feature vectors, for any task (``Task.loss``):
  ``gradleak.simulate`` (``victim``), the text victim (``text.victim``, Opacus DP-SGD on tokens included) and
  the malicious server's aggregate (``malicious.simulate_aggregate``) call it;
- ``step_gradient_of`` is the gradient of one local step (plain, or the defense's: DP-SGD on images or text)
  and ``local_sgd`` the FedAvg loop; the Flower clients (``fl.clients``) train through them;
- ``make_observation`` / ``make_truth`` are the one place an ``Observation`` of a client update and its
  ``GroundTruth`` are made: from a simulated step here, from a user's recorded step (``record``), from a Flower
  round's arrays (``fl.audit.to_observation``).

Split learning (``split.simulation``) observes cut-layer activations and returned gradients, not a parameter
update, so it has its own ``SplitObservation``; its module docstring says what it shares with this one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.defenses.base import Defense, Privacy, Update, defended_update
from gradleak.defenses.dp import DPSGD, dp_text_gradient
from gradleak.errors import ConfigError
from gradleak.inputs import FeatureInput, ImageInput, InputSpec, TokenInput
from gradleak.model_spec import ModelSpec
from gradleak.observation import GroundTruth, LocalTraining, Observation, UpdateKind, shared_buffer_names
from gradleak.training_task import Task, batch_gradient

Protocol = Literal["fedsgd", "fedavg"]
PROTOCOLS: tuple[str, ...] = ("fedsgd", "fedavg")
#: the gradient of one local step on a model-space batch: ``(model, inputs, labels) -> update``
StepGradient = Callable[[nn.Module, torch.Tensor, "torch.Tensor | None"], Update]

__all__ = ["PROTOCOLS", "Protocol", "StepGradient", "batch_gradient", "buffer_change", "changes_step", "client_step",
           "describe_inputs", "local_sgd", "make_observation", "make_truth", "normalize", "privacy_metadata",
           "shares_buffers", "step_gradient_of"]


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Pixels in [0, 1] to the model's input ``(x - mean) / std``, per channel."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s


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


def changes_step(defense: Defense | None) -> bool:
    """Whether ``defense`` replaces the training step's gradient (DP-SGD), not only the shared update."""
    return defense is not None and type(defense).step_gradient is not Defense.step_gradient


def step_gradient_of(defense: Defense | None, inputs: InputSpec, task: Task, *,
                     generator: torch.Generator | None = None,
                     expected_batch_size: int | None = None) -> StepGradient:
    """The gradient of one local step for this input kind and task: the plain mean loss, or the defense's step.

    A step defense runs on image or feature classification (its ``step_gradient``: cross-entropy) and, for Opacus
    DP-SGD, on token inputs too (``defenses.dp.dp_text_gradient``: each record's own loss, clipped). Any other
    combination is refused: sharing the plain gradient under the defense's name would report a defense that did
    not run. ``expected_batch_size`` is what DP-SGD divides its noised sum by (default: the batch's size)."""
    tokens = isinstance(inputs, TokenInput)
    plain_ce = task.kind == "classification" and not tokens
    if not changes_step(defense):
        def plain(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor | None) -> Update:
            mask = inputs.attention_mask(xb) if isinstance(inputs, TokenInput) else None
            return batch_gradient(m, xb, yb, None if plain_ce else task, mask)
        return plain
    assert defense is not None
    if generator is None:
        raise ConfigError(f"defense {defense.name!r} draws noise: its step needs a seeded generator")
    if plain_ce:
        def defended(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor | None) -> Update:
            return defense.step_gradient(m, xb, yb, generator=generator,  # type: ignore[arg-type]
                                         expected_batch_size=expected_batch_size)
        return defended
    if tokens and isinstance(defense, DPSGD):
        def private_text(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor | None) -> Update:
            return dp_text_gradient(m, xb, yb, task, defense, mask=inputs.attention_mask(xb),  # type: ignore[union-attr]
                                    generator=generator, expected_batch_size=expected_batch_size)
        return private_text
    raise ConfigError(f"defense {defense.name!r} changes the training step, which runs on image or feature "
                      f"classification; on {inputs.kind} with a {task.kind} task only Opacus DP-SGD ('dpsgd') does")


def local_sgd(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    training: LocalTraining,
    step_gradient: StepGradient | None = None,
) -> Update:
    """Run ``training.steps`` SGD steps of ``training.lr`` in place on consecutive mini-batches of
    ``training.batch_size`` (wrapping around); return the weight delta. ``step_gradient`` (default
    ``batch_gradient``) is the gradient of one step, e.g. a DP-SGD defense's (``step_gradient_of``)."""
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


def shares_buffers(protocol: str, share_buffers: bool | None) -> bool:
    """Whether the client's update carries its BatchNorm running-statistics change. ``None`` takes the protocol's
    usual client: a FedAvg client sends its state dict (Flower's PyTorch examples send every ``state_dict()``
    entry, buffers included), so its weight delta carries them; a FedSGD client shares a gradient, which has no
    buffers."""
    if share_buffers is None:
        return protocol == "fedavg"
    if not isinstance(share_buffers, bool):
        raise ConfigError(f"share_buffers must be true, false or null (the protocol's default), got {share_buffers!r}")
    return share_buffers


def buffer_change(model: nn.Module, step: Callable[[], Update]) -> Update:
    """Run ``step`` (which trains ``model``) and add the change ``after - before`` of ``model``'s BatchNorm running
    statistics (``observation.shared_buffer_names``) to the update it returns, under the buffers' state-dict
    names: what the server reads off the state dict a client sends back (in train mode, one forward pass moves
    them by ``momentum * (batch statistic - running statistic)``)."""
    state = model.state_dict()
    names = shared_buffer_names(model)
    before = {n: state[n].detach().clone() for n in names}
    update = step()
    state = model.state_dict()
    return {**update, **{n: state[n].detach() - before[n] for n in names}}


def make_observation(
    model_spec: ModelSpec,
    weights: dict[str, torch.Tensor],
    update: Update,
    *,
    inputs: InputSpec,
    task: Task,
    batch_size: int,
    local_training: LocalTraining | None = None,
    labels: torch.Tensor | None = None,
    model_mode: Literal["train", "eval"] = "train",
    info: dict[str, Any] | None = None,
) -> Observation:
    """What the attacker sees of one client update (or of a sum of them): a weight delta when
    ``local_training`` is given, else a gradient; ``labels`` only when they leaked. Tensors are copied to CPU."""
    kind: UpdateKind = "gradient" if local_training is None else "weight_delta"
    return Observation(
        model_spec=model_spec,
        weights={k: v.detach().cpu().clone() for k, v in weights.items()},
        update={k: v.detach().cpu() for k, v in update.items()},
        inputs=inputs,
        task=task,
        batch_size=int(batch_size),
        update_kind=kind,
        local_training=local_training,
        labels=None if labels is None else labels.detach().cpu().long().clone(),
        model_mode=model_mode,
        info=dict(info or {}),
    )


def privacy_metadata(privacy: Privacy) -> dict[str, Any]:
    """A DP guarantee as an Observation's ``info['privacy']`` (JSON for captures and reports): epsilon (a string
    when infinite), delta, the accountant, the noise multiplier and the sampling the accountant assumed."""
    s = privacy.schedule
    return {"epsilon": privacy.epsilon if math.isfinite(privacy.epsilon) else str(privacy.epsilon),
            "delta": privacy.delta, "accountant": privacy.accountant, "noise_multiplier": privacy.noise_multiplier,
            "sample_rate": s.sample_rate, "steps": s.accounted_steps,
            "sampling": "poisson" if s.poisson else "fixed batches (no amplification)", "schedule": s.describe()}


def make_truth(inputs: torch.Tensor, labels: torch.Tensor | None, spec: InputSpec) -> GroundTruth:
    """The private batch as the client fed it (pixels in [0, 1], feature vectors, token ids with their attention
    mask); labels kept when they are one integer class per example."""
    keep = labels is not None and not labels.dtype.is_floating_point and labels.shape == (inputs.shape[0],)
    mask = spec.attention_mask(inputs) if isinstance(spec, TokenInput) else None
    return GroundTruth(inputs.detach().cpu().clone(), labels.detach().cpu().long().clone() if keep else None,  # type: ignore[union-attr]
                       None if mask is None else mask.cpu())


def client_step(
    model_spec: ModelSpec,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    num_classes: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    input_spec: InputSpec | None = None,
    task: Task | None = None,
    protocol: Protocol = "fedsgd",
    local_training: LocalTraining | None = None,
    model: nn.Module | None = None,
    model_mode: Literal["train", "eval"] = "train",
    leak_labels: bool = False,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    info: dict[str, Any] | None = None,
    defense: Defense | None = None,
    population: tuple[torch.Tensor, torch.Tensor] | None = None,
    share_buffers: bool | None = None,
) -> tuple[Observation, GroundTruth]:
    """One client's round: build (or take) the server's model, train on the private batch, observe the update.

    ``inputs`` are pixels in [0, 1] (the client normalises them with ``mean``/``std``), feature vectors, or token
    ids with ``input_spec=TokenInput(...)``; ``task`` defaults to classification over ``num_classes``.
    The weights in the Observation are those *before* the client's step, as the server sent them.
    ``defense`` (see ``gradleak.defenses``) changes the client's step and/or what it shares, through
    ``defenses.defended_update``, the same code path as training with the defense; its randomness is seeded
    by ``seed``. ``population`` (pixels, labels) holds other clients' data, drawn by secure aggregation.
    ``share_buffers``: whether the update also carries the change of the BatchNorm running statistics
    (``shares_buffers``; default: yes for FedAvg, whose clients send their state dict, no for FedSGD's gradient).
    A defense transforms those entries with the rest of the update, as Flower's DP wrappers clip and noise every
    array a client sends.
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
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be 'fedsgd' or 'fedavg', got {protocol!r}")
    if protocol == "fedavg" and local_training is None:
        raise ValueError("protocol 'fedavg' needs local_training (steps, lr, batch_size)")
    generator = torch.Generator(device=torch.device(device)).manual_seed(0 if seed is None else seed)
    step_gradient = step_gradient_of(defense, spec, task, generator=generator)

    with_buffers = shares_buffers(protocol, share_buffers)

    def protocol_update(xb: torch.Tensor, yb: torch.Tensor) -> Update:
        if protocol == "fedsgd":
            if not with_buffers:
                return step_gradient(model, xb, yb)
            return buffer_change(model, lambda: step_gradient(model, xb, yb))
        assert local_training is not None
        work = model_spec.build().to(device)
        work.load_state_dict(model.state_dict())
        work.train(model_mode == "train")
        if not with_buffers:
            return local_sgd(work, xb, yb, local_training, step_gradient)
        return buffer_change(work, lambda: local_sgd(work, xb, yb, local_training, step_gradient))


    def draw_others(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if population is None or len(population[0]) < n:
            have = 0 if population is None else len(population[0])
            raise ValueError(f"the population holds {have} other examples, {n} are needed")
        idx = torch.randperm(len(population[0]), generator=gen, device=gen.device)[:n].cpu()
        return to_model(population[0][idx].to(device)), population[1][idx].to(device)

    update = defended_update(
        defense, model, x, y, generator=generator, update_of=protocol_update,  # type: ignore[arg-type]
        draw_others=draw_others if population is not None else None,
    )
    if defense is not None:
        info = {**(info or {}), "defense": {"name": defense.name, "settings": defense.settings()}}
        if (privacy := defense.privacy()) is not None:  # a DP defense given the schedule its epsilon is for
            info["privacy"] = privacy_metadata(privacy)
    obs = make_observation(
        model_spec, weights, update, inputs=spec, task=task, batch_size=int(inputs.shape[0]),
        local_training=local_training if protocol == "fedavg" else None,
        labels=labels if leak_labels else None, model_mode=model_mode, info=info,
    )
    return obs, make_truth(inputs, labels, spec)
