"""The shared engine of optimisation attacks: find inputs whose simulated update matches the observed one.

For a candidate batch ``x`` (and labels), the attacker simulates the client's update with the server's
model, measures its distance to the observed update (an objective from ``objectives``), adds priors, and
descends on ``x``. Restarts run as one batched computation with ``torch.func.vmap``; the best restart is
chosen by the attacker's own objective, never by the truth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, replace_all_batch_norm_modules_, vmap
from torch.nn import functional as F
from tqdm.auto import tqdm

from gradleak.attacks.base import Callback, Reconstruction
from gradleak.attacks.objectives import OBJECTIVES
from gradleak.attacks.priors import PRIORS
from gradleak.errors import ConfigError
from gradleak.observation import Observation

LabelMode = Literal["fixed", "soft"]


@dataclass(frozen=True)
class EngineConfig:
    """Hyperparameters of one optimisation attack. ``iterations`` counts objective evaluations (one
    double-backward each), the unit of compute for every optimizer."""

    iterations: int = 300
    restarts: int = 1
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    lr: float = 1.0
    line_search: Literal["strong_wolfe"] | None = "strong_wolfe"
    history_size: int = 100
    signed_gradients: bool = False
    objective: str = "l2"
    layer_weights: Mapping[str, float] | None = None
    priors: Mapping[str, float] = field(default_factory=dict)
    init: Literal["randn", "rand", "zeros"] = "randn"
    box: bool = False
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.restarts < 1:
            raise ConfigError(f"iterations and restarts must be >= 1, got {self.iterations}, {self.restarts}")
        if self.optimizer not in ("lbfgs", "adam"):
            raise ConfigError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        OBJECTIVES.get(self.objective)
        for name in self.priors:
            PRIORS.get(name)


class GradientMatcher:
    """The attacker's differentiable model of the client: candidate batch -> distance to the observed update.

    ``objective(x, y)`` works on one restart: ``x`` normalised ``(B, C, H, W)``, ``y`` either class indices
    ``(B,)`` (fixed labels) or logits ``(B, K)`` of a soft label (DLG). ``batched`` maps it over restarts.
    """

    def __init__(self, obs: Observation, config: EngineConfig, device: torch.device | str) -> None:
        self.obs = obs
        self.config = config
        self.device = torch.device(device)
        model = obs.build_model(self.device)
        for p in model.parameters():
            p.requires_grad_(False)
        if obs.model_mode == "train":
            # Batch statistics, no in-place running-stat updates: the same forward, and vmap-safe.
            replace_all_batch_norm_modules_(model)
        self.model: nn.Module = model
        target = obs.gradient_estimate() if obs.update_kind == "weight_delta" else obs.update
        self.target = {k: v.to(self.device, torch.float32) for k, v in target.items()}
        params = dict(model.named_parameters())
        self.fixed = {k: v for k, v in params.items() if k not in self.target}
        self.free = {k: params[k] for k in self.target}
        self.buffers = dict(model.named_buffers())
        self.distance = OBJECTIVES.get(config.objective)
        self.priors = [(PRIORS.get(name), float(w)) for name, w in config.priors.items() if w]

    def simulated_update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The mean-gradient the client would share for candidate ``(x, y)``, differentiable in both."""

        def loss_fn(free: dict[str, torch.Tensor]) -> torch.Tensor:
            logits = functional_call(self.model, ({**self.fixed, **free}, self.buffers), (x,))
            if y.dtype == torch.long:
                return F.cross_entropy(logits, y)
            return -(F.softmax(y, dim=-1) * F.log_softmax(logits, dim=-1)).sum(-1).mean()

        return torch.func.grad(loss_fn)(self.free)

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = self.distance(self.simulated_update(x, y), self.target, self.config.layer_weights)
        for prior, weight in self.priors:
            value = value + weight * prior(x)
        return value

    def value_and_grad(
        self, xs: torch.Tensor, ys: torch.Tensor, soft: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Objective per restart ``(R,)`` and its gradient w.r.t. ``xs`` (and ``ys`` when soft)."""
        argnums: tuple[int, ...] = (0, 1) if soft else (0,)
        fn = grad_and_value(self.objective, argnums=argnums)
        if xs.shape[0] == 1:  # no vmap for a single restart: less overhead
            grads, value = fn(xs[0], ys[0])
            grads, value = tuple(g.unsqueeze(0) for g in grads), value.unsqueeze(0)
        else:
            grads, value = vmap(fn, randomness="same")(xs, ys)
        return value, grads[0], (grads[1] if soft else None)


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
) -> Reconstruction:
    """Run the engine. ``labels=None`` optimises soft labels jointly (DLG); otherwise they stay fixed."""
    start = time.perf_counter()
    device = torch.device(device)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(0 if seed is None else seed)
    matcher = GradientMatcher(obs, config, device)
    mean, std = obs.normalization(device)
    r, b = config.restarts, obs.batch_size
    shape = (r, b, *obs.input_shape)
    init: Callable[..., torch.Tensor] = {"randn": torch.randn, "rand": torch.rand, "zeros": torch.zeros}[config.init]
    x0 = init(shape, generator=generator) if config.init != "zeros" else torch.zeros(shape)
    if config.init == "rand":
        x0 = (x0.to(device) - mean) / std  # uniform in pixel space, then normalised
    xs = x0.to(device).requires_grad_(True)
    soft = labels is None
    if soft:
        ys = torch.randn((r, b, obs.num_classes), generator=generator).to(device).requires_grad_(True)
        variables = [xs, ys]
    else:
        ys = labels.to(device).long().expand(r, b).contiguous()
        variables = [xs]
    lower, upper = (0 - mean) / std, (1 - mean) / std
    trace = torch.empty((config.iterations, r), device=device)
    state = {"evals": 0}
    bar = tqdm(total=config.iterations, desc=attack_name, disable=None if progress else True, leave=False)

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
            callback(i, _to_pixels(xs.detach(), mean, std))
        return values.sum()

    if config.optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            variables,
            lr=config.lr,
            history_size=config.history_size,
            line_search_fn=config.line_search,
            tolerance_grad=0.0,
            tolerance_change=0.0,
        )
        while state["evals"] < config.iterations:
            remaining = config.iterations - state["evals"]
            opt.param_groups[0].update(max_iter=min(20, remaining), max_eval=remaining)
            before = state["evals"]
            loss = opt.step(evaluate)  # type: ignore[arg-type]
            if state["evals"] == before or not torch.isfinite(loss) or float(loss.detach()) <= config.tolerance:
                break
            if config.box:
                with torch.no_grad():
                    xs.copy_(torch.maximum(torch.minimum(xs, upper), lower))
    else:
        opt = torch.optim.Adam(variables, lr=config.lr)
        while state["evals"] < config.iterations:
            loss = evaluate()
            opt.step()
            if config.box:
                with torch.no_grad():
                    xs.copy_(torch.maximum(torch.minimum(xs, upper), lower))
            if not torch.isfinite(loss) or float(loss) <= config.tolerance:
                break
    bar.close()

    with torch.no_grad():
        final, _, _ = matcher.value_and_grad(xs.detach(), ys.detach(), soft)
    final = torch.nan_to_num(final.detach(), nan=float("inf"))
    best = int(final.argmin())
    recovered = ys[best].detach().argmax(-1) if soft else ys[best].detach()
    done = min(state["evals"], config.iterations)
    return Reconstruction(
        inputs=_to_pixels(xs.detach(), mean, std)[best].cpu(),
        labels=recovered.cpu(),
        attack=attack_name,
        settings=settings,
        trace=torch.nan_to_num(trace[:done].cpu(), nan=float("inf")),
        restart_objectives=final.cpu(),
        best_restart=best,
        iterations=done,
        wall_time_s=time.perf_counter() - start,
    )


def _to_pixels(xs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (xs * std + mean).clamp(0.0, 1.0)
