"""Cocktail Party attack: large batches from a fully connected layer's gradient by ICA (Kariyappa et al. 2023).

A fully connected input layer ``z = W x + b`` shares ``G = dL/dW = D^T X`` (``m x n``) and ``dL/db = D^T 1``,
where ``X`` (``B x n``) holds the batch's normalised inputs and ``D`` (``B x m``) their output gradients: every row
of ``G`` is a linear mixture of the ``B`` inputs (a blind source separation problem). The attack:

1. keeps the rank-``B`` row space of ``G``: ``G = U_B R`` with ``R = U_B^T G`` (``B x n``), so the inputs are
   ``X = C M R`` for an unknown unmixing ``M`` and diagonal scales ``C``;
2. whitens the mixtures and initialises ``M`` by symmetric FastICA (Hyvarinen 1999, logcosh contrast). With
   ``domain="gradient"`` the ICA runs on the images' finite differences ``R Delta`` instead of their pixels: the
   same ``M`` mixes them (``Delta`` is linear), and image gradients are far sparser and less correlated between
   images than pixels are (ICA of prefiltered data, Hyvarinen 1998). This is our addition to the paper;
3. refines ``M`` with the paper's objective (Kariyappa 2023, Eq. 5), by Adam on row-normalised ``v_i``:
   ``max E_i[ J(v_i R) - l_TV TV(v_i R) - l_MI E_{j != i} exp(T |cos(v_i, v_j)|) ]`` where
   ``J(y) = (E log cosh y - E log cosh nu)^2`` is the negentropy approximation (``nu ~ N(0, 1)``);
4. resolves each source's sign *and* scale from the bias gradient: with ``S = M R`` and ``G = U_B M^-1 S``,
   ``dL/db = D^T 1 = U_B M^-1 c`` gives ``c = M U_B^T dL/db`` and ``x_i = s_i / c_i`` in normalised units.
   The paper instead min-max normalises each source and lets its evaluation pick the sign from the truth; with
   ``scale="standardize"`` (no bias gradient needed) each source is z-scored to the dataset's statistics and its
   sign set by lower total variation.

Recovered images are matched to the truth only when scored, outside the attack.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from gradleak.attacks.analytic import input_linear_layer, to_pixels
from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.errors import ConfigError
from gradleak.observation import Observation

#: E[log cosh(nu)] for nu ~ N(0, 1): the Gaussian reference of the negentropy approximation (Hyvarinen 1999).
_GAUSS_LOGCOSH = 0.3745672075


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per image ``(N, C, H, W) -> (N,)``."""
    dx = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    dy = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    return dx + dy


def finite_differences(rows: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Vertical and horizontal neighbour differences of each row viewed as an image ``shape``: ``(N, n')``."""
    x = rows.reshape(rows.shape[0], *shape)
    dy = (x[..., 1:, :] - x[..., :-1, :]).flatten(1)
    dx = (x[..., :, 1:] - x[..., :, :-1]).flatten(1)
    return torch.cat([dy, dx], 1)


def whitening(data: torch.Tensor) -> torch.Tensor:
    """``K`` with ``(K data)(K data)^T / n = I`` for full-rank ``data`` (``B x n``, rows zero-mean or not)."""
    evals, evecs = torch.linalg.eigh(data @ data.T)  # B x B: cheaper than an SVD of the wide data
    return (evecs / evals.clamp_min(1e-300).sqrt()).T * math.sqrt(data.shape[1])


def fastica(
    z: torch.Tensor, fun: str, max_iter: int, tol: float, generator: torch.Generator
) -> tuple[torch.Tensor, int]:
    """Symmetric FastICA on whitened ``z`` (``B x n``): orthogonal ``W`` maximising non-Gaussianity of ``W z``.

    Fixed point ``W <- E[g(Wz) z^T] - diag(E[g'(Wz)]) W`` then ``W <- (W W^T)^{-1/2} W`` (Hyvarinen 1999), from a
    seeded random rotation; stops when every row turns by less than ``tol``. Returns ``(W, iterations)``."""
    b, n = z.shape
    w = torch.linalg.qr(torch.randn(b, b, generator=generator, dtype=torch.float64))[0].to(z)
    it = 0
    for it in range(1, max_iter + 1):
        y = w @ z
        if fun == "logcosh":
            gy = torch.tanh(y)
            gp = (1 - gy**2).mean(1)
        elif fun == "exp":
            e = torch.exp(-(y**2) / 2)
            gy, gp = y * e, ((1 - y**2) * e).mean(1)
        else:  # cube
            gy, gp = y**3, 3 * (y**2).mean(1)
        new = gy @ z.T / n - gp[:, None] * w
        evals, evecs = torch.linalg.eigh(new @ new.T)
        new = (evecs / evals.clamp_min(1e-300).sqrt()) @ evecs.T @ new
        turned = ((new * w).sum(1).abs() - 1).abs().max()
        w = new
        if turned < tol:
            break
    return w, it


@dataclass
class Separation:
    """What :meth:`CocktailPartyAttack.separate` recovers: ``sources`` (``count x n``), ``inputs`` in normalised
    units where the bias gradient scaled them (``None`` without it), which sources it could not scale, the
    ``count``-th singular value over the first, FastICA's iterations and the refinement's loss trace."""

    sources: torch.Tensor
    inputs: torch.Tensor | None
    unscaled: torch.Tensor
    rank_gap: float
    ica_iterations: int
    trace: torch.Tensor


@dataclass
class CocktailPartyAttack(Attack):
    """Unmix a fully connected input layer's weight gradient into the batch's images (Kariyappa et al. 2023).

    ``domain``: "gradient" (ICA on the images' finite differences; default) or "pixel" (the paper's).
    ``fun``, ``ica_iters``, ``ica_tol``: the FastICA initialisation (contrast "exp", "logcosh" or "cube").
    ``iters``, ``lr``: Adam steps on the paper's objective (0 keeps FastICA's orthogonal unmixing, which cannot
    reach the truth: the images' gradients are slightly correlated); ``negentropy``, ``independence``,
    ``temperature``, ``tv``: its weights. ``temperature`` 12.4 and ``tv`` 3.1 are the reference code's
    Tiny-ImageNet FC-2 setting; ``independence`` 0.1 (reference: 1.47), ``fun`` "exp", ``lr`` 0.003 and 300 steps
    were tuned on one batch (photos and windows, batch 64, seed 0; see benchmarks/bench_cocktail.py), as the paper
    tunes on a single batch. ``scale``: "bias" (sign and scale from the bias gradient) or "standardize" (z-score
    to the dataset statistics, sign by total variation; weak: about the mean image's PSNR).
    """

    name: ClassVar[str] = "cocktail"
    layer: str | None = None
    domain: str = "gradient"
    fun: str = "exp"
    ica_iters: int = 400
    ica_tol: float = 1e-7
    iters: int = 300
    lr: float = 0.003
    negentropy: float = 1.0
    independence: float = 0.1
    temperature: float = 12.4
    tv: float = 3.1
    scale: str = "bias"

    def _check(self) -> None:
        choices = {"domain": ("gradient", "pixel"), "fun": ("logcosh", "exp", "cube"), "scale": ("bias", "standardize")}
        for field_name, allowed in choices.items():
            if getattr(self, field_name) not in allowed:
                raise ConfigError(f"cocktail: {field_name} must be one of {allowed}, not {getattr(self, field_name)!r}")
        if self.ica_iters < 1 or self.iters < 0 or not self.lr > 0:
            raise ConfigError("cocktail: ica_iters must be >= 1, iters >= 0 and lr > 0")

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
        self._check()
        start = time.perf_counter()
        b, shape = obs.batch_size, obs.input_shape
        if self.domain == "gradient" and min(shape[1:]) < 2:
            raise ConfigError(f"cocktail: images of shape {shape} have no neighbouring pixels; use domain='pixel'")
        model = obs.build_model()
        name, module = input_linear_layer(model, obs.example_size, self.layer)
        prefix = f"{name}." if name else ""
        grads = obs.gradient_estimate()
        if prefix + "weight" not in grads:
            raise ConfigError(f"the update withholds {prefix + 'weight'!r}: the Cocktail Party attack needs it")
        if self.scale == "bias" and prefix + "bias" not in grads:
            raise ConfigError(f"the update withholds {prefix + 'bias'!r}: use scale='standardize' without it")
        if module.out_features < b:
            raise ConfigError(f"cocktail: layer {name!r} has {module.out_features} units, fewer than batch {b}: "
                              "its gradient cannot hold the batch's images apart")
        dev = torch.device(device)
        g = grads[prefix + "weight"].to(dev, torch.float64)
        live = g.abs().sum(1) > 0  # units no sample activated carry nothing
        g = g[live]
        if g.shape[0] < b:
            raise ConfigError(f"cocktail: only {g.shape[0]} units of {name!r} received gradient, fewer than batch {b}")
        bias = grads[prefix + "bias"].to(dev, torch.float64)[live] if self.scale == "bias" else None
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
        separated = self.separate(g, bias, b, shape, generator, layer=name)
        if separated.inputs is not None:
            images = to_pixels(obs, separated.inputs).cpu()
            if separated.unscaled.any():  # a source the bias gradient gives no scale to: standardise it instead
                images[separated.unscaled.cpu()] = self._standardized(obs, separated.sources[separated.unscaled]).cpu()
        else:
            images = self._standardized(obs, separated.sources).cpu()
        rank_gap, ica_iterations, trace = separated.rank_gap, separated.ica_iterations, separated.trace
        details: dict[str, Any] = {"layer": name, "live_units": int(live.sum()), "rank_gap": rank_gap,
                                   "ica_iterations": ica_iterations, "domain": self.domain, "scale": self.scale}
        if callback is not None:
            callback(ica_iterations + self.iters, images[None])
        return Reconstruction(
            inputs=images, labels=None, attack=self.name, settings=self.settings(), trace=trace,
            iterations=ica_iterations + self.iters, wall_time_s=time.perf_counter() - start, details=details,
        )

    def separate(self, g: torch.Tensor, bias: torch.Tensor | None, count: int, shape: tuple[int, ...],
                 generator: torch.Generator, layer: str = "") -> Separation:
        """Unmix the rank-``count`` row space of ``g`` (``m x n``, float64, rows with gradient only) into
        ``count`` sources; with ``bias`` (``dL/db`` on the same rows) also each source's sign and scale, giving
        the inputs in normalised units. SPEAR calls this on a deflated gradient to guide its search."""
        evals, evecs = torch.linalg.eigh(g @ g.T)  # left singular vectors of G, largest last
        u = evecs.flip(1)[:, :count]
        s = evals.flip(0).clamp_min(0).sqrt()
        rank_gap = float(s[count - 1] / s[0])
        if rank_gap < 1e-6:  # float32 gradients put a dependent direction near 1e-8
            raise ConfigError(f"cocktail: the gradient of {layer!r} has rank below the batch size {count} "
                              "(repeated or linearly dependent inputs)")
        basis = u.T @ g  # R = U^T G: mixtures spanning the inputs' row space
        centred = basis - basis.mean(1, keepdim=True)
        filtered = finite_differences(basis, shape) if self.domain == "gradient" else centred
        k = whitening(filtered)
        w_ica, ica_iterations = fastica(k @ filtered, self.fun, self.ica_iters, self.ica_tol, generator)
        unmix, trace = self._refine(w_ica, k @ basis, shape) if self.iters else (w_ica, torch.empty(0, 1))
        m = unmix @ k  # sources S = m R
        sources = m @ basis
        inputs, unscaled = None, torch.zeros(count, dtype=torch.bool, device=g.device)
        if bias is not None:
            c = m @ (u.T @ bias)
            unscaled = c.abs() < 1e-12 * c.abs().max()
            inputs = sources / torch.where(unscaled, torch.ones_like(c), c)[:, None]
        return Separation(sources, inputs, unscaled, rank_gap, ica_iterations, trace)

    def _refine(
        self, w0: torch.Tensor, white: torch.Tensor, shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adam on the paper's objective over row-normalised unmixing rows; ``white`` = whitening @ R."""
        b = w0.shape[0]
        basis = white.float()
        w = w0.float().clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        off = ~torch.eye(b, dtype=torch.bool, device=w.device)
        trace = torch.empty(self.iters, 1)
        for it in range(self.iters):
            opt.zero_grad()
            wn = w / w.norm(dim=1, keepdim=True)
            y = wn @ basis
            filtered = finite_differences(y, shape) if self.domain == "gradient" else y - y.mean(1, keepdim=True)
            negentropy = ((torch.log(torch.cosh(filtered)).mean(1) - _GAUSS_LOGCOSH) ** 2).mean()
            independence = torch.exp(self.temperature * (wn @ wn.T).abs()[off]).mean()
            # flat sources (feature vectors) have no neighbouring pixels: no total variation
            tv = total_variation(y.reshape(b, *shape)).mean() if len(shape) > 1 else y.new_zeros(())
            loss = -self.negentropy * negentropy + self.independence * independence + self.tv * tv
            loss.backward()
            opt.step()
            trace[it, 0] = loss.detach()
        with torch.no_grad():
            return (w / w.norm(dim=1, keepdim=True)).double(), trace

    @staticmethod
    def _standardized(obs: Observation, sources: torch.Tensor) -> torch.Tensor:
        """Each source z-scored (unit variance in normalised units, zero mean), sign by lower total variation."""
        z = sources - sources.mean(1, keepdim=True)
        z = z / z.std(1, keepdim=True).clamp_min(1e-300)
        plus, minus = to_pixels(obs, z), to_pixels(obs, -z)
        keep = total_variation(plus) <= total_variation(minus)
        return torch.where(keep[:, None, None, None], plus, minus)


ATTACKS.register("cocktail")(CocktailPartyAttack)
