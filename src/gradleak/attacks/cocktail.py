"""Cocktail Party attack: large batches from a fully connected layer's gradient by ICA (Kariyappa et al. 2023).

The weight gradient of a fully connected input layer is ``G = dL/dZ^T X``: each of its ``m`` rows is a linear
mixture of the ``B`` flattened inputs. Images are non-Gaussian and mutually independent, so independent component
analysis (scikit-learn's FastICA, whitened to ``B`` components) unmixes the rows back into the inputs, up to a
sign and a scale per component. Each component is standardised and mapped to pixels as 0.5 + 0.25 z; the sign is
the one with the lower total variation after clipping to [0, 1] (smooth-image prior), ties broken by lower skew.
This first version does not yet separate crops of the bundled photos (see benchmarks/bench_exact.py). Recovered images are matched to the truth
only when scored, outside the attack.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.decomposition import FastICA

from gradleak.attacks.analytic import input_linear_layer
from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.errors import ConfigError
from gradleak.observation import Observation


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per image ``(N, C, H, W) -> (N,)``."""
    dx = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    dy = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    return dx + dy


@dataclass
class CocktailPartyAttack(Attack):
    """Unmix a fully connected layer's weight gradient into the batch's inputs with FastICA (Kariyappa 2023).

    ``max_iter`` and ``tol``: FastICA's; ``fun``: its non-Gaussianity contrast ("logcosh" as in the paper).
    """

    name: ClassVar[str] = "cocktail"
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image", "features"})
    layer: str | None = None
    max_iter: int = 1000
    tol: float = 1e-4
    fun: str = "logcosh"

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        del device, progress
        if self.fun not in ("logcosh", "exp", "cube"):
            raise ConfigError(f"cocktail: fun must be logcosh, exp or cube, not {self.fun!r}")
        start = time.perf_counter()
        model = obs.build_model()
        name, module = input_linear_layer(model, obs.num_pixels, self.layer)
        key = f"{name}.weight" if name else "weight"
        grads = obs.gradient_estimate()
        if key not in grads:
            raise ConfigError(f"the update withholds {key!r}: the Cocktail Party attack needs it")
        g = grads[key].double().cpu().numpy()  # (m, n): rows are mixtures of the B inputs
        b = obs.batch_size
        if module.out_features < b:
            raise ConfigError(f"cocktail: layer {name!r} has {module.out_features} units, fewer than batch {b}")
        ica = FastICA(n_components=b, fun=self.fun, max_iter=self.max_iter, tol=self.tol,
                      whiten="unit-variance", random_state=0 if seed is None else seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Pixels are the samples of the ICA and the m gradient rows its observed mixtures.
            sources = ica.fit_transform(g.T).T  # (B, n)
        x = torch.from_numpy(np.ascontiguousarray(sources)).float()
        mean, std = obs.normalization()
        x = x.reshape(b, *obs.input_shape)
        # Each component is an image up to sign and scale: standardise it, then keep the sign with the lower
        # total variation after clipping to [0, 1].
        candidates = []
        for sign in (1.0, -1.0):
            z = sign * x
            z = (z - z.mean((1, 2, 3), keepdim=True)) / z.std((1, 2, 3), keepdim=True).clamp_min(1e-12)
            pixels = (z * 0.25 + 0.5).clamp(0, 1)
            candidates.append(pixels)
        tv = torch.stack([total_variation(c) for c in candidates])  # (2, B)
        skew = torch.stack([((c - c.mean((1, 2, 3), keepdim=True)) ** 3).flatten(1).mean(1) for c in candidates])
        pick = torch.where((tv[0] - tv[1]).abs() > 1e-3, tv[0] <= tv[1], skew[0] <= skew[1])
        images = torch.where(pick[:, None, None, None], candidates[0], candidates[1])
        del mean, std
        details: dict[str, Any] = {"layer": name, "components": b, "ica_iterations": int(ica.n_iter_)}
        if callback is not None:
            callback(0, images[None])
        return Reconstruction(
            inputs=images, labels=None, attack=self.name, settings=self.settings(), iterations=int(ica.n_iter_),
            wall_time_s=time.perf_counter() - start, details=details,
        )


ATTACKS.register("cocktail")(CocktailPartyAttack)
