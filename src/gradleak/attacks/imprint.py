"""Imprint attack, "Robbing the Fed" (Fowl et al., 2022): read a batch, or an aggregate, off a malicious block.

The server's imprint block (``gradleak.models.imprint``) has units ``h_j = ReLU(s - t_j)`` with ascending
thresholds ``t_j`` on one statistic ``s = m . x`` of the input, and every unit reaches the rest of the network
through the same column, so sample ``i`` contributes the same factor ``d_i`` to every unit it switches on:

    dL/dW_j = sum_{i: s_i > t_j} c_i d_i x_i,      dL/db_j = sum_{i: s_i > t_j} c_i d_i

(``c_i`` is the averaging weight: 1/B for a mean gradient, summed over clients for an aggregate). The
difference of consecutive rows keeps only the samples with ``t_j < s_i <= t_{j+1}``, so

    x = (dL/dW_j - dL/dW_{j+1}) / (dL/db_j - dL/db_{j+1})

is a sample exactly when it is alone in its bin, and a weighted blend of the bin's samples otherwise. The
attack cannot tell a blend of same-sign weights from a sample without the truth; it flags a bin as a blend when
its ratio fails the checks every single sample passes (statistic inside the bin's range, pixels inside [0, 1]),
and when fewer bins are occupied than there are samples it knows how many samples are hidden in blends.
Slots beyond the occupied bins are filled with the dataset's mean colour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from gradleak.attacks.analytic import assemble, to_pixels
from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.errors import CaptureError, ConfigError
from gradleak.malicious import IMPRINT_LAYER, ImprintSecret
from gradleak.observation import Observation


@dataclass
class ImprintAttack(Attack):
    """Recover inputs that fell alone in a bin of the server's imprint block.

    ``layer``: module name of the imprint block's linear layer. ``min_share``: a bin counts as occupied when its
    bias-gradient difference exceeds this fraction of the largest one (empty bins differ by rounding only).
    ``pixel_tolerance``: how far outside [0, 1] (in pixels) a single sample's ratio may fall by rounding.
    """

    name: ClassVar[str] = "imprint"
    layer: str = IMPRINT_LAYER
    min_share: float = 1e-5
    pixel_tolerance: float = 1e-3

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        del seed, progress  # closed form
        start = time.perf_counter()
        try:
            secret = ImprintSecret.from_observation(obs, self.layer)
        except CaptureError as exc:
            raise ConfigError(f"the imprint attack needs the server's imprint block: {exc}") from exc
        grads = obs.gradient_estimate()
        for key in (f"{self.layer}.weight", f"{self.layer}.bias"):
            if key not in grads:
                raise ConfigError(f"the update withholds {key!r}: the imprint attack needs the block's gradient")
        order = secret.order.to(device)
        w_grad = grads[f"{self.layer}.weight"].to(device).double()[order]
        b_grad = grads[f"{self.layer}.bias"].to(device).double()[order]
        zero_w, zero_b = torch.zeros_like(w_grad[:1]), torch.zeros_like(b_grad[:1])
        bin_w = w_grad - torch.cat([w_grad[1:], zero_w])  # samples with t_j < s <= t_{j+1}
        bin_b = b_grad - torch.cat([b_grad[1:], zero_b])
        occupied = torch.nonzero(bin_b.abs() > self.min_share * bin_b.abs().max().clamp_min(1e-300)).flatten()
        occupied = occupied[bin_b[occupied].abs().argsort(descending=True)][: obs.batch_size]
        occupied = occupied.sort().values
        candidates = bin_w[occupied] / bin_b[occupied, None]  # normalised inputs, one per occupied bin
        # Checks every single sample passes: its statistic lies in its bin, its pixels in [0, 1].
        thresholds = secret.thresholds.to(device)
        upper = torch.cat([thresholds[1:], thresholds.new_tensor([float("inf")])])
        stat = candidates @ secret.measurement.to(device)
        span = (upper - thresholds).clamp(max=1.0)[occupied]
        in_bin = (stat > thresholds[occupied] - 1e-6 * span) & (stat <= upper[occupied] + 1e-6 * span)
        mean, std = obs.normalization(device)
        pixels = candidates.reshape(-1, *obs.input_shape) * std.double() + mean.double()
        in_range = ((pixels >= -self.pixel_tolerance) & (pixels <= 1 + self.pixel_tolerance)).flatten(1).all(1)
        plausible = in_bin & in_range
        # Plausible candidates first (they are the recoveries), proven blends after, then filler.
        slots = torch.argsort((~plausible).to(torch.int8), stable=True)
        images, _ = assemble(obs, list(to_pixels(obs, candidates[slots])))
        recovered = [i < int(plausible.sum()) for i in range(obs.batch_size)]
        details: dict[str, Any] = {
            "recovered": recovered,
            "bins": secret.bins,
            "occupied_bins": int(occupied.numel()),
            "blended_bins": int((~plausible).sum()),
            "samples_hidden_in_blends_at_least": obs.batch_size - int(occupied.numel()),
            "bin_of_slot": [int(b) for b in occupied[slots].tolist()] + [-1] * (obs.batch_size - int(occupied.numel())),
            "aggregate": obs.info.get("aggregate"),
        }
        if callback is not None:
            callback(0, images[None])
        return Reconstruction(
            inputs=images, labels=None, attack=self.name, settings=self.settings(), iterations=1,
            wall_time_s=time.perf_counter() - start, details=details,
        )


ATTACKS.register("imprint")(ImprintAttack)
