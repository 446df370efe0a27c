"""SPEAR: exact batch recovery from a linear layer followed by ReLU (Dimitrov et al. 2024).

For a fully connected input layer ``Z = X W^T + b`` the weight gradient is ``G = dL/dZ^T X``: a product of an
``m x B`` and a ``B x n`` matrix, so ``rank G <= B``. With ``G = U S V^T`` truncated to rank ``B``, every
column ``c_i`` of ``dL/dZ`` (one per sample) lies in ``span(U_B)``: ``c_i = U_B q_i``. Behind a ReLU about half of
each ``c_i`` is exactly zero (inactive units), and the ``c_i`` are the sparsest vectors of that span. With ``C``
known up to a scale per column, ``X = C^+ G`` up to the same scales, which the bias gradient ``dL/db = C 1`` fixes.
A sample is *certified* when the ReLU pattern of its recovered input reproduces the zero pattern of its column.
Labels follow from the recovered inputs: the label whose output gradient at the layer points like ``c_i``.

The same algebra holds for a ReLU-followed linear layer deep in a network, the fully connected part of a CNN: the
recovered ``X`` are then the layer's inputs (flattened convolutional features), exact and certified as above.
Images come from them by feature inversion (Mahendran & Vedaldi 2015, as Kariyappa et al. 2023 do for recovered
CNN embeddings; :mod:`gradleak.attacks.feature_inversion`), which is approximate.

Candidate directions ``q`` come from three searches, then the paper's greedy filter keeps the sparsest linearly
independent ones:

- the paper's sampling: the null vector of ``B - 1`` random rows of ``U_B`` is exact when all those rows lie in
  one sample's zero set, which happens with probability about ``2^-(B-1)`` (practical up to batch ~20);
- ours, beyond the paper, guided: the Cocktail Party separation (Kariyappa et al. 2023) of the gradient guesses the
  inputs; a guess's ReLU pattern names the rows its column should vanish on, mostly rightly, and reweighted-l1 on
  those rows alone lands on the exact direction. Found directions are deflated from the gradient and the rest is
  separated again. This is what reaches batch 64 (``benchmarks/bench_exact.py``);
- ours, beyond the paper: reweighted-l1 descent on the sphere, ``min_q sum_j |u_j . q| / max(|u_j . q|, eps)``
  with ``eps`` shrinking (the IRLS form of Dual Principal Component Pursuit, Tsakiris & Vidal 2018), from random
  starts. It lands on exact sparse vectors that mix a few columns (``c_a - t c_b``). The sparsest vector of a
  2-D span ``{cos(a) v + sin(a) w}`` is found exactly: row ``j`` vanishes at one angle ``a_j``, so the most
  frequent angle wins. Taking that vector for every pair of candidates, then the null vector of its zero set
  (polish), and repeating on what is new, turns mixtures into single columns.

The search is bounded (``max_trials``, ``irls_starts``, ``irls_rounds``); unrecovered slots are filled with the
mean colour and reported in ``details``. Every step is seeded, so the same seed gives the same numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from gradleak.attacks.analytic import assemble, input_linear_layer, to_pixels
from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.attacks.cocktail import CocktailPartyAttack
from gradleak.attacks.feature_inversion import DISTANCES, invert_features, layer_input
from gradleak.attacks.rank import check_rtol, decide_rank, record, spectrum, surface
from gradleak.errors import ConfigError
from gradleak.observation import Observation


def least_squares(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``argmin_x |a x - b|``, reproducibly: the CPU default driver (gelsy) was measured to differ in the last
    bits between identical calls, so the SVD-based gelsd is used there (CUDA has only gels)."""
    return torch.linalg.lstsq(a, b, driver="gelsd" if a.device.type == "cpu" else None).solution


def zero_count(v: torch.Tensor, zero_tol: float) -> torch.Tensor:
    """Entries of each column of ``v`` (m, k) under ``zero_tol`` times the column's norm."""
    a = v.abs()
    return (a <= zero_tol * a.norm(dim=0, keepdim=True).clamp_min(1e-300)).sum(0)


def sparse_directions(
    basis: torch.Tensor, trials: int, chunk: int, generator: torch.Generator, zero_tol: float, need: int
) -> torch.Tensor:
    """The paper's sampling: null vectors ``q`` (r, k) of ``r - 1`` random rows whose ``basis @ q`` has at least
    ``need`` zeros."""
    m, r = basis.shape
    found: list[torch.Tensor] = []
    done = 0
    while done < trials:
        t = min(chunk, trials - done)
        done += t
        rows = torch.rand(t, m, generator=generator).argsort(dim=1)[:, : r - 1]
        q = torch.linalg.svd(basis[rows]).Vh[:, -1, :]  # null vector of each (r-1, r) submatrix
        keep = zero_count(basis @ q.T, zero_tol) >= need
        if keep.any():
            found.append(q[keep].T)
    return torch.cat(found, 1) if found else basis.new_zeros(r, 0)


def reweighted_l1(basis: torch.Tensor, q: torch.Tensor, iters: int, decay: float = 0.8,
                  support: torch.Tensor | None = None) -> torch.Tensor:
    """Reweighted-l1 descent on the sphere from the columns of ``q`` (r, k): each step takes the smallest
    eigenvector of ``U^T diag(1 / max(|U q|, eps)) U`` while ``eps`` shrinks geometrically (IRLS for Dual
    Principal Component Pursuit, Tsakiris & Vidal 2018). ``support`` (m, k), if given, restricts column ``i``'s
    sum to the rows where it is true: the rows a guess says are zero."""
    for it in range(iters):
        a = (basis @ q).abs()
        top = a.amax(0, keepdim=True).clamp_min(1e-300)
        eps = torch.quantile(a / top, 0.25, dim=0, keepdim=True) * top * decay**it + 1e-12 * top
        w = 1.0 / torch.maximum(a, eps)
        if support is not None:
            w = w * support
        q = torch.linalg.eigh(torch.einsum("mk,mb,mc->kbc", w, basis, basis)).eigenvectors[:, :, 0].T
    return q / q.norm(dim=0)


def pair_sparsest(basis: torch.Tensor, qa: torch.Tensor, qb: torch.Tensor, zero_tol: float,
                  chunk: int = 1000) -> torch.Tensor:
    """For every pair (column of ``qa``, column of ``qb``) the sparsest direction of their 2-D span, exactly:
    ``cos(t) va_j + sin(t) vb_j`` vanishes at one angle ``t_j`` per row, so the most frequent angle wins (ours)."""
    va, vb = basis @ qa, basis @ qb
    va, vb = va / va.norm(dim=0), vb / vb.norm(dim=0)
    ii, jj = torch.meshgrid(torch.arange(qa.shape[1]), torch.arange(qb.shape[1]), indexing="ij")
    ii, jj = ii.flatten(), jj.flatten()
    out = []
    for s in range(0, len(ii), chunk):
        a, b = ii[s : s + chunk], jj[s : s + chunk]
        v1, v2 = va[:, a], vb[:, b]
        angle = torch.remainder(torch.atan2(-v1, v2), math.pi)
        angle[(v1.abs() <= zero_tol) & (v2.abs() <= zero_tol)] = float("nan")  # zero for every angle
        angle = angle.sort(0).values  # NaN last
        same = (angle[1:] - angle[:-1]).abs() < 1e-6
        idx = torch.arange(1, same.shape[0] + 1)[:, None].expand_as(same)
        run = idx - torch.where(same, torch.zeros_like(idx), idx).cummax(0).values
        best = angle.gather(0, run.argmax(0)[None] + 1).flatten()
        out.append(torch.cos(best) * qa[:, a] + torch.sin(best) * qb[:, b])
    return torch.cat(out, 1) if out else qa.new_zeros(qa.shape[0], 0)


def guided_directions(basis: torch.Tensor, g: torch.Tensor, gb: torch.Tensor, known: torch.Tensor,
                      weight: torch.Tensor, bias: torch.Tensor, separator: CocktailPartyAttack,
                      shape: tuple[int, ...], generator: torch.Generator, iters: int) -> torch.Tensor:
    """Candidates guided by approximate inputs (ours, beyond the paper). The directions ``known`` (r, k) are
    deflated: ``(I - P) G`` mixes only the inputs not yet found, so the Cocktail Party separation (Kariyappa et
    al. 2023) of it guesses them; a guess's ReLU pattern marks the rows that should be zero, mostly rightly, and
    reweighted-l1 on those rows alone lands on the exact sparse direction. ``basis``, ``g``, ``gb`` and the
    layer's ``weight`` and ``bias`` (float64): the live rows only."""
    r = basis.shape[1]
    rest = r - known.shape[1]
    if known.shape[1]:
        found_cols = torch.linalg.qr(basis @ known).Q
        g = g - found_cols @ (found_cols.T @ g)
        gb = gb - found_cols @ (found_cols.T @ gb)
    guess = separator.separate(g, gb, rest, shape, generator).inputs
    z = guess @ weight.T + bias
    support = (z <= 0).T.to(basis)  # (m, rest): rows each guess says are zero
    gram = torch.einsum("mk,mb,mc->kbc", support, basis, basis)
    q0 = torch.linalg.eigh(gram).eigenvectors[:, :, 0].T
    return reweighted_l1(basis, q0, iters, support=support)


def polish(basis: torch.Tensor, q: torch.Tensor, zero_tol: float, need: int) -> torch.Tensor:
    """Candidates with at least ``need`` near-zeros, each replaced by the null vector of its zero set."""
    v = basis @ q
    zeros = v.abs() <= 10 * zero_tol * v.norm(dim=0, keepdim=True)
    keep = zeros.sum(0) >= need
    q, zeros = q[:, keep].clone(), zeros[:, keep]
    for k in range(q.shape[1]):
        q[:, k] = torch.linalg.svd(basis[zeros[:, k]], full_matrices=False).Vh[-1]
    return q[:, zero_count(basis @ q, zero_tol) >= need]


def new_directions(basis: torch.Tensor, q: torch.Tensor, pool: torch.Tensor, zero_tol: float, cap: int) -> torch.Tensor:
    """The sparsest (at most ``cap``) columns of ``q`` not already in ``pool`` nor duplicated (up to sign)."""
    q = q / q.norm(dim=0)
    q = q[:, zero_count(basis @ q, zero_tol).argsort(descending=True, stable=True)]
    keep: list[torch.Tensor] = []
    for i in range(q.shape[1]):
        c = q[:, i]
        if pool.shape[1] and (pool.T @ c).abs().max() > 1 - 1e-6:
            continue
        if keep and (torch.stack(keep) @ c).abs().max() > 1 - 1e-6:
            continue
        keep.append(c)
        if len(keep) == cap:
            break
    return torch.stack(keep, 1) if keep else q[:, :0]


def close_under_pairs(basis: torch.Tensor, pool: torch.Tensor, new: torch.Tensor, zero_tol: float, need: int,
                      cap: int) -> torch.Tensor:
    """Add ``new`` to ``pool`` and the polished sparsest directions of every pair, until nothing new appears."""
    new = new_directions(basis, new, pool, zero_tol, cap)
    while new.shape[1]:
        pool = torch.cat([pool, new], 1)
        new = new_directions(basis, polish(basis, pair_sparsest(basis, new, pool, zero_tol), zero_tol, need),
                             pool, zero_tol, cap)
    return pool


def greedy_filter(basis: torch.Tensor, q: torch.Tensor, zero_tol: float, want: int) -> torch.Tensor:
    """The paper's greedy selection: sparsest first, each linearly independent of those kept (at most ``want``).
    ``q`` is (r, k); returns (kept, r)."""
    if q.shape[1] == 0:
        return q.T
    order = zero_count(basis @ q, zero_tol).argsort(descending=True, stable=True)
    kept: list[torch.Tensor] = []
    for i in order.tolist():
        cand = q[:, i] / q[:, i].norm()
        if kept:
            stack = torch.stack(kept)
            resid = cand - stack.T @ least_squares(stack.T, cand[:, None]).flatten()
            if resid.norm() < 1e-6:
                continue
        kept.append(cand)
        if len(kept) == want:
            break
    return torch.stack(kept)


#: activations after which an inactive unit's output gradient is not exactly zero: SPEAR's sparsity is gone
_NOT_RELU = (nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
             nn.Mish, nn.Softplus, nn.Hardtanh, nn.Hardswish)


def target_layer(model: nn.Module, obs: Observation, layer: str | None) -> tuple[str, nn.Linear, bool]:
    """The ``nn.Linear`` (with bias, ReLU after it) SPEAR attacks and whether it reads the flattened input itself.

    ``layer`` by module name; else the first one reading the flattened input (an MLP's first layer); else the first
    with bias, as in the fully connected part of a CNN, whose inputs are the flattened convolutional features.
    One probe forward on seeded noise tells the two cases apart and refuses the classifier (its output is the
    model's: no ReLU follows). A ReLU inside ``forward`` cannot be seen; a known other activation registered
    right after the layer is refused. Without a ReLU the search finds no sparse directions and fills every slot.
    """
    reads_pixels = [m for m in model.modules() if isinstance(m, nn.Linear) and m.in_features == obs.example_size]
    if layer is None and reads_pixels:
        name, module = input_linear_layer(model, obs.example_size)
    elif layer is None:
        found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.bias is not None]
        if not found:
            raise ConfigError("spear: the model has no nn.Linear with bias")
        name, module = found[0]
    else:
        modules = dict(model.named_modules())
        if layer not in modules:
            raise ConfigError(f"spear: the model has no module named {layer!r}")
        name, module = layer, modules[layer]
        if not isinstance(module, nn.Linear):
            raise ConfigError(f"spear: layer {layer!r} is a {type(module).__name__}, not an nn.Linear")
        if module.bias is None:
            raise ConfigError(f"spear: linear layer {layer!r} has no bias: SPEAR needs its bias gradient")
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    at = next(i for i, m in enumerate(leaves) if m is module)
    if at + 1 < len(leaves) and isinstance(leaves[at + 1], _NOT_RELU):
        raise ConfigError(f"spear: layer {name!r} is followed by {type(leaves[at + 1]).__name__}, not a ReLU: "
                          "SPEAR needs the exact zeros a ReLU puts in the output gradient")
    probe = torch.randn(2, *obs.input_shape, generator=torch.Generator().manual_seed(0))
    seen: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["x"], seen["z"] = args[0], out

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            out = model(probe)
    finally:
        handle.remove()
    if "x" not in seen:
        raise ConfigError(f"spear: layer {name!r} does not run in the model's forward pass")
    if seen["x"].dim() != 2:
        raise ConfigError(f"spear: layer {name!r} reads inputs of shape {tuple(seen['x'].shape[1:])} per sample, "
                          "not one flat vector: its weight gradient sums over positions")
    if isinstance(out, torch.Tensor) and out.shape == seen["z"].shape and torch.equal(out, seen["z"]):
        raise ConfigError(f"spear: layer {name!r} is the model's output (the classifier): no ReLU follows it")
    reads_input = seen["x"].shape[1] == obs.example_size and torch.equal(seen["x"], probe.flatten(1))
    return name, module, reads_input


@dataclass
class SpearAttack(Attack):
    """Exact recovery of a batch through a ReLU-followed fully connected layer (Dimitrov et al. 2024).

    ``layer``: the ``nn.Linear`` attacked (default: see :func:`target_layer`). When it reads the flattened input
    the recovered inputs are the images. Deeper in a CNN they are the layer's inputs, the flattened features,
    still exact (``details["features"]``, certified by their ReLU pattern); the images then come from feature
    inversion (:mod:`gradleak.attacks.feature_inversion`): ``invert_iterations`` Adam steps of ``invert_lr`` on the
    ``invert_distance`` ("l2": squared, relative to the features' norm; or "cosine") plus ``invert_tv`` times
    total variation. Those images are approximate: the convolutions, ReLUs and pooling lose information.

    ``max_trials``: the paper's sampled submatrices (0: none); ``chunk``: sampled per batched SVD;
    ``guide_rounds``: rounds of the search guided by a Cocktail Party separation of what is left (ours; 0: off);
    ``irls_starts``/``irls_rounds``/``irls_iters``: random starts per round, rounds at most, and steps of the
    reweighted-l1 search (ours; 0 rounds: the paper's sampling alone); ``pool_cap``: new candidates kept per
    pairing step; ``zero_tol``: size relative to a column's norm under which an entry counts as zero;
    ``min_extra_zeros``: zeros beyond ``B - 1`` a candidate needs; ``min_zero_share``: the share of the layer's
    live units a candidate must zero at least (behind a ReLU about half; a null vector of ``B - 1`` rows that
    zeros a few more by coincidence, as parallel rows do, is not a sample); ``rank_tol``: unset (the default), the
    rank (at most the batch size) is cut where the float64 spectrum of the weight gradient drops to its rounding
    noise (``gradleak.attacks.rank``; reported in ``details["rank_decision"]``, and said when ambiguous); a number
    in (0, 1): singular values under ``rank_tol * s_max`` are dropped instead.
    """

    name: ClassVar[str] = "spear"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image", "features"})
    layer: str | None = None
    max_trials: int = 20_000
    chunk: int = 10_000
    guide_rounds: int = 4
    irls_starts: int = 50
    irls_rounds: int = 6
    irls_iters: int = 60
    pool_cap: int = 40
    zero_tol: float = 1e-7
    min_extra_zeros: int = 4
    min_zero_share: float = 0.1
    rank_tol: float | None = None
    invert_iterations: int = 400
    invert_lr: float = 0.1
    invert_tv: float = 0.3
    invert_distance: str = "l2"

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
        if (self.max_trials < 0 or self.chunk < 1 or self.irls_starts < 1 or self.irls_rounds < 0
                or self.guide_rounds < 0):
            raise ConfigError("spear: max_trials, guide_rounds and irls_rounds must be >= 0, chunk and irls_starts "
                              "positive")
        if self.invert_iterations < 0 or not self.invert_lr > 0 or self.invert_tv < 0:
            raise ConfigError("spear: invert_iterations and invert_tv must be >= 0, invert_lr positive")
        if self.invert_distance not in DISTANCES:
            raise ConfigError(f"spear: invert_distance must be one of {DISTANCES}, not {self.invert_distance!r}")
        check_rtol(self.rank_tol, "spear (rank_tol)")
        start = time.perf_counter()
        model = obs.build_model()
        name, module, reads_input = target_layer(model, obs, self.layer)
        shape = obs.input_shape if reads_input else (module.in_features,)
        if module.out_features <= obs.batch_size:
            raise ConfigError(f"spear: layer {name!r} has {module.out_features} units, needs more than batch "
                              f"{obs.batch_size}")
        prefix = f"{name}." if name else ""
        grads = obs.gradient_estimate()
        for key in (prefix + "weight", prefix + "bias"):
            if key not in grads:
                raise ConfigError(f"the update withholds {key!r}: SPEAR needs it")
        g = grads[prefix + "weight"].double().to(device)
        gb = grads[prefix + "bias"].double().to(device)
        u, s, floor = spectrum(grads[prefix + "weight"].to(device))  # float64 SVD, floor of the shared dtype
        b = obs.batch_size
        decision = decide_rank(s, floor, most=b, rtol=self.rank_tol)  # beyond the batch size: float noise
        rank = decision.rank
        if rank >= module.out_features:
            raise ConfigError(f"spear: layer {name!r} has {module.out_features} units, needs more than batch {b}")
        basis = u[:, :rank]
        norms = basis.norm(dim=1)
        reached = norms > 1e-9 * norms.max()
        live = basis[reached].cpu()  # units no sample reached are zero for every q
        need = max(rank - 1 + self.min_extra_zeros, math.ceil(self.min_zero_share * len(live)))
        gen = torch.Generator().manual_seed(0 if seed is None else seed)
        pool = live.new_zeros(rank, 0)
        if self.max_trials:
            found = sparse_directions(live, self.max_trials, self.chunk, gen, self.zero_tol, need)
            pool = close_under_pairs(live, pool, found, self.zero_tol, need, self.pool_cap)
        guided, guide_stopped = 0, ""
        if self.guide_rounds:
            if reads_input:
                separator = CocktailPartyAttack(domain="gradient" if obs.input_kind == "image" else "pixel")
            else:  # flat features: no neighbours, so no finite differences and no total variation
                separator = CocktailPartyAttack(domain="pixel", tv=0.0)
            rows = reached.cpu()
            g_live, gb_live = g[reached].cpu(), gb[reached].cpu()
            w_live = module.weight.detach()[rows].double()
            b_live = module.bias.detach()[rows].double()
        while guided < self.guide_rounds:
            known = greedy_filter(live, pool, self.zero_tol, rank).T
            if known.shape[1] == rank:
                break
            guided += 1
            try:
                found = guided_directions(live, g_live, gb_live, known, w_live, b_live, separator, shape, gen,
                                          self.irls_iters)
            except ConfigError as err:  # what is left no longer separates (e.g. a mixture was deflated)
                guide_stopped = str(err)
                break
            found = found[:, zero_count(live @ found, self.zero_tol) >= need]
            pool = torch.cat([pool, new_directions(live, found, pool, self.zero_tol, rank)], 1)  # exact already
        rounds = 0
        while rounds < self.irls_rounds and len(greedy_filter(live, pool, self.zero_tol, rank)) < rank:
            rounds += 1
            q0 = torch.randn(rank, self.irls_starts, generator=gen, dtype=live.dtype)
            # odd rounds see every row scaled to unit norm (zeros unchanged, other attractors; as in DPCP)
            search = live if rounds % 2 else live / live.norm(dim=1, keepdim=True)
            found = reweighted_l1(search, q0, self.irls_iters)
            found = found[:, zero_count(live @ found, self.zero_tol) >= need]
            pool = close_under_pairs(live, pool, found, self.zero_tol, need, self.pool_cap)
        q = greedy_filter(live, pool, self.zero_tol, rank).to(basis)
        details: dict[str, Any] = {"layer": name, "rank": rank, "directions": len(q), "candidates": pool.shape[1],
                                   "guide_rounds": guided, "guide_stopped": guide_stopped,
                                   "irls_rounds": rounds}
        record(details, name or "layer", decision)
        surface(details, "spear")
        recovered_x: list[torch.Tensor] = []
        labels = None
        certified: list[bool] = []
        if len(q) == rank:
            cols = basis @ q.T  # (m, rank): dL/dZ columns up to scale
            x_scaled = least_squares(cols, g)  # (rank, n) = D^-1 X
            d = least_squares(cols, gb[:, None]).flatten()
            xs = x_scaled / d[:, None]
            w = module.weight.detach().double().to(xs)
            bias = module.bias.detach().double().to(xs)
            active = (xs @ w.T + bias) > 0  # (rank, m)
            nonzero = (cols.abs() > self.zero_tol * cols.norm(dim=0, keepdim=True)).T
            certified = (active == nonzero).all(1).tolist()
            recovered_x = [xs[i] for i in range(rank)]
            labels = _labels(obs, model, module, xs.float().cpu(), (cols / d).T.float().cpu())
        trace = torch.empty(0, 1)
        if reads_input:
            images, slots = assemble(obs, [to_pixels(obs, x[None])[0] for x in recovered_x])
        else:
            inverted: list[torch.Tensor] = []
            if recovered_x:
                features = torch.stack(recovered_x)
                details["features"] = features.cpu().tolist()  # exact when certified; no truth to measure against
                mean, std = obs.normalization()
                pixels, trace = invert_features(
                    model.to(device), module, features.float(), mean, std, obs.input_shape,
                    iterations=self.invert_iterations, lr=self.invert_lr, tv=self.invert_tv,
                    distance=self.invert_distance, generator=torch.Generator().manual_seed(0 if seed is None else seed))
                with torch.no_grad():
                    reached_features = layer_input(model, module, (pixels - mean.to(pixels)) / std.to(pixels))
                details["inversion_feature_error"] = (
                    (reached_features.double() - features).norm(dim=1) / features.norm(dim=1).clamp_min(1e-300)
                ).tolist()
                inverted = list(pixels.cpu())
            images, slots = assemble(obs, inverted)
        certified += [False] * (b - len(certified))
        details.update(recovered=slots, certified=certified, not_separated=b - sum(slots), inverted=not reads_input)
        if callback is not None:
            callback(0, images[None])
        return Reconstruction(
            inputs=images, labels=labels, attack=self.name, settings=self.settings(), trace=trace,
            iterations=1 + len(trace),
            wall_time_s=time.perf_counter() - start, details=details,
        )


def _labels(obs: Observation, model: nn.Module, layer: nn.Linear, xs: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """For each recovered layer input, the class whose output gradient at ``layer`` points like its column ``c_i``.
    The layer reads ``xs`` in place of what the part before it computes (a pre-hook; that part runs on zeros), so
    the same code serves a first layer and one deep in a CNN."""
    k = obs.num_classes
    n = len(xs)
    captured: dict[str, torch.Tensor] = {}

    def feed(_m: nn.Module, _args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        return (xs.repeat_interleave(k, 0),)

    def keep(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        captured["z"] = out

    handles = [layer.register_forward_pre_hook(feed), layer.register_forward_hook(keep)]
    try:
        out = model(xs.new_zeros(n * k, *obs.input_shape))
        ys = torch.arange(k).repeat(n)
        nn.functional.cross_entropy(out, ys, reduction="sum").backward()
    finally:
        for h in handles:
            h.remove()
    dz = captured["z"].grad.reshape(n, k, -1)
    cos = nn.functional.cosine_similarity(dz, cols[:, None, :], dim=-1)
    return cos.argmax(1)


ATTACKS.register("spear")(SpearAttack)
