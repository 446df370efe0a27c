"""The shared engine of optimisation attacks: find inputs whose simulated update matches the observed one.

For a candidate batch ``x`` (and labels), the attacker simulates the client's update with the server's model,
measures its distance to the observed update (an objective from ``objectives``), adds priors (``priors``) and
descends on ``x``. Two simulations of the client exist:

- ``"gradient"``: one mean gradient (FedSGD; for a weight delta, the delta read as one gradient);
- ``"unrolled"``: the client's ``k`` local SGD steps replayed functionally, differentiated end to end
  (Geiping et al. 2020, Sec. 6, the FedAvg attack), compared with the weight delta itself.

Restarts run as one batched computation: copies of the model folded into channel groups and differentiated with
plain autograd where the model allows it (``stacking``; checked once against vmap), ``torch.func.vmap`` otherwise
(FedAvg unrolling, residual networks). Several observations of the same model (the clients of one round) are
attacked together the same way (``optimize_many``). The best restart is chosen by
the attacker's own objective, never by the truth. A checkpoint file lets a killed run resume where it stopped.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, replace_all_batch_norm_modules_, vmap
from torch.nn import functional as F
from tqdm.auto import tqdm

from gradleak.attacks.base import Attack, Callback, Reconstruction
from gradleak.attacks.checkpoint import Checkpointer
from gradleak.attacks.lbfgs import CompactLBFGS
from gradleak.attacks.labels import default_rule, infer_labels
from gradleak.attacks.objectives import CLOSED_FORMS, OBJECTIVES
from gradleak.attacks.priors import PRIORS, BatchNormStatistics, prior_kind
from gradleak.attacks.stacking import (NotStackable, fold, mark_candidate, prune_double_backward, stack_model,
                                      stacked_loss)
from gradleak.errors import ConfigError
from gradleak.observation import Observation

LabelMode = Literal["fixed", "soft"]
Simulation = Literal["gradient", "unrolled"]


@dataclass(frozen=True)
class EngineConfig:
    """Hyperparameters of one optimisation attack. ``iterations`` counts objective evaluations (one
    double-backward each), the unit of compute for every optimizer.

    ``schedule``: ``"constant"``, ``"step"`` (x0.1 at 3/8, 5/8 and 7/8 of the iterations, Geiping et al. 2020)
    or ``"cosine"``; ``warmup`` iterations ramp the step size up linearly (Adam only). ``box`` keeps pixels in
    [0, 1] (clamped in the normalised space). ``patience`` > 0 stops when the summed objective has not improved
    by a relative ``min_improvement`` for that many iterations; ``tolerance`` stops when it falls below.
    ``objective_scale`` multiplies the gradient distance (priors are weighted relative to it).
    """

    iterations: int = 300
    restarts: int = 1
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    lr: float = 1.0
    line_search: Literal["strong_wolfe"] | None = "strong_wolfe"
    history_size: int = 100
    signed_gradients: bool = False
    schedule: Literal["constant", "step", "cosine"] = "constant"
    warmup: int = 0
    objective: str = "l2"
    objective_scale: float = 1.0
    layer_weights: Mapping[str, float] | None = None
    priors: Mapping[str, float] = field(default_factory=dict)
    init: Literal["randn", "rand", "zeros"] = "randn"
    box: bool = False
    tolerance: float = 0.0
    patience: int = 0
    min_improvement: float = 1e-4
    simulation: Simulation = "gradient"
    checkpoint_every: int = 100
    conv_backend: Literal["auto", "mkldnn", "native"] = "auto"

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.restarts < 1:
            raise ConfigError(f"iterations and restarts must be >= 1, got {self.iterations}, {self.restarts}")
        if self.optimizer not in ("lbfgs", "adam"):
            raise ConfigError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("constant", "step", "cosine"):
            raise ConfigError(f"schedule must be 'constant', 'step' or 'cosine', got {self.schedule!r}")
        if self.conv_backend not in ("auto", "mkldnn", "native"):
            raise ConfigError(f"conv_backend must be 'auto', 'mkldnn' or 'native', got {self.conv_backend!r}")
        if self.init not in ("randn", "rand", "zeros"):
            raise ConfigError(f"init must be 'randn', 'rand' or 'zeros', got {self.init!r}")
        if self.simulation not in ("gradient", "unrolled"):
            raise ConfigError(f"simulation must be 'gradient' or 'unrolled', got {self.simulation!r}")
        if not self.lr > 0 or not self.objective_scale > 0:
            raise ConfigError(f"lr and objective_scale must be positive, got {self.lr}, {self.objective_scale}")
        if self.warmup < 0 or self.patience < 0 or self.checkpoint_every < 1:
            raise ConfigError("warmup and patience must be >= 0 and checkpoint_every >= 1")
        OBJECTIVES.get(self.objective)
        for name in self.priors:
            PRIORS.get(name)

    def lr_at(self, i: int) -> float:
        """Step size of iteration ``i`` (0-based) under the schedule and warm-up."""
        factor = 1.0
        if self.schedule == "step":
            factor = 0.1 ** sum(i >= self.iterations * m for m in (3 / 8, 5 / 8, 7 / 8))
        elif self.schedule == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * i / self.iterations))
        if self.warmup and i < self.warmup:
            factor *= (i + 1) / self.warmup
        return self.lr * factor


class UpdateMatcher:
    """The attacker's differentiable model of the client: candidate batch -> distance to the observed update.

    ``objective(x, y, target)`` works on one restart of one observation: ``x`` normalised ``(B, C, H, W)``, ``y``
    class indices ``(B,)`` (fixed labels) or logits ``(B, K)`` of a soft label (DLG), ``target`` the observed
    update. ``value_and_grad`` evaluates it for every observation and restart at once (stacked or vmapped).
    """

    def __init__(self, observations: Sequence[Observation], config: EngineConfig, device: torch.device | str) -> None:
        obs = observations[0]
        _check_compatible(observations, config)
        self.obs = obs
        self.config = config
        self.device = torch.device(device)
        model = obs.build_model(self.device)
        for p in model.parameters():
            p.requires_grad_(False)
        self.bn_reference = _batchnorm_reference(model, obs)
        if obs.model_mode == "train":
            # Batch statistics, no in-place running-stat updates: the same forward, and vmap-safe.
            replace_all_batch_norm_modules_(model)
        self.model: nn.Module = model
        self.params = dict(model.named_parameters())
        self.buffers = {k: v for k, v in model.named_buffers() if v is not None}
        self.distance = OBJECTIVES.get(config.objective)
        active = [(PRIORS.get(n), float(w)) for n, w in config.priors.items() if w]
        self.image_priors = [(p, w) for p, w in active if prior_kind(p) == "image"]
        self.bn_priors = [(p, w) for p, w in active if prior_kind(p) == "batchnorm"]
        self.restart_priors = [(p, w) for p, w in active if prior_kind(p) == "restarts"]
        if self.bn_priors and not self.bn_reference:
            raise ConfigError(f"the BN prior needs BatchNorm layers with running statistics; model "
                              f"{obs.model_spec.name!r} has none")
        self._bn_log: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._eager: nn.Module | None = None
        self._stacked: dict[int, tuple[nn.Module, list[torch.Tensor]] | None] = {}
        if self.bn_priors:
            for name, module in model.named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.register_forward_pre_hook(self._recorder(name))
        targets = [self.observed(o) for o in observations]
        self.targets = {k: torch.stack([t[k] for t in targets]).to(self.device, torch.float32) for k in targets[0]}
        # what objectives compare: each observation's update as one flat vector (N, P), and per-entry weights
        self.flat_targets = torch.cat([v.reshape(len(observations), -1) for v in self.targets.values()], dim=1)
        self.entry_weights = self._entry_weights(config.layer_weights)
        # the same, part by part (one per observed parameter), for distances with a closed-form gradient
        self.closed_form = CLOSED_FORMS.get(config.objective)
        self.part_targets = [v.reshape(len(observations), -1) for v in self.targets.values()]
        self.part_weights = (None if config.layer_weights is None else
                             [float(config.layer_weights.get(k, 1.0)) for k in self.targets])
        self._buffers_key: tuple[Any, ...] | None = None
        self._buffers: list[torch.Tensor] = []

    def _entry_weights(self, layer_weights: Mapping[str, float] | None) -> torch.Tensor | None:
        """``layer_weights`` (by parameter name, default 1) expanded to one weight per entry of the flat update."""
        if layer_weights is None:
            return None
        unknown = sorted(set(layer_weights) - set(self.targets))
        if unknown:
            raise ConfigError(f"layer_weights names {unknown}, which are not observed parameters; expected some "
                              f"of {list(self.targets)}")
        return torch.cat([torch.full((v[0].numel(),), float(layer_weights.get(k, 1.0)), device=self.device)
                          for k, v in self.targets.items()])

    # -- what is matched -------------------------------------------------------------------------------
    def observed(self, obs: Observation) -> dict[str, torch.Tensor]:
        """The observed update in the form ``simulated_update`` produces."""
        return obs.gradient_estimate() if obs.update_kind == "weight_delta" else obs.update

    def simulated_update(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """The mean gradient the client would share for candidate ``(x, y)``, differentiable in both, and the
        BatchNorm input statistics of the forward pass (empty unless a BN prior is active)."""
        free = {k: self.params[k] for k in self.targets}
        fixed = {k: v for k, v in self.params.items() if k not in free}

        def loss_fn(free: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
            return self.loss({**fixed, **free}, x, y)

        return torch.func.grad(loss_fn, has_aux=True)(free)

    def loss(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Mean cross-entropy of the model with ``params`` (hard or soft labels) and the BN statistics seen."""
        self._bn_log = {}
        logits = functional_call(self.model, (params, self.buffers), (x,))
        stats, self._bn_log = self._bn_log, {}
        if y.dtype == torch.long:
            return F.cross_entropy(logits, y), stats
        return -(F.softmax(y, dim=-1) * F.log_softmax(logits, dim=-1)).sum(-1).mean(), stats

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            h = inputs[0]
            dims = [d for d in range(h.dim()) if d != 1]
            self._bn_log[name] = (h.mean(dim=dims), h.var(dim=dims, unbiased=False))

        return record

    # -- the objective -----------------------------------------------------------------------------------
    def objective(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One restart of one observation: ``target`` is its flat observed update ``(P,)``."""
        update, bn_stats = self.simulated_update(x, y)
        flat = torch.cat([update[k].reshape(-1) for k in self.targets])
        return self.score_update(flat, bn_stats, x, target)

    def score_update(
        self,
        update: torch.Tensor,
        bn_stats: dict[str, tuple[torch.Tensor, torch.Tensor]],
        x: torch.Tensor,
        target: torch.Tensor,
    ) -> torch.Tensor:
        """Distance of a simulated update, flat ``(..., P)``, to the observed one, plus the priors on ``x``.
        Leading dimensions (copies of a stacked model) are kept: one value per copy."""
        value = self.config.objective_scale * self.distance(update, target, self.entry_weights)
        return value + self.prior_value(bn_stats, x)

    def prior_value(self, bn_stats: dict[str, tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        """The weighted image and BatchNorm priors of the candidate (0 when there are none)."""
        value: Any = torch.zeros((), device=x.device)
        for prior, weight in self.image_priors:
            value = value + weight * prior(x)
        if self.bn_priors:
            stats = BatchNormStatistics(bn_stats, self.bn_reference)
            for prior, weight in self.bn_priors:
                value = value + weight * prior(stats)
        return value

    def value_and_grad(
        self, xs: torch.Tensor, ys: torch.Tensor, soft: bool, coupled: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Objective ``(N, R)`` per observation and restart, and its gradient w.r.t. ``xs`` ``(N, R, B, ...)``
        (and ``ys`` when soft). Singleton dimensions skip ``vmap``, which costs overhead on tiny models.
        ``coupled=False`` leaves out the priors that couple restarts (used to rank restarts)."""
        n, r = xs.shape[:2]
        plain = type(self).simulated_update is UpdateMatcher.simulated_update
        if n == 1 and r == 1 and plain:
            return self._value_and_grad_single(xs, ys, soft)
        if plain and self._stacking(xs, ys, soft):
            value, gx, gy = self._value_and_grad_stacked(xs, ys, soft)
        else:
            value, gx, gy = self._value_and_grad_vmap(xs, ys, soft)
        if coupled and self.restart_priors and r > 1:
            with torch.enable_grad():
                leaf = xs.detach().requires_grad_(True)
                coupled = sum(w * torch.stack([p(leaf[i]) for i in range(n)]) for p, w in self.restart_priors)
                (g_coupled,) = torch.autograd.grad(coupled.sum(), leaf)  # type: ignore[union-attr]
            value = value + coupled.detach()  # type: ignore[union-attr]
            gx = gx + g_coupled
        return value, gx, gy

    def values(self, xs: torch.Tensor, ys: torch.Tensor, soft: bool) -> torch.Tensor:
        """The objective ``(N, R)`` of every observation and restart without its gradient (to rank restarts):
        on the plain-autograd paths the forward pass and the parameter gradient only, no double backward; the
        same numbers as ``value_and_grad(..., coupled=False)[0]``."""
        n, r = xs.shape[:2]
        plain = type(self).simulated_update is UpdateMatcher.simulated_update
        if n == 1 and r == 1 and plain:
            return self._value_and_grad_single(xs, ys, soft, grad=False)[0]
        if plain and self._stacking(xs, ys, soft):
            return self._value_and_grad_stacked(xs, ys, soft, grad=False)[0]
        return self._value_and_grad_vmap(xs, ys, soft)[0]

    def _value_and_grad_vmap(
        self, xs: torch.Tensor, ys: torch.Tensor, soft: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Any simulation, any model: ``grad_and_value`` of the per-restart objective, vmapped over restarts and
        observations (singleton dimensions skip ``vmap``)."""
        n, r = xs.shape[:2]
        argnums: tuple[int, ...] = (0, 1) if soft else (0,)
        fn: Callable[..., Any] = grad_and_value(self.objective, argnums=argnums)
        x, y, target = xs, ys, self.flat_targets
        if r == 1:
            x, y = x[:, 0], y[:, 0]
        else:
            fn = vmap(fn, in_dims=(0, 0, None), randomness="same")
        if n == 1:
            x, y, target = x[0], y[0], target[0]
        else:
            fn = vmap(fn, in_dims=(0, 0, 0), randomness="same")
        grads, value = fn(x, y, target)
        if n == 1:
            grads, value = tuple(g.unsqueeze(0) for g in grads), value.unsqueeze(0)
        if r == 1:
            grads, value = tuple(g.unsqueeze(1) for g in grads), value.unsqueeze(1)
        return value, grads[0], (grads[1] if soft else None)

    def _stacking(self, xs: torch.Tensor, ys: torch.Tensor, soft: bool) -> bool:
        """Whether ``N * R`` copies of the model can run as one channel-stacked model (``stacking``). Decided
        once per count: the model must stack and agree with the vmapped computation on these inputs."""
        copies = xs.shape[0] * xs.shape[1]
        if copies not in self._stacked:
            try:
                stacked = stack_model(self.model, copies)
                self._stacked[copies] = (stacked, self._free_leaves(stacked))
                fast = self._value_and_grad_stacked(xs, ys, soft)
                reference = self._value_and_grad_vmap(xs, ys, soft)
                if not all(a is None or _close(a, b) for a, b in zip(fast, reference)):
                    raise NotStackable("the stacked model disagrees with the vmapped one")
            except (NotStackable, RuntimeError, ValueError):
                self._stacked[copies] = None
        return self._stacked[copies] is not None

    def _value_and_grad_stacked(
        self, xs: torch.Tensor, ys: torch.Tensor, soft: bool, grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """All observations and restarts through one channel-stacked twin of the model and plain autograd: the
        per-call cost of one small model instead of vmap's (8 restarts of LeNet: 2.8x one instead of 4.8x, 1 thread)."""
        n, r = xs.shape[:2]
        entry = self._stacked[n * r]
        assert entry is not None
        # the observed update of each copy's observation, or one broadcast to all copies
        targets = self.flat_targets[0] if n == 1 else self.flat_targets.repeat_interleave(r, dim=0)
        return self._eager_value_and_grad(*entry, xs, ys, soft, targets, fold, grad)

    def _eager_value_and_grad(
        self,
        model: nn.Module,
        free: list[torch.Tensor],
        xs: torch.Tensor,
        ys: torch.Tensor,
        soft: bool,
        targets: torch.Tensor,
        model_input: Callable[[torch.Tensor], torch.Tensor],
        grad: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The objective and its gradient through plain autograd on an eager ``model`` holding ``S = N * R`` copies
        (one for the single-restart twin): ``model_input`` maps the candidates ``(S, B, ...)`` to its input, and
        ``free`` are its observed parameters, whose gradients hold the copies' updates in order. ``grad=False``
        stops after the value (no double backward) and returns ``None`` for the gradients."""
        n, r = xs.shape[:2]
        copies = n * r
        with torch.enable_grad():
            x = xs.detach().flatten(0, 1).requires_grad_(True)
            y = ys.detach().flatten(0, 1).requires_grad_(soft)
            self._bn_log = {}
            logits = model(model_input(x))
            bn_log, self._bn_log = self._bn_log, {}
            grads = torch.autograd.grad(stacked_loss(logits, y, soft), free, create_graph=True)
            stats = {name: (m.view(copies, -1), v.view(copies, -1)) for name, (m, v) in bn_log.items()}
            inputs = [x, y] if soft else [x]
            if self.closed_form is None:
                update = torch.cat([g.reshape(copies, -1) for g in grads], dim=1)
                value = self.score_update(update, stats, x, targets)
                if not grad:
                    return value.detach().view(n, r), None, None
                grad_in = torch.autograd.grad(value.sum(), inputs)
            else:
                # the distance and its gradient in closed form, outside autograd; then one vector-Jacobian
                # product of the simulated update (and the priors) back to the candidate
                parts = [g.reshape(copies, -1) for g in grads]
                with torch.no_grad():
                    tparts = [t[0] if n == 1 else t.repeat_interleave(r, dim=0) for t in self.part_targets]
                    detached = [p.detach() for p in parts]
                    dist, dparts = self.closed_form(detached, tparts, self.part_weights, self._seed_buffers(detached))
                    scale = self.config.objective_scale
                    dparts = [d.mul_(scale) for d in dparts]
                prior = self.prior_value(stats, x)
                value = (scale * dist + prior.detach()).expand(copies)
                if not grad:
                    return value.detach().view(n, r), None, None
                outputs, seeds = list(parts), list(dparts)
                if prior.requires_grad:
                    outputs.append(prior.sum())
                    seeds.append(torch.ones((), device=prior.device))
                grad_in = torch.autograd.grad(outputs, inputs, grad_outputs=seeds, allow_unused=True)
                grad_in = tuple(torch.zeros_like(i) if g is None else g for g, i in zip(grad_in, inputs))
        gy = grad_in[1].view_as(ys) if soft else None
        return value.detach().view(n, r), grad_in[0].view_as(xs), gy

    def _seed_buffers(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Buffers shaped like the update's parts, kept across iterations for the closed-form gradient (a fresh
        parameter-sized tensor per iteration costs its page faults)."""
        key = tuple((p.shape, p.dtype, p.device) for p in parts)
        if self._buffers_key != key:
            self._buffers_key = key
            self._buffers = [torch.empty_like(p) for p in parts]
        return self._buffers

    def _free_leaves(self, model: nn.Module) -> list[torch.Tensor]:
        """Make ``model``'s observed parameters leaves that require grad (and no others); return them in the
        order of the observed update."""
        for name, p in model.named_parameters():
            p.requires_grad_(name in self.targets)
        named = dict(model.named_parameters())
        return [named[k] for k in self.targets]


    def _value_and_grad_single(
        self, xs: torch.Tensor, ys: torch.Tensor, soft: bool, grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One observation, one restart: the same objective through plain autograd, which skips the
        per-call cost of the ``torch.func`` transforms (about 3x per evaluation on LeNet, where the
        double-backward itself takes a couple of milliseconds)."""
        if self._eager is None:
            # A twin of the model whose observed parameters are leaves that require grad: called directly, it
            # skips functional_call's per-call parameter swap. Hooks (BN statistics) are copied with it. Its
            # convolutions skip the weight's second-order gradient that PyTorch's double backward computes and
            # throws away (``stacking.prune_double_backward``).
            self._eager = prune_double_backward(self.model)
            self._eager_free = self._free_leaves(self._eager)
        return self._eager_value_and_grad(self._eager, self._eager_free, xs, ys, soft, self.flat_targets[0],
                                          lambda x: mark_candidate(x[0]), grad)


class UnrolledMatcher(UpdateMatcher):
    """FedAvg (McMahan et al. 2017) as the attacker replays it: ``steps`` plain SGD steps of ``lr`` on consecutive
    mini-batches of the candidate (wrapping around, as ``victim.local_sgd``), mean cross-entropy each, all
    parameters trained, written functionally so the weight delta is differentiable in the candidate
    (Geiping et al. 2020, Sec. 6). The BN statistics of the BN prior are those of the first local step."""

    def __init__(self, observations: Sequence[Observation], config: EngineConfig, device: torch.device | str) -> None:
        obs = observations[0]
        if obs.update_kind != "weight_delta" or obs.local_training is None:
            raise ConfigError("the unrolled simulation needs a 'weight_delta' observation with local_training")
        self.training = obs.local_training
        n = obs.batch_size
        bs = self.training.batch_size
        self.step_indices = [
            torch.arange(s * bs, (s + 1) * bs) % n for s in range(self.training.steps)
        ]
        super().__init__(observations, config, device)
        self.step_indices = [i.to(self.device) for i in self.step_indices]

    def observed(self, obs: Observation) -> dict[str, torch.Tensor]:
        return obs.update

    def simulated_update(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        start = dict(self.params)
        params = dict(start)
        first_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        step_grad = torch.func.grad(lambda p, xb, yb: self.loss(p, xb, yb), has_aux=True)
        for s, idx in enumerate(self.step_indices):
            grads, stats = step_grad(params, x[idx], y[idx])
            if s == 0:
                first_stats = stats
            params = {k: params[k] - self.training.lr * grads[k] for k in params}
        return {k: params[k] - start[k] for k in self.targets}, first_stats


MATCHERS: dict[str, type[UpdateMatcher]] = {"gradient": UpdateMatcher, "unrolled": UnrolledMatcher}


def optimize(
    obs: Observation,
    config: EngineConfig,
    *,
    labels: torch.Tensor | None,
    attack_name: str,
    settings: dict[str, Any],
    device: torch.device | str = "cpu",
    seed: int | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
) -> Reconstruction:
    """Run the engine on one observation. ``labels=None`` optimises soft labels jointly (DLG); otherwise they
    stay fixed. With ``checkpoint``, the state is saved there every ``config.checkpoint_every`` iterations and a
    run finding a matching file resumes from it."""
    return optimize_many(
        [obs], config, labels=None if labels is None else [labels], attack_name=attack_name, settings=settings,
        device=device, seed=seed, callback=callback, progress=progress, checkpoint=checkpoint,
    )[0]


def optimize_many(
    observations: Sequence[Observation],
    config: EngineConfig,
    *,
    labels: Sequence[torch.Tensor] | None,
    attack_name: str,
    settings: dict[str, Any],
    device: torch.device | str = "cpu",
    seed: int | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
) -> list[Reconstruction]:
    """Attack several observations of the same model and weights (e.g. the clients of one round) as one batched
    computation; with Adam each observation's result is the same as attacking it alone (L-BFGS shares its line
    search). The callback receives the pixels of every observation's restarts, ``(N * R, B, C, H, W)``."""
    if not observations:
        raise ConfigError("optimize_many needs at least one observation")
    start = time.perf_counter()
    device = torch.device(device)
    matcher = MATCHERS[config.simulation](observations, config, device)
    obs = observations[0]
    generator = torch.Generator(device="cpu")
    generator.manual_seed(0 if seed is None else seed)
    mean, std = obs.normalization(device)
    n, r, b = len(observations), config.restarts, obs.batch_size
    shape = (n, r, b, *obs.input_shape)
    if config.init == "randn":
        x0 = torch.randn(shape, generator=generator).to(device)
    elif config.init == "rand":
        x0 = (torch.rand(shape, generator=generator).to(device) - mean) / std  # uniform pixels, normalised
    else:
        x0 = torch.zeros(shape, device=device)
    xs = x0.requires_grad_(True)
    soft = labels is None
    if soft:
        ys = torch.randn((n, r, b, obs.num_classes), generator=generator).to(device).requires_grad_(True)
        variables = [xs, ys]
    else:
        assert labels is not None
        if len(labels) != n:
            raise ConfigError(f"got {len(labels)} label tensors for {n} observations")
        ys = torch.stack([lab.to(device).long().view(b) for lab in labels])[:, None].expand(n, r, b).contiguous()
        variables = [xs]
    lower, upper = _box(obs, mean, std)
    trace = torch.full((config.iterations, n, r), float("nan"), device=device)
    state: dict[str, Any] = {"evals": 0, "best": float("inf"), "stall": 0}
    saver = Checkpointer(checkpoint, config, observations, seed, every=config.checkpoint_every, labels=labels,
                         context={"attack": attack_name, "settings": settings})

    def clamp_box() -> None:
        if config.box:
            with torch.no_grad():
                xs.copy_(torch.maximum(torch.minimum(xs, upper), lower))

    def evaluate() -> torch.Tensor:
        values, gx, gy = matcher.value_and_grad(xs, ys, soft)
        if config.signed_gradients:
            gx = gx.sign()
        xs.grad = gx
        if soft:
            ys.grad = gy
        i = state["evals"]
        if i < config.iterations:
            trace[i] = values.detach()
        state["evals"] = i + 1
        bar.update(1)
        if callback is not None:
            callback(i, obs.inputs.from_model(xs.detach()).flatten(0, 1))
        return values.sum()

    def converged(loss: torch.Tensor) -> bool:
        value = float(loss.detach())
        if not math.isfinite(value) or value <= config.tolerance:
            return True
        if config.patience:
            if value < state["best"] - config.min_improvement * abs(state["best"]):
                state["best"], state["stall"] = value, 0
            else:
                state["stall"] += 1
                if state["stall"] >= config.patience:
                    return True
        return False

    if config.optimizer == "lbfgs":
        opt: torch.optim.Optimizer = CompactLBFGS(
            variables, lr=config.lr, history_size=config.history_size, line_search_fn=config.line_search,
            tolerance_grad=0.0, tolerance_change=0.0,
        )
    else:
        opt = torch.optim.Adam(variables, lr=config.lr)
    saver.restore(state, variables, opt, trace)
    bar = tqdm(total=config.iterations, initial=state["evals"], desc=attack_name,
               disable=None if progress else True, leave=False)

    tune_key = (obs.model_spec.name, repr(sorted(obs.model_spec.kwargs.items())), tuple(xs.shape), soft,
                type(matcher).__name__, torch.get_num_threads())
    with _flush_denormals(device) as flushing:
        use_mkldnn, chosen_by = _prefer_mkldnn(config, device, lambda: matcher.value_and_grad(xs, ys, soft),
                                               tune_key)
    with _flush_denormals(device), _mkldnn_enabled(use_mkldnn):
        if config.optimizer == "lbfgs":
            while state["evals"] < config.iterations:
                remaining = config.iterations - state["evals"]
                opt.param_groups[0].update(max_iter=min(20, remaining), max_eval=remaining)
                before = state["evals"]
                loss = opt.step(evaluate)  # type: ignore[arg-type]
                clamp_box()
                if state["evals"] == before or converged(loss):
                    break
                saver.maybe_save(state, variables, opt, trace)
        else:
            while state["evals"] < config.iterations:
                for group in opt.param_groups:
                    group["lr"] = config.lr_at(state["evals"])
                loss = evaluate()
                opt.step()
                clamp_box()
                if converged(loss):
                    break
                saver.maybe_save(state, variables, opt, trace)
    bar.close()
    saver.finish(state, variables, opt, trace)

    with torch.no_grad(), _flush_denormals(device):
        # each restart ranked by its own objective (matching + its priors), not by its distance to the others;
        # the value only (no double backward)
        final = matcher.values(xs.detach(), ys.detach(), soft)
    final = torch.nan_to_num(final.detach(), nan=float("inf"))
    done = min(state["evals"], config.iterations)
    pixels = obs.inputs.from_model(xs.detach())
    wall = time.perf_counter() - start
    out = []
    for k in range(n):
        best = int(final[k].argmin())
        recovered = ys[k, best].detach().argmax(-1) if soft else ys[k, best].detach()
        out.append(Reconstruction(
            inputs=pixels[k, best].cpu(),
            labels=recovered.cpu(),
            attack=attack_name,
            settings=settings,
            trace=torch.nan_to_num(trace[:done, k].cpu(), nan=float("inf")),
            restart_objectives=final[k].cpu(),
            best_restart=best,
            iterations=done,
            wall_time_s=wall,
            details={"compute": {"conv_backend": "mkldnn" if use_mkldnn else "native", "chosen_by": chosen_by,
                                 "threads": torch.get_num_threads(), "device": str(device),
                                 "flush_denormals": flushing}},
        ))
    return out


_CONV_BACKEND_CHOICES: dict[str, bool] = {}


def backend_record_path() -> Path:
    """Where timed convolution-backend choices are recorded, so that later runs reuse them (same numbers)."""
    from gradleak.cache import cache_dir

    return cache_dir() / "conv_backend.json"


def _recorded_choices() -> dict[str, bool]:
    import json

    try:
        data = json.loads(backend_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, bool)} if isinstance(data, dict) \
        else {}


def _record_choice(key: str, use_mkldnn: bool) -> None:
    import json
    import os
    import tempfile

    path = backend_record_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**_recorded_choices(), key: use_mkldnn}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".conv_backend.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # atomic: concurrent runs never see half a file
    except OSError:
        pass  # a read-only home: the choice still holds for this process


def _prefer_mkldnn(config: EngineConfig, device: torch.device, evaluate: Callable[[], Any],
                   key: tuple[Any, ...]) -> tuple[bool, str]:
    """Whether CPU convolutions should use oneDNN (mkldnn) for this attack, and how that was decided.

    oneDNN is about 3x faster on wide convolutions (ConvNet width 64) but its per-call cost makes it about 1.5x
    slower than PyTorch's native im2col kernels on the tiny ones of DLG's LeNet, where an evaluation takes a
    couple of milliseconds. The two backends sum in different orders, so the choice changes the numbers in the
    last bits. ``conv_backend='auto'`` times two evaluations with each the first time an architecture, input shape
    and thread count (``key``) is seen on this machine, keeps the faster, and records it in
    ``backend_record_path()``: every later run reuses the recorded choice, so the same seed gives the same numbers.
    The timing costs a few evaluations and is not counted as iterations."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return True, "not a CPU run"
    if config.conv_backend != "auto":
        return config.conv_backend == "mkldnn", "setting"
    name = repr(key)
    if name in _CONV_BACKEND_CHOICES:
        return _CONV_BACKEND_CHOICES[name], f"recorded in {backend_record_path()}"
    recorded = _recorded_choices()
    if name in recorded:
        _CONV_BACKEND_CHOICES[name] = recorded[name]
        return recorded[name], f"recorded in {backend_record_path()}"
    timings = {}
    for enabled in (True, False):
        with _mkldnn_enabled(enabled):
            evaluate()  # warm-up
            t0 = time.perf_counter()
            evaluate()
            evaluate()
            timings[enabled] = time.perf_counter() - t0
    _CONV_BACKEND_CHOICES[name] = timings[True] <= timings[False]
    _record_choice(name, _CONV_BACKEND_CHOICES[name])
    return _CONV_BACKEND_CHOICES[name], f"timed, recorded in {backend_record_path()}"


def _flushing_denormals() -> bool:
    """Whether this thread flushes denormal floats to zero (there is no getter: probe one)."""
    return float(torch.tensor(1e-39) * 1.0) == 0.0


@contextmanager
def _flush_denormals(device: torch.device) -> Iterator[bool]:
    """Flush denormal floats to zero on CPU while the engine runs (``torch.set_flush_denormal``; the previous
    mode is restored after); yields whether it is on.

    Second-order terms of the double backward (BatchNorm's, products of two small gradients) underflow into the
    denormal range, where x86 arithmetic runs 10x slower or worse: measured on ResNet-18, batch 8, one thread,
    BatchNorm's elementwise double-backward ops took ~0.5 s of a ~2.9 s evaluation with denormals and ~0.15 s
    without (torch.profiler op totals). Values below 1.2e-38 become 0, far below float32's resolution of the
    objective and its gradient. The mode is per thread: it covers the calling thread, so all of the work at one
    thread and a share of it with intra-op threads already running."""
    if device.type != "cpu":
        yield False
        return
    previous = _flushing_denormals()
    on = torch.set_flush_denormal(True)
    try:
        yield on
    finally:
        torch.set_flush_denormal(previous)


@contextmanager
def _mkldnn_enabled(enabled: bool) -> Iterator[None]:
    previous = torch.backends.mkldnn.enabled
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        torch.backends.mkldnn.set_flags(enabled)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
            torch.backends.mkldnn.set_flags(previous)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Agreement of two float32 computations of the same quantity by different kernels: relative error of the
    whole tensor below 1e-3 (summation order differs; on ReLU networks a few entries can move by more)."""
    a, b = a.detach(), b.detach()
    return bool(torch.linalg.vector_norm(a - b) <= 1e-3 * torch.linalg.vector_norm(b) + 1e-12)


def _box(obs: Observation, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The box constraint in the model's space: pixels in [0, 1], features within their bounds (if known)."""
    low, high = (0.0, 1.0) if obs.inputs.kind == "image" else (getattr(obs.inputs, "bounds", None) or
                                                               (-math.inf, math.inf))
    return (low - mean) / std, (high - mean) / std


def _batchnorm_reference(model: nn.Module, obs: Observation) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Running ``(mean, var)`` of every BatchNorm module, from the weights the server sent (before they are
    dropped for batch statistics)."""
    ref = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            ref[name] = (module.running_mean.detach().clone().float(), module.running_var.detach().clone().float())
    return ref


def _check_compatible(observations: Sequence[Observation], config: EngineConfig) -> None:
    """Observations attacked together must share model, weights, shapes, normalisation and update keys."""
    first = observations[0]
    for i, o in enumerate(observations[1:], start=1):
        same = (
            o.model_spec == first.model_spec and o.inputs == first.inputs and o.task == first.task
            and o.batch_size == first.batch_size and o.update_kind == first.update_kind
            and o.local_training == first.local_training and o.model_mode == first.model_mode
            and set(o.update) == set(first.update)
        )
        if not same or any(not torch.equal(o.weights[k], v) for k, v in first.weights.items()):
            raise ConfigError(f"observation {i} differs from observation 0 in model, weights, shapes or update keys; "
                              "only observations of the same round can be attacked together")
    del config


@dataclass
class OptimizationAttack(Attack):
    """Base of the attacks that run this engine: subclasses are dataclasses of their paper's defaults and say
    how they configure the engine (``engine``).

    ``labels``: ``"leaked"`` uses the labels in the observation, ``"infer"`` reads them off the update with
    ``label_rule`` (a ``LABEL_RULES`` name, or ``"auto"``: iDLG for one sample, label counting for a batch),
    ``"auto"`` takes leaked labels when present, else infers; ``"soft"`` optimises them jointly (DLG).
    ``checkpoint``: a file to save the attack's state to and resume from.
    """

    name: ClassVar[str] = "optimization"
    iterations: int = 300
    restarts: int = 1
    lr: float = 0.1
    labels: Literal["auto", "infer", "leaked", "soft"] = "auto"
    label_rule: str = "auto"
    checkpoint: str | None = None

    def engine(self, obs: Observation | None = None) -> EngineConfig:
        """The engine settings of this attack (``obs`` lets a recipe adapt, e.g. drop a BN prior)."""
        raise NotImplementedError

    def resolve_labels(self, obs: Observation) -> torch.Tensor | None:
        if self.labels == "soft":
            return None
        return resolve_labels(obs, self.labels, self.label_rule)

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        return optimize(
            obs, self.engine(obs), labels=self.resolve_labels(obs), attack_name=self.name, settings=self.settings(),
            device=device, seed=seed, callback=callback, progress=progress, checkpoint=self.checkpoint,
        )

    def reconstruct_many(
        self,
        observations: Sequence[Observation],
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        progress: bool = False,
    ) -> list[Reconstruction]:
        """Attack the clients of one round (same model and weights) as one batched computation."""
        labels = None if self.labels == "soft" else [self.resolve_labels(o) for o in observations]
        return optimize_many(
            observations, self.engine(observations[0]), labels=labels,  # type: ignore[arg-type]
            attack_name=self.name, settings=self.settings(), device=device, seed=seed, progress=progress,
            checkpoint=self.checkpoint,
        )


def resolve_labels(obs: Observation, source: str, rule: str = "auto") -> torch.Tensor:
    """Labels for an attack: the leaked ones ('leaked'), inferred ('infer'), or leaked if present ('auto').
    ``rule`` names a ``LABEL_RULES`` entry; ``'auto'`` picks iDLG for one sample and label counting for more."""
    if source == "leaked" or (source == "auto" and obs.labels is not None):
        if obs.labels is None:
            raise ConfigError("labels='leaked' but the observation carries no labels")
        return obs.labels
    if source not in ("auto", "infer"):
        raise ConfigError(f"labels must be 'auto', 'infer', 'leaked' or 'soft', got {source!r}")
    return infer_labels(obs, default_rule(obs) if rule == "auto" else rule)
