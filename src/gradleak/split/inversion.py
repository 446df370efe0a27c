"""Inverting smashed data back to the client's inputs.

White box (He et al. 2019, "Model inversion attacks against collaborative inference"): the server knows the client's
layers and searches the input whose activations match. UnSplit (Erdogan et al. 2022): it does not; it optimises a
surrogate client of the public architecture and the input together, with a total-variation prior.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.split.simulation import SplitObservation


def _tv(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def white_box_inversion(obs: SplitObservation, steps: int = 300, lr: float = 0.05, tv: float = 0.01,
                        seed: int = 0) -> torch.Tensor:
    """Images in [0, 1] minimising ``||f_c(x) - z||^2 + tv * TV(x)`` with the client's true weights."""
    client = obs.white_box_client().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    param = torch.randn((obs.smashed.shape[0], *obs.input_shape), generator=gen).mul(0.1).requires_grad_(True)
    opt = torch.optim.Adam([param], lr=lr)
    for _ in range(steps):
        x = torch.sigmoid(param)
        loss = (client(x) - obs.smashed).pow(2).mean() + tv * _tv(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.sigmoid(param).detach()


def unsplit_inversion(obs: SplitObservation, rounds: int = 60, inner: int = 5, lr_input: float = 0.05,
                      lr_model: float = 0.005, tv: float = 0.05, seed: int = 0) -> torch.Tensor:
    """UnSplit: alternate ``inner`` Adam steps on the input and on a surrogate client (fresh weights of the public
    architecture) to minimise ``||f~(x) - z||^2 + tv * TV(x)`` (Erdogan et al. 2022, Algorithm 1)."""
    torch.manual_seed(seed)
    surrogate: nn.Module = obs.architecture().client(obs.cut)
    gen = torch.Generator().manual_seed(seed)
    param = torch.randn((obs.smashed.shape[0], *obs.input_shape), generator=gen).mul(0.1).requires_grad_(True)
    opt_x = torch.optim.Adam([param], lr=lr_input)
    opt_m = torch.optim.Adam(surrogate.parameters(), lr=lr_model)

    def objective() -> torch.Tensor:
        x = torch.sigmoid(param)
        return (surrogate(x) - obs.smashed).pow(2).mean() + tv * _tv(x)

    for _ in range(rounds):
        for opt in (opt_x, opt_m):
            for _ in range(inner):
                opt_x.zero_grad()
                opt_m.zero_grad()
                objective().backward()
                opt.step()
    return torch.sigmoid(param).detach()
