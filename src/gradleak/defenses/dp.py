"""Differentially private SGD: per-example clipping and Gaussian noise (Abadi et al. 2016).

``DPSGD`` is Opacus itself: the client's step wraps the server's model in ``opacus.GradSampleModule``, runs
the loss backward and ``DPOptimizer.pre_step()`` (clip each example's gradient to ``max_grad_norm``, sum, add
``N(0, (noise_multiplier * max_grad_norm)^2)``, divide by the expected batch size); the shared gradient is
the resulting ``p.grad``, keys stripped of Opacus's ``_module.`` prefix. Epsilon comes from an Opacus
accountant (RDP by default; Mironov 2017) for the schedule that ran (``defenses.base.Schedule``): Poisson
batches at sample rate ``batch_size / dataset_size`` are amplified by their sampling; fixed batches are not
(each step is a Gaussian mechanism on the examples it holds, composed over the steps an example took part in).

This module is the one place gradleak wires Opacus: ``make_private`` (the image and text victims' step, the
Flower DP client's local training, training with the defense all go through it) refuses a model Opacus cannot
handle instead of changing it with ``ModuleValidator.fix``, and ``opacus_epsilon`` is the one accountant call.

On text (``dp_text_gradient``: Hugging Face GPT-2 or BERT) each record's loss is its own (causal LM: the mean
over its predicted tokens; classification: its cross-entropy). Opacus 1.6 has grad samplers for ``nn.Embedding``,
``nn.Linear`` and ``nn.LayerNorm``; GPT-2's ``transformers`` ``Conv1D`` has none, and Opacus computes its
per-example gradients with its ``torch.func`` fallback (checked against autograd in ``tests/text/test_dp.py``); the
tied input/output embedding accumulates both uses per example. Position (and token-type) ids are passed expanded
to the batch, since the models' default ``(1, L)`` ids would make Opacus see a batch of one at the position
embedding.

``MicrobatchDPSGD`` clips per microbatch of ``microbatch_size`` examples, as TensorFlow Privacy's
``DPKerasSGDOptimizer(num_microbatches=B/k)`` does: mean loss per microbatch, each microbatch gradient clipped
to ``l2_norm_clip`` in global norm, summed, Gaussian noise of std ``noise_multiplier * l2_norm_clip`` added,
divided by the number of microbatches. Each example lies in one microbatch, so the sensitivity is
``l2_norm_clip`` and the same accountant applies.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from gradleak.defenses.base import DEFENSES, Defense, Privacy, Schedule, Update, check_range, randn_like
from gradleak.errors import ConfigError
from gradleak.training_task import IGNORE_INDEX, Task, logits_of

if TYPE_CHECKING:
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer


def check_opacus_compatible(model: nn.Module, who: str) -> None:
    """Raise ``ConfigError`` naming each layer Opacus cannot handle (BatchNorm mixes examples) and the fix."""
    from opacus.validators import ModuleValidator  # opacus costs ~1.2 s to import: only where DP runs

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        listed = "; ".join(str(e) for e in errors[:4])
        raise ConfigError(
            f"{who}: model {type(model).__name__} has layers DP-SGD cannot use ({listed}). Per-example gradients "
            "need layers that do not mix examples: replace BatchNorm with GroupNorm, e.g. "
            "opacus.validators.ModuleValidator.fix(model), or build the model with norm='group' "
            "(convnet, resnet18: --model-arg norm=group)"
        )


@dataclass(kw_only=True)
class _DPSchedule:
    """The training schedule the reported epsilon is for: ``dataset_size`` and ``batch_size`` with either
    ``steps`` or ``epochs``; ``delta`` defaults to 1e-5. Unset: ``privacy()`` needs a schedule argument."""

    dataset_size: int | None = None
    batch_size: int | None = None
    epochs: float | None = None
    steps: int | None = None
    delta: float = 1e-5
    accountant: Literal["rdp", "prv", "gdp"] = "rdp"

    def _validate_schedule(self, who: str) -> None:
        check_range(who, "delta", self.delta, 0.0, 1.0, low_open=True)
        if self.accountant not in ("rdp", "prv", "gdp"):
            raise ConfigError(f"{who}: accountant must be 'rdp', 'prv' or 'gdp', got {self.accountant!r}")
        if self.steps is not None and self.epochs is not None:
            raise ConfigError(f"{who}: give steps or epochs for the schedule, not both")
        if (self.steps is not None or self.epochs is not None) and (self.dataset_size is None or self.batch_size is None):
            raise ConfigError(f"{who}: a schedule needs dataset_size and batch_size as well as steps or epochs")
        self.schedule()

    def schedule(self) -> Schedule | None:
        if self.dataset_size is None or self.batch_size is None or (self.steps is None and self.epochs is None):
            return None
        if self.steps is not None:
            return Schedule(self.dataset_size, self.batch_size, self.steps)
        assert self.epochs is not None
        return Schedule.from_epochs(self.dataset_size, self.batch_size, self.epochs)


def opacus_epsilon(noise_multiplier: float, schedule: Schedule, delta: float, accountant: str = "rdp") -> float:
    """Epsilon from Opacus's accountant for ``schedule``: ``accounted_steps`` compositions at ``sample_rate``
    (Poisson batches: every step at rate q; fixed batches: the most-used example's steps at rate 1); ``inf``
    without noise."""
    if noise_multiplier == 0:
        return math.inf
    from opacus.accountants import create_accountant  # ~1.2 s to import: only where epsilon is asked for

    acc = create_accountant(accountant)
    acc.history = [(noise_multiplier, schedule.sample_rate, schedule.accounted_steps)]
    return float(acc.get_epsilon(delta=delta))


def make_private(
    model: nn.Module,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: int,
    lr: float = 0.0,
    generator: torch.Generator | None = None,
    secure_mode: bool = False,
    who: str = "dpsgd",
) -> tuple[GradSampleModule, DPOptimizer]:
    """``model`` (wrapped in place, not copied) as Opacus's ``GradSampleModule`` and an SGD ``DPOptimizer`` of
    ``lr`` over its trainable parameters: per-example clipping to ``max_grad_norm``, Gaussian noise of std
    ``noise_multiplier * max_grad_norm`` on the sum, divided by ``expected_batch_size``. Noise comes from
    ``generator`` (reproducible) unless ``secure_mode`` asks for Opacus's secure sampler.

    A model with layers that mix examples (BatchNorm) is refused with the fix named (``ModuleValidator.fix``
    would silently change the client's architecture, and the attacker's model would no longer be the one
    trained)."""
    from opacus import GradSampleModule  # ~1.2 s to import: only where DP runs
    from opacus.optimizers import DPOptimizer

    check_opacus_compatible(model, who)
    gsm = GradSampleModule(model, loss_reduction="mean")
    params = [p for p in gsm.parameters() if p.requires_grad]
    optimizer = DPOptimizer(
        torch.optim.SGD(params, lr=lr),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
        generator=None if secure_mode else generator,
        secure_mode=secure_mode,
    )
    return gsm, optimizer


def private_gradient(
    model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], defense: DPSGD, *, expected_batch_size: int,
    generator: torch.Generator | None,
) -> Update:
    """The DP-SGD gradient ``p.grad`` after ``DPOptimizer.pre_step()`` for the mean loss ``loss_of(wrapped)``,
    on a copy of ``model`` (the caller's is untouched), keyed without Opacus's ``_module.`` prefix:
    ``(1/B) (sum_i clip(g_i, C) + N(0, sigma^2 C^2 I))``."""
    gsm, optimizer = make_private(
        copy.deepcopy(model), noise_multiplier=defense.noise_multiplier, max_grad_norm=defense.max_grad_norm,
        expected_batch_size=expected_batch_size, generator=generator, secure_mode=defense.secure_mode,
    )
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # Opacus's hooks fire on outputs when inputs need no grad: harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss_of(gsm).backward()
    optimizer.pre_step()
    out = {
        name.removeprefix("_module."): p.grad.detach().clone()
        for name, p in gsm.named_parameters()
        if p.requires_grad and p.grad is not None
    }
    gsm._close()
    return out


@dataclass(kw_only=True)
class DPSGD(_DPSchedule, Defense):
    """DP-SGD through Opacus (``GradSampleModule`` + ``DPOptimizer``); epsilon from Opacus's accountant."""

    name: ClassVar[str] = "dpsgd"
    strength: ClassVar[str] = "noise_multiplier"
    sampling: ClassVar[Literal["uniform", "poisson"]] = "poisson"
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    secure_mode: bool = False

    def validate(self) -> None:
        check_range("dpsgd", "noise_multiplier", self.noise_multiplier, 0.0)
        check_range("dpsgd", "max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        self._validate_schedule("dpsgd")

    def check_model(self, model: nn.Module) -> None:
        check_opacus_compatible(model, "dpsgd")

    def step_gradient(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        expected_batch_size: int | None = None,
    ) -> Update:
        """``p.grad`` after ``DPOptimizer.pre_step()`` on a copy of ``model`` (the caller's model is untouched).

        The noise is drawn from ``generator`` (Opacus's ``noise_generator``); with ``secure_mode`` Opacus's
        secure sampler is used instead and the run is not reproducible."""
        return private_gradient(model, lambda m: F.cross_entropy(m(inputs), labels), self,
                                expected_batch_size=expected_batch_size or int(inputs.shape[0]), generator=generator)

    def privacy(self, schedule: Schedule | None = None) -> Privacy | None:
        schedule = schedule or self.schedule()
        if schedule is None:
            return None
        eps = opacus_epsilon(self.noise_multiplier, schedule, self.delta, self.accountant)
        return Privacy(eps, self.delta, f"opacus.{self.accountant}", schedule, self.noise_multiplier)


@dataclass(kw_only=True)
class MicrobatchDPSGD(_DPSchedule, Defense):
    """DP-SGD with clipping per microbatch of ``microbatch_size`` examples, as TensorFlow Privacy computes it."""

    name: ClassVar[str] = "microbatch_dpsgd"
    strength: ClassVar[str] = "noise_multiplier"
    microbatch_size: int = 1
    noise_multiplier: float = 1.0
    l2_norm_clip: float = 1.0

    def validate(self) -> None:
        if self.microbatch_size < 1:
            raise ConfigError(f"microbatch_dpsgd: microbatch_size must be >= 1, got {self.microbatch_size}")
        check_range("microbatch_dpsgd", "noise_multiplier", self.noise_multiplier, 0.0)
        check_range("microbatch_dpsgd", "l2_norm_clip", self.l2_norm_clip, 0.0, low_open=True)
        self._validate_schedule("microbatch_dpsgd")

    def check_model(self, model: nn.Module) -> None:
        check_opacus_compatible(model, "microbatch_dpsgd")

    def step_gradient(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        expected_batch_size: int | None = None,
    ) -> Update:
        b, k = int(inputs.shape[0]), self.microbatch_size
        if b % k:
            raise ConfigError(f"microbatch_dpsgd: batch size {b} is not a multiple of microbatch_size {k}")
        m = b // k
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        buffers = dict(model.named_buffers())

        def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(functional_call(model, (p, buffers), (x,)), y)

        grads = vmap(grad(loss), in_dims=(None, 0, 0))(
            params, inputs.reshape(m, k, *inputs.shape[1:]), labels.reshape(m, k)
        )
        norms = torch.stack([g.reshape(m, -1).norm(dim=1) for g in grads.values()], dim=1).norm(dim=1)
        # tf.clip_by_global_norm: t * clip / max(norm, clip)
        factor = self.l2_norm_clip / torch.maximum(norms, torch.full_like(norms, self.l2_norm_clip))
        std = self.noise_multiplier * self.l2_norm_clip
        out: Update = {}
        for name, g in grads.items():
            summed = torch.einsum("m,m...->...", factor, g)
            if std > 0:
                summed = summed + randn_like(summed, generator) * std
            out[name] = summed / m
        return out

    def privacy(self, schedule: Schedule | None = None) -> Privacy | None:
        schedule = schedule or self.schedule()
        if schedule is None:
            return None
        eps = opacus_epsilon(self.noise_multiplier, schedule, self.delta, self.accountant)
        return Privacy(eps, self.delta, f"opacus.{self.accountant}", schedule, self.noise_multiplier)


# -- DP-SGD on a text model's step ------------------------------------------------------------------
def _model_kwargs(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    kind = getattr(getattr(inner, "config", None), "model_type", None)
    if kind not in ("gpt2", "bert"):
        raise ConfigError(f"DP-SGD on text knows GPT-2 and BERT layouts; this model is {kind!r}")
    b, length = ids.shape
    kwargs = {"input_ids": ids, "position_ids": torch.arange(length, device=ids.device).expand(b, length)}
    if kind == "bert":
        kwargs["token_type_ids"] = torch.zeros_like(ids)
    if mask is not None:
        kwargs["attention_mask"] = mask
    return kwargs


def per_example_loss(logits: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor | None, task: Task,
                     mask: torch.Tensor | None) -> torch.Tensor:
    """Each record's loss ``(B,)``: causal LM averages over the record's own predicted tokens (padding left out),
    classification is the record's cross-entropy."""
    if task.kind == "classification":
        if labels is None:
            raise ConfigError("DP-SGD on a classifier needs labels")
        return F.cross_entropy(logits, labels, reduction="none")
    if task.kind != "causal_lm":
        raise ConfigError(f"DP-SGD on text: causal LM or classification, not {task.kind}")
    targets = ids[:, 1:]
    if mask is not None:
        targets = targets.masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
    shifted = logits[:, :-1]
    token = F.cross_entropy(shifted.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (targets != IGNORE_INDEX).sum(1).clamp_min(1)
    return token.sum(1) / counts


def dp_text_gradient(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor | None, task: Task,
                     defense: DPSGD, *, mask: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, expected_batch_size: int | None = None) -> Update:
    """The DP-SGD gradient of one step on a copy of ``model`` (the caller's is untouched), through
    ``private_gradient``: ``(1/B) (sum_i clip(g_i, C) + N(0, sigma^2 C^2 I))`` with
    ``C = max_grad_norm``, ``sigma = noise_multiplier``; noise drawn from ``generator`` (reproducible), unless the
    defense asks for Opacus's ``secure_mode``. ``expected_batch_size`` (default: the batch's size) is what the
    noised sum is divided by: a Poisson batch's expected size, never its drawn size, which would leak it."""
    if not isinstance(defense, DPSGD):
        raise ConfigError(f"dp_text_gradient runs Opacus DP-SGD ('dpsgd'), not {getattr(defense, 'name', defense)!r}")
    kwargs = _model_kwargs(model, ids, mask)

    def loss_of(wrapped: nn.Module) -> torch.Tensor:
        return per_example_loss(logits_of(wrapped(**kwargs)), ids, labels, task, mask).mean()

    return private_gradient(model, loss_of, defense, expected_batch_size=expected_batch_size or int(ids.shape[0]),
                            generator=generator)


DEFENSES.register(DPSGD.name)(DPSGD)
DEFENSES.register(MicrobatchDPSGD.name)(MicrobatchDPSGD)
