"""The deep image prior as a gradient-inversion prior (Ulyanov et al. 2018): the candidate images are the output of
an untrained convolutional generator, and the attack optimises the generator's weights instead of the pixels.

A convolutional generator fits natural images long before it fits noise, so the structure of the network acts as
the prior (no training data needed). Used against gradients by, among others, Wei et al. (2020) and Jeon et al.
(2021, GIAS's parameter search). The update is matched by the engine's ``UpdateMatcher`` (Inverting Gradients'
cosine distance and TV, Geiping et al. 2020); its gradient in the pixels is carried back into the generator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from gradleak.attacks.base import ATTACKS, Callback, Reconstruction
from gradleak.attacks.inverting import InvertingGradients
from gradleak.attacks.optimization import UpdateMatcher
from gradleak.errors import ConfigError
from gradleak.observation import Observation


class Generator(nn.Module):
    """Ulyanov et al.'s decoder without skips, kept small for CPUs: fixed noise ``(B, width, H/4, W/4)``, two
    (upsample x2, 3x3 conv, BatchNorm, LeakyReLU) stages, a 3x3 conv to the image channels and a sigmoid (pixels in
    [0, 1]); one generator for the batch, one noise code per image."""

    def __init__(self, channels: int, size: tuple[int, int], batch: int, width: int, generator: torch.Generator):
        super().__init__()
        h, w = size
        if h % 4 or w % 4:
            raise ConfigError(f"the deep image prior needs image sides divisible by 4, got {h}x{w}")
        self.register_buffer("code", torch.rand((batch, width, h // 4, w // 4), generator=generator) * 0.1)
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                       nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            for m in self.body:
                if isinstance(m, nn.Conv2d):
                    m.reset_parameters()

    def forward(self) -> torch.Tensor:
        return self.body(self.code)


@dataclass
class DeepImagePrior(InvertingGradients):
    """Inverting Gradients' objective, the pixels replaced by an untrained generator's output (Ulyanov et al. 2018).
    ``lr`` is Adam's step on the generator's weights (unsigned); ``time_limit_s`` stops at a wall-clock budget."""

    name: ClassVar[str] = "dip"
    lr: float = 0.01
    tv: float = 0.0
    signed: bool = False
    schedule: Literal["constant", "step", "cosine"] = "constant"
    width: int = 64
    time_limit_s: float | None = None

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        if obs.inputs.kind != "image":
            raise ConfigError(f"attack {self.name!r} handles image inputs, not {obs.inputs.kind}")
        start = time.perf_counter()
        device = torch.device(device)
        config = self.engine(obs)
        matcher = UpdateMatcher([obs], config, device)
        labels = self.resolve_labels(obs)
        if labels is None:
            raise ConfigError("the deep image prior needs labels 'auto', 'infer' or 'leaked', not 'soft'")
        gen = torch.Generator(device="cpu").manual_seed(0 if seed is None else seed)
        c, h, w = obs.input_shape
        net = Generator(c, (h, w), obs.batch_size, self.width, gen).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        ys = labels.to(device).long().view(1, 1, -1)
        trace = torch.full((config.iterations, 1), float("nan"))
        done = 0
        for i in range(config.iterations):
            for group in opt.param_groups:
                group["lr"] = config.lr_at(i)
            x = obs.inputs.to_model(net())
            value, gx, _ = matcher.value_and_grad(x.detach()[None, None], ys, False)
            opt.zero_grad()
            x.backward(gx[0, 0])
            opt.step()
            trace[i] = value.detach().cpu()[0]
            done = i + 1
            if callback is not None:
                callback(i, obs.inputs.from_model(x.detach())[None])
            if not math.isfinite(float(value)):
                break
            if self.time_limit_s is not None and time.perf_counter() - start > self.time_limit_s:
                break
        with torch.no_grad():
            pixels = net()
            final = matcher.values(obs.inputs.to_model(pixels)[None, None], ys, False)[0]
        return Reconstruction(
            inputs=pixels.cpu(), labels=labels.cpu(), attack=self.name, settings=self.settings(),
            trace=torch.nan_to_num(trace[:done], nan=float("inf")), restart_objectives=final.cpu(),
            iterations=done, wall_time_s=time.perf_counter() - start,
            details={"generator_parameters": sum(p.numel() for p in net.parameters())},
        )


ATTACKS.register("dip")(DeepImagePrior)
