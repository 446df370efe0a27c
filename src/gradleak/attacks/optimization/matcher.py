"""The attacker's differentiable model of the client: candidate batch -> distance to the observed update.

Two simulations of the client exist:

- ``UpdateMatcher`` (``"gradient"``): one mean gradient (FedSGD; for a weight delta, the delta read as one
  gradient);
- ``UnrolledMatcher`` (``"unrolled"``): the client's ``k`` local SGD steps replayed functionally, differentiated
  end to end (Geiping et al. 2020, Sec. 6, the FedAvg attack), compared with the weight delta itself.

How the objective and its gradient are computed for every restart at once lives in ``evaluation``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_
from torch.nn import functional as F

from gradleak.attacks.bn_statistics import CarriedStatistics, carried_statistics
from gradleak.attacks.objectives import CLOSED_FORMS, OBJECTIVES
from gradleak.attacks.optimization.config import EngineConfig
from gradleak.attacks.optimization.evaluation import Evaluator
from gradleak.attacks.priors import PRIORS, BatchNormStatistics, prior_kind
from gradleak.errors import ConfigError
from gradleak.observation import Observation


class UpdateMatcher:
    """Candidate batch -> distance of its simulated update to the observed one, plus the priors.

    ``objective(x, y, target)`` works on one restart of one observation: ``x`` normalised ``(B, C, H, W)``, ``y``
    class indices ``(B,)`` (fixed labels) or logits ``(B, K)`` of a soft label (DLG), ``target`` the observed
    update. ``value_and_grad`` evaluates it for every observation and restart at once (``evaluation``).
    """

    def __init__(self, observations: Sequence[Observation], config: EngineConfig, device: torch.device | str) -> None:
        obs = observations[0]
        _check_compatible(observations)
        self.obs = obs
        self.config = config
        self.device = torch.device(device)
        model = obs.build_model(self.device)
        for p in model.parameters():
            p.requires_grad_(False)
        self.bn_reference = _batchnorm_reference(model)
        self.distance = OBJECTIVES.get(config.objective)
        active = [(PRIORS.get(n), float(w)) for n, w in config.priors.items() if w]
        self.image_priors = [(p, w) for p, w in active if prior_kind(p) == "image"]
        self.bn_priors = [(p, w) for p, w in active if prior_kind(p) == "batchnorm"]
        self.restart_priors = [(p, w) for p, w in active if prior_kind(p) == "restarts"]
        # the client's own batch statistics when its update carries its BatchNorm buffers: the BN prior's reference
        self.carried = _carried(observations, model) if self.bn_priors else None
        if self.carried is not None:
            self.bn_reference = {**self.bn_reference, **{k: (m.float().to(self.device), v.float().to(self.device))
                                                         for k, (m, v) in self.carried.statistics.items()}}
        if obs.model_mode == "train":
            # Batch statistics, no in-place running-stat updates: the same forward, and vmap-safe.
            replace_all_batch_norm_modules_(model)
        self.model: nn.Module = model
        self.params = dict(model.named_parameters())
        self.buffers = {k: v for k, v in model.named_buffers() if v is not None}
        if self.bn_priors and not self.bn_reference:
            raise ConfigError(f"the BN prior needs BatchNorm layers with running statistics; model "
                              f"{obs.model_spec.name!r} has none")
        self._bn_log: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
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
        # plain autograd where the simulation is this class's one gradient; a subclass that replaces it (the
        # unrolled steps) is differentiated through torch.func
        self.evaluator = Evaluator(self, one_gradient=type(self).simulated_update is UpdateMatcher.simulated_update)

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
        """The observed update in the form ``simulated_update`` produces: parameters only (a BatchNorm buffer
        change is no gradient; the BN prior reads it, see ``_carried``)."""
        return obs.gradient_estimate()

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
        # against the client's carried statistics the variance is unbiased, as BatchNorm's running_var update
        unbiased = self.carried is not None

        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            h = inputs[0]
            dims = [d for d in range(h.dim()) if d != 1]
            self._bn_log[name] = (h.mean(dim=dims), h.var(dim=dims, unbiased=unbiased))

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
        (and ``ys`` when soft). ``coupled=False`` leaves out the priors that couple restarts (used to rank
        restarts)."""
        n, r = xs.shape[:2]
        value, gx, gy = self.evaluator.value_and_grad(xs, ys, soft)
        assert gx is not None
        if coupled and self.restart_priors and r > 1:
            with torch.enable_grad():
                leaf = xs.detach().requires_grad_(True)
                coupling = sum(w * torch.stack([p(leaf[i]) for i in range(n)]) for p, w in self.restart_priors)
                (g_coupled,) = torch.autograd.grad(coupling.sum(), leaf)  # type: ignore[union-attr]
            value = value + coupling.detach()  # type: ignore[union-attr]
            gx = gx + g_coupled
        return value, gx, gy

    def values(self, xs: torch.Tensor, ys: torch.Tensor, soft: bool) -> torch.Tensor:
        """The objective ``(N, R)`` of every observation and restart without its gradient (to rank restarts): the
        same numbers as ``value_and_grad(..., coupled=False)[0]``, without the double backward where the path
        allows it."""
        return self.evaluator.value_and_grad(xs, ys, soft, grad=False)[0]


class UnrolledMatcher(UpdateMatcher):
    """FedAvg (McMahan et al. 2017) as the attacker replays it: ``steps`` plain SGD steps of ``lr`` on consecutive
    mini-batches of the candidate (wrapping around, as ``victim.local_sgd``), mean cross-entropy each, all
    parameters trained, written functionally so the weight delta is differentiable in the candidate
    (Geiping et al. 2020, Sec. 6). The BN statistics of the BN prior are those of the first local step; when the
    update carries the client's BatchNorm buffer change, they are the steps' statistics mixed as the running
    statistics mix them (``bn_statistics``), so the prior compares the simulated buffer change with the observed
    one."""

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
        return obs.parameter_update

    def simulated_update(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        start = dict(self.params)
        params = dict(start)
        first_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        mixed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        step_grad = torch.func.grad(lambda p, xb, yb: self.loss(p, xb, yb), has_aux=True)
        weights = self.carried.step_weights if self.carried is not None else ()
        for s, idx in enumerate(self.step_indices):
            grads, stats = step_grad(params, x[idx], y[idx])
            if s == 0:
                first_stats = stats
            if len(weights) == len(self.step_indices):
                mixed = {k: (mixed[k][0] + weights[s] * m, mixed[k][1] + weights[s] * v) if k in mixed else
                         (weights[s] * m, weights[s] * v) for k, (m, v) in stats.items()}
            params = {k: params[k] - self.training.lr * grads[k] for k in params}
        return {k: params[k] - start[k] for k in self.targets}, (mixed or first_stats)


MATCHERS: dict[str, type[UpdateMatcher]] = {"gradient": UpdateMatcher, "unrolled": UnrolledMatcher}


def _batchnorm_reference(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Running ``(mean, var)`` of every BatchNorm module, from the weights the server sent (before they are
    dropped for batch statistics)."""
    ref = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            ref[name] = (module.running_mean.detach().clone().float(), module.running_var.detach().clone().float())
    return ref


def _carried(observations: Sequence[Observation], model: nn.Module) -> CarriedStatistics | None:
    """The client's batch statistics its update carries (``bn_statistics``), when every observation attacked
    together carries the same ones (one observation, in practice); ``None`` when none carries them."""
    found = [carried_statistics(o, model) for o in observations]
    if all(f is None for f in found):
        return None
    first = found[0]
    same = all(f is not None and first is not None and f.statistics.keys() == first.statistics.keys()
               and all(torch.equal(f.statistics[k][0], first.statistics[k][0])
                       and torch.equal(f.statistics[k][1], first.statistics[k][1]) for k in first.statistics)
               for f in found)
    if not same:
        raise ConfigError("the observations carry different BatchNorm statistics (their clients' own batches): "
                          "attack them one at a time")
    return first


def _check_compatible(observations: Sequence[Observation]) -> None:
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
