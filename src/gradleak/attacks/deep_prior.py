"""The deep image prior as a gradient-inversion prior (Ulyanov et al. 2018): the candidate images are the output of
an untrained convolutional generator, and the attack optimises the generator's weights instead of the pixels.

A convolutional generator fits natural images long before it fits noise, so the structure of the network acts as
the prior (no training data needed). Used against gradients by, among others, Wei et al. (2020) and Jeon et al.
(2021, GIAS's parameter search). The update is matched by the engine's ``UpdateMatcher`` (Inverting Gradients'
cosine distance and TV, Geiping et al. 2020); its gradient in the pixels is carried back into the generator. The
answer is the best iterate by that objective (``GeneratorSearch``), as the engine returns each restart's best.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import torch
from torch import nn

from gradleak.attacks.base import ATTACKS, Callback, Reconstruction
from gradleak.attacks.inverting import InvertingGradients
from gradleak.attacks.optimization import EngineConfig, UpdateMatcher
from gradleak.errors import AttackError, ConfigError
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
        search = GeneratorSearch(obs, matcher, labels.to(device).long(), start, self.time_limit_s, callback)
        search.run(net, list(net.parameters()), config)
        return search.reconstruction(self.name, self.settings(), labels,
                                     {"generator_parameters": sum(p.numel() for p in net.parameters())})

    def reconstruct_many(
        self,
        observations: Sequence[Observation],
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        progress: bool = False,
    ) -> list[Reconstruction]:
        """One search per client: the generator is fitted to one batch (the engine's batched path would run
        Inverting Gradients on the pixels instead)."""
        return [self.reconstruct(o, device=device, seed=seed, progress=progress) for o in observations]


class GeneratorSearch:
    """Adam on a generator's tensors (its weights, or its input code) against the engine's objective, keeping the
    best iterate by that objective across calls of ``run`` (the engine keeps each restart's best iterate the same
    way): a diverging or oscillating step never costs the answer. A stage ends early at a wall-clock budget counted
    from ``start`` (``time_limit_s``); a non-finite objective ends the search (``stopped``)."""

    def __init__(self, obs: Observation, matcher: UpdateMatcher, labels: torch.Tensor, start: float,
                 time_limit_s: float | None, callback: Callback | None) -> None:
        self.obs, self.matcher, self.start, self.callback = obs, matcher, start, callback
        self.time_limit_s = time_limit_s
        self.ys = labels.view(1, 1, -1)
        self.trace: list[float] = []
        self.best_value = float("inf")
        self.best_pixels: torch.Tensor | None = None
        self.best_tensors: list[torch.Tensor] = []
        self.stopped = False

    def out_of_time(self) -> bool:
        return self.time_limit_s is not None and time.perf_counter() - self.start > self.time_limit_s

    def keep(self, value: float, pixels: torch.Tensor, tensors: Sequence[torch.Tensor] = ()) -> None:
        if math.isfinite(value) and value < self.best_value:
            self.best_value, self.best_pixels = value, pixels.detach().clone()
            self.best_tensors = [t.detach().clone() for t in tensors]

    def run(self, net: Callable[[], torch.Tensor], tensors: list[torch.Tensor], config: EngineConfig,
            keep: Sequence[torch.Tensor] = ()) -> None:
        """``config.iterations`` Adam steps of ``config.lr_at(i)`` on ``tensors``, ``net()`` giving the pixels;
        the tensors in ``keep`` are copied with each new best iterate (``best_tensors``)."""
        if self.stopped:
            return
        opt = torch.optim.Adam(tensors, lr=config.lr)
        for i in range(config.iterations):
            for group in opt.param_groups:
                group["lr"] = config.lr_at(i)
            pixels = net()
            x = self.obs.inputs.to_model(pixels)
            value, gx, _ = self.matcher.value_and_grad(x.detach()[None, None], self.ys, False)
            v = float(value.detach().reshape(-1)[0])
            self.trace.append(v)
            self.keep(v, pixels, keep)
            if self.callback is not None:
                self.callback(len(self.trace) - 1, pixels.detach()[None])
            if not math.isfinite(v):
                self.stopped = True
                return
            if self.out_of_time():
                return
            opt.zero_grad()
            x.backward(gx[0, 0])
            opt.step()
        with torch.no_grad():
            pixels = net()
            value = self.matcher.values(self.obs.inputs.to_model(pixels)[None, None], self.ys, False)
            self.keep(float(value.reshape(-1)[0]), pixels, keep)

    def reconstruction(self, name: str, settings: dict, labels: torch.Tensor, details: dict) -> Reconstruction:
        """The best iterate seen, its objective, and the trace of every evaluation."""
        if self.best_pixels is None:
            raise AttackError(f"attack {name!r}: the objective was never finite; nothing to return")
        trace = torch.tensor(self.trace, dtype=torch.float32).view(-1, 1)
        return Reconstruction(
            inputs=self.best_pixels.cpu(), labels=labels.cpu(), attack=name, settings=settings,
            trace=torch.nan_to_num(trace, nan=float("inf")), restart_objectives=torch.tensor([self.best_value]),
            iterations=len(self.trace), wall_time_s=time.perf_counter() - self.start, details=details,
        )


ATTACKS.register("dip")(DeepImagePrior)
