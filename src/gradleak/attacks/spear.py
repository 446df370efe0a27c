"""SPEAR: exact batch recovery from a linear layer followed by ReLU (Dimitrov et al. 2024).

For a fully connected input layer ``Z = X W^T + b`` the weight gradient is ``G = dL/dZ^T X``: a product of an
``m x B`` and a ``B x n`` matrix, so ``rank G <= B``. With ``G = U S V^T`` truncated to rank ``B``, every
column ``c_i`` of ``dL/dZ`` (one per sample) lies in ``span(U_B)``: ``c_i = U_B q_i``. Behind a ReLU about half of
each ``c_i`` is zero (inactive units). Sampling ``B - 1`` rows of ``U_B`` and taking the null vector ``q`` of
that submatrix gives ``U_B q`` with those rows zero; when all of them were zero for one sample, ``U_B q`` is that
sample's column and is far sparser than a random direction. Sparse candidates are de-duplicated and filtered
greedily (sparsest, linearly independent first). With ``C`` known up to a scale per column, ``X = C^+ G`` up to
the same scales, which the bias gradient ``dL/db = C 1`` fixes. A sample is *certified* when the ReLU pattern of
its recovered input reproduces the zero pattern of its column. Labels follow from the recovered inputs: the label
whose first-layer gradient direction matches ``c_i``.

The random search needs about ``2^(B-1)`` trials per sample, so it is practical up to batch ~20-25 on a CPU
(the paper reports the same scaling, with GPU-hours for larger batches); ``max_trials`` bounds the work and
unrecovered slots are filled with the mean colour and reported in ``details``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from gradleak.attacks.analytic import assemble, input_linear_layer, to_pixels
from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.errors import ConfigError
from gradleak.observation import Observation


def sparse_directions(
    basis: torch.Tensor, trials: int, chunk: int, generator: torch.Generator, zero_tol: float, min_extra: int
) -> torch.Tensor:
    """Directions ``q`` (k, r) whose ``basis @ q`` has at least ``r - 1 + min_extra`` near-zero entries."""
    m, r = basis.shape
    found: list[torch.Tensor] = []
    done = 0
    while done < trials:
        t = min(chunk, trials - done)
        done += t
        rows = torch.rand(t, m, generator=generator).argsort(dim=1)[:, : r - 1]
        sub = basis[rows]  # (t, r-1, r)
        q = torch.linalg.svd(sub).Vh[:, -1, :]  # null vector of each submatrix
        v = q @ basis.T  # (t, m)
        zeros = (v.abs() <= zero_tol * v.abs().amax(1, keepdim=True)).sum(1)
        keep = zeros >= r - 1 + min_extra
        if keep.any():
            found.append(q[keep])
    return torch.cat(found) if found else basis.new_zeros(0, r)


def greedy_filter(basis: torch.Tensor, q: torch.Tensor, zero_tol: float, want: int) -> torch.Tensor:
    """Unique sparse directions, sparsest first, each linearly independent of those kept (at most ``want``)."""
    if len(q) == 0:
        return q
    v = q @ basis.T
    sparsity = (v.abs() <= zero_tol * v.abs().amax(1, keepdim=True)).sum(1)
    order = sparsity.argsort(descending=True)
    kept: list[torch.Tensor] = []
    for i in order.tolist():
        cand = q[i] / q[i].norm()
        if kept:
            stack = torch.stack(kept)
            if (stack @ cand).abs().max() > 1 - 1e-6:  # duplicate (up to sign)
                continue
            resid = cand - stack.T @ torch.linalg.lstsq(stack.T, cand[:, None]).solution.flatten()
            if resid.norm() < 1e-6:
                continue
        kept.append(cand)
        if len(kept) == want:
            break
    return torch.stack(kept)


@dataclass
class SpearAttack(Attack):
    """Exact recovery of a batch through a ReLU-followed fully connected input layer (Dimitrov et al. 2024).

    ``max_trials``: submatrices sampled at most; ``chunk``: sampled per batched SVD; ``zero_tol``: relative size
    under which a gradient entry counts as zero; ``min_extra_zeros``: zeros beyond ``B - 1`` a candidate needs;
    ``rank_tol``: singular values under ``rank_tol * s_max`` are dropped.
    """

    name: ClassVar[str] = "spear"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image", "features"})
    layer: str | None = None
    max_trials: int = 200_000
    chunk: int = 20_000
    zero_tol: float = 1e-5
    min_extra_zeros: int = 4
    rank_tol: float = 1e-5

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        del progress
        if self.max_trials < 1 or self.chunk < 1:
            raise ConfigError("spear: max_trials and chunk must be positive")
        start = time.perf_counter()
        model = obs.build_model()
        name, module = input_linear_layer(model, obs.num_pixels, self.layer)
        prefix = f"{name}." if name else ""
        grads = obs.gradient_estimate()
        for key in (prefix + "weight", prefix + "bias"):
            if key not in grads:
                raise ConfigError(f"the update withholds {key!r}: SPEAR needs it")
        g = grads[prefix + "weight"].double().to(device)
        gb = grads[prefix + "bias"].double().to(device)
        u, s, _ = torch.linalg.svd(g, full_matrices=False)
        rank = int((s > self.rank_tol * s[0]).sum())
        b = obs.batch_size
        if rank > b:
            rank = b  # float noise beyond the batch size
        if rank >= module.out_features:
            raise ConfigError(f"spear: layer {name!r} has {module.out_features} units, needs more than batch {b}")
        basis = u[:, :rank]
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        q = sparse_directions(basis.cpu(), self.max_trials, self.chunk, gen, self.zero_tol, self.min_extra_zeros)
        q = greedy_filter(basis.cpu(), q, self.zero_tol, rank).to(basis)
        details: dict[str, Any] = {"layer": name, "rank": rank, "directions": len(q)}
        recovered_x: list[torch.Tensor] = []
        labels = None
        certified: list[bool] = []
        if len(q) == rank:
            cols = basis @ q.T  # (m, rank): dL/dZ columns up to scale
            x_scaled = torch.linalg.lstsq(cols, g).solution  # (rank, n) = D^-1 X
            d = torch.linalg.lstsq(cols, gb[:, None]).solution.flatten()
            xs = x_scaled / d[:, None]
            w = module.weight.detach().double().to(xs)
            bias = module.bias.detach().double().to(xs)
            active = (xs @ w.T + bias) > 0  # (rank, m)
            nonzero = (cols.abs() > self.zero_tol * cols.abs().amax(0, keepdim=True)).T
            certified = (active == nonzero).all(1).tolist()
            recovered_x = [xs[i] for i in range(rank)]
            labels = _labels(obs, model, xs.float(), (cols / d).T.float(), name)
        images, slots = assemble(obs, [to_pixels(obs, x[None])[0] for x in recovered_x])
        certified += [False] * (b - len(certified))
        details.update(recovered=slots, certified=certified, not_separated=b - sum(slots))
        if callback is not None:
            callback(0, images[None])
        return Reconstruction(
            inputs=images, labels=labels, attack=self.name, settings=self.settings(), iterations=1,
            wall_time_s=time.perf_counter() - start, details=details,
        )


def _labels(obs: Observation, model: nn.Module, xs: torch.Tensor, cols: torch.Tensor, layer: str) -> torch.Tensor:
    """For each recovered input, the class whose first-layer output gradient points like its column ``c_i``."""
    k = obs.num_classes
    module = dict(model.named_modules())[layer]
    captured: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        captured["z"] = out

    handle = module.register_forward_hook(hook)
    try:
        n = len(xs)
        inputs = xs.reshape(n, *obs.input_shape).repeat_interleave(k, 0)
        ys = torch.arange(k).repeat(n)
        out = model(inputs)
        nn.functional.cross_entropy(out, ys, reduction="sum").backward()
    finally:
        handle.remove()
    dz = captured["z"].grad.reshape(n, k, -1)
    cos = nn.functional.cosine_similarity(dz, cols[:, None, :], dim=-1)
    return cos.argmax(1)


ATTACKS.register("spear")(SpearAttack)
