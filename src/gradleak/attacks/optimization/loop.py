"""The optimiser loop: start from noise, step the candidates (Adam or L-BFGS) against the matcher's objective,
keep each restart's best iterate, return the best restart.

Each restart returns the iterate with the lowest objective it reached, not the last one: a signed-gradient Adam
keeps moving after it reaches a good point, so the last iterate can score worse than an earlier one (issue 25;
on the trained ConvNet-64 of ``benchmarks/bench_inverting.py --curve`` the two differ by 0.01 dB: its PSNR loss
at 1,000 iterations comes from the objective, see there). The best restart is chosen by the attacker's own
objective, never by the truth. A checkpoint file lets a killed run resume where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from gradleak.attacks.base import Callback, Reconstruction
from gradleak.attacks.checkpoint import Checkpointer
from gradleak.attacks.lbfgs import CompactLBFGS
from gradleak.attacks.optimization.config import EngineConfig
from gradleak.attacks.optimization.evaluation import conv_backend, flush_denormals
from gradleak.attacks.optimization.matcher import MATCHERS
from gradleak.errors import ConfigError
from gradleak.observation import Observation


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
    # each restart's best iterate so far and its objective (inf until evaluated)
    best = [v.detach().clone() for v in variables]
    best_value = torch.full((n, r), float("inf"), device=device)
    lower, upper = _box(obs, mean, std)
    trace = torch.full((config.iterations, n, r), float("nan"), device=device)
    state: dict[str, Any] = {"evals": 0, "best": float("inf"), "stall": 0}
    saver = Checkpointer(checkpoint, config, observations, seed, every=config.checkpoint_every, labels=labels,
                         context={"attack": attack_name, "settings": settings})

    def clamp_box() -> None:
        if config.box:
            with torch.no_grad():
                xs.copy_(torch.maximum(torch.minimum(xs, upper), lower))

    def keep_best(values: torch.Tensor) -> None:
        better = torch.nan_to_num(values.detach(), nan=float("inf")) < best_value
        if bool(better.any()):
            best_value.copy_(torch.where(better, values.detach(), best_value))
            for kept, v in zip(best, variables):
                mask = better.view(n, r, *([1] * (v.dim() - 2)))
                kept.copy_(torch.where(mask, v.detach(), kept))

    def evaluate() -> torch.Tensor:
        values, gx, gy = matcher.value_and_grad(xs, ys, soft)
        keep_best(values)
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
    # the best iterates travel with the candidates; their objectives are the trace's minima
    saved = variables + best
    if saver.restore(state, saved, opt, trace):
        best_value.copy_(torch.nan_to_num(trace[:state["evals"]], nan=float("inf")).amin(0)
                         if state["evals"] else best_value)
    bar = tqdm(total=config.iterations, initial=state["evals"], desc=attack_name,
               disable=None if progress else True, leave=False)

    with flush_denormals(device) as flushing, conv_backend(config.conv_backend, device) as backend:
        if config.optimizer == "lbfgs":
            while state["evals"] < config.iterations:
                remaining = config.iterations - state["evals"]
                opt.param_groups[0].update(max_iter=min(20, remaining), max_eval=remaining)
                before = state["evals"]
                loss = opt.step(evaluate)  # type: ignore[arg-type]
                clamp_box()
                if state["evals"] == before or converged(loss):
                    break
                saver.maybe_save(state, saved, opt, trace)
        else:
            while state["evals"] < config.iterations:
                for group in opt.param_groups:
                    group["lr"] = config.lr_at(state["evals"])
                loss = evaluate()
                opt.step()
                clamp_box()
                if converged(loss):
                    break
                saver.maybe_save(state, saved, opt, trace)
        bar.close()
        saver.finish(state, saved, opt, trace)
        with torch.no_grad():
            # each restart's best iterate ranked by its own objective (matching + its priors), not by its distance
            # to the others; the value only (no double backward)
            best_x, best_y = best[0], (best[1] if soft else ys)
            final = matcher.values(best_x, best_y.detach(), soft)
    final = torch.nan_to_num(final.detach(), nan=float("inf"))
    done = min(state["evals"], config.iterations)
    pixels = obs.inputs.from_model(best_x)
    wall = time.perf_counter() - start
    compute = {**matcher.evaluator.record, "conv_backend": backend, "flush_denormals": flushing,
               "threads": torch.get_num_threads(), "device": str(device)}
    out = []
    for k in range(n):
        chosen = int(final[k].argmin())
        recovered = best_y[k, chosen].detach().argmax(-1) if soft else best_y[k, chosen].detach()
        out.append(Reconstruction(
            inputs=pixels[k, chosen].cpu(),
            labels=recovered.cpu(),
            attack=attack_name,
            settings=settings,
            trace=torch.nan_to_num(trace[:done, k].cpu(), nan=float("inf")),
            restart_objectives=final[k].cpu(),
            best_restart=chosen,
            iterations=done,
            wall_time_s=wall,
            details={"compute": dict(compute)},
        ))
    return out


def _box(obs: Observation, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The box constraint in the model's space: pixels in [0, 1], features within their bounds (if known)."""
    low, high = (0.0, 1.0) if obs.inputs.kind == "image" else (getattr(obs.inputs, "bounds", None) or
                                                               (-math.inf, math.inf))
    return (low - mean) / std, (high - mean) / std
