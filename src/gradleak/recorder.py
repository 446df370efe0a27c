"""Record what a real training step of the user's own model shares, as an Observation (and, here, the truth).

``with gradleak.record(model, batch=(x, y)) as rec: <the user's training step>`` snapshots the weights on entry
(what the server sent) and, on exit, takes the update the step produced: the gradients left in ``p.grad``
(``share="gradient"``, FedSGD) or the weight change across ``steps`` optimiser steps (``share="delta"``, FedAvg).
It handles what real training code does: Opacus' ``GradSampleModule`` (names lose their ``_module.`` prefix; the
shared gradient is the clipped, noised ``p.grad`` its ``DPOptimizer`` leaves), frozen parameters and parameters
that got no gradient (left out of the update, as a client would), LoRA-style adapters (only the trainable
parameters are shared), and tied weights (one entry per parameter, as ``named_parameters`` gives them).

The batch the user passes is the private data: it goes to ``rec.truth`` (for scoring a simulation) and never
into ``rec.observation``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from gradleak.capture import rebuild_problem
from gradleak.client_step import make_observation, make_truth, privacy_metadata, shares_buffers
from gradleak.defenses.base import Privacy
from gradleak.errors import ConfigError
from gradleak.inputs import FeatureInput, ImageInput, InputSpec, TokenInput
from gradleak.model_spec import ModelSpec, huggingface_head, spec_of
from gradleak.observation import GroundTruth, LocalTraining, Observation, shared_buffer_names
from gradleak.text.tokenizer import user_tokenizer, vocabulary_digest
from gradleak.training_task import Task, forward

WRAPPER_PREFIXES = ("_module.", "module.")


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside an Opacus ``GradSampleModule`` or a ``DataParallel``/DDP wrapper."""
    while isinstance(getattr(model, "_module", None), nn.Module) or (
        type(model).__name__ in ("DataParallel", "DistributedDataParallel") and hasattr(model, "module")
    ):
        model = model._module if isinstance(getattr(model, "_module", None), nn.Module) else model.module
    return model


def strip_prefix(name: str) -> str:
    """``_module.fc.weight`` (Opacus) or ``module.fc.weight`` (DDP) -> ``fc.weight``."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


def check_rebuilds(spec: ModelSpec, module: nn.Module | None = None, who: str = "record") -> None:
    """Raise ``ConfigError`` (one line) when the model would not rebuild from its capture (``rebuild_problem``),
    naming what to pass."""
    if (problem := rebuild_problem(spec, module)) is not None:
        what = type(module if module is not None else spec.template).__name__
        raise ConfigError(f"{who}: model {what} cannot be rebuilt from a capture: {problem}; "
                          f"pass record(..., model_kwargs={{...}}) with its constructor arguments, "
                          f"factory='module:function' that builds it, or model_spec=ModelSpec(...)")


def check_privacy(privacy: Any, delta: float) -> Any:
    """``privacy`` as ``record`` takes it (gradleak's ``Privacy``, or an Opacus ``PrivacyEngine`` or accountant)
    and ``delta`` in (0, 1), or ``ConfigError``; returns the Opacus accountant (``None`` for a ``Privacy``)."""
    if isinstance(privacy, Privacy):
        return None
    accountant = getattr(privacy, "accountant", privacy)
    if not callable(getattr(accountant, "get_epsilon", None)) or not hasattr(accountant, "history"):
        raise ConfigError(f"record: privacy must be gradleak's Privacy or an Opacus PrivacyEngine/accountant, got "
                          f"{type(privacy).__name__}")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ConfigError(f"record: delta must lie in (0, 1), got {delta!r}")
    return accountant


def privacy_info(privacy: Any, delta: float) -> dict[str, Any]:
    """The DP guarantee of a recorded step as capture metadata: epsilon, delta, the accountant, the noise
    multiplier, and the sampling the accountant assumed. ``privacy`` is gradleak's ``Privacy``, or an Opacus
    ``PrivacyEngine`` or accountant after the step (its history is what ran; Opacus accounts Poisson sampling at
    the recorded sample rate, which holds only when the batches came from its ``DPDataLoader``)."""
    if isinstance(privacy, Privacy):
        return privacy_metadata(privacy)
    accountant = check_privacy(privacy, delta)
    if not accountant.history:
        raise ConfigError("record: the Opacus accountant holds no step (did the block call optimizer.step()?)")
    sigmas = {float(h[0]) for h in accountant.history}
    rates = {float(h[1]) for h in accountant.history}
    epsilon = float(accountant.get_epsilon(delta=delta))
    return {"epsilon": epsilon if math.isfinite(epsilon) else str(epsilon), "delta": delta,
            "accountant": f"opacus.{accountant.mechanism()}",
            "noise_multiplier": sigmas.pop() if len(sigmas) == 1 else sorted(sigmas),
            "sample_rate": rates.pop() if len(rates) == 1 else sorted(rates),
            "steps": int(sum(h[2] for h in accountant.history)),
            "sampling": "poisson (as Opacus's accountant assumes; true with its DPDataLoader)"}


def describe_batch(model: nn.Module, x: torch.Tensor, mean: tuple[float, ...] | None,
                   std: tuple[float, ...] | None) -> InputSpec:
    """The input description of the user's batch: images, feature vectors or token ids (vocabulary from the
    model's config or embedding)."""
    if x.dtype.is_floating_point and x.ndim == 4:
        c = int(x.shape[1])
        return ImageInput(tuple(int(s) for s in x.shape[1:]), tuple(mean or (0.0,) * c),  # type: ignore[arg-type]
                          tuple(std or (1.0,) * c))
    if x.dtype.is_floating_point and x.ndim == 2:
        return FeatureInput(int(x.shape[1]), None if mean is None else tuple(mean), None if std is None else tuple(std))
    if not x.dtype.is_floating_point and x.ndim == 2:
        config = getattr(model, "config", None)
        vocab = getattr(config, "vocab_size", None)
        if vocab is None:
            embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
            vocab = embeddings[0].num_embeddings if embeddings else None
        if vocab is None:
            raise ConfigError("cannot tell the vocabulary size of this model; pass inputs=TokenInput(...)")
        pad = getattr(config, "pad_token_id", None)
        return TokenInput(int(x.shape[1]), int(vocab), pad if isinstance(pad, int) else None)
    raise ConfigError(f"cannot tell the input kind of a {x.dtype} batch shaped {tuple(x.shape)}; pass inputs=...")


def describe_task(model: nn.Module, inputs: InputSpec, x: torch.Tensor) -> Task:
    """The task a model trains for: from a Hugging Face head's class name, else classification over its outputs."""
    head = huggingface_head(model)
    if head == "causal_lm":
        return Task.causal_lm()
    if head == "masked_lm":
        return Task.masked_lm()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            first = x[:1] if isinstance(inputs, TokenInput) else inputs.to_model(x[:1])
            logits = forward(model, first)
    finally:
        model.train(was_training)
    return Task.classification(int(logits.shape[-1]))


@dataclass
class Recording:
    """Filled when the ``record`` block exits: ``observation`` (what the server sees) and ``truth`` (the batch)."""

    observation: Observation | None = None
    truth: GroundTruth | None = None
    #: parameters left out of the update and why (frozen, no gradient)
    skipped: dict[str, str] = field(default_factory=dict)


@contextmanager
def record(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor | None] | torch.Tensor,
    *,
    share: Literal["gradient", "delta"] = "gradient",
    lr: float | None = None,
    steps: int = 1,
    local_batch_size: int | None = None,
    inputs: InputSpec | None = None,
    task: Task | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    factory: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    model_spec: ModelSpec | None = None,
    privacy: Any = None,
    delta: float = 1e-5,
    leak_labels: bool = False,
    info: dict[str, Any] | None = None,
    tokenizer: Any = None,
    share_buffers: bool | None = None,
) -> Iterator[Recording]:
    """Record the update of the training step run inside the block.

    ``batch`` is ``(x, y)`` (or ``x`` alone for language modelling) as the user feeds it: pixels in [0, 1] that
    the model normalises with ``mean``/``std`` (default: none), feature vectors, or token ids. ``share="delta"``
    needs the learning rate ``lr`` and the number of optimiser ``steps`` the block takes (FedAvg).

    A capture must rebuild the same architecture in another process: a ``transformers`` model by its config,
    else the module's class (or ``factory``, an import path) called with ``model_kwargs`` (its constructor
    arguments), or ``model_spec`` (a registry model by name). Given ones are checked on entry; without them a
    model whose class alone does not rebuild it is refused by ``save_capture`` (``rebuild_problem``).
    ``privacy``: the DP guarantee of the step (gradleak's ``Privacy``, or the Opacus ``PrivacyEngine`` or
    accountant, read after the block at ``delta``) goes into ``info['privacy']``, so captures and reports carry
    its epsilon. ``tokenizer``
    (token ids only: a name, gradleak's ``Tokenizer``, or the user's ``transformers``/``tokenizers`` tokenizer)
    travels with the capture, by name and by the sha256 of its vocabulary, so that the attacker can decode:
    ``gradleak attack`` rebuilds gradleak's own tokenizers from their names and checks a user's file
    (``--tokenizer``) against the digest.
    ``share_buffers``: the update also carries the change of the BatchNorm running statistics across the block
    (default: with ``share="delta"``, as a FedAvg client that sends its state dict does; not with a gradient).
    """
    x, y = (batch, None) if isinstance(batch, torch.Tensor) else batch
    if share not in ("gradient", "delta"):
        raise ConfigError(f"share must be 'gradient' or 'delta', got {share!r}")
    if share == "delta" and (lr is None or not math.isfinite(lr) or lr <= 0):
        raise ConfigError("share='delta' needs the client's learning rate lr > 0")
    inner = unwrap(model)
    spec = inputs or describe_batch(inner, x, mean, std)
    tokenizer_digest = None
    if tokenizer is not None:
        if not isinstance(spec, TokenInput):
            raise ConfigError(f"tokenizer is the tokenizer of a token batch; got one for {spec.kind} inputs")
        if isinstance(tokenizer, str):
            name = tokenizer
        else:  # gradleak's, a transformers or a tokenizers tokenizer: its name, and its vocabulary's digest
            tok = user_tokenizer(tokenizer)
            name, tokenizer_digest = tok.name, vocabulary_digest(tok)
        spec = dataclasses.replace(spec, tokenizer=name)
    the_task = task or describe_task(inner, spec, x)
    if privacy is not None:
        check_privacy(privacy, delta)
    if model_spec is not None and (factory is not None or model_kwargs is not None):
        raise ConfigError("record: give model_spec, or factory/model_kwargs, not both")
    if model_spec is None:
        model_spec = spec_of(inner, factory, model_kwargs)
        if factory is not None or model_kwargs is not None:
            check_rebuilds(model_spec)
    else:
        check_rebuilds(model_spec, module=inner)
    weights = {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}
    before = {strip_prefix(n): p.detach().clone() for n, p in model.named_parameters()}
    buffer_names = shared_buffer_names(inner) if shares_buffers("fedavg" if share == "delta" else "fedsgd",
                                                                share_buffers) else []
    buffers_before = {n: weights[n].clone() for n in buffer_names}
    mode: Literal["train", "eval"] = "train" if inner.training else "eval"
    rec = Recording()
    yield rec
    update: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        key = strip_prefix(name)
        if not p.requires_grad:
            rec.skipped[key] = "frozen"
            continue
        if share == "gradient":
            if p.grad is None:
                rec.skipped[key] = "no gradient"
                continue
            update[key] = p.grad.detach().cpu().clone()
        else:
            delta = p.detach() - before[key]
            update[key] = delta.cpu().clone()
    if not update:
        raise ConfigError("the block produced no update: no trainable parameter has a gradient (did it call "
                          "loss.backward()?)")
    state = inner.state_dict()
    update.update({n: state[n].detach().cpu() - buffers_before[n] for n in buffer_names})
    local = None
    if share == "delta":
        assert lr is not None
        local = LocalTraining(int(steps), float(lr), int(local_batch_size or x.shape[0]))
    extra: dict[str, Any] = {"recorded": True,
                             "skipped": {why: sum(1 for w in rec.skipped.values() if w == why)
                                         for why in sorted(set(rec.skipped.values()))}}
    if privacy is not None:
        extra["privacy"] = privacy_info(privacy, delta)
    if tokenizer_digest is not None:
        extra["tokenizer_digest"] = tokenizer_digest
    rec.observation = make_observation(
        model_spec, weights, update, inputs=spec, task=the_task, batch_size=int(x.shape[0]), local_training=local,
        labels=None if (y is None or not leak_labels) else y, model_mode=mode, info={**(info or {}), **extra},
    )
    rec.truth = make_truth(x, y, spec)
