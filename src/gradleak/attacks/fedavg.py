"""The FedAvg attacks: the server sees only the weight delta after the client's local SGD steps, with known step
size and local batch size, and the attacker differentiates through the replayed steps.

- ``per_epoch=False`` (Geiping et al. 2020, Sec. 6): Inverting Gradients' recipe (cosine + TV, signed Adam, box)
  on the unrolled local training of ``optimization.UnrolledMatcher``, which replays the steps on one copy of the
  batch in a fixed order (wrapping around), compared with the delta itself instead of the delta read as one
  gradient (``-delta / (lr * steps)``, exact only for one step).
- ``per_epoch=True`` (Dimitrov et al. 2022, "Data Leakage in Federated Averaging"): a deployed client trains
  ``E`` epochs and reshuffles its ``N`` images every epoch, so no single order replays its steps. The attacker
  keeps one copy of the batch per epoch (``E * N`` candidates, epoch ``e``'s mini-batches drawn in order from copy
  ``e``), each epoch with the same label counts, adds the epoch-order-invariant prior (every epoch holds the same
  set of images, so the mean candidate of each epoch must agree: their squared differences, weight
  ``epoch_prior``), and at the end matches every copy to the first (Hungarian assignment among images of one
  label) and averages the matched images. Two departures from the paper, both settings: each candidate's label
  is free (soft, held to the per-epoch counts), since a fixed label order cannot follow the client's reshuffle
  across mini-batches (``epoch_labels="fixed"`` is the paper's); and ``tied_share`` of the iterations then refine
  the N averaged images themselves, each epoch drawing them in the matched order (``tied_share=0``: the paper's).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch
from scipy.optimize import linear_sum_assignment

from gradleak.attacks.base import ATTACKS, Callback, Reconstruction
from gradleak.attacks.inverting import InvertingGradients
from gradleak.attacks.optimization import UnrolledMatcher
from gradleak.errors import ConfigError
from gradleak.observation import Observation


@dataclass
class FedAvgAttack(InvertingGradients):
    """Inverting Gradients through the client's unrolled local steps (needs a 'weight_delta' observation);
    ``per_epoch`` keeps one copy of the batch per local epoch (Dimitrov et al. 2022) for clients that reshuffle."""

    name: ClassVar[str] = "fedavg"
    per_epoch: bool = False
    #: weight of the epoch-order-invariant prior (mean squared difference of the epochs' mean candidates,
    #: normalised pixels), relative to the cosine distance of the update
    epoch_prior: float = 1.0
    #: ``"fixed"``: every epoch's candidates carry the labels in one order (Dimitrov et al.'s code: the client's
    #: reshuffle then moves images between mini-batches with labels the copy cannot follow); ``"free"``: each
    #: candidate's label is optimised (soft, as DLG), held to the per-epoch label counts by ``count_prior``, and
    #: rounded at the end to the counts (an assignment per epoch)
    epoch_labels: Literal["fixed", "free"] = "free"
    count_prior: float = 1.0
    #: share of the iterations spent, after matching the copies, on the N images tied across epochs
    tied_share: float = 0.5

    def simulation(self) -> Literal["gradient", "unrolled"]:
        return "unrolled"

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        if not self.per_epoch:
            return super().reconstruct(obs, device=device, seed=seed, callback=callback, progress=progress)
        if self.labels == "soft":
            raise ConfigError("fedavg with per_epoch needs labels 'auto', 'infer' or 'leaked' (per-epoch label "
                              "counts), not 'soft'")
        if self.checkpoint is not None:
            raise ConfigError("fedavg with per_epoch does not checkpoint; leave checkpoint unset")
        return _attack_epochs(self, obs, torch.device(device), seed, callback)


def local_epochs(obs: Observation) -> int:
    """The number of local epochs ``E`` of a weight delta: ``steps * local batch size / N`` must be whole, and
    ``N`` a multiple of the local batch size (each epoch then draws the same number of full mini-batches)."""
    if obs.update_kind != "weight_delta" or obs.local_training is None:
        raise ConfigError("fedavg with per_epoch needs a 'weight_delta' observation with local_training")
    n, b, steps = obs.batch_size, obs.local_training.batch_size, obs.local_training.steps
    if n % b or (steps * b) % n:
        raise ConfigError(f"fedavg with per_epoch needs whole epochs of full mini-batches: batch {n}, local "
                          f"batch_size {b} and {steps} steps give {steps * b / n:g} epochs")
    return steps * b // n


def epoch_prior(x: torch.Tensor, epochs: int) -> torch.Tensor:
    """Dimitrov et al. (2022)'s epoch-order-invariant prior (their ``l2_mean``) on candidates ``(R, E * N, ...)``:
    the mean over ordered pairs of epochs of the mean squared difference of their mean candidates, one per restart.
    The mean over a set does not depend on the order the client drew it in, so it is the same in every epoch."""
    r = x.shape[0]
    means = x.reshape(r, epochs, -1, *x.shape[2:]).mean(dim=2).flatten(2)  # (R, E, D)
    centred = means - means.mean(dim=1, keepdim=True)
    return 2.0 * centred.pow(2).mean(dim=2).mean(dim=1)  # (1/E^2) sum_{e, f} mean((m_e - m_f)^2)


def count_prior(logits: torch.Tensor, counts: torch.Tensor, epochs: int) -> torch.Tensor:
    """Per restart, the mean over epochs of the squared distance between the epoch's soft label counts (the sum of
    its candidates' label distributions, ``logits`` ``(R, E * N, K)``) and the known counts ``(K,)``, over ``N^2``:
    every epoch trains on the same images, so on the same labels (Dimitrov et al. 2022, per-epoch label counts)."""
    r = logits.shape[0]
    soft = logits.softmax(-1).reshape(r, epochs, -1, logits.shape[-1])
    n = soft.shape[2]
    return (soft.sum(dim=2) - counts).pow(2).sum(-1).mean(-1) / n**2


def round_to_counts(logits: torch.Tensor, labels: torch.Tensor, epochs: int) -> torch.Tensor:
    """Hard labels ``(E * N,)`` from soft ones ``(E * N, K)``: in each epoch the label multiset ``labels`` assigned
    to the candidates by maximum total log-probability (Hungarian), so every epoch holds exactly the known counts."""
    logp = logits.log_softmax(-1).reshape(epochs, -1, logits.shape[-1])
    out = []
    for e in range(epochs):
        cost = -logp[e][:, labels].double().cpu().numpy()  # candidate i takes the label of slot j
        rows, cols = linear_sum_assignment(cost)
        out.append(labels[torch.as_tensor(cols[rows.argsort()], dtype=torch.long, device=labels.device)])
    return torch.cat(out)


def match_epochs(x: torch.Tensor, labels: torch.Tensor, epochs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the ``E`` copies of the batch ``(E * N, C, H, W)`` after matching each copy's images to the first
    copy's (minimum total squared distance, only among images of the same label; Dimitrov et al. 2022). Returns the
    averaged images ``(N, ...)`` and, for every candidate, the image of the first copy it was matched to ``(E * N,)``."""
    copies = x.reshape(epochs, -1, *x.shape[1:])
    lab = labels.reshape(epochs, -1)
    n = copies.shape[1]
    first = copies[0].flatten(1)
    aligned = [copies[0]]
    owner = [torch.arange(n, device=x.device)]
    for e in range(1, epochs):
        cost = torch.cdist(first.double(), copies[e].flatten(1).double()).pow(2)
        cost = cost + (lab[0][:, None] != lab[e][None, :]).double() * 1e12
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        order = torch.as_tensor(cols[rows.argsort()], dtype=torch.long, device=x.device)  # copy e's image of each
        aligned.append(copies[e][order])
        owner.append(torch.empty_like(order).scatter_(0, order, torch.arange(n, device=x.device)))
    return torch.stack(aligned).mean(dim=0), torch.cat(owner)


def _attack_epochs(attack: FedAvgAttack, obs: Observation, device: torch.device, seed: int | None,
                   callback: Callback | None) -> Reconstruction:
    """Dimitrov et al. (2022): optimise ``E`` copies of the batch through the unrolled epochs, with the epoch and
    label-count priors and Inverting Gradients' step rule (signed Adam, schedule, box), then match and average.
    ``tied_share`` of the iterations then go on the ``N`` averaged images themselves, each epoch drawing them in
    the order the matching found (one image, one label, wherever the client put it): the replay made exact for a
    reshuffling client once its orders are known, with ``E`` times fewer unknowns."""
    start = time.perf_counter()
    epochs = local_epochs(obs)
    labels = attack.resolve_labels(obs)
    assert labels is not None
    n, k = obs.batch_size, obs.num_classes
    # the attacker's view: E * N candidates, epoch e's consecutive mini-batches drawn from copy e, which is how
    # UnrolledMatcher steps through a batch of E * N (step s takes candidates s*B .. s*B+B-1)
    view = replace(obs, batch_size=epochs * n, labels=None)
    config = attack.engine(obs)
    matcher = UnrolledMatcher([view], config, device)
    generator = torch.Generator(device="cpu").manual_seed(0 if seed is None else seed)
    mean, std = obs.normalization(device)
    r = config.restarts
    shape = (1, r, epochs * n, *obs.input_shape)
    if config.init == "randn":
        x0 = torch.randn(shape, generator=generator)
    elif config.init == "rand":
        x0 = (torch.rand(shape, generator=generator) - mean.cpu()) / std.cpu()
    else:
        x0 = torch.zeros(shape)
    hard = labels.to(device).long().view(n)
    counts = torch.bincount(hard, minlength=k).float()
    free = attack.epoch_labels == "free"
    if free:  # soft labels, one set per candidate, starting undecided (DLG's random logits)
        y0 = torch.randn((1, r, epochs * n, k), generator=generator).to(device)
    else:
        y0 = hard.repeat(epochs)[None, None].expand(1, r, -1).contiguous()
    lower, upper = (0.0 - mean) / std, (1.0 - mean) / std
    tied_steps = int(round(config.iterations * attack.tied_share)) if epochs > 1 else 0
    copy_steps = config.iterations - tied_steps
    trace = torch.full((config.iterations, 1, r), float("nan"))

    def priors(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The epoch and count priors ``(1, R)`` and their gradients in the candidates and soft labels."""
        with torch.enable_grad():
            lx = x.detach()[0].requires_grad_(True)
            ly = y.detach()[0].requires_grad_(free)
            value = attack.epoch_prior * epoch_prior(lx, epochs)
            if free:
                value = value + attack.count_prior * count_prior(ly, counts, epochs)
            grads = torch.autograd.grad(value.sum(), [lx, ly] if free else [lx], allow_unused=True)
        gx = torch.zeros_like(lx) if grads[0] is None else grads[0]
        gy = torch.zeros_like(ly) if not free or grads[1] is None else grads[1]
        return value.detach()[None], gx[None], gy[None]

    def descend(variables: list[torch.Tensor], steps: int, offset: int,
                step: Callable[[], tuple[torch.Tensor, list[torch.Tensor]]]) -> int:
        """``steps`` Adam steps (signed on the images) on ``variables`` under the schedule, stretched over them."""
        opt = torch.optim.Adam(variables, lr=config.lr)
        for i in range(steps):
            for group in opt.param_groups:
                group["lr"] = config.lr_at(i * config.iterations // steps)
            value, grads = step()
            trace[offset + i] = value.detach().cpu()
            variables[0].grad = grads[0].sign() if config.signed_gradients else grads[0]
            for v, g in zip(variables[1:], grads[1:]):
                v.grad = g
            opt.step()
            if config.box:
                with torch.no_grad():
                    variables[0].copy_(torch.maximum(torch.minimum(variables[0], upper), lower))
            if callback is not None:
                callback(offset + i, obs.inputs.from_model(variables[0].detach()).reshape(-1, n, *obs.input_shape))
            if not math.isfinite(float(value.sum())):
                return offset + i + 1
        return offset + steps

    # stage 1: one copy of the batch per epoch (Dimitrov et al. 2022)
    xs, ys = x0.to(device).requires_grad_(True), y0.requires_grad_(free)

    def copies_step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        value, gx, gy = matcher.value_and_grad(xs.detach(), ys.detach(), free)
        pv, pgx, pgy = priors(xs, ys)
        return value + pv, [gx + pgx] + ([gy + pgy] if free else [])  # type: ignore[operator]

    done = descend([xs, ys] if free else [xs], copy_steps, 0, copies_step)
    with torch.no_grad():
        final = matcher.values(xs.detach(), ys.detach(), free) + priors(xs, ys)[0]
    final = torch.nan_to_num(final.detach().cpu(), nan=float("inf"))[0]
    best = int(final.argmin())
    pixels = obs.inputs.from_model(xs.detach()[0, best])
    chosen = round_to_counts(ys.detach()[0, best], hard, epochs) if free else ys[0, best]
    averaged, owner = match_epochs(pixels, chosen, epochs)
    averaged = averaged.clamp(0, 1)
    details = {"epochs": epochs, "stage_objectives": [float(final[best])]}
    if tied_steps and done == copy_steps:
        # stage 2: the N images, each epoch drawing them in the matched order
        shared = obs.inputs.to_model(averaged.to(device))[None, None].contiguous().requires_grad_(True)
        tied_y = chosen[:n][owner][None, None]

        def tied_step() -> tuple[torch.Tensor, list[torch.Tensor]]:
            full = shared.detach()[:, :, owner]
            value, gx, _ = matcher.value_and_grad(full, tied_y, False)
            g = torch.zeros_like(shared).index_add_(2, owner, gx)
            return value.expand(1, r), [g]

        done = descend([shared], tied_steps, copy_steps, tied_step)
        with torch.no_grad():
            tied_value = float(matcher.values(shared.detach()[:, :, owner], tied_y, False).squeeze())
        details["stage_objectives"].append(tied_value)
        averaged = obs.inputs.from_model(shared.detach()[0, 0]).clamp(0, 1)
    return Reconstruction(
        inputs=averaged.cpu(), labels=chosen[:n].cpu(), attack=attack.name, settings=attack.settings(),
        trace=torch.nan_to_num(trace[:done, 0], nan=float("inf")), restart_objectives=final, best_restart=best,
        iterations=done, wall_time_s=time.perf_counter() - start, details=details,
    )


ATTACKS.register("fedavg")(FedAvgAttack)
